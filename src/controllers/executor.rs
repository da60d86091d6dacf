//! The procedure executor: runs the plan's steps for the failed component's
//! kind, in order, through the action each component controller exposes
//! (`reprise.dev/action: <action>/<request id>`, carried out once per id).
//! Each step is written to the incident's timeline *before* it is asked for
//! (outcome `Running`) and again when it ends, so a new leader after a crash
//! finds the step under way, asks again with the same request id (which the
//! component controller will not run twice), and never re-runs a finished step.
//! A step ends `Succeeded` when the component is healthy again, `Failed` when
//! its controller refused or failed the action, `TimedOut` after its timeout;
//! a failed step is retried `retries` times, then the next step runs.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::DeserializeGuard,
    runtime::events::EventType,
};
use serde_json::json;

use super::{Context, Error, components, kind::Kind, status::Report};
use crate::api::{
    Application, Database, Incident, Server, VirtualMachine,
    application::DependencyKind,
    common::{ACTION_ANNOTATION, ActionRecord, ComponentKind, ComponentRef},
    database::DatabaseHealthState,
    incident::{APPROVE_ANNOTATION, IncidentPhase, TimelineEntry},
    recovery_plan::{Action as StepAction, RecoveryPlan, Step},
    virtual_machine::VmHealthState,
};

/// The component controller's name for a step's action.
fn verb(a: StepAction) -> Option<&'static str> {
    Some(match a {
        StepAction::Restart => "restart",
        StepAction::Recreate => "recreate",
        StepAction::Rollback => "rollback",
        StepAction::Reconnect => "reconnect",
        StepAction::Restore => "restore",
        StepAction::RestoreSnapshot => "restoreSnapshot",
        StepAction::Move => "move",
        StepAction::PowerCycle => "powerCycle",
        StepAction::Reprovision => "reprovision",
        StepAction::Notify | StepAction::WaitForApproval | StepAction::AwaitRecovery => return None,
    })
}

/// The component's pending request (its action annotation) and its record of
/// the last action it carried out.
pub(super) fn component_action(ctx: &Context, ns: &str, c: &ComponentRef) -> (Option<String>, Option<ActionRecord>) {
    fn read<K: Kind>(
        store: &kube::runtime::reflector::Store<DeserializeGuard<K>>,
        ns: &str,
        name: &str,
        last: impl Fn(&K) -> Option<ActionRecord>,
    ) -> (Option<String>, Option<ActionRecord>) {
        match components::get(store, ns, name) {
            Some(o) => (o.annotations().get(ACTION_ANNOTATION).cloned(), last(&o)),
            None => (None, None),
        }
    }
    let s = &ctx.stores;
    match c.kind {
        ComponentKind::Application => {
            read::<Application>(&s.applications, ns, &c.name, |o| o.status.as_ref()?.last_action.clone())
        }
        ComponentKind::Database => {
            read::<Database>(&s.databases, ns, &c.name, |o| o.status.as_ref()?.last_action.clone())
        }
        ComponentKind::VirtualMachine => read::<VirtualMachine>(&s.virtual_machines, ns, &c.name, |o| {
            o.status.as_ref()?.last_action.clone()
        }),
        ComponentKind::Server => read::<Server>(&s.servers, ns, &c.name, |o| o.status.as_ref()?.last_action.clone()),
    }
}

/// Asks the component's controller for `action` (idempotent: same id, same request).
pub(super) async fn ask(ctx: &Context, ns: &str, c: &ComponentRef, action: &str, id: &str) -> Result<(), Error> {
    let patch = json!({"metadata": {"annotations": {ACTION_ANNOTATION: format!("{action}/{id}")}}});
    let pp = PatchParams::default();
    macro_rules! on {
        ($k:ty) => {{
            let api: Api<$k> = Api::namespaced(ctx.client.clone(), ns);
            api.patch(&c.name, &pp, &Patch::Merge(&patch)).await?;
            ctx.metrics.wrote(&<$k>::kind(&()), "action");
        }};
    }
    match c.kind {
        ComponentKind::Application => on!(Application),
        ComponentKind::Database => on!(Database),
        ComponentKind::VirtualMachine => on!(VirtualMachine),
        ComponentKind::Server => on!(Server),
    }
    Ok(())
}

/// The components `c` depends on that are failing or have an open incident:
/// they recover first (a database before the applications that use it).
fn waiting_on(ctx: &Context, ns: &str, c: &ComponentRef) -> Vec<String> {
    if c.kind != ComponentKind::Application {
        return vec![];
    }
    let Some(app) = components::get::<Application>(&ctx.stores.applications, ns, &c.name) else {
        return vec![];
    };
    let open = super::opening::open(&ctx.stores);
    app.spec
        .depends_on
        .iter()
        .filter_map(|d| {
            let dep = ComponentRef {
                kind: match d.kind {
                    DependencyKind::Database => ComponentKind::Database,
                    DependencyKind::VirtualMachine => ComponentKind::VirtualMachine,
                },
                name: d.name.clone(),
            };
            let incident = open
                .iter()
                .find(|i| i.namespace().as_deref() == Some(ns) && i.spec.component == dep)
                .map(|i| format!(" (Incident {})", i.name_any()));
            let failing = super::detection::failure(&ctx.stores, ns, &dep).is_some();
            (incident.is_some() || failing)
                .then(|| format!("{} {}{}", dep.kind, dep.name, incident.unwrap_or_default()))
        })
        .collect()
}

const SELF_REPAIR: &str = "await-self-repair";
/// The longest the procedure waits for a component's own repair (seconds).
const SELF_REPAIR_CAP: i64 = 300;

/// A repair the component's own controller has under way, if any: the
/// procedure lets it finish rather than act over it (a power cycle on top of
/// a power-on, a restore on top of a restore, a restart of a Deployment just
/// recreated).
fn self_repair(ctx: &Context, ns: &str, c: &ComponentRef) -> Option<String> {
    let s = &ctx.stores;
    match c.kind {
        ComponentKind::Database => {
            let db = components::get::<Database>(&s.databases, ns, &c.name)?;
            let h = db.status?.health?;
            (h.state == DatabaseHealthState::Restoring)
                .then(|| format!("Database {} is restoring from its backup on its own", c.name))
        }
        ComponentKind::Server => {
            let server = components::get::<Server>(&s.servers, ns, &c.name)?;
            let p = server.status?.power_request?;
            let age = Timestamp::now().as_second() - p.time.0.as_second();
            (["On", "ForceRestart"].contains(&p.reset_type.as_str()) && age < 120).then(|| {
                format!(
                    "Server {}'s controller asked its BMC for {} {age}s ago",
                    c.name, p.reset_type
                )
            })
        }
        ComponentKind::VirtualMachine => {
            let vm = components::get::<VirtualMachine>(&s.virtual_machines, ns, &c.name)?;
            let h = vm.status?.health?;
            (h.state == VmHealthState::Restoring).then(|| format!("VirtualMachine {} is restoring a snapshot", c.name))
        }
        ComponentKind::Application => {
            // A Deployment the controller has just (re)created: its pods are coming.
            let key = kube::runtime::reflector::ObjectRef::new(&c.name).within(ns);
            let d = s.deployments.get(&key)?;
            let age = Timestamp::now().as_second() - d.metadata.creation_timestamp.as_ref()?.0.as_second();
            (age < 120).then(|| format!("Deployment {} was created {age}s ago; its pods are starting", c.name))
        }
    }
}

/// Why the procedure waits before its next action step, if it does: the
/// step name recorded in the timeline and a message.
fn wait_reason(
    ctx: &Context,
    ns: &str,
    c: &ComponentRef,
    timeline: &[TimelineEntry],
) -> Option<(&'static str, String)> {
    let deps = waiting_on(ctx, ns, c);
    if !deps.is_empty() {
        return Some((
            "await-dependencies",
            format!("waiting for {} to recover first", deps.join(", ")),
        ));
    }
    // Once per incident: a repair that did not help is not waited on again.
    if timeline.iter().any(|e| e.step == SELF_REPAIR) {
        return None;
    }
    self_repair(ctx, ns, c).map(|m| (SELF_REPAIR, format!("waiting: {m}")))
}

/// The request id of a step's attempt: unique per incident, step and attempt.
fn request_id(inc: &Incident, step: &str, attempt: u32) -> String {
    format!(
        "{}.{step}.{attempt}",
        inc.uid().unwrap_or_default().chars().take(8).collect::<String>()
    )
}

/// Escalates: tells the next responder of the level not yet escalated to
/// (the first one was told at opening) and sets phase `Escalated`.
async fn escalate(r: &mut Report<'_, Incident>, ctx: &Context, plan: &RecoveryPlan, why: String) -> Result<(), Error> {
    let inc = r.obj;
    let Some(level) = plan.spec.levels.iter().find(|l| l.level == inc.spec.level) else {
        return Ok(());
    };
    r.status.phase = IncidentPhase::Escalated;
    // The next responders in order, past those who cannot be called (a vendor whose contract ended).
    for lr in level.responders.iter().skip(1) {
        let step = format!("escalate-{}", lr.name);
        if r.status.timeline.iter().any(|e| e.step == step) {
            continue;
        }
        let started = Timestamp::now();
        let (outcome, detail, _) = super::notify::deliver(ctx, inc, plan, &lr.name, &lr.modes, &r.status).await?;
        let message = format!("{}: {outcome} ({detail})", lr.name);
        r.event(
            EventType::Warning,
            "Escalated",
            "Escalate",
            format!("{why}; escalated to {}: {message}", lr.name),
        );
        r.status.timeline.push(TimelineEntry {
            step,
            action: StepAction::Notify,
            attempt: 1,
            started: Time(started),
            finished: Some(Time(Timestamp::now())),
            outcome: outcome.into(),
            message: format!("{why}; {message}"),
            bytes: None,
        });
        if outcome != "Skipped" {
            return Ok(());
        }
    }
    r.event(
        EventType::Warning,
        "Escalated",
        "Escalate",
        format!("{why}; no responder left to escalate to"),
    );
    Ok(())
}

/// Moves the procedure on. `healthy`: the component's signal is good again.
/// Returns when to look again.
pub async fn advance(
    r: &mut Report<'_, Incident>,
    ctx: &Context,
    plan: &RecoveryPlan,
    healthy: bool,
) -> Result<Option<Duration>, Error> {
    let inc = r.obj;
    let ns = inc.namespace().unwrap_or_default();
    let c = inc.spec.component.clone();
    let Some(procedure) = plan.spec.procedures.iter().find(|p| p.kind == c.kind) else {
        return Ok(None);
    };
    let steps: &[Step] = &procedure.steps;
    let now = Timestamp::now();
    let is_step = |e: &TimelineEntry| e.action != StepAction::AwaitRecovery && steps.iter().any(|s| s.name == e.step);

    // Waiting (dependencies, the component's own repair): done when the reason is gone.
    if let Some(i) = r
        .status
        .timeline
        .iter()
        .rposition(|e| e.action == StepAction::AwaitRecovery && e.finished.is_none())
    {
        let entry = r.status.timeline[i].clone();
        let still = match entry.step.as_str() {
            SELF_REPAIR => self_repair(ctx, &ns, &c).is_some(),
            _ => !waiting_on(ctx, &ns, &c).is_empty(),
        };
        let waited = now.as_second() - entry.started.0.as_second();
        let capped = entry.step == SELF_REPAIR && waited > SELF_REPAIR_CAP;
        if !healthy && still && !capped {
            return Ok(Some(Duration::from_secs(2)));
        }
        let (outcome, done) = if capped {
            ("TimedOut", format!("not done after {SELF_REPAIR_CAP}s"))
        } else {
            ("Succeeded", "done".to_string())
        };
        let e = &mut r.status.timeline[i];
        e.finished = Some(Time(now));
        e.outcome = outcome.into();
        e.message = format!("{}; {done}", e.message);
        r.event(
            EventType::Normal,
            "Step",
            "Recover",
            format!("{}: {done}; the procedure goes on", entry.step),
        );
    }

    // A step under way: has it ended?
    if let Some(i) = r
        .status
        .timeline
        .iter()
        .rposition(|e| is_step(e) && e.finished.is_none())
    {
        let entry = r.status.timeline[i].clone();
        let step = steps.iter().find(|s| s.name == entry.step).expect("is_step");
        let id = request_id(inc, &step.name, entry.attempt);
        let ended = |outcome: &str, message: String| (outcome.to_string(), message);
        let result = if healthy {
            Some(ended("Succeeded", format!("{} {} is healthy again", c.kind, c.name)))
        } else if now.as_second() - entry.started.0.as_second() > step.timeout.as_std().as_secs() as i64 {
            Some(ended(
                "TimedOut",
                format!("still failing after {}", step.timeout.as_str()),
            ))
        } else {
            match step.action {
                StepAction::WaitForApproval => {
                    let v = inc.annotations().get(APPROVE_ANNOTATION).cloned();
                    match v.filter(|v| !v.is_empty() && v != "false") {
                        Some(who) => {
                            r.status.approved_by = Some(if who == "true" {
                                "someone (annotation)".into()
                            } else {
                                who
                            });
                            Some(ended("Succeeded", "approved".into()))
                        }
                        None => None,
                    }
                }
                StepAction::Notify => None,
                a => {
                    let verb = verb(a).expect("component action");
                    let (pending, last) = component_action(ctx, &ns, &c);
                    match last.filter(|rec| rec.id == id) {
                        Some(rec) if rec.outcome != "Done" => Some(ended("Failed", rec.message)),
                        Some(_) => None, // done: wait for the component to be healthy (or the timeout)
                        None => {
                            // Not asked yet (a crash between the timeline write and the
                            // request): ask, with the same id. Asked and not yet carried out: wait.
                            if pending.as_deref() != Some(format!("{verb}/{id}").as_str()) {
                                ask(ctx, &ns, &c, verb, &id).await?;
                            }
                            None
                        }
                    }
                }
            }
        };
        match result {
            None => {
                if step.action == StepAction::WaitForApproval {
                    r.status.phase = IncidentPhase::AwaitingApproval;
                }
                return Ok(Some(Duration::from_secs(2)));
            }
            Some((outcome, message)) => {
                let e = &mut r.status.timeline[i];
                e.finished = Some(Time(now));
                e.outcome = outcome.clone();
                e.message = message.clone();
                r.event(
                    if outcome == "Succeeded" {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    },
                    "Step",
                    "Recover",
                    format!(
                        "{} ({:?}, attempt {}): {outcome}: {message}",
                        step.name, step.action, entry.attempt
                    ),
                );
                if outcome == "Succeeded" || healthy {
                    return Ok(None);
                }
                if entry.attempt > step.retries {
                    escalate(
                        r,
                        ctx,
                        plan,
                        format!("step {} {} for good", step.name, outcome.to_lowercase()),
                    )
                    .await?;
                }
            }
        }
    }
    if healthy {
        return Ok(None);
    }
    // Half the level's window gone without resolution: escalate (once).
    if let (Some(d), Some(t)) = (&r.status.deadline, &r.status.detected_at) {
        let half = t.0.as_second() + (d.0.as_second() - t.0.as_second()) / 2;
        let any_escalation = r.status.timeline.iter().any(|e| e.step.starts_with("escalate-"));
        if now.as_second() >= half && !any_escalation {
            escalate(r, ctx, plan, "half the level's window has passed".into()).await?;
        }
    }

    // The next step: the first whose attempts are not used up and that has not succeeded.
    let next = steps.iter().find_map(|s| {
        let tries: Vec<&TimelineEntry> = r.status.timeline.iter().filter(|e| e.step == s.name).collect();
        let succeeded = tries.iter().any(|e| e.outcome == "Succeeded" || e.outcome == "Skipped");
        let used = tries.len() as u32;
        (!succeeded && used <= s.retries).then(|| (s.clone(), used + 1))
    });
    let Some((step, attempt)) = next else {
        if inc.spec.notify_only.is_some() {
            // People repair it; the incident resolves when the signal is good again.
            return Ok(None);
        }
        if r.status.phase != IncidentPhase::Failed {
            r.status.phase = IncidentPhase::Failed;
            r.event(
                EventType::Warning,
                "ProcedureExhausted",
                "Recover",
                format!(
                    "every step of the {} procedure ran; {} {} still fails",
                    c.kind, c.kind, c.name
                ),
            );
        }
        return Ok(None);
    };
    // Retries wait 2^attempt seconds after the previous attempt ended.
    if attempt > 1
        && let Some(prev) = r.status.timeline.iter().rev().find(|e| e.step == step.name)
        && let Some(end) = &prev.finished
    {
        let wait = 1i64 << (attempt - 1).min(6);
        if now.as_second() - end.0.as_second() < wait {
            return Ok(Some(Duration::from_secs(wait as u64)));
        }
    }
    let mut entry = TimelineEntry {
        step: step.name.clone(),
        action: step.action,
        attempt,
        started: Time(now),
        finished: None,
        outcome: "Running".into(),
        message: String::new(),
        bytes: None,
    };
    if verb(step.action).is_some() {
        let left = r.status.deadline.as_ref().map(|d| d.0.as_second() - now.as_second());
        let skip = match (&inc.spec.notify_only, left) {
            (Some(w), _) => Some(format!("MaintenanceWindow {w} is NotifyOnly: people recover it")),
            (None, Some(left)) if left < step.timeout.as_std().as_secs() as i64 => Some(format!(
                "would end past the deadline ({} timeout, {}s left)",
                step.timeout.as_str(),
                left.max(0)
            )),
            _ => None,
        };
        if let Some(why) = skip {
            entry.finished = Some(Time(now));
            entry.outcome = "Skipped".into();
            entry.message = why.clone();
            r.status.timeline.push(entry);
            r.event(
                EventType::Warning,
                "Step",
                "Recover",
                format!("{} ({:?}) skipped: {why}", step.name, step.action),
            );
            if inc.spec.notify_only.is_none() {
                escalate(r, ctx, plan, format!("step {} {why}", step.name)).await?;
            }
            return Ok(Some(Duration::from_secs(1)));
        }
        if let Some((name, message)) = wait_reason(ctx, &ns, &c, &r.status.timeline) {
            r.event(EventType::Normal, "Step", "Recover", message.clone());
            let tries = r.status.timeline.iter().filter(|e| e.step == name).count();
            r.status.timeline.push(TimelineEntry {
                step: name.into(),
                action: StepAction::AwaitRecovery,
                attempt: tries as u32 + 1,
                message,
                ..entry
            });
            r.status.phase = IncidentPhase::Recovering;
            return Ok(Some(Duration::from_secs(2)));
        }
    }
    if r.status.phase != IncidentPhase::Escalated {
        r.status.phase = IncidentPhase::Recovering;
    }
    if step.action == StepAction::Notify {
        // Delivered at once; recorded as one finished entry.
        let (outcome, message) = super::notify::step(ctx, inc, plan, step.responder.as_deref(), &r.status).await?;
        entry.finished = Some(Time(Timestamp::now()));
        entry.outcome = outcome;
        entry.message = message;
        r.status.timeline.push(entry);
        return Ok(Some(Duration::from_secs(1)));
    }
    // Written first, then asked: a crash in between is picked up above.
    r.status.timeline.push(entry);
    r.checkpoint().await?;
    if let Some(v) = verb(step.action) {
        ask(ctx, &ns, &c, v, &request_id(inc, &step.name, attempt)).await?;
    }
    r.event(
        EventType::Normal,
        "Step",
        "Recover",
        format!("{} ({:?}, attempt {attempt}) started", step.name, step.action),
    );
    Ok(Some(Duration::from_secs(2)))
}
