//! The procedure's next move, decided from facts alone — the incident's
//! timeline, the plan's steps, the component as the contract shows it, the
//! clock — with no API call: every branch is unit-tested on fixtures below.
//! The effects (writing the timeline, asking the component, telling
//! responders) are the caller's (`super`).
//!
//! A step `Succeeded` only on evidence observed after its action: the
//! component healthy since a moment at or after its controller carried the
//! action out. A component healthy again without that evidence resolves the
//! incident, and the record says it came back without the step.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{
    common::ActionRecord,
    contract::{ActionOutcome, ActionVerb, Request, Signal, StepOutcome, verb_of_step},
    incident::{IncidentPhase, TimelineEntry},
    recovery_plan::{Action as StepAction, Step},
};

/// Step name of the wait for a repair the component's own controller started.
pub const SELF_REPAIR: &str = "await-self-repair";
/// Step name of the wait for the components this one depends on.
pub const DEPENDENCIES: &str = "await-dependencies";
/// The longest the procedure waits for a component's own repair (seconds).
pub const SELF_REPAIR_CAP: i64 = 300;
/// How often a procedure that waits looks again.
const POLL: Duration = Duration::from_secs(2);

/// The component, as the contract shows it.
#[derive(Clone, Debug, Default)]
pub struct ComponentFacts {
    pub health: Option<Signal>,
    pub last_action: Option<ActionRecord>,
    pub pending: Option<Request>,
    pub own_repair: Option<String>,
    /// How long its own repair may take before the wait ends as timed out
    /// (None: [`SELF_REPAIR_CAP`]).
    pub repair_cap: Option<i64>,
}

/// What the decision reads.
pub struct Facts<'a> {
    pub now: Timestamp,
    /// The plan's steps for the component's kind (empty: no procedure).
    pub steps: &'a [Step],
    pub timeline: &'a [TimelineEntry],
    pub phase: IncidentPhase,
    pub detected_at: Timestamp,
    /// When the failure was first observed, as its opener recorded it.
    pub observed_at: Option<Timestamp>,
    pub deadline: Option<Timestamp>,
    /// The `NotifyOnly` window the failure happened in.
    pub notify_only: Option<&'a str>,
    /// The approval annotation's value.
    pub approval: Option<&'a str>,
    /// The component; None when it no longer exists.
    pub component: Option<&'a ComponentFacts>,
    /// The components it depends on that fail or have an open incident.
    pub waiting_on: &'a [String],
    /// What request ids start with (the incident's).
    pub request_prefix: &'a str,
}

/// The next thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// The component is healthy: the incident is resolved, as of `at` (when healthy was observed).
    Resolve { at: Timestamp, how: String },
    /// The component is gone: the incident closes.
    Abandon { why: String },
    /// End timeline entry `index`; escalate when the step failed for good.
    End {
        index: usize,
        outcome: StepOutcome,
        message: String,
        escalate: Option<String>,
    },
    /// The approval step at `index` is approved by `by`.
    Approved { index: usize, by: String },
    /// Ask the component again for the running step's action (same request id).
    Ask { verb: ActionVerb, id: String },
    /// Start attempt `attempt` of step `step`.
    Start { step: usize, attempt: u32 },
    /// Record a wait before the next action step.
    Await { name: &'static str, message: String },
    /// Record step `step` as skipped, escalating unless notify-only.
    Skip {
        step: usize,
        attempt: u32,
        why: String,
        escalate: bool,
    },
    /// Call the next responder of the level.
    Escalate { why: String },
    /// Every step ran and the component still fails.
    Exhausted,
    /// Nothing to do now; look again after this long.
    Wait {
        after: Duration,
        phase: Option<IncidentPhase>,
    },
}

/// The request id of a step's attempt: unique per incident, step and attempt.
pub fn request_id(prefix: &str, step: &str, attempt: u32) -> String {
    format!("{prefix}.{step}.{attempt}")
}

fn secs_between(a: Timestamp, b: Timestamp) -> i64 {
    b.as_second() - a.as_second()
}

fn is_step(steps: &[Step], e: &TimelineEntry) -> Option<usize> {
    if e.action == StepAction::AwaitRecovery {
        return None;
    }
    steps.iter().position(|s| s.name == e.step && s.action == e.action)
}

fn running_await(f: &Facts) -> Option<usize> {
    f.timeline
        .iter()
        .rposition(|e| e.action == StepAction::AwaitRecovery && e.outcome == StepOutcome::Running)
}

fn running_step(f: &Facts) -> Option<(usize, usize)> {
    f.timeline
        .iter()
        .enumerate()
        .rev()
        .find(|(_, e)| e.outcome == StepOutcome::Running)
        .and_then(|(i, e)| is_step(f.steps, e).map(|s| (i, s)))
}

/// The component's answer to request `id`.
fn answer<'a>(c: &'a ComponentFacts, id: &str) -> Option<&'a ActionRecord> {
    c.last_action.as_ref().filter(|a| a.id == id)
}

/// Whether a failed step has no attempt left: escalate then.
fn failed_for_good(step: &Step, e: &TimelineEntry, outcome: StepOutcome) -> Option<String> {
    (e.attempt > step.retries).then(|| format!("step {} {} for good", step.name, format!("{outcome:?}").to_lowercase()))
}

pub fn decide(f: &Facts) -> Next {
    let Some(c) = f.component else {
        return Next::Abandon {
            why: "the component no longer exists".into(),
        };
    };
    // A healthy signal from before the failure was observed is one the
    // component has not renewed since: no evidence of a recovery.
    // (To the second: some signals' times are whole seconds.)
    let stale = |h: &&Signal| f.observed_at.is_some_and(|o| h.since.as_second() < o.as_second());
    if let Some(h) = c.health.as_ref().filter(|h| h.healthy) {
        if stale(&h) {
            return Next::Wait {
                after: POLL,
                phase: None,
            };
        }
        return healthy(f, c, h);
    }
    if f.phase == IncidentPhase::Failed {
        // Every step ran: people own it; it resolves when the component is healthy.
        return Next::Wait {
            after: Duration::from_secs(300),
            phase: None,
        };
    }
    if let Some(i) = running_await(f) {
        return waiting(f, c, i);
    }
    if let Some((i, s)) = running_step(f) {
        return running(f, c, i, &f.steps[s]);
    }
    if let (Some(d), false) = (f.deadline, f.timeline.iter().any(|e| e.step.starts_with("escalate-"))) {
        let half = f.detected_at.as_second() + secs_between(f.detected_at, d) / 2;
        if f.now.as_second() >= half {
            return Next::Escalate {
                why: "half the level's window has passed".into(),
            };
        }
    }
    next_step(f, c)
}

/// What the component says of its health, as a message's tail (": …"), if anything.
fn said(h: &Signal) -> String {
    match h.message.as_str() {
        "" => String::new(),
        m => format!(": {m}"),
    }
}

/// The component is healthy again: the waits and the running step end, with
/// `Succeeded` only on evidence observed after the step's action; then the
/// incident resolves.
fn healthy(f: &Facts, c: &ComponentFacts, h: &Signal) -> Next {
    if let Some(i) = running_await(f) {
        return Next::End {
            index: i,
            outcome: StepOutcome::Succeeded,
            // With what the component says it did (e.g. which backup, from which store).
            message: format!("{}; the component is healthy again{}", f.timeline[i].message, said(h)),
            escalate: None,
        };
    }
    if let Some((i, s)) = running_step(f) {
        let step = &f.steps[s];
        let e = &f.timeline[i];
        if let Some(verb) = verb_of_step(step.action) {
            let id = request_id(f.request_prefix, &step.name, e.attempt);
            let (outcome, message) = match answer(c, &id) {
                // Under way: its answer comes first.
                Some(a) if a.outcome == ActionOutcome::Accepted => {
                    return Next::Wait {
                        after: POLL,
                        phase: None,
                    };
                }
                Some(a) if a.outcome == ActionOutcome::Done && h.since >= a.time.0 => (
                    StepOutcome::Succeeded,
                    format!(
                        "healthy again since {} ({}), after the {verb} at {}: {}",
                        h.since, h.state, a.time.0, a.message
                    ),
                ),
                Some(a) if matches!(a.outcome, ActionOutcome::Failed | ActionOutcome::Rejected) => {
                    (StepOutcome::Failed, a.message.clone())
                }
                // Say how it came back (a Database that restored itself names the backup and store).
                _ => (
                    StepOutcome::Skipped,
                    format!(
                        "the component was healthy again (since {}) before this step's {verb} took effect{}",
                        h.since,
                        said(h)
                    ),
                ),
            };
            return Next::End {
                index: i,
                outcome,
                message,
                escalate: None,
            };
        }
        if step.action == StepAction::WaitForApproval {
            return Next::End {
                index: i,
                outcome: StepOutcome::Skipped,
                message: "not needed: the component is healthy again".into(),
                escalate: None,
            };
        }
    }
    let by_step = f
        .timeline
        .iter()
        .rev()
        .find(|e| e.outcome == StepOutcome::Succeeded && verb_of_step(e.action).is_some())
        .filter(|e| e.finished.as_ref().is_some_and(|t| t.0 >= h.since));
    let how = match by_step {
        Some(e) => format!("by step {} (attempt {})", e.step, e.attempt),
        None if f.phase == IncidentPhase::Failed => "healthy again after the procedure ran out".into(),
        None => "healthy again without the procedure's actions".into(),
    };
    Next::Resolve { at: h.since, how }
}

/// A wait under way (dependencies, the component's own repair): done when
/// its reason is gone, or capped.
fn waiting(f: &Facts, c: &ComponentFacts, i: usize) -> Next {
    let e = &f.timeline[i];
    let still = if e.step == SELF_REPAIR {
        c.own_repair.is_some()
    } else {
        !f.waiting_on.is_empty()
    };
    let cap = c.repair_cap.unwrap_or(SELF_REPAIR_CAP);
    let capped = e.step == SELF_REPAIR && secs_between(e.started.0, f.now) > cap;
    if still && !capped {
        return Next::Wait {
            after: POLL,
            phase: Some(IncidentPhase::Recovering),
        };
    }
    let (outcome, done) = if capped {
        (StepOutcome::TimedOut, format!("not done after {cap}s"))
    } else {
        (StepOutcome::Succeeded, "done".to_string())
    };
    Next::End {
        index: i,
        outcome,
        message: format!("{}; {done}", e.message),
        escalate: None,
    }
}

/// A step under way: has it ended?
fn running(f: &Facts, c: &ComponentFacts, i: usize, step: &Step) -> Next {
    let e = &f.timeline[i];
    if secs_between(e.started.0, f.now) > step.timeout.as_std().as_secs() as i64 {
        return Next::End {
            index: i,
            outcome: StepOutcome::TimedOut,
            message: format!("still failing after {}", step.timeout.as_str()),
            escalate: failed_for_good(step, e, StepOutcome::TimedOut),
        };
    }
    let wait = |phase| Next::Wait { after: POLL, phase };
    match step.action {
        StepAction::WaitForApproval => match f.approval.filter(|v| !v.is_empty() && *v != "false") {
            Some(who) => Next::Approved {
                index: i,
                by: if who == "true" {
                    "someone (annotation)".into()
                } else {
                    who.to_string()
                },
            },
            None => wait(Some(IncidentPhase::AwaitingApproval)),
        },
        // A delivery: it ends when its responders were told.
        StepAction::Notify | StepAction::AwaitRecovery => wait(None),
        action => {
            let Some(verb) = verb_of_step(action) else {
                return wait(None);
            };
            let id = request_id(f.request_prefix, &step.name, e.attempt);
            match answer(c, &id) {
                Some(a) if matches!(a.outcome, ActionOutcome::Failed | ActionOutcome::Rejected) => Next::End {
                    index: i,
                    outcome: StepOutcome::Failed,
                    message: a.message.clone(),
                    escalate: failed_for_good(step, e, StepOutcome::Failed),
                },
                // Carried out (or under way): its evidence is the component's health.
                Some(_) => wait(None),
                // Asked and not carried out yet (a controller waits for its peer): wait.
                None if c.pending.as_ref().is_some_and(|p| p.id == id) => wait(None),
                // Not asked yet (a crash between the timeline write and the request): ask, same id.
                None => Next::Ask { verb, id },
            }
        }
    }
}

/// The next step: the first whose attempts are not used up and that has not
/// succeeded, after a backoff between attempts; skipped when it cannot help
/// (notify-only, past the deadline); after the waits it needs.
fn next_step(f: &Facts, c: &ComponentFacts) -> Next {
    let next = f.steps.iter().enumerate().find_map(|(i, s)| {
        let tries: Vec<&TimelineEntry> = f.timeline.iter().filter(|e| e.step == s.name).collect();
        let done = tries
            .iter()
            .any(|e| matches!(e.outcome, StepOutcome::Succeeded | StepOutcome::Skipped));
        let used = tries.len() as u32;
        (!done && used <= s.retries).then_some((i, used + 1))
    });
    let Some((i, attempt)) = next else {
        // No procedure: a repair its own controller runs is recorded as awaited.
        if let Some(wait) = own_repair(f, c).filter(|_| f.steps.is_empty()) {
            return wait;
        }
        return if f.notify_only.is_some() || f.steps.is_empty() {
            // People repair it; the incident resolves when the signal is good again.
            Next::Wait {
                after: Duration::from_secs(300),
                phase: None,
            }
        } else {
            Next::Exhausted
        };
    };
    let step = &f.steps[i];
    // Retries wait 2^(attempt-1) seconds after the previous attempt ended.
    if attempt > 1
        && let Some(end) = f
            .timeline
            .iter()
            .rev()
            .find(|e| e.step == step.name)
            .and_then(|e| e.finished.as_ref())
    {
        let wait = 1i64 << (attempt - 1).min(6);
        let since = secs_between(end.0, f.now);
        if since < wait {
            return Next::Wait {
                after: Duration::from_secs((wait - since) as u64),
                phase: None,
            };
        }
    }
    if verb_of_step(step.action).is_some() {
        if let Some(w) = f.notify_only {
            return Next::Skip {
                step: i,
                attempt,
                why: format!("MaintenanceWindow {w} is NotifyOnly: people recover it"),
                escalate: false,
            };
        }
        let left = f.deadline.map(|d| secs_between(f.now, d));
        if let Some(left) = left.filter(|l| *l < step.timeout.as_std().as_secs() as i64) {
            return Next::Skip {
                step: i,
                attempt,
                why: format!(
                    "would end past the deadline ({} timeout, {}s left)",
                    step.timeout.as_str(),
                    left.max(0)
                ),
                escalate: true,
            };
        }
        if !f.waiting_on.is_empty() {
            return Next::Await {
                name: DEPENDENCIES,
                message: format!("waiting for {} to recover first", f.waiting_on.join(", ")),
            };
        }
    }
    // Nobody is asked to approve what the component is repairing already.
    let acts = verb_of_step(step.action).is_some() || step.action == StepAction::WaitForApproval;
    if let Some(wait) = own_repair(f, c).filter(|_| acts) {
        return wait;
    }
    Next::Start { step: i, attempt }
}

/// Waiting for the repair the component's own controller runs, once per
/// incident (a repair that did not help is not waited on again).
fn own_repair(f: &Facts, c: &ComponentFacts) -> Option<Next> {
    let m = c
        .own_repair
        .as_ref()
        .filter(|_| !f.timeline.iter().any(|e| e.step == SELF_REPAIR))?;
    Some(Next::Await {
        name: SELF_REPAIR,
        message: format!("waiting: {m}"),
    })
}

#[cfg(test)]
mod tests;
