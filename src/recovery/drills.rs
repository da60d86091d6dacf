//! A RecoveryPlan's drills: on the plan's `drills.schedule` or on
//! `reprise.dev/drill-now`, every covered Database and VirtualMachine with
//! backups is asked for `drill/<id>` (a Database restores its newest good
//! backup into scratch databases, verifies and drops them; a VM restores its
//! newest snapshot into a scratch VM, waits until it is ready, deletes it); the answers are gathered into
//! `status.lastDrill` with, per level, the slowest measured restore against
//! the level's window. The drill's state lives in the status, so a new leader
//! picks it up where the last one left it.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use crate::{
    api::{
        RecoveryPlan,
        common::{ComponentKind, ComponentRef},
        contract::{ActionVerb, Component, actions},
        recovery_plan::{DRILL_NOW_ANNOTATION, DrillComponent, DrillLevel, DrillOutcome, DrillResult},
    },
    runtime::{Context, Error, schedule, stores},
};

/// What a drill step wants published once the status is written.
pub type Note = (EventType, &'static str, String);

/// The component's answer to drill `id`: outcome and message, and the measured seconds.
fn answer(c: &dyn Component, id: &str) -> Option<(DrillOutcome, String, Option<f64>)> {
    let a = c.drill_answer(id)?;
    let outcome = if a.verified {
        DrillOutcome::Verified
    } else {
        DrillOutcome::Failed
    };
    Some((outcome, a.message, a.seconds.map(|s| (s * 1000.0).round() / 1000.0)))
}

/// Per level of the plan: the slowest verified restore against the window.
pub fn levels(plan: &RecoveryPlan, comps: &[DrillComponent]) -> Vec<DrillLevel> {
    plan.spec
        .levels
        .iter()
        .map(|l| {
            let mine: Vec<&DrillComponent> = comps.iter().filter(|c| c.level == l.level).collect();
            let window = l.max_window.as_ref().map(|w| w.as_std().as_secs_f64());
            let slowest = mine
                .iter()
                .filter_map(|c| c.seconds)
                .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
            let failed: Vec<String> = mine
                .iter()
                .filter(|c| c.outcome != DrillOutcome::Verified)
                .map(|c| format!("{} {}: {:?} {}", c.component.kind, c.component.name, c.outcome, c.message))
                .collect();
            let message = if mine.is_empty() {
                Some(format!(
                    "nothing of level {} is drilled: drills restore Databases and VirtualMachines with backups into scratch copies; {} are not drilled",
                    l.level,
                    l.applies_to
                        .iter()
                        .filter(|k| !actions(**k).contains(&ActionVerb::Drill))
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else if !failed.is_empty() {
                Some(failed.join("; "))
            } else {
                None
            };
            let met = !mine.is_empty() && failed.is_empty() && slowest.is_some_and(|s| window.is_none_or(|w| s <= w));
            DrillLevel {
                level: l.level,
                measured: slowest.map(|s| format!("{s:.3}s")),
                window: l.max_window.as_ref().map(|w| w.as_str().to_string()),
                met,
                message,
            }
        })
        .collect()
}

fn level_of(plan: &RecoveryPlan, kind: ComponentKind) -> u8 {
    plan.spec
        .levels
        .iter()
        .find(|l| l.applies_to.contains(&kind))
        .map_or(0, |l| l.level)
}

/// Moves the plan's drill on: starts one when due or asked, gathers the
/// answers, concludes. Returns when to look again.
pub async fn advance(
    ctx: &Context,
    plan: &RecoveryPlan,
    covered: &[ComponentRef],
    last: &mut Option<DrillResult>,
    notes: &mut Vec<Note>,
) -> Result<Option<Duration>, Error> {
    let Some(spec) = &plan.spec.drills else { return Ok(None) };
    let now = Timestamp::now();
    if let Some(d) = last.as_mut().filter(|d| d.finished.is_none()) {
        return follow(ctx, plan, d, notes, now).await;
    }
    // Due or asked?
    let asked = plan
        .annotations()
        .get(DRILL_NOW_ANNOTATION)
        .filter(|v| !v.is_empty())
        .filter(|v| last.as_ref().is_none_or(|d| &d.trigger != *v))
        .cloned();
    let due = schedule::next_due(
        &spec.schedule,
        last.as_ref().map(|d| d.started.0),
        plan.metadata.creation_timestamp.as_ref(),
    );
    let trigger = match (asked, due) {
        (Some(v), _) => v,
        (None, Some(t)) if t <= now => "schedule".to_string(),
        (None, Some(t)) => {
            let wait = (t.as_second() - now.as_second()).max(1) as u64;
            return Ok(Some(Duration::from_secs(wait)));
        }
        (None, None) => return Ok(None),
    };
    *last = Some(begin(ctx, plan, covered, trigger, notes, now));
    // The components are asked on the next pass, once the drill is recorded.
    Ok(Some(Duration::from_secs(1)))
}

/// A drill under way: each component's answer gathered (asked again when
/// nothing else holds its action slot); concluded once all answered.
async fn follow(
    ctx: &Context,
    plan: &RecoveryPlan,
    d: &mut DrillResult,
    notes: &mut Vec<Note>,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    let Some(spec) = &plan.spec.drills else { return Ok(None) };
    let ns = plan.namespace().unwrap_or_default();
    let timed_out = now.as_second() - d.started.0.as_second() > spec.timeout.as_std().as_secs() as i64;
    for c in d.components.iter_mut().filter(|c| c.outcome == DrillOutcome::Running) {
        let Some(component) = stores::component(&ctx.stores, &ns, &c.component) else {
            c.outcome = DrillOutcome::Failed;
            c.message = "the component no longer exists".into();
            continue;
        };
        if let Some((outcome, message, seconds)) = answer(component.as_ref(), &d.id) {
            (c.outcome, c.message, c.seconds) = (outcome, message, seconds);
            continue;
        }
        if timed_out {
            c.outcome = DrillOutcome::Failed;
            c.message = format!("no answer within {}", spec.timeout.as_str());
            continue;
        }
        let asked = component.pending_request().is_some_and(|p| p.id == d.id);
        let busy = super::opening::open_for(&ctx.stores, &ns, &c.component).is_some();
        if !asked && !busy {
            stores::request_action(ctx, &ns, &c.component, ActionVerb::Drill, &d.id).await?;
        }
    }
    if d.components.iter().any(|c| c.outcome == DrillOutcome::Running) {
        return Ok(Some(Duration::from_secs(2)));
    }
    d.finished = Some(MicroTime(now));
    d.levels = levels(plan, &d.components);
    let summary: Vec<String> = d
        .levels
        .iter()
        .map(|l| match &l.measured {
            Some(m) => format!(
                "level {}: {m} against {} ({})",
                l.level,
                l.window.as_deref().unwrap_or("no window"),
                if l.met { "met" } else { "not met" }
            ),
            None => format!("level {}: not drilled", l.level),
        })
        .collect();
    let all_ok = d.components.iter().all(|c| c.outcome == DrillOutcome::Verified);
    notes.push((
        if all_ok { EventType::Normal } else { EventType::Warning },
        "DrillFinished",
        format!("drill {}: {}", d.id, summary.join("; ")),
    ));
    Ok(None)
}

/// A new drill: every covered component that can be drilled takes part
/// (skipped, and said so, when an incident is open for it).
fn begin(
    ctx: &Context,
    plan: &RecoveryPlan,
    covered: &[ComponentRef],
    trigger: String,
    notes: &mut Vec<Note>,
    now: Timestamp,
) -> DrillResult {
    let ns = plan.namespace().unwrap_or_default();
    let id = format!(
        "{}.drill.{}",
        plan.uid().unwrap_or_default().chars().take(8).collect::<String>(),
        now.as_second()
    );
    let comps: Vec<DrillComponent> = covered
        .iter()
        .filter(|c| stores::component(&ctx.stores, &ns, c).is_some_and(|c| c.drillable()))
        .map(|c| {
            let (outcome, message) = match super::opening::open_for(&ctx.stores, &ns, c) {
                Some(i) => (
                    DrillOutcome::Skipped,
                    format!("Incident {} is open for it", i.name_any()),
                ),
                None => (DrillOutcome::Running, String::new()),
            };
            DrillComponent {
                component: c.clone(),
                level: level_of(plan, c.kind),
                outcome,
                seconds: None,
                message,
            }
        })
        .collect();
    notes.push((
        EventType::Normal,
        "DrillStarted",
        format!(
            "drill {id} ({trigger}): {} component(s) restored into scratch copies",
            comps.iter().filter(|c| c.outcome == DrillOutcome::Running).count()
        ),
    ));
    DrillResult {
        id,
        trigger,
        started: MicroTime(now),
        finished: None,
        levels: vec![],
        components: comps,
    }
}
