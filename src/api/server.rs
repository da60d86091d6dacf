//! Server: a physical machine reached through its BMC over Redfish.
//! The plan's "inventaire et câblage", "installation du serveur", level 3.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, Duration, SecretKeyRef, SecretRef};

/// A physical server, reached through its BMC over Redfish. reprise keeps its
/// power as desired, reads its hardware and network inventory, checks the
/// cabling against what is declared here, and power-cycles or reprovisions it
/// when the recovery plan says so.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "Server",
    namespaced,
    doc = "A physical server reached through its BMC over Redfish: power, inventory, cabling, reprovisioning.",
    status = "ServerStatus",
    shortname = "srv",
    category = "reprise",
    printcolumn(name = "Power", type_ = "string", json_path = ".status.powerState"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health.state"),
    printcolumn(name = "BMC Health", type_ = "string", json_path = ".status.bmcHealth", priority = 1),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".status.inventory.model",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// How to reach the server's baseboard management controller.
    pub bmc: BmcSpec,
    /// Whether the server should be powered on. reprise powers it on, or shuts
    /// it down (gracefully, then forcefully after a timeout), to match.
    /// (A boolean rather than `On`/`Off`: YAML 1.1 tools read those as booleans.)
    #[serde(default = "default_true")]
    pub online: bool,
    /// What the server is for (e.g. `hypervisor`, `database`), shown to responders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub role: Option<String>,
    /// The network interfaces and cabling the server must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// The image the server is installed from when it is (re)provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningSpec>,
    /// How often the BMC is polled (a duration, e.g. `60s`); a jitter of up to 10% is added.
    #[serde(default = "default_poll_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("pollInterval must be at least 1s"))]
    pub poll_interval: Duration,
    /// How long a graceful shutdown may take before reprise forces the power off.
    #[serde(default = "default_shutdown_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("shutdownTimeout must be at least 1s"))]
    pub shutdown_timeout: Duration,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}

/// Connection to a BMC speaking Redfish.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.caBundleSecretRef) && self.insecureSkipVerify)").message("spec.bmc: set caBundleSecretRef or insecureSkipVerify, not both"))]
pub struct BmcSpec {
    /// Base URL of the Redfish service, e.g. `https://10.0.10.11` or
    /// `http://127.0.0.1:8000`. No user information (`user:password@`): the
    /// credentials come from `credentialsSecretRef`.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s/@]+(/[^\s@]*)?$"))]
    pub address: String,
    /// Secret with keys `username` and `password` for the BMC.
    pub credentials_secret_ref: SecretRef,
    /// CA bundle (PEM) that signed the BMC's certificate. Unset: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// Accept any certificate from the BMC. Only for labs: the traffic can be intercepted.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The Redfish ComputerSystem id when the BMC manages several; unset: the only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"))]
    pub system_id: Option<String>,
}

/// The network a server must be cabled to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Expected network interfaces, each checked against what the BMC reports.
    #[schemars(length(max = 32))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(i, self.exists_one(j, j.macAddress.lowerAscii() == i.macAddress.lowerAscii()))").message("spec.network.interfaces: each macAddress must be unique")
    )]
    pub interfaces: Vec<ExpectedInterface>,
}

/// One network interface the server must have.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedInterface {
    /// Interface name as the BMC reports it (Redfish EthernetInterface Id), e.g. `NIC.1`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Expected MAC address, e.g. `52:54:00:aa:bb:01`.
    #[schemars(length(max = 17), regex(pattern = r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$"))]
    pub mac_address: String,
    /// Switch the interface is cabled to (from the cabling inventory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub switch: Option<String>,
    /// Port on that switch, e.g. `Gi1/0/12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub port: Option<String>,
    /// VLAN the port carries (1–4094).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<u16>,
    /// Whether the link must be up; a link that is down is then cabling drift.
    #[serde(default = "default_true")]
    pub link_required: bool,
}

pub(crate) fn default_true() -> bool {
    true
}

/// How a server is (re)installed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningSpec {
    /// URL of the installation image, inserted as Redfish virtual media.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^(https?|nfs)://.+$"))]
    pub image: String,
    /// Firmware boot mode used to boot the image.
    #[serde(default)]
    pub boot_mode: BootMode,
    /// How long the installer needs the image after the server booted from
    /// it; then the virtual media is ejected.
    #[serde(default = "default_eject_after")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("ejectAfter must be at least 1s"))]
    pub eject_after: Duration,
    /// How long after the reset the BMC may take to show that the server
    /// rebooted (power seen off, a new last reset time or boot progress);
    /// without that evidence the provisioning ends `TimedOut`.
    #[serde(default = "default_boot_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("bootTimeout must be at least 1s"))]
    pub boot_timeout: Duration,
}

fn default_eject_after() -> Duration {
    Duration::from_secs(1800)
}

fn default_boot_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Firmware boot mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum BootMode {
    #[default]
    UEFI,
    Legacy,
}

/// Observed state of a Server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Reachable`, `PoweredOn`, `Healthy`, `InventoryMatches`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Power state the BMC reports (`On`, `Off`, `PoweringOn`, `PoweringOff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<String>,
    /// Health the BMC reports for the system (`Status.HealthRollup`, else
    /// `Status.Health`: `OK`, `Warning`, `Critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_health: Option<String>,
    /// The health signal the recovery engine reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ServerHealth>,
    /// The power change reprise asked the BMC for and is waiting on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_request: Option<PowerRequest>,
    /// The last (re)provisioning, step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningStatus>,
    /// The last recovery action asked through the `reprise.dev/action`
    /// annotation: `powerCycle` (restart now, forcefully) or `reprovision`
    /// (install from `spec.provisioning.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<super::common::ActionRecord>,
    /// Hardware and network inventory read from the BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Differences between the declared network and what the BMC reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cabling_drift: Vec<CablingDrift>,
}

/// Hardware inventory of a server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Manufacturer, e.g. `Dell Inc.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Model, e.g. `PowerEdge R650`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Serial number, for the vendor's technician.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// BIOS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
    /// Number of CPU sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// CPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// Installed memory in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
    /// Network interfaces the BMC reports.
    #[serde(default)]
    pub nics: Vec<ObservedNic>,
    /// Network adapters of the chassis (where the BMC reports them), e.g. for the technician.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_adapters: Vec<ObservedAdapter>,
    /// Parts of the inventory the BMC did not give (a member that failed, a
    /// collection read only in part), each with why; the rest is kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A network adapter card as the BMC reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedAdapter {
    /// Adapter id.
    pub id: String,
    /// Manufacturer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Health the BMC reports for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// A network interface as the BMC reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedNic {
    /// Interface id.
    pub name: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `LinkUp`, `LinkDown` or `NoLink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_status: Option<String>,
    /// Link speed in Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u64>,
}

/// One difference between the declared network and the BMC's report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CablingDrift {
    /// The declared interface concerned.
    pub interface: String,
    /// `Missing`, `UnexpectedMac` or `LinkDown`.
    pub kind: String,
    /// What the spec expects.
    #[serde(default)]
    pub expected: String,
    /// What the BMC reports.
    #[serde(default)]
    pub observed: String,
}

/// What the recovery engine reads to know whether a server failed.
///
/// - `Healthy`: the BMC answers, the power is as desired, health is not Critical.
/// - `Unreachable`: the BMC does not answer or refuses reprise's credentials.
/// - `PowerLost`: the server is off while it should be on, and reprise did not turn it off.
/// - `Critical`: the BMC reports the system's health as Critical.
/// - `Provisioning`: a reprovisioning is under way (not a failure).
/// - `Restarting`: a power cycle reprise asked for is under way, until the
///   BMC shows the reboot (not a failure).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServerHealthState {
    Healthy,
    Unreachable,
    PowerLost,
    Critical,
    Provisioning,
    Restarting,
}

impl super::contract::HealthState for ServerHealthState {
    fn is_failure(self) -> bool {
        matches!(self, Self::Unreachable | Self::PowerLost | Self::Critical)
    }
    fn is_healthy(self) -> bool {
        self == Self::Healthy
    }
}

/// The health signal, with when it last changed.
pub type ServerHealth = super::contract::Health<ServerHealthState>;

/// A power change asked of the BMC.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PowerRequest {
    /// The Redfish reset type asked: `On`, `GracefulShutdown`, `ForceOff`, `ForceRestart`.
    pub reset_type: String,
    /// When it was last asked (or refused).
    pub time: Time,
    /// How many times in a row it was asked without the power changing, or
    /// refused by the BMC; the next attempt waits longer each time (5 s
    /// doubling, at most 10 minutes).
    #[serde(default)]
    pub attempts: u32,
    /// Why the BMC refused the last attempt (its HTTP status and
    /// `@Message.ExtendedInfo`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// For a `ForceRestart`: what showed the reboot (the power seen off, a
    /// new last reset time), once seen; and what the BMC said before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_evidence: Option<String>,
    /// For a `ForceRestart`: the BMC's boot marks before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

/// A (re)provisioning and its steps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningStatus {
    /// The request id (from the action annotation).
    pub id: String,
    /// The image installed.
    pub image: String,
    /// `InProgress`, `Succeeded`, `Failed`, or `TimedOut` (no evidence of a
    /// reboot after the reset within `bootTimeout`).
    pub phase: String,
    /// Steps in order: `InsertMedia`, `SetBootOverride`, `Reset`, `Booted`, `EjectMedia`.
    #[serde(default)]
    pub steps: Vec<ProvisioningStep>,
    /// What the BMC reported just before the reset (power state, last reset
    /// time, boot progress), to tell a reboot from none: `Booted` needs
    /// evidence of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// What showed that the server did reboot after the reset (the power
    /// seen off, a new last reset time, a new boot progress), once seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_evidence: Option<String>,
}

/// One step of a provisioning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningStep {
    /// The step.
    pub step: String,
    /// When it started.
    pub started: Time,
    /// When it finished.
    pub finished: Time,
    /// How long it took (a duration).
    pub duration: String,
    /// `Succeeded`, `Failed` or `TimedOut`.
    pub outcome: String,
    /// Details.
    #[serde(default)]
    pub message: String,
}
