//! A failover only a person can decide: a standby that cannot read the
//! witness while the active site's last heartbeat is older than its lease
//! cannot tell a lost site from a lost witness. It says so (its health,
//! `NeedsApproval`), opens its site Incident (the plan's `WaitForApproval`
//! step), and takes over at the next epoch when the Incident's `failover`
//! step asks it to, acting without the witness until it can write that
//! epoch there.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::lease::Config;
use crate::{
    api::{
        Site,
        common::{ComponentKind, ComponentRef},
        contract::{ActionVerb, Component, Request},
        site::{SiteHealthState, SiteRole},
    },
    providers::witness::Lease,
    recovery::opening,
    runtime::{Context, Error},
};

/// Why this site needs a person now, and since when (the holder's last
/// heartbeat): a standby, the witness away, the last lease seen run out.
pub fn needed(
    cfg: &Config,
    role: SiteRole,
    reachable: bool,
    last: Option<&Lease>,
    now: Timestamp,
) -> Option<(Timestamp, String)> {
    let l = last.filter(|l| l.site != cfg.me)?;
    if reachable || role == SiteRole::Active || now <= l.until + cfg.skew {
        return None;
    }
    Some((
        l.renewed,
        format!(
            "the witness does not answer and site {}'s last heartbeat (epoch {}) was at {}: lost, or cut off from the witness as this site is? \
             No automatic failover without the witness: approve the site Incident to take over at epoch {}",
            l.site,
            l.epoch,
            l.renewed,
            l.epoch + 1
        ),
    ))
}

/// The failover asked of the site through its action annotation (the site
/// Incident's `failover` step), once per request id: the epoch to take when
/// the site needs approval, else why not.
pub fn asked(site: &Site, last: Option<&Lease>) -> Option<(Request, Result<u64, String>)> {
    let req = site.pending_request()?;
    let status = site.status.clone().unwrap_or_default();
    if status.last_action.as_ref().is_some_and(|a| a.id == req.id) {
        return None;
    }
    if req.action() != Some(ActionVerb::Failover) {
        let why = crate::runtime::report::unknown_action(&req.verb, ComponentKind::Site);
        return Some((req, Err(why)));
    }
    let needs = status
        .health
        .as_ref()
        .is_some_and(|h| h.state == SiteHealthState::NeedsApproval);
    if !needs {
        let why = "no failover to approve: it needs approval only while the witness does not answer and the active site's lease has run out (with the witness, it is automatic)";
        return Some((req, Err(why.into())));
    }
    let seen = last.map_or(0, |l| l.epoch);
    let epoch = seen.max(status.epoch).max(status.held_epoch.unwrap_or(0)) + 1;
    Some((req, Ok(epoch)))
}

/// Opens the site Incident of a site that needs approval, under the plan
/// that names it (none: the bundle's plan is created for it, or why not is
/// returned, once per new reason, for an Event).
pub async fn open_incident(ctx: &Context, site: &Site, since: Timestamp, cause: &str) -> Result<Option<String>, Error> {
    let note = opening_note(ctx, site, since, cause).await?;
    static SAID: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        std::sync::OnceLock::new();
    let mut said = SAID
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let key = format!("{}/{}", site.namespace().unwrap_or_default(), site.name_any());
    Ok(match note {
        Some(n) if said.get(&key) != Some(&n) => {
            said.insert(key, n.clone());
            Some(n)
        }
        Some(_) => None,
        None => {
            said.remove(&key);
            None
        }
    })
}

async fn opening_note(ctx: &Context, site: &Site, since: Timestamp, cause: &str) -> Result<Option<String>, Error> {
    let ns = site.namespace().unwrap_or_default();
    let me = ComponentRef {
        kind: ComponentKind::Site,
        name: site.name_any(),
    };
    if opening::open_for(&ctx.stores, &ns, &me).is_some() {
        return Ok(None);
    }
    let plan = ctx
        .stores
        .recovery_plans
        .state()
        .iter()
        .filter_map(|p| p.0.as_ref().ok())
        .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.spec.sites.contains(&me.name))
        .cloned();
    let Some(plan) = plan else {
        // The bundle's plan, brought here: the Incident opens at the next reading.
        return Ok(Some(match super::failover::plans_from_bundle(ctx, site).await {
            Ok(made) => format!(
                "RecoveryPlan {} created from the plan bundle for the site Incident",
                made.join(", ")
            ),
            Err(why) => format!(
                "no RecoveryPlan here names site {} and none could be made: {why}",
                me.name
            ),
        }));
    };
    let Some(level) = opening::level_of(&plan, &me) else {
        return Ok(Some(format!(
            "RecoveryPlan {} has no level for Site: no site Incident to approve",
            plan.name_any()
        )));
    };
    let failure = opening::Failure {
        cause: cause.chars().take(1000).collect(),
        since,
        name: opening::name(&me, since),
        notify_only: None,
    };
    opening::open(ctx, &plan, &me, level, failure).await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;

    use super::*;

    #[test]
    fn a_standby_needs_a_person_only_without_the_witness_past_the_holders_lease() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let cfg = Config {
            me: "lyon".into(),
            duration: SignedDuration::from_secs(20),
            skew: SignedDuration::from_secs(2),
            starts_active: false,
        };
        let paris = Lease {
            site: "paris".into(),
            epoch: 3,
            until: t(20),
            renewed: t(0),
            written_by: None,
        };
        let standby = SiteRole::Standby;
        assert!(
            needed(&cfg, standby, false, Some(&paris), t(21)).is_none(),
            "within its lease and skew"
        );
        let (since, why) = needed(&cfg, standby, false, Some(&paris), t(23)).expect("past it");
        assert_eq!(since, t(0), "counted from the last heartbeat");
        assert!(why.contains("site paris") && why.contains("epoch 4"), "{why}");
        assert!(
            needed(&cfg, standby, true, Some(&paris), t(60)).is_none(),
            "the witness decides"
        );
        assert!(needed(&cfg, SiteRole::Active, false, Some(&paris), t(60)).is_none());
        assert!(
            needed(&cfg, standby, false, None, t(60)).is_none(),
            "no holder ever seen"
        );
        let mine = Lease {
            site: "lyon".into(),
            ..paris
        };
        assert!(needed(&cfg, SiteRole::Fenced, false, Some(&mine), t(60)).is_none());
    }
}
