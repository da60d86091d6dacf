//! Incident reconciler: the incident's times (failure observed, detected,
//! deadline from the plan's level), its measures, and its resolution once the
//! component's health signal is good again (the component controllers repair
//! what they can on their own). The procedure executor builds on it.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Context, Error, components,
    detection::failure,
    status::Report,
    validation::{Invalid, report_invalid},
};
use crate::{
    api::{
        Database, Incident,
        common::{ComponentKind, reasons},
        incident::{IncidentPhase, Measures, StepMeasure},
    },
    telemetry::{IncidentLabels, LevelLabels},
};

fn secs(d: i64) -> String {
    format!("{}s", d.max(0))
}

pub fn reconcile(obj: Arc<Incident>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let inc = obj.as_ref();
        let ns = inc.namespace().unwrap_or_default();
        let Some(plan) = components::get(&ctx.stores.recovery_plans, &ns, &inc.spec.plan_ref.name) else {
            let invalid = Invalid::external(
                "spec.planRef",
                format!(
                    "RecoveryPlan {:?} does not exist in namespace {ns:?}",
                    inc.spec.plan_ref.name
                ),
            );
            return report_invalid(&ctx, inc, &invalid).await;
        };
        let mut r = Report::new(&ctx, inc);
        let now = r.now;
        let detected = inc.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
        let observed = inc.spec.observed_at.as_ref().map(|t| t.0).unwrap_or(detected);
        let window = plan
            .spec
            .levels
            .iter()
            .find(|l| l.level == inc.spec.level)
            .and_then(|l| l.max_window.as_ref())
            .map(|w| w.as_std());
        let deadline = window.and_then(|w| detected.checked_add(w).ok());
        r.status.detected_at = Some(Time(detected));
        r.status.failure_observed_at = Some(Time(observed));
        r.status.deadline = deadline.map(Time);
        let mut measures = r.status.measures.clone().unwrap_or_default();
        measures.time_to_detect = Some(secs(detected.as_second() - observed.as_second()));
        let level = inc.spec.level.to_string();
        let mut again = None;
        let open = !matches!(r.status.phase, IncidentPhase::Resolved | IncidentPhase::Failed);
        if open {
            super::notify::on_open(&mut r, &ctx, &plan).await?;
            let c = &inc.spec.component;
            let exists = components::exists(&ctx.stores, c.kind, &ns, &c.name);
            let healthy = exists && failure(&ctx.stores, &ns, c).is_none();
            again = super::executor::advance(&mut r, &ctx, &plan, healthy).await?;
            if c.kind == ComponentKind::Database {
                data_measures(&ctx, &ns, &c.name, observed, &mut measures);
            }
            if healthy && r.status.phase != IncidentPhase::Failed {
                let took = now.as_second() - detected.as_second();
                r.status.phase = IncidentPhase::Resolved;
                r.status.breached = deadline.is_some_and(|d| now > d);
                measures.time_to_recover = Some(secs(took));
                let outcome = if r.status.breached { "Breached" } else { "Resolved" };
                ctx.metrics
                    .incidents
                    .get_or_create(&IncidentLabels {
                        level: level.clone(),
                        kind: c.kind.as_str().into(),
                        outcome: outcome.into(),
                    })
                    .inc();
                ctx.metrics
                    .recovery_duration
                    .get_or_create(&LevelLabels { level: level.clone() })
                    .observe(took.max(0) as f64);
                r.event(
                    EventType::Normal,
                    "Resolved",
                    "Recover",
                    format!(
                        "{} {} is healthy again after {}s (deadline {})",
                        c.kind,
                        c.name,
                        took.max(0),
                        if r.status.breached { "breached" } else { "met" }
                    ),
                );
            } else {
                if let Some(d) = deadline {
                    if now > d && !r.status.breached {
                        r.status.breached = true;
                        ctx.metrics
                            .deadline_breaches
                            .get_or_create(&LevelLabels { level: level.clone() })
                            .inc();
                        r.event(
                            EventType::Warning,
                            "DeadlineBreached",
                            "Recover",
                            format!("level {level}: not resolved by {d}"),
                        );
                    } else if now <= d {
                        let until = Duration::from_secs((d.as_second() - now.as_second()).max(1) as u64);
                        again = Some(again.map_or(until, |a| a.min(until)));
                    }
                }
            }
        }
        measures.steps = r
            .status
            .timeline
            .iter()
            .filter_map(|e| {
                let end = e.finished.as_ref()?;
                Some(StepMeasure {
                    step: e.step.clone(),
                    attempt: e.attempt,
                    outcome: e.outcome.clone(),
                    duration: secs(end.0.as_second() - e.started.0.as_second()),
                })
            })
            .collect();
        let closed = matches!(r.status.phase, IncidentPhase::Resolved | IncidentPhase::Failed);
        // An open-ended level (no maximum window) has no deadline to meet.
        measures.deadline_met = match (closed, r.status.breached, deadline.is_some()) {
            (_, true, _) => Some(false),
            (true, false, true) => Some(true),
            _ => None,
        };
        if closed && r.status.closed_at.is_none() {
            r.status.closed_at = Some(Time(now));
        }
        r.status.measures = Some(measures);
        let closed_at = r.status.closed_at.as_ref().map(|t| t.0);
        let resolved = r.status.phase == IncidentPhase::Resolved;
        let phase = r.status.phase;
        r.set(
            reasons::READY,
            resolved,
            &format!("{phase:?}"),
            format!("incident is {phase:?}"),
        );
        r.write().await?;
        // Open incidents per level, from the store (this write included or not, it converges).
        let open_now = super::opening::open(&ctx.stores)
            .iter()
            .filter(|i| i.spec.level == inc.spec.level && i.uid() != inc.uid())
            .count()
            + usize::from(!resolved);
        ctx.metrics
            .open_incidents
            .get_or_create(&LevelLabels { level })
            .set(open_now as i64);
        // Closed incidents are the audit trail for the plan's retention, then go.
        if let Some(closed) = closed_at {
            let expires = closed.as_second() + plan.spec.incident_retention.as_std().as_secs() as i64;
            let left = expires - Timestamp::now().as_second();
            if left <= 0 {
                let api: kube::Api<Incident> = kube::Api::namespaced(ctx.client.clone(), &ns);
                match api.delete(&inc.name_any(), &Default::default()).await {
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Ok(_) => {
                        ctx.metrics.wrote("Incident", "delete");
                        tracing::info!(incident = %inc.name_any(), "incident past the plan's retention: deleted");
                    }
                    Err(e) => return Err(e.into()),
                }
                return Ok(Action::await_change());
            }
            let left = Duration::from_secs(left as u64);
            again = Some(again.map_or(left, |a| a.min(left)));
        }
        Ok(again.map(Action::requeue).unwrap_or_else(Action::await_change))
    }
    .boxed()
}

/// For a Database: the data its restore after this failure moved and lost.
fn data_measures(ctx: &Context, ns: &str, name: &str, observed: Timestamp, m: &mut Measures) {
    let db: Option<Database> = components::get(&ctx.stores.databases, ns, name);
    let Some(restore) = db.and_then(|d| d.status).and_then(|s| s.last_restore) else {
        return;
    };
    if restore.failure_observed.0.as_second() + 1 < observed.as_second() {
        return; // an older restore
    }
    m.data_restored_bytes = Some(restore.bytes_restored);
    m.data_loss_window = restore.data_loss_window_seconds.map(secs);
}
