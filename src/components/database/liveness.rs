//! A Database's liveness between its full probes: a connection kept open to
//! its instance asks each second (`Settings::database_liveness_interval`)
//! which of its databases exist, and hears at once when the connection
//! closes. When the answer changes, the Database is reconciled now — the
//! full pass decides and repairs, as at any probe; this only makes it come
//! sooner. It reads, never writes, and stops with its Database, when the
//! site stops acting, or when what it was started from changes.

use std::{future::Future, sync::Arc, time::Duration};

use futures::FutureExt;
use kube::ResourceExt;

use crate::{
    api::Database,
    providers::database::{EngineError, InstanceWatch, Target},
    runtime::{Context, wake::Subject},
};

/// What one look saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    /// The instance answered; these of the Database's databases exist.
    Present(Vec<String>),
    /// It did not answer (the reason word of the failure).
    Down(&'static str),
}

/// Whether a look calls for a reconcile: only a change from the look before
/// (the reconcile that started the watch has just looked itself).
pub fn changed(before: Option<&Look>, now: &Look) -> bool {
    before.is_some_and(|b| b != now)
}

/// Whether a failure means the instance is away (refused, timed out, cut
/// off): worth a look each second. Any other (a login refused, TLS) waits
/// for a person and the reconcile: trying each second would only hammer
/// the server with failed logins.
pub fn away(reason: &str) -> bool {
    use crate::providers::postgres::{CONNECTION_REFUSED, TIMEOUT, UNREACHABLE};
    [CONNECTION_REFUSED, TIMEOUT, UNREACHABLE].contains(&reason)
}

/// Starts (or keeps) the watch of `db`'s instance.
pub fn keep<W, F, Fut>(ctx: &Context, db: &Database, target: &Target, open: F)
where
    W: InstanceWatch + 'static,
    F: Fn(Target) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<W, EngineError>> + Send + 'static,
{
    let every = ctx.settings.database_liveness_interval;
    if every.is_zero() {
        return;
    }
    let (ns, name) = (db.namespace().unwrap_or_default(), db.name_any());
    let mut names: Vec<String> = db.spec.databases.iter().map(|d| d.name.clone()).collect();
    names.sort();
    let port = target.port.to_be_bytes();
    let fingerprint = crate::runtime::wake::fingerprint(&[
        db.uid().unwrap_or_default().as_bytes(),
        target.host.as_bytes(),
        &port,
        target.user.as_bytes(),
        target.password.0.as_bytes(),
        format!("{:?}", target.ssl_mode).as_bytes(),
        target.ca_pem.as_deref().unwrap_or_default(),
        names.join("\n").as_bytes(),
    ]);
    let who = Subject::new(
        ctx,
        "Database",
        db,
        |s, ns, name| crate::runtime::stores::get(&s.databases, ns, name).and_then(|d| d.uid()),
        &ctx.wakes.databases,
    );
    let target = target.clone();
    ctx.kept.ensure(&format!("Database/{ns}/{name}"), fingerprint, move || {
        watch(Arc::new(open), target, names, who, every).boxed()
    });
}

async fn watch<W, F, Fut>(open: Arc<F>, target: Target, names: Vec<String>, who: Subject, every: Duration)
where
    W: InstanceWatch,
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Result<W, EngineError>>,
{
    let mut before: Option<Look> = None;
    let mut kept: Option<W> = None;
    while who.still() {
        let now = look(&*open, &target, &names, &mut kept).await;
        let give_up = matches!(now, Look::Down(reason) if !away(reason));
        tell(&mut before, &who, now);
        if give_up {
            return;
        }
        match &kept {
            Some(w) => crate::runtime::wake::pause(every, w.closed()).await,
            None => tokio::time::sleep(every).await,
        }
    }
}

/// One look, over the kept connection (opened again when it is gone).
async fn look<W, F, Fut>(open: &F, target: &Target, names: &[String], kept: &mut Option<W>) -> Look
where
    W: InstanceWatch,
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Result<W, EngineError>>,
{
    let w = match kept {
        Some(w) => w,
        None => match open(target.clone()).await {
            Ok(w) => kept.insert(w),
            Err(e) => return Look::Down(e.reason),
        },
    };
    match w.present(names).await {
        Ok(p) => Look::Present(p),
        Err(e) => {
            *kept = None;
            Look::Down(e.reason)
        }
    }
}

fn tell(before: &mut Option<Look>, who: &Subject, now: Look) {
    if changed(before.as_ref(), &now) {
        tracing::info!(namespace = %who.ns, database = %who.name, look = ?now, "the instance changed; reconciling now");
        who.wake();
    }
    *before = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_instance_that_is_away_is_looked_at_each_second() {
        assert!(away("ConnectionRefused") && away("Timeout") && away("Unreachable"));
        assert!(!away("AuthenticationFailed"), "no failed login each second");
        assert!(!away("TLSFailed"));
    }

    #[test]
    fn only_a_change_wakes() {
        let shop = Look::Present(vec!["shop".into()]);
        assert!(!changed(None, &shop), "the first look follows a reconcile");
        assert!(!changed(Some(&shop), &shop));
        assert!(changed(Some(&shop), &Look::Present(vec![])), "a database dropped");
        assert!(
            changed(Some(&shop), &Look::Down("Unreachable")),
            "the instance went away"
        );
        assert!(changed(Some(&Look::Down("Unreachable")), &shop), "it came back");
        assert!(!changed(Some(&Look::Down("Timeout")), &Look::Down("Timeout")));
    }
}
