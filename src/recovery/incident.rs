//! Incident reconciler: the incident's times (failure observed, detected,
//! deadline from the plan's level), its measures (to the millisecond), the
//! responders' deliveries, the procedure (see `executor`), and its
//! resolution once the component's health signal is good again — as of when
//! the component was observed healthy.

use crate::runtime::Action;
use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use super::executor::{self, Outcome};
use crate::{
    api::{
        Database, Incident, RecoveryPlan,
        common::{ComponentKind, reasons},
        incident::{IncidentPhase, Measures, StepMeasure},
    },
    runtime::{
        Context, Error,
        report::Report,
        stores,
        validation::{Invalid, report_invalid},
    },
    telemetry::{IncidentLabels, LevelLabels},
};

/// A duration to the millisecond, as Go writes them (`12.345s`).
pub fn secs(from: Timestamp, to: Timestamp) -> String {
    let ms = crate::api::common::millis_between(from, to).max(0);
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

pub fn reconcile(obj: Arc<Incident>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let inc = obj.as_ref();
        let ns = inc.namespace().unwrap_or_default();
        let Some(plan) = stores::get(&ctx.stores.recovery_plans, &ns, &inc.spec.plan_ref.name) else {
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
        let window = plan
            .spec
            .levels
            .iter()
            .find(|l| l.level == inc.spec.level)
            .and_then(|l| l.max_window.as_ref())
            .map(|w| w.as_std());
        let detected = opened(inc).unwrap_or(r.now);
        let observed = inc.spec.observed_at.as_ref().map(|t| t.0).unwrap_or(detected);
        let deadline = window.and_then(|w| detected.checked_add(w).ok());
        r.status.detected_at = Some(MicroTime(detected));
        r.status.failure_observed_at = Some(MicroTime(observed));
        r.status.deadline = deadline.map(MicroTime);
        let mut again = None;
        if let Some(why) = unconfirmed(&ctx, inc) {
            reject(&mut r, &why);
        }
        if super::opening::is_open(inc) && r.status.phase != IncidentPhase::Rejected {
            executor::tell_first(&mut r, &ctx, &plan).await?;
            again = recover(&mut r, &ctx, &plan).await?;
        }
        executor::deliveries(&mut r, &ctx, &plan).await?;
        measure(&mut r, &ctx, observed, detected, deadline.is_some());
        let resolved = r.status.phase == IncidentPhase::Resolved;
        let phase = r.status.phase;
        r.set(
            reasons::READY,
            resolved,
            &format!("{phase:?}"),
            format!("incident is {phase:?}"),
        );
        let closed_at = r.status.closed_at.as_ref().map(|t| t.0);
        let breached = r.status.breached && closed_at.is_none();
        r.write().await?;
        count_open(&ctx, inc, resolved, breached);
        if let Some(closed) = closed_at {
            return retire(&ctx, inc, &plan, closed, again).await;
        }
        Ok(again.map(Action::requeue).unwrap_or_else(Action::await_change))
    }
    .boxed()
}

/// On an Incident's first look, why it is not believed: not opened by this
/// process, and its component is healthy with no sign of a failure or of a
/// recovery (not failing, not seen failing, no action asked or taken since
/// the incident was created). After a restart, an Incident its predecessor
/// opened is believed while its component still fails or recovers; only one
/// whose component is already back and untouched is not.
fn unconfirmed(ctx: &Context, inc: &Incident) -> Option<String> {
    if inc.status.is_some() {
        return None;
    }
    let ns = inc.namespace().unwrap_or_default();
    if ctx.seen.take_opened(&ns, &inc.name_any()) {
        return None;
    }
    let c = &inc.spec.component;
    let component = crate::runtime::stores::component(&ctx.stores, &ns, c);
    let created = inc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    // Not healthy covers failing, restarting and restoring alike.
    let evidence = component.as_deref().is_some_and(|comp| {
        !comp.health().is_some_and(|h| h.healthy)
            || comp.pending_request().is_some()
            || comp
                .last_action()
                .is_some_and(|a| created.is_none_or(|t| a.time.0 >= t))
    }) || ctx.seen.get(&ns, c).is_some();
    (!evidence).then(|| {
        format!(
            "not opened by reprise, and {} {} shows no failure: nobody was told, nothing was done",
            c.kind, c.name
        )
    })
}

fn reject(r: &mut Report<'_, Incident>, why: &str) {
    r.status.phase = IncidentPhase::Rejected;
    r.status.closed_at = Some(MicroTime(r.now));
    r.status.resolution = Some(why.to_string());
    r.event(EventType::Warning, "Rejected", "Detect", why.to_string());
}

/// The procedure moved on; the incident resolved (or abandoned) when that is
/// where it stands; the deadline watched. Returns when to look again.
async fn recover(r: &mut Report<'_, Incident>, ctx: &Context, plan: &RecoveryPlan) -> Result<Option<Duration>, Error> {
    let inc = r.obj;
    let level = inc.spec.level.to_string();
    let c = &inc.spec.component;
    let deadline = r.status.deadline.as_ref().map(|t| t.0);
    let again = match executor::advance(r, ctx, plan).await? {
        Outcome::Resolved(res) => {
            let detected = r.status.detected_at.as_ref().map(|t| t.0).unwrap_or(r.now);
            let at = res.at.max(detected);
            r.status.phase = IncidentPhase::Resolved;
            r.status.closed_at = Some(MicroTime(at));
            r.status.breached = deadline.is_some_and(|d| at > d);
            r.status.resolution = Some(res.how.clone());
            let outcome = if r.status.breached { "Breached" } else { "Resolved" };
            ctx.metrics
                .incidents
                .get_or_create(&IncidentLabels {
                    level: level.clone(),
                    kind: c.kind.as_str().into(),
                    outcome: outcome.into(),
                })
                .inc();
            let took = at.duration_since(detected).as_secs_f64().max(0.0);
            ctx.metrics
                .recovery_duration
                .get_or_create(&LevelLabels { level: level.clone() })
                .observe(took);
            r.event(
                EventType::Normal,
                "Resolved",
                "Recover",
                format!(
                    "{} {} is healthy again after {} ({}; deadline {})",
                    c.kind,
                    c.name,
                    secs(detected, at),
                    res.how,
                    if r.status.breached { "breached" } else { "met" }
                ),
            );
            return Ok(None);
        }
        Outcome::Abandoned(why) => {
            r.status.phase = IncidentPhase::Failed;
            r.status.closed_at = Some(MicroTime(r.now));
            r.status.resolution = Some(why.clone());
            r.event(EventType::Warning, "Abandoned", "Recover", why);
            return Ok(None);
        }
        Outcome::Again(d) => Some(d),
        Outcome::Idle => None,
    };
    let Some(d) = deadline else { return Ok(again) };
    if r.now > d && !r.status.breached {
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
        return Ok(again);
    }
    let until = Duration::from_millis((d.as_millisecond() - r.now.as_millisecond()).max(1000) as u64);
    Ok(Some(again.map_or(until, |a| a.min(until))))
}

/// When the incident was opened: its opener's time to the microsecond when
/// it falls within a second of `creationTimestamp` (whole seconds, the API
/// server's), that otherwise. A hand-written `openedAt` moves nothing far.
fn opened(inc: &Incident) -> Option<Timestamp> {
    let created = inc.metadata.creation_timestamp.as_ref()?.0;
    let refined = inc.spec.opened_at.as_ref().map(|t| t.0).filter(|t| {
        let off = created.duration_until(*t).as_millis();
        (-1000..1000).contains(&off)
    });
    Some(refined.unwrap_or(created))
}

/// The measures: times to detect and recover, each step's duration, the
/// data a database restore moved and lost, the deadline.
fn measure(r: &mut Report<'_, Incident>, ctx: &Context, observed: Timestamp, detected: Timestamp, has_deadline: bool) {
    let inc = r.obj;
    let mut m = r.status.measures.clone().unwrap_or_default();
    m.time_to_detect = Some(secs(observed, detected));
    if let (IncidentPhase::Resolved, Some(closed)) = (r.status.phase, &r.status.closed_at) {
        m.time_to_recover = Some(secs(detected, closed.0));
    }
    let ns = inc.namespace().unwrap_or_default();
    match inc.spec.component.kind {
        ComponentKind::Database => data_measures(ctx, &ns, &inc.spec.component.name, observed, &mut m),
        ComponentKind::Site => site_measures(ctx, &ns, &inc.spec.component.name, &mut m),
        _ => {}
    }
    m.steps = r
        .status
        .timeline
        .iter()
        .filter_map(|e| {
            let end = e.finished.as_ref()?;
            Some(StepMeasure {
                step: e.step.clone(),
                attempt: e.attempt,
                outcome: e.outcome,
                duration: secs(e.started.0, end.0),
            })
        })
        .collect();
    let closed = r.status.closed_at.is_some();
    // An open-ended level (no maximum window) has no deadline to meet.
    m.deadline_met = match (closed, r.status.breached, has_deadline) {
        (_, true, _) => Some(false),
        (true, false, true) => Some(true),
        _ => None,
    };
    r.status.measures = Some(m);
}

/// For a Database: the data its restore after this failure moved and lost.
fn data_measures(ctx: &Context, ns: &str, name: &str, observed: Timestamp, m: &mut Measures) {
    let db: Option<Database> = stores::get(&ctx.stores.databases, ns, name);
    let Some(restore) = db.and_then(|d| d.status).and_then(|s| s.last_restore) else {
        return;
    };
    if restore.failure_observed.0.as_second() + 1 < observed.as_second() {
        return; // an older restore
    }
    m.data_restored_bytes = Some(restore.bytes_restored);
    m.data_loss_window = restore.data_loss_window_seconds.map(|s| format!("{}s", s.max(0)));
}

/// For a Site: what its failover's databases restored, and the most data
/// any lost: from its recovery point to the lost site's last heartbeat.
fn site_measures(ctx: &Context, ns: &str, name: &str, m: &mut Measures) {
    let Some(f) = stores::get(&ctx.stores.sites, ns, name).and_then(|s| s.status?.failover) else {
        return;
    };
    let dbs = f.waves.iter().filter(|w| w.kind == "Database").flat_map(|w| &w.objects);
    let (mut bytes, mut lost) = (0u64, None::<i64>);
    for db in dbs {
        let restore = stores::get(&ctx.stores.databases, ns, db).and_then(|d| d.status?.last_restore);
        let Some(r) = restore.filter(|r| r.started.0 >= f.at.0) else {
            continue;
        };
        bytes += r.bytes_restored;
        let point = r.point();
        if let (Some(p), Some(h)) = (point, f.last_heartbeat.as_ref()) {
            let ms = (h.0.as_millisecond() - p.as_millisecond()).max(0);
            lost = Some(lost.map_or(ms, |l| l.max(ms)));
        }
    }
    m.data_restored_bytes = Some(bytes);
    m.data_loss_window = lost.map(|ms| format!("{}.{:03}s", ms / 1000, ms % 1000));
}

/// Open incidents per level, from the store (this write included or not, it converges).
fn count_open(ctx: &Context, inc: &Incident, resolved: bool, this_breached: bool) {
    let others: Vec<_> = super::opening::all_open(&ctx.stores)
        .into_iter()
        .filter(|i| i.spec.level == inc.spec.level && i.uid() != inc.uid())
        .collect();
    let open_now = others.len() + usize::from(!resolved && inc.status.as_ref().is_none_or(|s| s.closed_at.is_none()));
    let level = LevelLabels {
        level: inc.spec.level.to_string(),
    };
    ctx.metrics.open_incidents.get_or_create(&level).set(open_now as i64);
    // Those past their deadline, which alert rules page on.
    let breached = |i: &Incident| i.status.as_ref().is_some_and(|s| s.breached && s.closed_at.is_none());
    let breached_now = others.iter().filter(|i| breached(i)).count() + usize::from(this_breached);
    ctx.metrics
        .open_incidents_breached
        .get_or_create(&level)
        .set(breached_now as i64);
}

/// Closed incidents are the audit trail for the plan's retention, then go.
async fn retire(
    ctx: &Context,
    inc: &Incident,
    plan: &RecoveryPlan,
    closed: Timestamp,
    again: Option<Duration>,
) -> Result<Action, Error> {
    let expires = closed.as_second() + plan.spec.incident_retention.as_std().as_secs() as i64;
    let left = expires - Timestamp::now().as_second();
    if left > 0 {
        let left = Duration::from_secs(left as u64);
        return Ok(Action::requeue(again.map_or(left, |a| a.min(left))));
    }
    let api: kube::Api<Incident> = kube::Api::namespaced(ctx.client.clone(), &inc.namespace().unwrap_or_default());
    match api.delete(&inc.name_any(), &Default::default()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Ok(_) => {
            ctx.metrics.wrote("Incident", "delete");
            tracing::info!(incident = %inc.name_any(), "incident past the plan's retention: deleted");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_to_the_millisecond() {
        let a: Timestamp = "2026-11-30T10:00:00.250Z".parse().unwrap();
        let b: Timestamp = "2026-11-30T10:00:33.662Z".parse().unwrap();
        assert_eq!(secs(a, b), "33.412s");
        assert_eq!(secs(b, a), "0.000s");
        let _: crate::api::common::Duration = secs(a, b).parse().unwrap();
    }

    fn incident(created: &str, opened_at: Option<&str>) -> Incident {
        let mut spec: crate::api::incident::IncidentSpec = serde_json::from_value(serde_json::json!({
            "planRef": {"name": "pra"}, "component": {"kind": "Database", "name": "db"},
            "level": 1, "cause": "x"
        }))
        .unwrap();
        spec.opened_at = opened_at.map(|t| MicroTime(t.parse().unwrap()));
        let mut inc = Incident::new("i", spec);
        inc.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            created.parse().unwrap(),
        ));
        inc
    }

    #[test]
    fn the_opening_is_known_to_the_microsecond_within_its_second() {
        let t = |s: &str| -> Timestamp { s.parse().unwrap() };
        let at = |c, o| opened(&incident(c, o)).unwrap();
        // The opener's clock refines the API server's whole second...
        assert_eq!(
            at("2026-11-30T10:00:45Z", Some("2026-11-30T10:00:45.749Z")),
            t("2026-11-30T10:00:45.749Z")
        );
        // ...also when the request crossed a second's boundary on the way...
        assert_eq!(
            at("2026-11-30T10:00:46Z", Some("2026-11-30T10:00:45.999Z")),
            t("2026-11-30T10:00:45.999Z")
        );
        // ...but a time far from the creation (written by hand) moves nothing.
        assert_eq!(
            at("2026-11-30T10:00:45Z", Some("2026-11-29T10:00:45Z")),
            t("2026-11-30T10:00:45Z")
        );
        assert_eq!(at("2026-11-30T10:00:45Z", None), t("2026-11-30T10:00:45Z"));
    }
}
