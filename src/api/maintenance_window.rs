//! MaintenanceWindow: a declared maintenance that pauses or limits recovery.
//! The plan's "mise en place des maintenances".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ComponentRef, Condition};

/// A declared maintenance. Failures of covered components inside the window
/// open no automatic recovery (`Pause`) or only notify (`NotifyOnly`); what
/// happened during the window is recorded as its measures.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "MaintenanceWindow",
    namespaced,
    doc = "A declared maintenance that pauses or limits automatic recovery of the components it selects.",
    status = "MaintenanceWindowStatus",
    shortname = "mw",
    category = "reprise",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Start", type_ = "string", json_path = ".spec.start"),
    printcolumn(name = "End", type_ = "string", json_path = ".spec.end"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.end > self.start").message("spec.end must be after spec.start"))]
#[x_kube(validation = Rule::new("timestamp(self.end) - timestamp(self.start) <= duration('8784h')").message("spec: a maintenance window lasts at most 366 days (end - start)"))]
pub struct MaintenanceWindowSpec {
    /// Components (of any kind, in this namespace) under maintenance, by label.
    pub selector: LabelSelector,
    /// When the maintenance starts (RFC 3339, e.g. `2026-12-05T20:00:00Z`).
    pub start: Time,
    /// When it ends.
    pub end: Time,
    /// Why, for the people who read it later.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// What happens to failures inside the window.
    #[serde(default)]
    pub mode: MaintenanceMode,
}

/// What a maintenance window does to recovery.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum MaintenanceMode {
    /// No automatic recovery; failures are recorded.
    #[default]
    Pause,
    /// Incidents are opened but only notify.
    NotifyOnly,
}

/// Phases of a maintenance window.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WindowPhase {
    Scheduled,
    Active,
    Ended,
}

/// Observed state of a MaintenanceWindow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `Scheduled`, `Active` or `Ended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WindowPhase>,
    /// Components the window covers now.
    #[serde(default)]
    pub covered: Vec<ComponentRef>,
    /// Failures observed inside the window (the maintenance's measures).
    #[serde(default)]
    pub failures_recorded: u32,
    /// The failures observed inside the window, oldest first (the last 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<RecordedFailure>,
}

/// A failure seen inside a maintenance window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedFailure {
    /// The component.
    pub component: ComponentRef,
    /// When its health signal turned bad.
    pub since: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime,
    /// What it said.
    pub cause: String,
}
