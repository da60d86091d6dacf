//! RecoveryPlan: the PRA itself — levels, responders, procedures, objectives, drills.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ComponentKind, ComponentRef, Condition, Duration, SecretKeyRef};

/// A disaster-recovery plan: which components it covers, the severity levels
/// with their intervention windows, who responds, and the ordered procedure
/// reprise runs for each kind of component when one fails.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "RecoveryPlan",
    namespaced,
    doc = "A disaster-recovery plan: covered components, severity levels, responders, procedures, drills.",
    status = "RecoveryPlanStatus",
    shortname = "rp",
    category = "reprise",
    printcolumn(name = "Covered", type_ = "integer", json_path = ".status.coverage.coveredCount"),
    printcolumn(name = "Uncovered", type_ = "integer", json_path = ".status.coverage.uncoveredCount"),
    printcolumn(name = "Open Incidents", type_ = "integer", json_path = ".status.openIncidents"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.levels.all(l, l.responders.all(r, self.responders.exists(x, x.name == r.name)))").message("spec.levels[].responders[].name must name one of spec.responders"))]
#[x_kube(validation = Rule::new("self.procedures.all(p, p.steps.all(s, !has(s.responder) || self.responders.exists(x, x.name == s.responder)))").message("spec.procedures[].steps[].responder must name one of spec.responders"))]
#[x_kube(validation = Rule::new("!has(self.sites) || size(self.sites) == 0 || self.levels.exists(l, 'Site' in l.appliesTo)").message("spec.levels: a plan that names sites needs a level for Site, e.g. {level: 4, name: site, appliesTo: [Site], minWindow: 1h, maxWindow: 4h}"))]
pub struct RecoveryPlanSpec {
    /// Which components (Applications, Databases, VirtualMachines, Servers) of
    /// this namespace the plan covers, by label. An empty selector covers all.
    /// Sites are named in `sites`, never selected.
    #[serde(default)]
    pub selector: LabelSelector,
    /// The Sites (by name, in this namespace) whose loss the plan covers: when
    /// this site takes over from a lost one, the failover is a site Incident
    /// of the level that applies to `Site`, its components rebuilt wave by
    /// wave. Each cluster holds the same plan: the local Site is the one that
    /// acts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub sites: Vec<String>,
    /// Severity levels. Defaults to the plan's three: 1 (applications and
    /// databases, 15m–30m), 2 (virtual machines, 30m–45m), 3 (servers, 45m and
    /// more), and a fourth for the loss of a site (1h–4h).
    #[serde(default = "default_levels")]
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["level".into()]),
        validation = Rule::new("self.all(l, l.appliesTo.all(k, self.exists_one(m, k in m.appliesTo)))").message("spec.levels: each kind may appear in the appliesTo of one level only")
    )]
    pub levels: Vec<Level>,
    /// Who intervenes, in escalation order within each level.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub responders: Vec<Responder>,
    /// The ordered recovery steps for each kind of component.
    #[serde(default)]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["kind".into()]))]
    pub procedures: Vec<Procedure>,
    /// Recovery drills that prove the plan without touching live components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<Drills>,
    /// How long resolved Incidents are kept as the audit trail (a duration).
    #[serde(default = "default_incident_retention")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("incidentRetention must be at least 1s"))]
    pub incident_retention: Duration,
}

fn default_incident_retention() -> Duration {
    "2160h".parse().expect("valid duration")
}

/// The plan's three levels, as the seed defines them.
pub fn default_levels() -> Vec<Level> {
    let level = |n: u8, name: &str, kinds: Vec<ComponentKind>, min: &str, max: Option<&str>| Level {
        level: n,
        name: Some(name.to_string()),
        applies_to: kinds,
        min_window: min.parse().expect("valid duration"),
        max_window: max.map(|m| m.parse().expect("valid duration")),
        objectives: None,
        responders: vec![],
    };
    vec![
        level(
            1,
            "application-or-database",
            vec![ComponentKind::Application, ComponentKind::Database],
            "15m",
            Some("30m"),
        ),
        level(
            2,
            "virtual-machine",
            vec![ComponentKind::VirtualMachine],
            "30m",
            Some("45m"),
        ),
        level(3, "server", vec![ComponentKind::Server], "45m", None),
        level(4, "site", vec![ComponentKind::Site], "1h", Some("4h")),
    ]
}

/// A severity level and its intervention window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxWindow) || duration(self.minWindow) < duration(self.maxWindow)").message("spec.levels[].minWindow must be shorter than maxWindow"))]
pub struct Level {
    /// Level number, 1 the least severe.
    #[schemars(range(min = 1, max = 5))]
    pub level: u8,
    /// A name for people, e.g. `virtual-machine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// Kinds of component whose failure is of this level.
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub applies_to: Vec<ComponentKind>,
    /// Start of the intervention window: the earliest a person is expected on it.
    pub min_window: Duration,
    /// End of the intervention window: the incident's deadline. Unset: open-ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window: Option<Duration>,
    /// Recovery objectives for this level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Responders for this level, in escalation order, each with how they intervene.
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub responders: Vec<LevelResponder>,
}

/// Recovery objectives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objectives {
    /// Recovery time objective: the longest a recovery may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<Duration>,
    /// Recovery point objective: the most data, in time, a recovery may lose;
    /// backups older than this make the plan not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<Duration>,
}

/// A responder called at a level.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LevelResponder {
    /// Name of one of `spec.responders`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// How the responder intervenes at this level.
    #[serde(default = "default_modes")]
    #[schemars(length(min = 1, max = 3))]
    pub modes: Vec<InterventionMode>,
}

fn default_modes() -> Vec<InterventionMode> {
    vec![InterventionMode::Remote]
}

/// How a responder intervenes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InterventionMode {
    /// From wherever they are, with their own tools.
    Remote,
    /// By telephone.
    Phone,
    /// A technician comes on site.
    OnSite,
}

/// Someone who intervenes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'Vendor' || !has(self.contract)").message("spec.responders[].contract applies to a Vendor responder only"))]
pub struct Responder {
    /// Responder name, e.g. `plastprod-it`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Internal team or vendor.
    #[serde(rename = "type")]
    pub type_: ResponderType,
    /// Where notifications are posted (a JSON message per event of an incident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Telephone number for people to call, shown in notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^\+?[0-9 .()-]+$"))]
    pub phone: Option<String>,
    /// The maintenance contract; the vendor is called only while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<Contract>,
}

/// Kinds of responder.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResponderType {
    Internal,
    Vendor,
}

/// A webhook that receives notifications.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// URL the JSON message is POSTed to.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://.+$"))]
    pub url: String,
    /// Secret key whose value is sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

/// A maintenance contract.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contract {
    /// Last day the contract runs (a date, `YYYY-MM-DD`).
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub until: String,
    /// Contract reference, quoted to the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reference: Option<String>,
}

/// The ordered steps run when a component of one kind fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = procedure_validation())]
pub struct Procedure {
    /// Kind of component the procedure recovers.
    pub kind: ComponentKind,
    /// Steps, run in order until the component is healthy again.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub steps: Vec<Step>,
}

/// The CEL rule on a procedure, built from the actions each kind supports.
fn procedure_validation() -> kube::core::Rule {
    let (rule, message) = super::contract::procedure_rule();
    kube::core::Rule::new(rule).message(kube::core::Message::Message(message))
}

/// One step of a procedure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Step name, unique in the procedure.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// What the step does.
    pub action: Action,
    /// How long the step may take before it counts as failed (a duration).
    #[serde(default = "default_step_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("timeout must be at least 1s"))]
    pub timeout: Duration,
    /// How many times a failed step is retried, with backoff.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: u32,
    /// For `Notify`: the responder; unset: the level's responders in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub responder: Option<String>,
}

/// A Site's procedure when the plan gives none: a person approves taking
/// over (needed only when the witness cannot decide), then the site does.
pub fn default_site_steps() -> Vec<Step> {
    let step = |name: &str, action: Action, timeout: &str| Step {
        name: name.into(),
        action,
        timeout: timeout.parse().expect("valid duration"),
        retries: 0,
        responder: None,
    };
    vec![
        step("approve-failover", Action::WaitForApproval, "4h"),
        step("failover", Action::Failover, "1h"),
    ]
}

fn default_step_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_retries() -> u32 {
    1
}

/// Recovery actions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Action {
    /// Restart the component (rolling restart, VM restart).
    Restart,
    /// Recreate it from its spec.
    Recreate,
    /// Roll an application back to its last good version.
    Rollback,
    /// Reconnect to a database instance.
    Reconnect,
    /// Restore a database from its latest verified backup.
    Restore,
    /// Restore a VM from its newest ready snapshot.
    RestoreSnapshot,
    /// Move a VM to another host Server.
    Move,
    /// Power-cycle a server through its BMC.
    PowerCycle,
    /// Reinstall a server from its provisioning image.
    Reprovision,
    /// Take over as the active site without the witness (a Site's step,
    /// after a person approved it): the lost site's plan rebuilt here.
    Failover,
    /// Notify a responder.
    Notify,
    /// Wait until a person approves: `kubectl annotate incident NAME reprise.dev/approve=true`.
    WaitForApproval,
    /// Not a plan step: recorded in an incident's timeline while the
    /// procedure waits (`await-dependencies`: the components the failed one
    /// depends on recover first; `await-self-repair`: a repair the component's
    /// own controller started finishes first).
    AwaitRecovery,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Self::Restart,
        Self::Recreate,
        Self::Rollback,
        Self::Reconnect,
        Self::Restore,
        Self::RestoreSnapshot,
        Self::Move,
        Self::PowerCycle,
        Self::Reprovision,
        Self::Failover,
        Self::Notify,
        Self::WaitForApproval,
        Self::AwaitRecovery,
    ];
}

/// Annotation that starts a drill on demand: `kubectl annotate recoveryplan NAME reprise.dev/drill-now=$(date +%s)`
/// (each new value starts one drill).
pub const DRILL_NOW_ANNOTATION: &str = "reprise.dev/drill-now";

/// Recovery drills: each covered Database's newest backup restored into a
/// scratch database and each covered VirtualMachine's newest snapshot into a
/// scratch VM, verified, timed and deleted. Live components are never touched.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drills {
    /// Cron schedule (5 fields, UTC), e.g. `0 3 * * 0`. On demand: the
    /// `reprise.dev/drill-now` annotation.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// How long a drill may run before the components that have not answered count as failed.
    #[serde(default = "default_drill_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("timeout must be at least 1s"))]
    pub timeout: Duration,
}

fn default_drill_timeout() -> Duration {
    "1h".parse().expect("valid duration")
}

/// Observed state of a RecoveryPlan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPlanStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Covered`, `ObjectivesMet`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Which components the plan covers, and which components no plan covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    /// Per level, whether the plan can meet its objectives now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness: Vec<LevelReadiness>,
    /// Number of open Incidents.
    #[serde(default)]
    pub open_incidents: u32,
    /// The last drill's results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillResult>,
}

/// Coverage of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// Number of covered components.
    pub covered_count: u32,
    /// Number of components in the namespace that no plan covers.
    pub uncovered_count: u32,
    /// Covered components.
    #[serde(default)]
    pub covered: Vec<ComponentRef>,
    /// Components in the namespace that no plan covers.
    #[serde(default)]
    pub uncovered: Vec<ComponentRef>,
}

/// Whether a level can meet its objectives now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LevelReadiness {
    /// The level.
    pub level: u8,
    /// Whether it can.
    pub ready: bool,
    /// Why not, one sentence each.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// Results of a drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillResult {
    /// The drill's request id, as the components' `status.lastAction.id`.
    pub id: String,
    /// What started it: `schedule`, or the `reprise.dev/drill-now` value.
    pub trigger: String,
    /// When it started.
    pub started: MicroTime,
    /// When it ended; unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<MicroTime>,
    /// Per level: measured recovery time against the window.
    #[serde(default)]
    pub levels: Vec<DrillLevel>,
    /// Per component drilled: what it measured.
    #[serde(default)]
    pub components: Vec<DrillComponent>,
}

impl DrillResult {
    /// Whether the drill, once finished, met the window of every level it
    /// drilled (a level with nothing drillable is not judged: its message
    /// says so), and drilled something.
    pub fn verified(&self) -> bool {
        self.finished.is_some()
            && !self.components.is_empty()
            && self.levels.iter().filter(|l| self.drilled(l.level)).all(|l| l.met)
    }

    /// In a word: `Running`, `Verified` (see `verified`) or `Failed`.
    pub fn outcome(&self) -> &'static str {
        match &self.finished {
            None => "Running",
            Some(_) if self.verified() => "Verified",
            Some(_) => "Failed",
        }
    }

    /// Whether the drill drilled anything of `level`.
    pub fn drilled(&self, level: u8) -> bool {
        self.components.iter().any(|c| c.level == level)
    }
}

/// How a component's part of a drill ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DrillOutcome {
    Running,
    Verified,
    Failed,
    Skipped,
}

/// One component's part of a drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillComponent {
    /// The component drilled.
    pub component: ComponentRef,
    /// Its level.
    pub level: u8,
    /// `Running`, `Verified`, `Failed` or `Skipped`.
    pub outcome: DrillOutcome,
    /// Measured restore time, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// What the component's controller said.
    #[serde(default)]
    pub message: String,
}

/// A drill's measure for one level.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillLevel {
    /// The level.
    pub level: u8,
    /// Measured recovery time (a duration): the slowest of the level's
    /// components drilled. Unset when nothing of the level could be drilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
    /// The level's window end (a duration), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Whether the measured time is within the window.
    pub met: bool,
    /// What went wrong, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
