//! Incident: the audit record of one failure and its recovery.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{ComponentRef, Condition, LocalRef},
    recovery_plan::Action,
};

/// Annotation a person sets to approve a `WaitForApproval` step:
/// `kubectl annotate incident NAME reprise.dev/approve=true`.
pub const APPROVE_ANNOTATION: &str = "reprise.dev/approve";
/// Annotation a person sets to acknowledge an incident (stops re-notification).
pub const ACKNOWLEDGE_ANNOTATION: &str = "reprise.dev/acknowledge";

/// One failure of a covered component and everything done about it. Created
/// by reprise when it detects the failure; kept as the audit trail.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "Incident",
    namespaced,
    doc = "The audit record of one failure of a covered component and of its recovery.",
    status = "IncidentStatus",
    shortname = "inc",
    category = "reprise",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.component.kind"),
    printcolumn(name = "Component", type_ = "string", json_path = ".spec.component.name"),
    printcolumn(name = "Level", type_ = "integer", json_path = ".spec.level"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Elapsed", type_ = "date", json_path = ".status.detectedAt"),
    printcolumn(name = "Deadline", type_ = "string", json_path = ".status.deadline"),
    printcolumn(name = "Breached", type_ = "boolean", json_path = ".status.breached", priority = 1)
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: an Incident records what was detected"))]
pub struct IncidentSpec {
    /// The RecoveryPlan whose procedure handles the incident.
    pub plan_ref: LocalRef,
    /// The component that failed.
    pub component: ComponentRef,
    /// Severity level, from the component's kind in the plan.
    #[schemars(range(min = 1, max = 5))]
    pub level: u8,
    /// What was observed, e.g. `Deployment shop deleted`.
    #[schemars(length(max = 1024))]
    pub cause: String,
    /// A drill: runs on scratch copies, never on the live component.
    #[serde(default)]
    pub drill: bool,
    /// When the failure was observed (the component's health signal `since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<MicroTime>,
    /// When reprise opened the incident, by its own clock, to the
    /// microsecond (`creationTimestamp` is whole seconds). Counted only
    /// within a second of `creationTimestamp`; otherwise that is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<MicroTime>,
    /// The `NotifyOnly` MaintenanceWindow the failure happened in: the
    /// incident's procedure only notifies (its other steps are skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_only: Option<String>,
}

/// Phases of an incident.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IncidentPhase {
    #[default]
    Detected,
    Recovering,
    AwaitingApproval,
    Escalated,
    Resolved,
    Failed,
    /// Not opened by reprise, and its component showed no failure when
    /// reprise first looked: nobody was told, nothing was done (a hand-made
    /// Incident must not page people; see the chart's admission policy).
    Rejected,
}

/// Observed state of an Incident.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Ready` is True once the incident is resolved.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Where the incident stands.
    #[serde(default)]
    pub phase: IncidentPhase,
    /// When the failure was first observed (the watch event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_observed_at: Option<MicroTime>,
    /// When reprise opened the incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<MicroTime>,
    /// detectedAt plus the level's maximum window; unset for an open-ended level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<MicroTime>,
    /// Whether the deadline passed before resolution.
    #[serde(default)]
    pub breached: bool,
    /// When the incident was resolved (the component observed healthy again)
    /// or its procedure failed; it is deleted the plan's `incidentRetention`
    /// after it is resolved. A failed incident stays open for people and
    /// resolves when the component is healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<MicroTime>,
    /// How it was resolved: by which step, or that the component came back
    /// without the procedure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Every step, in order, with its outcome.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// The measures ("M") of the recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measures: Option<Measures>,
    /// Who approved a WaitForApproval step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// One step of a recovery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// Step name from the procedure.
    pub step: String,
    /// The action.
    pub action: Action,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// When it started.
    pub started: MicroTime,
    /// When it ended; unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<MicroTime>,
    /// `Running`, `Succeeded` (the component was observed healthy after the
    /// step's action), `Failed`, `TimedOut` or `Skipped`.
    pub outcome: super::contract::StepOutcome,
    /// What happened.
    #[serde(default)]
    pub message: String,
    /// Bytes of data moved by the step (restored, backed up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The measures of a recovery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measures {
    /// From the failure's observation to the incident's creation (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_detect: Option<String>,
    /// From detection to resolution (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_recover: Option<String>,
    /// Bytes restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_restored_bytes: Option<u64>,
    /// Time between the backup used and the failure: the data lost (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss_window: Option<String>,
    /// Whether the incident was resolved by its deadline (unset while open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_met: Option<bool>,
    /// How long each finished step of the timeline took.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepMeasure>,
}

/// The duration of one step attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepMeasure {
    /// Step name.
    pub step: String,
    /// Attempt number.
    pub attempt: u32,
    /// Its outcome.
    pub outcome: super::contract::StepOutcome,
    /// How long it took (a duration, to the millisecond).
    pub duration: String,
}
