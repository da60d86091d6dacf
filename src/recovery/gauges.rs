//! What a plan publishes for dashboards and alert rules: each level's window
//! and readiness, the RPO each covered Database must meet, its drills. Set
//! at every reconcile of the plan; the series of a plan no longer in the
//! store are removed at the next reconcile of any plan of the process.

use kube::ResourceExt;

use crate::{
    api::{
        RecoveryPlan,
        common::{ComponentKind, ComponentRef, Duration},
        recovery_plan::RecoveryPlanStatus,
    },
    runtime::{Context, schedule, stores},
    telemetry::{Metrics, ObjectLabels, PlanLabels, PlanLevelLabels, unix_seconds},
};

type Seconds<L> = prometheus_client::metrics::family::Family<
    L,
    prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
>;

/// A series set to `value`, or gone when there is none.
fn set_or_remove<L: Clone + std::hash::Hash + Eq>(family: &Seconds<L>, labels: &L, value: Option<f64>) {
    match value {
        Some(v) => {
            family.get_or_create(labels).set(v);
        }
        None => {
            family.remove(labels);
        }
    }
}

/// The plan's series, as of `status` (the one just written).
pub fn publish(ctx: &Context, plan: &RecoveryPlan, status: &RecoveryPlanStatus, covered: &[ComponentRef]) {
    let m = &ctx.metrics;
    let (ns, name) = (plan.namespace().unwrap_or_default(), plan.name_any());
    let level = |l: u8| PlanLevelLabels {
        namespace: ns.clone(),
        plan: name.clone(),
        level: l.to_string(),
    };
    for l in &plan.spec.levels {
        let window = l.max_window.as_ref().map(|w| w.as_std().as_secs_f64());
        set_or_remove(&m.level_window, &level(l.level), window);
        // Counted from zero, so a first breach shows as an increase.
        let _ = m.deadline_breaches.get_or_create(&crate::telemetry::LevelLabels {
            level: l.level.to_string(),
        });
        let ready = status.readiness.iter().any(|r| r.level == l.level && r.ready);
        m.level_ready.get_or_create(&level(l.level)).set(i64::from(ready));
    }
    let rpo = plan
        .spec
        .levels
        .iter()
        .find(|l| l.applies_to.contains(&ComponentKind::Database))
        .and_then(|l| l.objectives.as_ref()?.rpo.as_ref());
    for c in covered.iter().filter(|c| c.kind == ComponentKind::Database) {
        let labels = ObjectLabels {
            namespace: ns.clone(),
            name: c.name.clone(),
        };
        set_or_remove(&m.database_rpo_target, &labels, rpo.map(|r| r.as_std().as_secs_f64()));
    }
    drills(m, plan, status, &level);
    remember(ctx, &ns, &name, plan.spec.levels.iter().map(|l| l.level).collect());
}

fn drills(m: &Metrics, plan: &RecoveryPlan, status: &RecoveryPlanStatus, level: &dyn Fn(u8) -> PlanLevelLabels) {
    let labels = PlanLabels {
        namespace: plan.namespace().unwrap_or_default(),
        plan: plan.name_any(),
    };
    let last = status.last_drill.as_ref();
    if let Some(spec) = &plan.spec.drills
        && let Some(due) = schedule::next_due(
            &spec.schedule,
            last.map(|d| d.started.0),
            plan.metadata.creation_timestamp.as_ref(),
        )
    {
        m.drill_next_due.get_or_create(&labels).set(unix_seconds(due));
    }
    let Some(d) = last else { return };
    m.drill_started.get_or_create(&labels).set(unix_seconds(d.started.0));
    m.drill_finished
        .get_or_create(&labels)
        .set(d.finished.as_ref().map(|f| unix_seconds(f.0)).unwrap_or(0.0));
    if d.finished.is_some() {
        let verified = d.verified();
        m.drill_verified.get_or_create(&labels).set(i64::from(verified));
    }
    for l in &d.levels {
        let measured = l.measured.as_deref().and_then(|s| s.parse::<Duration>().ok());
        set_or_remove(
            &m.drill_level_seconds,
            &level(l.level),
            measured.map(|s| s.as_std().as_secs_f64()),
        );
    }
}

/// Notes the plan's levels, and removes the series of plans gone from the store.
fn remember(ctx: &Context, ns: &str, name: &str, levels: Vec<u8>) {
    let m = &ctx.metrics;
    let mut published = m.plans_published.lock().unwrap_or_else(|p| p.into_inner());
    published.insert((ns.to_string(), name.to_string()), levels);
    let gone: Vec<(String, String)> = published
        .keys()
        .filter(|(ns, plan)| stores::get(&ctx.stores.recovery_plans, ns, plan).is_none())
        .cloned()
        .collect();
    for key in gone {
        let levels = published.remove(&key).unwrap_or_default();
        forget(m, &key.0, &key.1, &levels);
    }
}

fn forget(m: &Metrics, ns: &str, plan: &str, levels: &[u8]) {
    let labels = PlanLabels {
        namespace: ns.into(),
        plan: plan.into(),
    };
    m.drill_next_due.remove(&labels);
    m.drill_started.remove(&labels);
    m.drill_finished.remove(&labels);
    m.drill_verified.remove(&labels);
    for l in levels {
        let labels = PlanLevelLabels {
            namespace: ns.into(),
            plan: plan.into(),
            level: l.to_string(),
        };
        m.level_window.remove(&labels);
        m.level_ready.remove(&labels);
        m.drill_level_seconds.remove(&labels);
    }
}
