//! Opening Incidents: for each covered component whose health signal reports
//! a failure, one Incident — none while one is open for that component, none
//! while a `Pause` MaintenanceWindow covers it.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::events::EventType,
};

use super::detection::failure;
use crate::{
    api::{
        Incident,
        common::{ComponentKind, ComponentRef, LocalRef},
        incident::{IncidentPhase, IncidentSpec},
        maintenance_window::MaintenanceMode,
        recovery_plan::RecoveryPlan,
        site::SiteHealthState,
    },
    runtime::{
        Context, Error,
        holds::{paused_by, window_over},
        report::publish,
        stores,
    },
};

/// Whether an Incident is still open: not resolved, not closed. A procedure
/// that ran out (`Failed`) leaves it open for people until the component is
/// healthy again.
pub fn is_open(i: &Incident) -> bool {
    !i.status
        .as_ref()
        .is_some_and(|s| s.phase == IncidentPhase::Resolved || s.closed_at.is_some())
}

/// The open Incidents in the store (every namespace the operator watches).
pub fn all_open(stores: &crate::runtime::Stores) -> Vec<Incident> {
    stores
        .incidents
        .state()
        .iter()
        .filter_map(|i| i.0.as_ref().ok())
        .filter(|i| is_open(i))
        .cloned()
        .collect()
}

/// The open Incident of component `c` in `ns`, if any.
pub fn open_for(stores: &crate::runtime::Stores, ns: &str, c: &ComponentRef) -> Option<Incident> {
    all_open(stores)
        .into_iter()
        .find(|i| i.namespace().as_deref() == Some(ns) && &i.spec.component == c)
}

/// The level of a component's kind in the plan.
pub fn level_of(plan: &RecoveryPlan, c: &ComponentRef) -> Option<u8> {
    plan.spec
        .levels
        .iter()
        .find(|l| l.applies_to.contains(&c.kind))
        .map(|l| l.level)
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A label value for any name: itself when it fits (63 characters), else a
/// shortened form that stays unique (a hash of the whole name).
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let head: String = name.chars().take(54).collect();
    format!("{}-{}", head.trim_end_matches(['-', '.', '_']), short_hash(name))
}

/// A name that is the same for the same failure, so a retry never opens a
/// second one; at most 253 characters whatever the component's name.
pub fn name(c: &ComponentRef, since: Timestamp) -> String {
    let kind = c.kind.as_str().to_lowercase();
    let secs = since.as_second();
    let full = format!("{kind}-{}-{secs}", c.name);
    if full.len() <= 253 {
        return full;
    }
    let room = 253 - kind.len() - secs.to_string().len() - 11;
    let head: String = c.name.chars().take(room).collect();
    format!(
        "{kind}-{}-{}-{secs}",
        head.trim_end_matches(['-', '.']),
        short_hash(&c.name)
    )
}

/// The local Site of `ns`, while it is failing over.
fn failing_over(stores: &crate::runtime::Stores, ns: &str) -> Option<String> {
    stores
        .sites
        .state()
        .iter()
        .filter_map(|s| s.0.as_ref().ok())
        .find(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.spec.local
                && s.status
                    .as_ref()
                    .and_then(|st| st.health.as_ref())
                    .is_some_and(|h| h.state == SiteHealthState::FailingOver)
        })
        .map(|s| s.name_any())
}

/// Opens an Incident for each failed covered component that has none open.
/// Returns the components skipped because a Pause window covers them.
pub async fn open_for_failures(
    ctx: &Context,
    plan: &RecoveryPlan,
    covered: &[ComponentRef],
) -> Result<Vec<String>, Error> {
    let ns = plan.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let mut paused = vec![];
    for c in covered {
        // Failing now, or seen failing on the watch since the last look.
        let Some(f) = failure(&ctx.stores, &ns, c).or_else(|| ctx.seen.get(&ns, c)) else {
            continue;
        };
        let incident_name = name(c, f.since);
        let already = open_for(&ctx.stores, &ns, c).is_some()
            || stores::get(&ctx.stores.incidents, &ns, &incident_name).is_some();
        if already {
            ctx.seen.forget(&ns, c);
            continue;
        }
        if let Some(site) = failing_over(&ctx.stores, &ns).filter(|_| c.kind != ComponentKind::Site) {
            // The site Incident covers what the failover rebuilds.
            paused.push(format!("{} {} (Site {site} failing over)", c.kind, c.name));
            ctx.seen.forget(&ns, c);
            continue;
        }
        if let Some(window) = paused_by(&ctx.stores, &ns, c, now) {
            paused.push(format!("{} {} (MaintenanceWindow {window})", c.kind, c.name));
            ctx.seen.forget(&ns, c);
            continue;
        }
        let Some(level) = level_of(plan, c) else { continue };
        let failure = Failure {
            cause: f.cause.clone(),
            since: f.since,
            name: incident_name,
            notify_only: window_over(&ctx.stores, &ns, c, now, MaintenanceMode::NotifyOnly),
        };
        open(ctx, plan, c, level, failure).await?;
    }
    Ok(paused)
}

/// A failure to open an Incident for.
pub struct Failure {
    pub cause: String,
    pub since: Timestamp,
    /// The Incident's name ([`name`]).
    pub name: String,
    pub notify_only: Option<String>,
}

/// Creates the Incident of `c`'s failure under `plan` at `level`, and says so
/// on the plan (an Incident of that name already there is left as it is).
pub async fn open(ctx: &Context, plan: &RecoveryPlan, c: &ComponentRef, level: u8, f: Failure) -> Result<(), Error> {
    let ns = plan.namespace().unwrap_or_default();
    {
        let incident_name = f.name.clone();
        let incident = Incident {
            metadata: ObjectMeta {
                name: Some(incident_name),
                namespace: Some(ns.clone()),
                labels: Some(
                    [
                        ("reprise.dev/plan".to_string(), label_value(&plan.name_any())),
                        ("reprise.dev/component-kind".to_string(), c.kind.as_str().to_string()),
                        ("reprise.dev/component".to_string(), label_value(&c.name)),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: IncidentSpec {
                plan_ref: LocalRef { name: plan.name_any() },
                component: c.clone(),
                level,
                cause: f.cause.chars().take(1000).collect(),
                drill: false,
                observed_at: Some(MicroTime(f.since)),
                opened_at: Some(MicroTime(Timestamp::now())),
                notify_only: f.notify_only.clone(),
            },
            status: None,
        };
        let api: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
        // Before the create: its first reconcile may start before it returns.
        ctx.seen
            .opened(&ns, incident.metadata.name.as_deref().unwrap_or_default());
        match api.create(&PostParams::default(), &incident).await {
            Ok(created) => {
                ctx.seen.forget(&ns, c);
                ctx.metrics.wrote(&Incident::kind(&()), "create");
                tracing::info!(incident = %created.name_any(), component = %c.name, level, "incident opened");
                publish(
                    ctx,
                    plan,
                    EventType::Warning,
                    "IncidentOpened",
                    "Detect",
                    format!("level {level}: {} (Incident {})", f.cause, created.name_any()),
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => ctx.seen.forget(&ns, c),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_fit_whatever_the_component_name() {
        let long = ComponentRef {
            kind: ComponentKind::Server,
            name: format!("{}.example", "s".repeat(245)),
        };
        let since = Timestamp::from_second(1_800_000_000).unwrap();
        let n = name(&long, since);
        assert!(n.len() <= 253, "{}", n.len());
        assert!(n.ends_with("-1800000000"), "{n}");
        assert_eq!(n, name(&long, since), "the same failure, the same name");
        let short = ComponentRef {
            kind: ComponentKind::Database,
            name: "shop-db".into(),
        };
        assert_eq!(name(&short, since), "database-shop-db-1800000000");
        let v = label_value(&long.name);
        assert!(
            v.len() <= 63 && v.chars().last().unwrap().is_ascii_alphanumeric(),
            "{v}"
        );
        assert_ne!(v, label_value(&format!("{}.other", "s".repeat(245))));
        assert_eq!(label_value("shop-db"), "shop-db");
    }
}
