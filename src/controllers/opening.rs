//! Opening Incidents: for each covered component whose health signal reports
//! a failure, one Incident — none while one is open for that component, none
//! while a `Pause` MaintenanceWindow covers it.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::events::EventType,
};

use super::{
    Context, Error, components,
    detection::{failure, paused_by, window_over},
    status::publish,
};
use crate::api::{
    Incident,
    common::{ComponentRef, LocalRef},
    incident::{IncidentPhase, IncidentSpec},
    maintenance_window::MaintenanceMode,
    recovery_plan::RecoveryPlan,
};

/// Whether an Incident is still open.
pub fn is_open(i: &Incident) -> bool {
    !matches!(
        i.status.as_ref().map(|s| s.phase),
        Some(IncidentPhase::Resolved | IncidentPhase::Failed)
    )
}

/// The open Incidents in the store (every namespace the operator watches).
pub fn open(stores: &super::Stores) -> Vec<Incident> {
    stores
        .incidents
        .state()
        .iter()
        .filter_map(|i| i.0.as_ref().ok())
        .filter(|i| is_open(i))
        .cloned()
        .collect()
}

/// The level of a component's kind in the plan.
pub fn level_of(plan: &RecoveryPlan, c: &ComponentRef) -> Option<u8> {
    plan.spec
        .levels
        .iter()
        .find(|l| l.applies_to.contains(&c.kind))
        .map(|l| l.level)
}

/// A name that is the same for the same failure, so a retry never opens a second one.
fn name(c: &ComponentRef, since: Timestamp) -> String {
    let mut n = format!("{}-{}-{}", c.kind.as_str().to_lowercase(), c.name, since.as_second());
    n.truncate(253);
    n
}

/// Opens an Incident for each failed covered component that has none open.
/// Returns the components skipped because a Pause window covers them.
pub async fn open_incidents(
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
        let already = open(&ctx.stores)
            .iter()
            .any(|i| i.namespace().as_deref() == Some(ns.as_str()) && &i.spec.component == c)
            || components::get(&ctx.stores.incidents, &ns, &incident_name).is_some();
        if already {
            ctx.seen.forget(&ns, c);
            continue;
        }
        if let Some(window) = paused_by(&ctx.stores, &ns, c, now) {
            paused.push(format!("{} {} (MaintenanceWindow {window})", c.kind, c.name));
            ctx.seen.forget(&ns, c);
            continue;
        }
        let Some(level) = level_of(plan, c) else { continue };
        let notify_only = window_over(&ctx.stores, &ns, c, now, MaintenanceMode::NotifyOnly);
        let incident = Incident {
            metadata: ObjectMeta {
                name: Some(incident_name),
                namespace: Some(ns.clone()),
                labels: Some(
                    [
                        ("reprise.dev/plan".to_string(), plan.name_any()),
                        ("reprise.dev/component-kind".to_string(), c.kind.as_str().to_string()),
                        ("reprise.dev/component".to_string(), c.name.clone()),
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
                observed_at: Some(Time(f.since)),
                notify_only,
            },
            status: None,
        };
        let api: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
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
    Ok(paused)
}
