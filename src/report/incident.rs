//! The report of one incident: what failed, what was done when, against the
//! level's window, what it measured, who was told.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    escape, facts, footer, human, page,
    timeline::{Bar, Marker, svg},
    tone, when,
};
use crate::api::{
    Incident, RecoveryPlan,
    incident::{ACKNOWLEDGE_ANNOTATION, IncidentStatus, TimelineEntry},
    recovery_plan::{Action, Level},
};

/// The incident's report; `plan` gives the level's window and name.
pub fn incident_html(inc: &Incident, plan: Option<&RecoveryPlan>, now: Timestamp) -> String {
    let st = inc.status.clone().unwrap_or_default();
    let level = plan.and_then(|p| p.spec.levels.iter().find(|l| l.level == inc.spec.level));
    let name = inc.name_any();
    let phase = format!("{:?}", st.phase);
    let title = format!(
        "Incident {name}: {} {} (level {})",
        inc.spec.component.kind, inc.spec.component.name, inc.spec.level
    );
    let mut body = format!(
        "<h1>{}</h1><p class=\"sub\">namespace {} · plan {} · <span class=\"phase {}\" data-phase=\"{}\">{}</span>{}</p>",
        escape(&title),
        escape(&inc.namespace().unwrap_or_default()),
        escape(&inc.spec.plan_ref.name),
        tone(&phase),
        escape(&phase),
        escape(&phase),
        if inc.spec.drill { " · drill" } else { "" }
    );
    body.push_str(&summary(inc, &st, level));
    body.push_str("<h2>Measures</h2>");
    body.push_str(&measures(&st));
    body.push_str("<h2>Timeline</h2>");
    body.push_str(&picture(&st, level, now));
    body.push_str(&steps(&st.timeline, st.closed_at.as_ref().map(|t| t.0).unwrap_or(now)));
    body.push_str("<h2>Responders</h2>");
    body.push_str(&responders(inc, &st));
    body.push_str(&footer(now));
    page(&title, &body)
}

fn level_name(level: Option<&Level>) -> String {
    level
        .map(|l| {
            let window = match &l.max_window {
                Some(max) => format!("{} to {}", l.min_window.as_str(), max.as_str()),
                None => format!("from {}, open-ended", l.min_window.as_str()),
            };
            format!("{} (window {window})", l.name.as_deref().unwrap_or("unnamed"))
        })
        .unwrap_or_else(|| "not in the plan".into())
}

fn summary(inc: &Incident, st: &IncidentStatus, level: Option<&Level>) -> String {
    let t = |v: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
        v.map(|t| when(t.0)).unwrap_or_else(|| "—".into())
    };
    let breached = match (st.breached, st.deadline.is_some()) {
        (true, _) => "<span class=\"bad\">breached</span>".to_string(),
        (false, true) => "<span class=\"ok\">not breached</span>".to_string(),
        (false, false) => "no deadline (open-ended level)".to_string(),
    };
    facts(&[
        ("Cause", escape(&inc.spec.cause)),
        ("Level", format!("{} — {}", inc.spec.level, escape(&level_name(level)))),
        ("Failure observed", t(st.failure_observed_at.as_ref())),
        ("Incident opened", t(st.detected_at.as_ref())),
        ("Deadline", format!("{} · {breached}", t(st.deadline.as_ref()))),
        ("Closed", t(st.closed_at.as_ref())),
        ("Resolution", escape(st.resolution.as_deref().unwrap_or("—"))),
        ("Approved by", escape(st.approved_by.as_deref().unwrap_or("—"))),
    ])
}

fn measures(st: &IncidentStatus) -> String {
    let Some(m) = &st.measures else {
        return "<p class=\"sub\">No measures yet.</p>".into();
    };
    let or_dash = |v: &Option<String>| escape(v.as_deref().unwrap_or("—"));
    facts(&[
        ("Time to detect", or_dash(&m.time_to_detect)),
        ("Time to recover", or_dash(&m.time_to_recover)),
        (
            "Deadline met",
            match m.deadline_met {
                Some(true) => "<span class=\"ok\">yes</span>".into(),
                Some(false) => "<span class=\"bad\">no</span>".into(),
                None => "not yet known".into(),
            },
        ),
        (
            "Data restored",
            m.data_restored_bytes.map(bytes).unwrap_or_else(|| "—".into()),
        ),
        ("Data-loss window", or_dash(&m.data_loss_window)),
    ])
}

/// Bytes for people: `1.5 MiB (1572864 bytes)`.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

/// The bars and the window's markers, from the failure's observation.
fn picture(st: &IncidentStatus, level: Option<&Level>, now: Timestamp) -> String {
    let Some(opened) = st.detected_at.as_ref().map(|t| t.0) else {
        return "<p class=\"sub\">Not opened yet.</p>".into();
    };
    let t0 = st
        .failure_observed_at
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(opened)
        .min(opened);
    let end = st.closed_at.as_ref().map(|t| t.0).unwrap_or(now);
    let bars: Vec<Bar> = st
        .timeline
        .iter()
        .map(|e| Bar {
            label: step_label(e),
            outcome: format!("{:?}", e.outcome),
            start: e.started.0,
            end: e.finished.as_ref().map(|f| f.0).unwrap_or(end),
        })
        .collect();
    let mut markers = vec![];
    if let Some(l) = level
        && let Ok(at) = opened.checked_add(l.min_window.as_std())
    {
        markers.push(Marker {
            kind: "opens",
            label: format!("window opens: {} after the incident opened", l.min_window.as_str()),
            at,
        });
    }
    if let Some(d) = &st.deadline {
        let window = level
            .and_then(|l| l.max_window.as_ref())
            .map(|w| w.as_str().to_string());
        markers.push(Marker {
            kind: "deadline",
            label: format!("deadline: {} ({})", when(d.0), window.unwrap_or_default()),
            at: d.0,
        });
    }
    if let Some(c) = &st.closed_at {
        markers.push(Marker {
            kind: "closed",
            label: format!("closed: {}", when(c.0)),
            at: c.0,
        });
    }
    svg(t0, &bars, &markers)
}

fn step_label(e: &TimelineEntry) -> String {
    if e.attempt > 1 {
        format!("{} (attempt {})", e.step, e.attempt)
    } else {
        e.step.clone()
    }
}

fn steps(timeline: &[TimelineEntry], end: Timestamp) -> String {
    if timeline.is_empty() {
        return "<p class=\"sub\">No step taken.</p>".into();
    }
    let rows: String = timeline
        .iter()
        .map(|e| {
            let outcome = format!("{:?}", e.outcome);
            let took = human(super::between(e.started.0, e.finished.as_ref().map(|f| f.0).unwrap_or(end)));
            format!(
                "<tr class=\"step-row\"><td>{}</td><td>{:?}</td><td>{}</td><td>{took}{}</td><td class=\"{}\">{}</td><td>{}{}</td></tr>",
                escape(&step_label(e)),
                e.action,
                when(e.started.0),
                if e.finished.is_none() { " so far" } else { "" },
                tone(&outcome),
                escape(&outcome),
                escape(&e.message),
                e.bytes.map(|b| format!(" ({})", bytes(b))).unwrap_or_default()
            )
        })
        .collect();
    format!(
        "<table class=\"steps\"><tr><th>Step</th><th>Action</th><th>Started</th><th>Took</th><th>Outcome</th><th>What happened</th></tr>{rows}</table>"
    )
}

/// Who was told (the notification steps) and who acknowledged.
fn responders(inc: &Incident, st: &IncidentStatus) -> String {
    let told: String = st
        .timeline
        .iter()
        .filter(|e| e.action == Action::Notify)
        .map(|e| {
            let outcome = format!("{:?}", e.outcome);
            format!(
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(&e.step),
                when(e.started.0),
                tone(&outcome),
                escape(&outcome),
                escape(&e.message)
            )
        })
        .collect();
    let acknowledged = inc
        .annotations()
        .get(ACKNOWLEDGE_ANNOTATION)
        .map(|who| format!("<p>Acknowledged: {}</p>", escape(who)))
        .unwrap_or_else(|| "<p class=\"sub\">Not acknowledged.</p>".into());
    if told.is_empty() {
        return format!("<p class=\"sub\">Nobody was notified.</p>{acknowledged}");
    }
    format!(
        "<table class=\"told\"><tr><th>Notification</th><th>Sent</th><th>Outcome</th><th>Delivery</th></tr>{told}</table>{acknowledged}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (Incident, RecoveryPlan) {
        let inc: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Incident",
            "metadata": {"name": "database-shop-db-1", "namespace": "plastprod",
                         "annotations": {"reprise.dev/acknowledge": "alice"}},
            "spec": {"planRef": {"name": "pra"}, "component": {"kind": "Database", "name": "shop-db"},
                     "level": 1, "cause": "Database shop-db Failed: database shop is gone <script>"},
            "status": {
                "phase": "Resolved",
                "failureObservedAt": "2026-11-30T10:00:00.000Z",
                "detectedAt": "2026-11-30T10:00:00.500Z",
                "deadline": "2026-11-30T10:30:00.500Z",
                "closedAt": "2026-11-30T10:00:42.250Z",
                "resolution": "by step restore (attempt 1)",
                "timeline": [
                    {"step": "notify-plastprod-it", "action": "Notify", "attempt": 1, "outcome": "Succeeded",
                     "started": "2026-11-30T10:00:00.600Z", "finished": "2026-11-30T10:00:01.000Z",
                     "message": "delivered to plastprod-it (HTTP 200)"},
                    {"step": "reconnect", "action": "Reconnect", "attempt": 1, "outcome": "Failed",
                     "started": "2026-11-30T10:00:00.700Z", "finished": "2026-11-30T10:00:10.700Z",
                     "message": "<img src=x onerror=alert(1)>"},
                    {"step": "restore", "action": "Restore", "attempt": 1, "outcome": "Succeeded",
                     "started": "2026-11-30T10:00:10.700Z", "finished": "2026-11-30T10:00:42.250Z",
                     "message": "restored", "bytes": 1572864}
                ],
                "measures": {"timeToDetect": "0.500s", "timeToRecover": "41.750s", "deadlineMet": true,
                             "dataRestoredBytes": 1572864, "dataLossWindow": "2h10m"}
            }
        }))
        .unwrap();
        let plan: RecoveryPlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "RecoveryPlan",
            "metadata": {"name": "pra", "namespace": "plastprod"},
            "spec": {"selector": {}, "levels": [{"level": 1, "name": "application-or-database",
                     "appliesTo": ["Database"], "minWindow": "15m", "maxWindow": "30m"}]}
        }))
        .unwrap();
        (inc, plan)
    }

    #[test]
    fn a_report_draws_every_step_against_the_window_and_escapes_what_peers_said() {
        let (inc, plan) = fixture();
        let html = incident_html(&inc, Some(&plan), "2026-11-30T11:00:00Z".parse().unwrap());
        assert_eq!(html.matches("<rect class=\"step").count(), 3);
        assert!(
            html.contains("data-marker=\"deadline\" data-seconds=\"1800.500\""),
            "{html}"
        );
        assert!(
            html.contains("data-marker=\"opens\" data-seconds=\"900.500\""),
            "{html}"
        );
        assert!(html.contains("application-or-database (window 15m to 30m)"));
        assert!(html.contains("1.5 MiB (1572864 bytes)"));
        assert!(html.contains("2h10m") && html.contains("41.750s"));
        assert!(html.contains("Acknowledged: alice"));
        assert!(html.contains("31.550s"), "the restore's duration, to the millisecond");
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "nothing a peer said is markup"
        );
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }

    #[test]
    fn a_report_without_the_plan_still_says_what_happened() {
        let (inc, _) = fixture();
        let html = incident_html(&inc, None, "2026-11-30T11:00:00Z".parse().unwrap());
        assert!(html.contains("not in the plan"));
        assert_eq!(html.matches("<rect class=\"step").count(), 3);
        assert!(
            html.contains("data-marker=\"deadline\""),
            "the deadline is in the status"
        );
    }
}
