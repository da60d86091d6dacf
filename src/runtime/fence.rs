//! The site fence: whether this operator may act, per namespace. A
//! namespace without a local Site is a single-site install and always acts.
//! With one, reprise acts only while its site holds the witness's lease and
//! the lease is confirmed (a monotonic deadline, so a process paused past
//! it wakes up fenced); the sites controller (`recovery::sites`) keeps the
//! standing here, and every controller asks before acting.

use super::Action;
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

use super::{
    Context, Error, Stores,
    kind::Kind,
    report::{with_ready, write_status},
};
use crate::api::site::SiteRole;

/// What the local site may do, as the sites controller last found.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub site: String,
    pub role: SiteRole,
    /// The epoch held (Active) or seen (otherwise).
    pub epoch: u64,
    /// Until when acting is allowed (Active only): the lease's end as this
    /// process measured it, less the clocks' allowed skew.
    pub acting_until: Option<Instant>,
    /// Why, in words (for the statuses of what does not act).
    pub why: String,
    /// A relocation to this site is under way: the Applications stop first
    /// (the rest acts on: the final backup is taken, WAL archived).
    pub quiescing: Option<String>,
}

pub struct Fence {
    standing: Mutex<HashMap<String, Standing>>,
    /// Told when a namespace's role or epoch changes: every fenced
    /// controller then looks at all its objects again (to stop, or to start).
    pub changed: tokio::sync::broadcast::Sender<()>,
}

impl Default for Fence {
    fn default() -> Self {
        Self {
            standing: Default::default(),
            changed: tokio::sync::broadcast::channel(16).0,
        }
    }
}

/// Why an object's controller leaves it alone.
#[derive(Clone, Debug, PartialEq)]
pub struct NotActive(pub String);

impl Fence {
    pub fn set(&self, namespace: &str, s: Standing) {
        let moved = self
            .lock()
            .insert(namespace.to_string(), s.clone())
            .is_none_or(|was| (was.role, was.epoch, &was.quiescing) != (s.role, s.epoch, &s.quiescing));
        if moved {
            let _ = self.changed.send(());
        }
    }

    pub fn clear(&self, namespace: &str) {
        self.lock().remove(namespace);
    }

    pub fn get(&self, namespace: &str) -> Option<Standing> {
        self.lock().get(namespace).cloned()
    }

    /// The epoch to act under in `namespace` (0: no sites), or why not to.
    pub fn permit(&self, stores: &Stores, namespace: &str) -> Result<u64, NotActive> {
        let Some(site) = local_site(stores, namespace) else {
            return Ok(0);
        };
        let Some(s) = self.get(namespace) else {
            return Err(NotActive(format!(
                "site {site}: its role is not known yet (the witness not read since reprise started)"
            )));
        };
        decide(&s, Instant::now()).map_err(NotActive)
    }

    /// As [`Self::permit`], for an object of `kind`: while a relocation
    /// quiesces the site, its Applications do not act (they stop serving).
    pub fn permit_kind(&self, stores: &Stores, namespace: &str, kind: &str) -> Result<u64, NotActive> {
        let epoch = self.permit(stores, namespace)?;
        match self.get(namespace).and_then(|s| s.quiescing) {
            Some(peer) if kind == "Application" => Err(NotActive(format!(
                "relocating to site {peer}: applications stopped until it takes over"
            ))),
            _ => Ok(epoch),
        }
    }

    /// As [`Self::permit_kind`], asked again at the moment of a write with
    /// effects: a reconcile permitted at its start may have run past the
    /// lease since (a slow look-up, a paused process). Checked just before
    /// the request, the gap left is the request's own latency, well inside
    /// the skew the lease keeps.
    pub fn still(&self, stores: &Stores, namespace: &str, kind: &str) -> Result<u64, Error> {
        self.permit_kind(stores, namespace, kind)
            .map_err(|why| Error::NotActive(why.0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Standing>> {
        self.standing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a standing allows acting at `now`.
pub fn decide(s: &Standing, now: Instant) -> Result<u64, String> {
    match (s.role, s.acting_until) {
        (SiteRole::Active, Some(until)) if now < until => Ok(s.epoch),
        (SiteRole::Active, _) => Err(format!(
            "site {}: its lease at epoch {} is not confirmed (the witness not heard from in time): not acting",
            s.site, s.epoch
        )),
        (role, _) => Err(format!("site {} is {role:?}: {}", s.site, s.why)),
    }
}

/// The name of the local Site of `namespace`, if there is one.
pub fn local_site(stores: &Stores, namespace: &str) -> Option<String> {
    stores
        .sites
        .state()
        .iter()
        .filter_map(|s| s.0.as_ref().ok())
        .find(|s| s.spec.local && s.namespace().as_deref() == Some(namespace))
        .map(|s| s.name_any())
}

/// How long until a fenced object should look again (the role may change
/// at the next renewal).
pub const RECHECK: Duration = Duration::from_secs(5);

/// Condition reason of an object left alone because its site is not active.
pub const SITE_NOT_ACTIVE: &str = "SiteNotActive";

/// What a controller does instead of reconciling while its site is not
/// active: nothing outside Kubernetes; the Deployments the object owns
/// scaled to zero (the site's applications stop serving); `Ready=False`
/// saying why (written once, not at each look).
pub async fn hold<K: Kind>(ctx: &Context, obj: &K, why: NotActive) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let ns = obj.namespace().unwrap_or_default();
    let owned: Vec<String> = ctx
        .stores
        .deployments
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
        .filter(|d| {
            d.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .filter(|d| d.spec.replicas != Some(0))
        .map(|d| d.name_any())
        .collect();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    for name in owned {
        let body = serde_json::json!({"spec": {"replicas": 0}});
        api.patch_scale(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        ctx.metrics.wrote("Deployment", "scale");
        tracing::info!(deployment = %name, why = %why.0, "scaled to zero: the site is not active");
    }
    let status = with_ready(obj, false, SITE_NOT_ACTIVE, why.0);
    write_status(ctx, obj, &status).await?;
    Ok(Action::requeue(RECHECK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(role: SiteRole, until: Option<Instant>) -> Standing {
        Standing {
            site: "paris".into(),
            role,
            epoch: 3,
            acting_until: until,
            why: "lyon holds the lease".into(),
            quiescing: None,
        }
    }

    #[test]
    fn only_an_active_site_within_its_confirmed_lease_acts() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        assert_eq!(decide(&standing(SiteRole::Active, Some(later)), now), Ok(3));
        // Paused past the lease: woken up fenced, whatever the role says.
        let e = decide(&standing(SiteRole::Active, Some(now)), later).unwrap_err();
        assert!(e.contains("not confirmed"), "{e}");
        assert!(decide(&standing(SiteRole::Active, None), now).is_err());
        for role in [SiteRole::Standby, SiteRole::Demoted, SiteRole::Fenced] {
            let e = decide(&standing(role, Some(later)), now).unwrap_err();
            assert!(e.contains(&format!("{role:?}")) && e.contains("lyon holds"), "{e}");
        }
    }
}
