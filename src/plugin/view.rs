//! What the plugin shows, computed from the API's objects alone (pure: the
//! same objects and time give the same view). Serialized as is for
//! `-o json|yaml`; drawn as text by `text`.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::api::{
    Database, Incident, RecoveryPlan,
    common::{ComponentKind, ConditionStatus},
    incident::{ACKNOWLEDGE_ANNOTATION, IncidentPhase},
    recovery_plan::{Action, DrillResult, Level},
};

/// `kubectl reprise status`.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub plans: Vec<PlanView>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    /// The Ready condition's message (why not, when not).
    pub message: String,
    pub levels: Vec<LevelView>,
    pub open_incidents: Vec<IncidentLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillLine>,
    pub backups: Vec<BackupLine>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LevelView {
    pub level: u8,
    pub name: String,
    pub applies_to: Vec<ComponentKind>,
    /// `15m to 30m`, or `from 4h, open-ended`.
    pub window: String,
    pub ready: bool,
    pub reasons: Vec<String>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentLine {
    pub name: String,
    pub component: String,
    pub level: u8,
    pub phase: IncidentPhase,
    /// Seconds since it opened, to the millisecond.
    pub elapsed_seconds: f64,
    /// Seconds left before its deadline (negative: past it); none for an open-ended level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_seconds: Option<f64>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillLine {
    pub id: String,
    pub started: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// `Running`, `Verified` (every level it drilled met its window) or `Failed`.
    pub outcome: String,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupLine {
    pub database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<Timestamp>,
    /// Seconds since the newest good backup's data (none: no backup yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    /// The Database's level's RPO, as written in the plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// Whether the newest backup is within the RPO (false with no backup).
    pub within_rpo: bool,
}

/// Whether an incident still needs people or the procedure.
pub fn is_open(i: &Incident) -> bool {
    let phase = i.status.as_ref().map(|s| s.phase).unwrap_or_default();
    !matches!(phase, IncidentPhase::Resolved | IncidentPhase::Rejected)
}

fn level_of(plan: &RecoveryPlan, kind: ComponentKind) -> Option<&Level> {
    plan.spec.levels.iter().find(|l| l.applies_to.contains(&kind))
}

pub fn window(l: &Level) -> String {
    match &l.max_window {
        Some(max) => format!("{} to {}", l.min_window.as_str(), max.as_str()),
        None => format!("from {}, open-ended", l.min_window.as_str()),
    }
}

/// Seconds to the millisecond, as the incident's measures count them.
fn secs(from: Timestamp, to: Timestamp) -> f64 {
    crate::report::between(from, to).as_millis() as f64 / 1000.0
}

/// The status of every plan given, with the incidents and Databases of their namespaces.
pub fn status(plans: &[RecoveryPlan], incidents: &[Incident], databases: &[Database], now: Timestamp) -> Status {
    let mut plans: Vec<PlanView> = plans.iter().map(|p| plan_view(p, incidents, databases, now)).collect();
    plans.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Status { plans }
}

fn plan_view(plan: &RecoveryPlan, incidents: &[Incident], databases: &[Database], now: Timestamp) -> PlanView {
    let ns = plan.namespace().unwrap_or_default();
    let st = plan.status.clone().unwrap_or_default();
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
    let levels = plan
        .spec
        .levels
        .iter()
        .map(|l| {
            let r = st.readiness.iter().find(|r| r.level == l.level);
            LevelView {
                level: l.level,
                name: l.name.clone().unwrap_or_default(),
                applies_to: l.applies_to.clone(),
                window: window(l),
                ready: r.is_some_and(|r| r.ready),
                reasons: r.map(|r| r.reasons.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let mut open: Vec<IncidentLine> = incidents
        .iter()
        .filter(|i| i.namespace().as_deref() == Some(&ns) && i.spec.plan_ref.name == plan.name_any() && is_open(i))
        .map(|i| incident_line(i, now))
        .collect();
    open.sort_by(|a, b| b.elapsed_seconds.total_cmp(&a.elapsed_seconds));
    PlanView {
        name: plan.name_any(),
        ready: ready.is_some_and(|c| c.status == ConditionStatus::True),
        message: ready
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "not reconciled yet".into()),
        levels,
        open_incidents: open,
        last_drill: st.last_drill.as_ref().map(drill_line),
        backups: backups(plan, &ns, databases, now),
        namespace: ns,
    }
}

fn incident_line(i: &Incident, now: Timestamp) -> IncidentLine {
    let st = i.status.clone().unwrap_or_default();
    let opened = st
        .detected_at
        .map(|t| t.0)
        .or(i.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    IncidentLine {
        name: i.name_any(),
        component: format!("{} {}", i.spec.component.kind, i.spec.component.name),
        level: i.spec.level,
        phase: st.phase,
        elapsed_seconds: secs(opened, now),
        remaining_seconds: st.deadline.map(|d| secs(now, d.0)),
    }
}

pub fn drill_line(d: &DrillResult) -> DrillLine {
    DrillLine {
        id: d.id.clone(),
        started: d.started.0,
        finished: d.finished.as_ref().map(|f| f.0),
        outcome: d.outcome().into(),
    }
}

/// The plan's covered Databases: their newest backup's age against their level's RPO.
fn backups(plan: &RecoveryPlan, ns: &str, databases: &[Database], now: Timestamp) -> Vec<BackupLine> {
    let covered: Vec<&str> = plan
        .status
        .as_ref()
        .and_then(|s| s.coverage.as_ref())
        .map(|c| {
            c.covered
                .iter()
                .filter(|c| c.kind == ComponentKind::Database)
                .map(|c| c.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let rpo = level_of(plan, ComponentKind::Database)
        .and_then(|l| l.objectives.as_ref())
        .and_then(|o| o.rpo.clone());
    databases
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns) && covered.contains(&d.name_any().as_str()))
        .map(|d| {
            let last = d.status.as_ref().and_then(|s| s.last_backup.as_ref()).map(|b| b.time.0);
            let age = last.map(|t| secs(t, now));
            BackupLine {
                database: d.name_any(),
                last_backup: last,
                age_seconds: age,
                rpo: rpo.as_ref().map(|r| r.as_str().to_string()),
                within_rpo: match (age, &rpo) {
                    (Some(a), Some(r)) => a <= r.as_std().as_secs_f64(),
                    (Some(_), None) => true,
                    (None, _) => false,
                },
            }
        })
        .collect()
}

/// `kubectl reprise incident NAME`.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    pub namespace: String,
    pub name: String,
    pub component: String,
    pub cause: String,
    pub level: u8,
    pub level_name: String,
    /// The level's window, as the plan writes it (none: level not in the plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    pub phase: IncidentPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_observed_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
    /// From opening to closing (or now, while open), to the millisecond.
    pub elapsed_seconds: f64,
    /// From opening to the deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
    pub breached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    pub steps: Vec<StepView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measures: Option<crate::api::incident::Measures>,
    /// The notification steps: who was told, and how it went.
    pub notified: Vec<StepView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
}

#[derive(Serialize, Debug, PartialEq, Clone)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub step: String,
    pub action: Action,
    pub attempt: u32,
    pub started: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// Seconds from the incident's opening to the step's start.
    pub offset_seconds: f64,
    /// How long it took (so far, while it runs), to the millisecond.
    pub duration_seconds: f64,
    pub outcome: crate::api::contract::StepOutcome,
    pub message: String,
}

pub fn incident(i: &Incident, plan: Option<&RecoveryPlan>, now: Timestamp) -> IncidentView {
    let st = i.status.clone().unwrap_or_default();
    let level = plan.and_then(|p| p.spec.levels.iter().find(|l| l.level == i.spec.level));
    let opened = st.detected_at.as_ref().map(|t| t.0);
    let closed = st.closed_at.as_ref().map(|t| t.0);
    let end = closed.unwrap_or(now);
    let origin = opened.unwrap_or(now);
    let steps: Vec<StepView> = st
        .timeline
        .iter()
        .map(|e| StepView {
            step: e.step.clone(),
            action: e.action,
            attempt: e.attempt,
            started: e.started.0,
            finished: e.finished.as_ref().map(|f| f.0),
            offset_seconds: secs(origin, e.started.0),
            duration_seconds: secs(e.started.0, e.finished.as_ref().map(|f| f.0).unwrap_or(end)),
            outcome: e.outcome,
            message: e.message.clone(),
        })
        .collect();
    IncidentView {
        namespace: i.namespace().unwrap_or_default(),
        name: i.name_any(),
        component: format!("{} {}", i.spec.component.kind, i.spec.component.name),
        cause: i.spec.cause.clone(),
        level: i.spec.level,
        level_name: level.and_then(|l| l.name.clone()).unwrap_or_default(),
        window: level.map(window),
        phase: st.phase,
        failure_observed_at: st.failure_observed_at.as_ref().map(|t| t.0),
        detected_at: opened,
        deadline: st.deadline.as_ref().map(|t| t.0),
        closed_at: closed,
        elapsed_seconds: opened.map(|o| secs(o, end)).unwrap_or(0.0),
        window_seconds: opened.zip(st.deadline.as_ref()).map(|(o, d)| secs(o, d.0)),
        breached: st.breached,
        resolution: st.resolution.clone(),
        notified: steps.iter().filter(|s| s.action == Action::Notify).cloned().collect(),
        steps,
        measures: st.measures.clone(),
        approved_by: st.approved_by.clone(),
        acknowledged_by: i.annotations().get(ACKNOWLEDGE_ANNOTATION).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn status_shows_open_incidents_and_backups_against_the_rpo() {
        let plan: RecoveryPlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "RecoveryPlan",
            "metadata": {"name": "pra", "namespace": "p"},
            "spec": {"selector": {}, "levels": [
                {"level": 1, "appliesTo": ["Database"], "minWindow": "15m", "maxWindow": "30m", "objectives": {"rpo": "6h"}},
                {"level": 3, "appliesTo": ["Server"], "minWindow": "45m"}]},
            "status": {"coverage": {"coveredCount": 2, "uncoveredCount": 0,
                "covered": [{"kind": "Database", "name": "fresh"}, {"kind": "Database", "name": "stale"}]},
                "readiness": [{"level": 1, "ready": false, "reasons": ["stale is past its RPO"]}]}
        }))
        .unwrap();
        let db = |name: &str, at: &str| -> Database {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "reprise.dev/v1alpha1", "kind": "Database",
                "metadata": {"name": name, "namespace": "p"},
                "spec": {"instance": {"external": {"host": "h", "adminSecretRef": {"name": "s"}}}},
                "status": {"lastBackup": {"id": "b", "time": at, "duration": "1s", "bytes": 1}}
            }))
            .unwrap()
        };
        let open: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Incident",
            "metadata": {"name": "i", "namespace": "p"},
            "spec": {"planRef": {"name": "pra"}, "component": {"kind": "Database", "name": "stale"}, "level": 1, "cause": "x"},
            "status": {"phase": "Recovering", "detectedAt": "2026-11-30T10:00:00Z", "deadline": "2026-11-30T10:30:00Z"}
        }))
        .unwrap();
        let now = t("2026-11-30T10:10:00.250Z");
        let s = status(
            &[plan],
            &[open],
            &[db("fresh", "2026-11-30T09:00:00Z"), db("stale", "2026-11-29T10:00:00Z")],
            now,
        );
        let p = &s.plans[0];
        assert_eq!(p.levels[0].window, "15m to 30m");
        assert_eq!(p.levels[1].window, "from 45m, open-ended");
        assert!(!p.levels[0].ready);
        assert_eq!(p.open_incidents[0].elapsed_seconds, 600.25);
        assert_eq!(p.open_incidents[0].remaining_seconds, Some(1199.75));
        let within: Vec<(&str, bool)> = p.backups.iter().map(|b| (b.database.as_str(), b.within_rpo)).collect();
        assert_eq!(within, [("fresh", true), ("stale", false)]);
    }
}
