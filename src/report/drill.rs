//! The report of a plan's last drill: each component's restore time, each
//! level's measure against its window.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::{
    escape, facts, footer, human, page,
    timeline::{Bar, Marker, svg},
    tone, when,
};
use crate::api::{RecoveryPlan, recovery_plan::DrillResult};

/// The last drill's report (a page that says so when the plan has none).
pub fn drill_html(plan: &RecoveryPlan, now: Timestamp) -> String {
    let title = format!("Drill of plan {}", plan.name_any());
    let Some(d) = plan.status.as_ref().and_then(|s| s.last_drill.as_ref()) else {
        let body = format!(
            "<h1>{}</h1><p class=\"sub\">No drill has run yet.</p>{}",
            escape(&title),
            footer(now)
        );
        return page(&title, &body);
    };
    let outcome = d.outcome();
    let mut body = format!(
        "<h1>{}</h1><p class=\"sub\">namespace {} · drill {} · <span class=\"{}\" data-outcome=\"{outcome}\">{outcome}</span></p>",
        escape(&title),
        escape(&plan.namespace().unwrap_or_default()),
        escape(&d.id),
        tone(outcome),
    );
    body.push_str(&facts(&[
        ("Started by", escape(&d.trigger)),
        ("Started", when(d.started.0)),
        (
            "Finished",
            d.finished
                .as_ref()
                .map(|f| when(f.0))
                .unwrap_or_else(|| "still running".into()),
        ),
    ]));
    body.push_str("<h2>Levels against their windows</h2>");
    body.push_str(&levels(d));
    body.push_str("<h2>Components restored</h2>");
    body.push_str(&picture(plan, d));
    body.push_str(&components(d));
    body.push_str(&footer(now));
    page(&title, &body)
}

fn levels(d: &DrillResult) -> String {
    if d.levels.is_empty() {
        return "<p class=\"sub\">No level measured.</p>".into();
    }
    let rows: String = d
        .levels
        .iter()
        .map(|l| {
            let (class, word) = match (d.drilled(l.level), l.met) {
                (false, _) => ("skip", "not drilled"),
                (true, true) => ("ok", "met"),
                (true, false) => ("bad", "missed"),
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
                l.level,
                escape(l.measured.as_deref().unwrap_or("—")),
                escape(l.window.as_deref().unwrap_or("open-ended")),
                escape(l.message.as_deref().unwrap_or(""))
            )
        })
        .collect();
    format!(
        "<table class=\"levels\"><tr><th>Level</th><th>Measured</th><th>Window</th><th>Result</th><th>Note</th></tr>{rows}</table>"
    )
}

/// Each component's restore as a bar from the drill's start, each level's
/// window end as a marker.
fn picture(plan: &RecoveryPlan, d: &DrillResult) -> String {
    let t0 = d.started.0;
    let at = |secs: f64| {
        t0.checked_add(SignedDuration::from_secs_f64(secs.max(0.0)))
            .unwrap_or(t0)
    };
    let bars: Vec<Bar> = d
        .components
        .iter()
        .map(|c| Bar {
            label: format!("{} {} (level {})", c.component.kind, c.component.name, c.level),
            outcome: format!("{:?}", c.outcome),
            start: t0,
            end: at(c.seconds.unwrap_or(0.0)),
        })
        .collect();
    let drilled: std::collections::BTreeSet<u8> = d.components.iter().map(|c| c.level).collect();
    let markers: Vec<Marker> = plan
        .spec
        .levels
        .iter()
        .filter(|l| drilled.contains(&l.level))
        .filter_map(|l| {
            let w = l.max_window.as_ref()?;
            Some(Marker {
                kind: "deadline",
                label: format!("level {} window ends: {}", l.level, w.as_str()),
                at: t0.checked_add(w.as_std()).ok()?,
            })
        })
        .collect();
    svg(t0, &bars, &markers)
}

fn components(d: &DrillResult) -> String {
    let rows: String = d
        .components
        .iter()
        .map(|c| {
            let outcome = format!("{:?}", c.outcome);
            format!(
                "<tr><td>{} {}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                c.component.kind,
                escape(&c.component.name),
                c.level,
                tone(&outcome),
                escape(&outcome),
                c.seconds
                    .map(|s| human(SignedDuration::from_secs_f64(s)))
                    .unwrap_or_else(|| "—".into()),
                escape(&c.message)
            )
        })
        .collect();
    format!(
        "<table class=\"components\"><tr><th>Component</th><th>Level</th><th>Outcome</th><th>Restore time</th><th>What happened</th></tr>{rows}</table>"
    )
}
