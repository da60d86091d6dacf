//! A RecoveryPlan's drills: on the plan's `drills.schedule` or on
//! `reprise.dev/drill-now`, every covered Database and VirtualMachine with
//! backups is asked for `drill/<id>` (a Database restores its newest good
//! backup into scratch databases, verifies and drops them; a VM restores its
//! newest snapshot into a scratch VM, waits until it is ready, deletes it); the answers are gathered into
//! `status.lastDrill` with, per level, the slowest measured restore against
//! the level's window. The drill's state lives in the status, so a new leader
//! picks it up where the last one left it.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use super::{Context, Error, components, executor, schedule};
use crate::api::{
    RecoveryPlan,
    common::{ComponentKind, ComponentRef},
    recovery_plan::{DRILL_NOW_ANNOTATION, DrillComponent, DrillLevel, DrillResult},
};

/// What a drill step wants published once the status is written.
pub type Note = (EventType, &'static str, String);

const RUNNING: &str = "Running";

/// The last `n` letters and digits of a drill id (`<plan uid prefix>.drill.<unix seconds>`),
/// lower-case: what tells one drill's scratch copies from another's.
pub fn tag(id: &str, n: usize) -> String {
    let chars: Vec<char> = id
        .replace(".drill.", "")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    chars[chars.len().saturating_sub(n)..]
        .iter()
        .collect::<String>()
        .to_lowercase()
}

/// The component's answer to drill `id`: outcome and message, and the measured seconds.
fn answer(ctx: &Context, ns: &str, c: &ComponentRef, id: &str) -> Option<(String, String, Option<f64>)> {
    let (_, last) = executor::component_action(ctx, ns, c);
    let last = last.filter(|a| a.id == id && a.action == "drill")?;
    let seconds = match c.kind {
        ComponentKind::Database => components::get(&ctx.stores.databases, ns, &c.name)
            .and_then(|db| db.status?.last_drill)
            .and_then(|d| d.duration.trim_end_matches('s').parse::<f64>().ok()),
        ComponentKind::VirtualMachine => components::get(&ctx.stores.virtual_machines, ns, &c.name)
            .and_then(|vm| vm.status?.last_drill)
            .filter(|d| d.id == id)
            .and_then(|d| d.seconds),
        _ => None,
    };
    let outcome = if last.outcome == "Done" { "Verified" } else { "Failed" };
    Some((
        outcome.into(),
        last.message,
        seconds.map(|s| (s * 1000.0).round() / 1000.0),
    ))
}

/// Whether the component takes part in drills: a Database or VirtualMachine with backups.
fn drillable(ctx: &Context, ns: &str, c: &ComponentRef) -> bool {
    match c.kind {
        ComponentKind::Database => {
            components::get(&ctx.stores.databases, ns, &c.name).is_some_and(|d| d.spec.backup.is_some())
        }
        ComponentKind::VirtualMachine => {
            components::get(&ctx.stores.virtual_machines, ns, &c.name).is_some_and(|v| v.spec.backup.is_some())
        }
        _ => false,
    }
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
                .filter(|c| c.outcome != "Verified")
                .map(|c| format!("{} {}: {} {}", c.component.kind, c.component.name, c.outcome, c.message))
                .collect();
            let message = if mine.is_empty() {
                Some(format!(
                    "nothing of level {} is drilled: drills restore Databases and VirtualMachines with backups into scratch copies; {} are not drilled",
                    l.level,
                    l.applies_to
                        .iter()
                        .filter(|k| !matches!(k, ComponentKind::Database | ComponentKind::VirtualMachine))
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
    let ns = plan.namespace().unwrap_or_default();
    let now = Timestamp::now();
    if let Some(d) = last.as_mut().filter(|d| d.finished.is_none()) {
        let timed_out = now.as_second() - d.started.0.as_second() > spec.timeout.as_std().as_secs() as i64;
        let open = super::opening::open(&ctx.stores);
        for c in d.components.iter_mut().filter(|c| c.outcome == RUNNING) {
            if let Some((outcome, message, seconds)) = answer(ctx, &ns, &c.component, &d.id) {
                (c.outcome, c.message, c.seconds) = (outcome, message, seconds);
                continue;
            }
            if timed_out {
                c.outcome = "Failed".into();
                c.message = format!("no answer within {}", spec.timeout.as_str());
                continue;
            }
            // Asked again only when nothing else holds the component's action slot.
            let (pending, _) = executor::component_action(ctx, &ns, &c.component);
            let busy = open
                .iter()
                .any(|i| i.namespace().as_deref() == Some(ns.as_str()) && i.spec.component == c.component);
            if pending.as_deref() != Some(format!("drill/{}", d.id).as_str()) && !busy {
                executor::ask(ctx, &ns, &c.component, "drill", &d.id).await?;
            }
        }
        if d.components.iter().any(|c| c.outcome == RUNNING) {
            return Ok(Some(Duration::from_secs(2)));
        }
        d.finished = Some(Time(now));
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
        let all_ok = d.components.iter().all(|c| c.outcome == "Verified");
        notes.push((
            if all_ok { EventType::Normal } else { EventType::Warning },
            "DrillFinished",
            format!("drill {}: {}", d.id, summary.join("; ")),
        ));
        return Ok(None);
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
    let id = format!(
        "{}.drill.{}",
        plan.uid().unwrap_or_default().chars().take(8).collect::<String>(),
        now.as_second()
    );
    let open = super::opening::open(&ctx.stores);
    let mut comps = vec![];
    for c in covered.iter().filter(|c| drillable(ctx, &ns, c)) {
        let busy = open
            .iter()
            .find(|i| i.namespace().as_deref() == Some(ns.as_str()) && &i.spec.component == c);
        let (outcome, message) = match busy {
            Some(i) => ("Skipped", format!("Incident {} is open for it", i.name_any())),
            None => (RUNNING, String::new()),
        };
        comps.push(DrillComponent {
            component: c.clone(),
            level: level_of(plan, c.kind),
            outcome: outcome.into(),
            seconds: None,
            message,
        });
    }
    notes.push((
        EventType::Normal,
        "DrillStarted",
        format!(
            "drill {id} ({trigger}): {} component(s) restored into scratch copies",
            comps.iter().filter(|c| c.outcome == RUNNING).count()
        ),
    ));
    *last = Some(DrillResult {
        id,
        trigger,
        started: Time(now),
        finished: None,
        levels: vec![],
        components: comps,
    });
    // The components are asked on the next pass, once the drill is recorded.
    Ok(Some(Duration::from_secs(1)))
}
