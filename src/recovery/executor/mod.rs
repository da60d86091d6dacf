//! The procedure executor: runs the plan's steps for the failed component's
//! kind, in order, through the actions the component exposes (the contract's
//! `reprise.dev/action: <verb>/<request id>`, carried out once per id). What
//! to do next is a pure decision ([`decide`]); this module carries it out.
//! Each step is written to the incident's timeline *before* it is asked for
//! (outcome `Running`) and again when it ends, so a new leader after a crash
//! finds the step under way, asks again with the same request id (which the
//! component will not run twice), and never re-runs a finished step.

pub mod decide;

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use super::{notify, opening};
use crate::{
    api::{
        Incident,
        contract::{Component, StepOutcome, verb_of_step},
        incident::{APPROVE_ANNOTATION, IncidentPhase, TimelineEntry},
        recovery_plan::{Action as StepAction, RecoveryPlan, Step},
    },
    runtime::{Context, Error, report::Report, stores},
};
use decide::{ComponentFacts, Facts, Next};

/// The most decisions carried out in one reconcile (each ends a wait or starts one).
const MAX_MOVES: usize = 16;

/// What the component shows the engine.
fn facts_of(c: &dyn Component, now: Timestamp) -> ComponentFacts {
    ComponentFacts {
        health: c.health(),
        last_action: c.last_action().cloned(),
        pending: c.pending_request(),
        own_repair: c.own_repair(now),
        repair_cap: c.own_repair_cap(),
    }
}

/// The components `c` depends on that are failing or have an open incident:
/// they recover first (a database before the applications that use it).
fn waiting_on(ctx: &Context, ns: &str, c: &dyn Component) -> Vec<String> {
    c.depends_on()
        .into_iter()
        .filter_map(|dep| {
            let incident = opening::open_for(&ctx.stores, ns, &dep).map(|i| format!(" (Incident {})", i.name_any()));
            let failing = super::detection::failure(&ctx.stores, ns, &dep).is_some();
            (incident.is_some() || failing)
                .then(|| format!("{} {}{}", dep.kind, dep.name, incident.unwrap_or_default()))
        })
        .collect()
}

/// The request ids' prefix: the incident's uid, shortened.
fn prefix(inc: &Incident) -> String {
    inc.uid().unwrap_or_default().chars().take(8).collect()
}

/// The plan's steps for the incident's component kind (a Site without
/// its own procedure: a person approves, then it takes over).
fn steps(plan: &RecoveryPlan, inc: &Incident) -> Vec<Step> {
    let kind = inc.spec.component.kind;
    match plan.spec.procedures.iter().find(|p| p.kind == kind) {
        Some(p) => p.steps.clone(),
        None if kind == crate::api::common::ComponentKind::Site => crate::api::recovery_plan::default_site_steps(),
        None => vec![],
    }
}

/// What the resolution says: when healthy was observed and how.
pub struct Resolution {
    pub at: Timestamp,
    pub how: String,
}

/// How the procedure stands after this pass.
pub enum Outcome {
    /// Look again after this long.
    Again(Duration),
    /// The component is healthy again.
    Resolved(Resolution),
    /// The component is gone.
    Abandoned(String),
    /// Nothing to do until something changes.
    Idle,
}

/// Moves the procedure on as far as it can go now.
pub async fn advance(r: &mut Report<'_, Incident>, ctx: &Context, plan: &RecoveryPlan) -> Result<Outcome, Error> {
    let inc = r.obj;
    let ns = inc.namespace().unwrap_or_default();
    let component = stores::component(&ctx.stores, &ns, &inc.spec.component);
    let facts = component.as_ref().map(|c| facts_of(c.as_ref(), r.now));
    let waiting = component
        .as_ref()
        .map(|c| waiting_on(ctx, &ns, c.as_ref()))
        .unwrap_or_default();
    let details = component.as_ref().map(|c| c.responder_details()).unwrap_or_default();
    let steps = &steps(plan, inc);
    let prefix = prefix(inc);
    for _ in 0..MAX_MOVES {
        let next = decide::decide(&Facts {
            now: r.now,
            steps,
            timeline: &r.status.timeline,
            phase: r.status.phase,
            detected_at: r.status.detected_at.as_ref().map(|t| t.0).unwrap_or(r.now),
            observed_at: inc.spec.observed_at.as_ref().map(|t| t.0),
            deadline: r.status.deadline.as_ref().map(|t| t.0),
            notify_only: inc.spec.notify_only.as_deref(),
            approval: inc.annotations().get(APPROVE_ANNOTATION).map(String::as_str),
            component: facts.as_ref(),
            waiting_on: &waiting,
            request_prefix: &prefix,
        });
        if let Some(done) = carry_out(r, ctx, plan, steps, &details, next).await? {
            return Ok(done);
        }
    }
    Ok(Outcome::Again(Duration::from_secs(1)))
}

/// Carries one decision out. Returns where the procedure stands when it
/// stops here (None: decide again).
async fn carry_out(
    r: &mut Report<'_, Incident>,
    ctx: &Context,
    plan: &RecoveryPlan,
    steps: &[Step],
    details: &serde_json::Value,
    next: Next,
) -> Result<Option<Outcome>, Error> {
    let inc = r.obj;
    let ns = inc.namespace().unwrap_or_default();
    Ok(match next {
        Next::Resolve { at, how } => Some(Outcome::Resolved(Resolution { at, how })),
        Next::Abandon { why } => Some(Outcome::Abandoned(why)),
        Next::Wait { after, phase } => {
            if let Some(p) = phase {
                set_phase(r, p);
            }
            Some(Outcome::Again(after))
        }
        Next::End {
            index,
            outcome,
            message,
            escalate,
        } => {
            end(r, index, outcome, message);
            if let Some(why) = escalate {
                escalation(r, ctx, plan, why, details).await?;
            }
            None
        }
        Next::Approved { index, by } => {
            r.status.approved_by = Some(by.clone());
            end(r, index, StepOutcome::Succeeded, format!("approved by {by}"));
            None
        }
        Next::Ask { verb, id } => {
            stores::request_action(ctx, &ns, &inc.spec.component, verb, &id).await?;
            Some(Outcome::Again(Duration::from_secs(2)))
        }
        Next::Start { step, attempt } => {
            start(r, ctx, plan, &steps[step], attempt, details).await?;
            Some(Outcome::Again(Duration::from_secs(2)))
        }
        Next::Await { name, message } => {
            r.event(EventType::Normal, "Step", "Recover", message.clone());
            let tries = r.status.timeline.iter().filter(|e| e.step == name).count();
            push(
                r,
                name,
                StepAction::AwaitRecovery,
                tries as u32 + 1,
                StepOutcome::Running,
                message,
            );
            set_phase(r, IncidentPhase::Recovering);
            Some(Outcome::Again(Duration::from_secs(2)))
        }
        Next::Skip {
            step,
            attempt,
            why,
            escalate,
        } => {
            let s = &steps[step];
            r.event(
                EventType::Warning,
                "Step",
                "Recover",
                format!("{} ({:?}) skipped: {why}", s.name, s.action),
            );
            push(r, &s.name, s.action, attempt, StepOutcome::Skipped, why.clone());
            if escalate {
                escalation(r, ctx, plan, format!("step {} {why}", s.name), details).await?;
            }
            None
        }
        Next::Escalate { why } => {
            escalation(r, ctx, plan, why, details).await?;
            None
        }
        Next::Exhausted => {
            if r.status.phase != IncidentPhase::Failed {
                r.status.phase = IncidentPhase::Failed;
                let c = &inc.spec.component;
                r.event(
                    EventType::Warning,
                    "ProcedureExhausted",
                    "Recover",
                    format!(
                        "every step of the {} procedure ran; {} {} still fails: it is left to people, and resolves when it is healthy again",
                        c.kind, c.kind, c.name
                    ),
                );
            }
            Some(Outcome::Idle)
        }
    })
}

fn set_phase(r: &mut Report<'_, Incident>, phase: IncidentPhase) {
    // Escalated stays until the incident ends.
    if r.status.phase != IncidentPhase::Escalated || phase == IncidentPhase::AwaitingApproval {
        r.status.phase = phase;
    }
}

/// Appends an entry; a finished one (not `Running`) is stamped finished now.
fn push(
    r: &mut Report<'_, Incident>,
    step: &str,
    action: StepAction,
    attempt: u32,
    outcome: StepOutcome,
    message: String,
) {
    let now = MicroTime(r.now);
    r.status.timeline.push(TimelineEntry {
        step: step.into(),
        action,
        attempt,
        started: now.clone(),
        finished: (outcome != StepOutcome::Running).then_some(now),
        outcome,
        message,
        bytes: None,
    });
}

/// Ends entry `index`.
fn end(r: &mut Report<'_, Incident>, index: usize, outcome: StepOutcome, message: String) {
    let now = MicroTime(r.now);
    let e = &mut r.status.timeline[index];
    e.finished = Some(now);
    e.outcome = outcome;
    e.message = message.clone();
    let note = format!("{} (attempt {}): {outcome:?}: {message}", e.step, e.attempt);
    let type_ = if matches!(outcome, StepOutcome::Succeeded | StepOutcome::Skipped) {
        EventType::Normal
    } else {
        EventType::Warning
    };
    r.event(type_, "Step", "Recover", note);
}

/// Starts a step: written first (a crash in between is picked up by the
/// decision's `Ask`), then the action asked, or the responders told.
async fn start(
    r: &mut Report<'_, Incident>,
    ctx: &Context,
    plan: &RecoveryPlan,
    step: &Step,
    attempt: u32,
    details: &serde_json::Value,
) -> Result<(), Error> {
    let inc = r.obj;
    let ns = inc.namespace().unwrap_or_default();
    set_phase(r, IncidentPhase::Recovering);
    push(r, &step.name, step.action, attempt, StepOutcome::Running, String::new());
    r.event(
        EventType::Normal,
        "Step",
        "Recover",
        format!("{} ({:?}, attempt {attempt}) started", step.name, step.action),
    );
    r.checkpoint().await?;
    if step.action == StepAction::Notify {
        let e = r.status.timeline.last().cloned().expect("pushed");
        return notify::send(ctx, inc, plan, &r.status, &e, step.responder.as_deref(), details).await;
    }
    if let Some(verb) = verb_of_step(step.action) {
        let id = decide::request_id(&prefix(inc), &step.name, attempt);
        stores::request_action(ctx, &ns, &inc.spec.component, verb, &id).await?;
    }
    Ok(())
}

/// Escalates: the next responder of the level not called yet (the first was
/// told at opening), past those who cannot be called (recorded `Skipped`);
/// phase `Escalated`.
async fn escalation(
    r: &mut Report<'_, Incident>,
    ctx: &Context,
    plan: &RecoveryPlan,
    why: String,
    details: &serde_json::Value,
) -> Result<(), Error> {
    let inc = r.obj;
    let Some(level) = plan.spec.levels.iter().find(|l| l.level == inc.spec.level) else {
        return Ok(());
    };
    r.status.phase = IncidentPhase::Escalated;
    let today = r.now.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    for lr in level.responders.iter().skip(1) {
        let step = notify::escalation_name(&lr.name);
        if r.status.timeline.iter().any(|e| e.step == step) {
            continue;
        }
        if let Some(skip) = notify::uncallable(plan, &lr.name, today) {
            push(
                r,
                &step,
                StepAction::Notify,
                1,
                StepOutcome::Skipped,
                format!("{why}; {lr}: {skip}", lr = lr.name),
            );
            r.event(
                EventType::Warning,
                "Escalated",
                "Escalate",
                format!("{why}; {} skipped: {skip}", lr.name),
            );
            continue;
        }
        push(r, &step, StepAction::Notify, 1, StepOutcome::Running, why.clone());
        r.event(
            EventType::Warning,
            "Escalated",
            "Escalate",
            format!("{why}; escalated to {}", lr.name),
        );
        // Written before it is sent: a restart sends it again rather than never.
        r.checkpoint().await?;
        let e = r.status.timeline.last().cloned().expect("pushed");
        return notify::send(ctx, inc, plan, &r.status, &e, Some(&lr.name), details).await;
    }
    r.event(
        EventType::Warning,
        "Escalated",
        "Escalate",
        format!("{why}; no responder left to escalate to"),
    );
    Ok(())
}

/// Deliveries under way (opening, escalations, `Notify` steps): each one that
/// ended is written to its entry; one a restart interrupted is queued again.
pub async fn deliveries(r: &mut Report<'_, Incident>, ctx: &Context, plan: &RecoveryPlan) -> Result<(), Error> {
    let inc = r.obj;
    let ns = inc.namespace().unwrap_or_default();
    let steps = &steps(plan, inc);
    let details = stores::component(&ctx.stores, &ns, &inc.spec.component)
        .map(|c| c.responder_details())
        .unwrap_or_default();
    for i in 0..r.status.timeline.len() {
        let e = r.status.timeline[i].clone();
        if e.action != StepAction::Notify || e.outcome != StepOutcome::Running {
            continue;
        }
        let who = match steps
            .iter()
            .find(|s| s.name == e.step && s.action == StepAction::Notify)
        {
            Some(s) => s.responder.clone(),
            None => e
                .step
                .strip_prefix("notify-")
                .or(e.step.strip_prefix("escalate-"))
                .map(str::to_string),
        };
        match notify::collect(ctx, inc, plan, &e, who.as_deref()) {
            Some((outcome, message)) => {
                let message = if e.message.is_empty() {
                    message
                } else {
                    format!("{}; {message}", e.message)
                };
                r.event(
                    if outcome == StepOutcome::Failed {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    "Notify",
                    "Notify",
                    format!("{}: {outcome:?}: {message}", e.step),
                );
                let end = MicroTime(Timestamp::now());
                let entry = &mut r.status.timeline[i];
                entry.finished = Some(end);
                entry.outcome = outcome;
                entry.message = message;
            }
            None => notify::send(ctx, inc, plan, &r.status, &e, who.as_deref(), &details).await?,
        }
    }
    Ok(())
}

/// The level's first responder, told once when the incident opens.
pub async fn tell_first(r: &mut Report<'_, Incident>, ctx: &Context, plan: &RecoveryPlan) -> Result<(), Error> {
    let inc = r.obj;
    let Some(first) = plan
        .spec
        .levels
        .iter()
        .find(|l| l.level == inc.spec.level)
        .and_then(|l| l.responders.first())
    else {
        return Ok(());
    };
    let step = notify::step_name(&first.name);
    if r.status.timeline.iter().any(|e| e.step == step) {
        return Ok(());
    }
    push(r, &step, StepAction::Notify, 1, StepOutcome::Running, String::new());
    // Written before it is sent: a restart sends it again rather than never.
    r.checkpoint().await?;
    let ns = inc.namespace().unwrap_or_default();
    let details = stores::component(&ctx.stores, &ns, &inc.spec.component)
        .map(|c| c.responder_details())
        .unwrap_or_default();
    let e = r.status.timeline.last().cloned().expect("pushed");
    notify::send(ctx, inc, plan, &r.status, &e, Some(&first.name), &details).await
}
