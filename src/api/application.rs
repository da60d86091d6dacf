//! Application: a web, mobile or API application, its versions and artifacts.
//! The plan's "gestion des applications web et mobile", "gestion des versions", level 1.

use k8s_openapi::{api::core::v1::ResourceRequirements, apimachinery::pkg::apis::meta::v1::Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::common::{ACTION_ANNOTATION, ActionRecord};
use super::common::{Condition, Duration};

/// An application run as a Deployment and a Service that reprise owns. A new
/// `version` rolls out behind a health gate and rolls back by itself when it
/// fails; artifacts (mobile builds) are checked against their sha256.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name: an Application becomes a Deployment and a Service, whose names are at most 63 lower-case letters, digits and '-', starting with a letter"),
    doc = "A web, mobile or API application: Deployment and Service, versioned releases with rollback, artifacts.",
    status = "ApplicationStatus",
    shortname = "app",
    category = "reprise",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Last Good",
        type_ = "string",
        json_path = ".status.lastGoodVersion",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// What kind of application this is.
    #[serde(rename = "type")]
    pub type_: AppType,
    /// The version to run, e.g. `2.4.1`. Changing it starts a release.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"))]
    pub version: String,
    /// Container image, with `{version}` where the version goes,
    /// e.g. `registry.plastprod.example/shop:{version}`.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.contains('{version}')").message("spec.image must contain {version}, where the version goes"))]
    pub image: String,
    /// Number of pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Port the application listens on; the Service exposes it.
    #[serde(default = "default_app_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Environment variables.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// CPU and memory requests and limits of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How the application's health is checked (a readiness probe on each pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Databases and VirtualMachines this application needs; they recover first,
    /// and no new version rolls out while one of them is not Ready.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b == a))").message("dependsOn lists a component twice"))]
    pub depends_on: Vec<Dependency>,
    /// Built artifacts (mobile builds) whose content is checked against their sha256.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub artifacts: Vec<Artifact>,
    /// How often artifacts are re-checked (a duration).
    #[serde(default = "default_artifact_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("artifactCheckInterval must be at least 1s"))]
    pub artifact_check_interval: Duration,
    /// How a new version rolls out.
    #[serde(default)]
    pub rollout: Rollout,
}

fn default_replicas() -> i32 {
    2
}

fn default_app_port() -> i32 {
    8080
}

fn default_artifact_interval() -> Duration {
    Duration::from_secs(3600)
}

/// Kinds of application.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AppType {
    Web,
    Mobile,
    Api,
}

/// An environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"))]
    pub name: String,
    /// Its value.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// An HTTP health check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// HTTP path that answers 2xx when the application is healthy.
    #[serde(default = "default_health_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/.*$"))]
    pub path: String,
    /// Seconds between checks.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
    /// Consecutive failures before a pod counts as unhealthy.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
}

fn default_health_path() -> String {
    "/healthz".into()
}

fn default_period() -> i32 {
    10
}

fn default_failure_threshold() -> i32 {
    3
}

/// Kinds an application can depend on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DependencyKind {
    Database,
    VirtualMachine,
}

/// A component the application needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Kind of the component.
    pub kind: DependencyKind,
    /// Its name, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A built artifact of the application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Artifact name, e.g. `android-apk`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Where the artifact is stored (HTTP or HTTPS).
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://.+$"))]
    pub url: String,
    /// Expected SHA-256 of its content, lower-case hex.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
}

/// How a new version rolls out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// How long a new version has to become Available with every replica
    /// updated before reprise rolls back to the last good version.
    #[serde(default = "default_progress_deadline")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("progressDeadline must be at least 1s"))]
    pub progress_deadline: Duration,
    /// How many releases `status.releases` keeps.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

fn default_progress_deadline() -> Duration {
    Duration::from_secs(600)
}

fn default_history_limit() -> u32 {
    10
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            progress_deadline: default_progress_deadline(),
            history_limit: default_history_limit(),
        }
    }
}

/// Observed state of an Application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Available`, `Progressing`, `Degraded`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Version the Deployment runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Newest version that became Available; the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_version: Option<String>,
    /// Release history, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<Release>,
    /// A version whose rollout failed: it is not tried again until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_version: Option<FailedVersion>,
    /// The health signal the recovery engine reads (see `AppHealth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AppHealth>,
    /// When the application last turned healthy or stopped being healthy:
    /// for a failure, when it was first observed; once healthy again, the
    /// evidence of when it came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_since: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>,
    /// The last repair reprise made to the Deployment or Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair: Option<Repair>,
    /// The last recovery action asked through the `reprise.dev/action`
    /// annotation: `restart` (rolling restart), `recreate` (delete and recreate
    /// the Deployment and Service) or `rollback` (back to the last good version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<ActionRecord>,
    /// The last check of each artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactStatus>,
}

/// What the recovery engine reads to know whether an application failed.
///
/// - `Healthy`: the desired version runs with every replica available.
/// - `Progressing`: a release or a restart is under way (not a failure).
/// - `Degraded`: it serves, but not as desired (rolled back, an artifact is bad,
///   some replicas unavailable).
/// - `Failed`: it does not serve: no replica available, or the Deployment is gone
///   and could not be recreated.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AppHealth {
    Healthy,
    Progressing,
    Degraded,
    Failed,
}

impl super::contract::HealthState for AppHealth {
    fn is_failure(self) -> bool {
        self == Self::Failed
    }
    fn is_healthy(self) -> bool {
        self == Self::Healthy
    }
}

/// A version that failed to roll out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedVersion {
    /// The version.
    pub version: String,
    /// The `metadata.generation` of the spec that asked for it.
    pub generation: i64,
    /// Why it failed.
    pub reason: String,
}

/// A repair of an owned object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    /// When.
    pub time: Time,
    /// `Deployment` or `Service`.
    pub object: String,
    /// `Recreated` (it was deleted) or `Reverted` (it was changed by someone else).
    pub action: String,
    /// What was found.
    pub message: String,
}

/// The last check of one artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStatus {
    /// Artifact name.
    pub name: String,
    /// Whether it was reachable and its content matched the sha256.
    pub ok: bool,
    /// When it was checked.
    pub checked: Time,
    /// Bytes read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// How long the check took (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The sha256 found, when it differs, or the error.
    #[serde(default)]
    pub message: String,
    /// The URL and sha256 that were checked, so a change of either re-checks at once.
    #[serde(default)]
    pub checked_spec: String,
}

/// One release of a version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// The version released.
    pub version: String,
    /// When the rollout started.
    pub started: Time,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// How long it took (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// `Progressing`, `Succeeded`, `RolledBack`.
    pub outcome: String,
    /// Why, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
