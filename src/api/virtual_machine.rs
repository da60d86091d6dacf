//! VirtualMachine: a VM on a provider (KubeVirt first).
//! The plan's "installation de la machine virtuelle", software, backups, level 2.

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, LocalRef, Retention};

/// A virtual machine run by a provider (KubeVirt). reprise owns the provider's
/// VM object, installs the declared software through cloud-init, snapshots it
/// on schedule and restarts, recreates, restores or moves it in a recovery.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "VirtualMachine",
    namespaced,
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name: a VirtualMachine becomes a KubeVirt VirtualMachine, whose name is at most 63 lower-case letters, digits and '-', starting with a letter"),
    doc = "A virtual machine run by a provider (KubeVirt): installation, software, snapshots, restore.",
    status = "VirtualMachineStatus",
    shortname = "rvm",
    category = "reprise",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.lastBackup.time"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    /// The provider that runs the VM.
    #[serde(default)]
    pub provider: VmProvider,
    /// The Server that hosts the VM; unset: the provider places it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ref: Option<LocalRef>,
    /// Virtual CPU cores.
    #[schemars(range(min = 1, max = 512))]
    pub cpu: u32,
    /// Memory, as a Kubernetes quantity (e.g. `4Gi`).
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))").message("must be a positive quantity, e.g. 4Gi"))]
    pub memory: Quantity,
    /// Disks, the first bootable one first.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub disks: Vec<Disk>,
    /// Software installed on first boot through cloud-init (the plan's
    /// "installation des logiciels"). Changing it is a new software revision.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub software: Vec<SoftwarePackage>,
    /// Whether the VM should run.
    #[serde(default)]
    pub run_state: RunState,
    /// Scheduled snapshots (the plan's "sauvegarde de machine virtuelle").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<VmBackupSpec>,
}

/// VM providers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum VmProvider {
    #[default]
    KubeVirt,
}

/// Whether a VM should run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RunState {
    #[default]
    Running,
    Stopped,
}

/// A VM disk: exactly one source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.containerDisk), has(self.persistentVolumeClaim), has(self.dataVolume)].filter(x, x).size() == 1").message("spec.disks[]: set exactly one of containerDisk, persistentVolumeClaim, dataVolume"))]
pub struct Disk {
    /// Disk name, unique in the VM.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// A read-only disk image from a container registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_disk: Option<ContainerDisk>,
    /// An existing PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<LocalRef>,
    /// A volume created for the VM from an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeDisk>,
}

/// A container disk image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDisk {
    /// Image reference, e.g. `quay.io/containerdisks/debian:12`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
}

/// A volume created for the VM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeDisk {
    /// Size of the volume (e.g. `20Gi`; positive: the operator checks it, a
    /// CEL rule over a list of unbounded quantities costs more than allowed).
    pub size: Quantity,
    /// URL of the image imported into the volume (http or https).
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub image_url: String,
    /// StorageClass; unset: the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// A software package installed on the VM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoftwarePackage {
    /// Package name as the guest's package manager knows it, e.g. `nginx`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9+._-]*$"))]
    pub name: String,
    /// Exact version; unset: the newest available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9+.:~_-]*$"))]
    pub version: Option<String>,
}

/// Scheduled snapshots of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmBackupSpec {
    /// Cron schedule (5 fields, UTC), e.g. `0 2 * * *`.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// How many snapshots to keep, and for how long.
    #[serde(default)]
    pub retention: Retention,
}

/// Observed state of a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Provisioned`, `Running`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Phase of the provider's VM instance (`Pending`, `Scheduling`, `Running`, `Failed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Node the VM runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// IP addresses of the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// Revision (hash) of the software list applied through cloud-init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_revision: Option<String>,
    /// The newest snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<VmBackupStatus>,
    /// When the last snapshot was asked for, ready or not (the schedule counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_attempt: Option<Time>,
    /// The last value of the `reprise.dev/backup-now` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_now: Option<String>,
    /// Whether the guest agent reports in, and what it says (OS, kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// The health signal the recovery engine reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<VmHealth>,
    /// The last recovery action asked through the `reprise.dev/action`
    /// annotation — `restart` (a new VM instance), `recreate` (the KubeVirt VM
    /// deleted and created again from the spec), `restoreSnapshot` (stop,
    /// restore the newest ready snapshot, start), `move` (to the Server named
    /// by the `reprise.dev/move-to` annotation: placed there, instance restarted),
    /// `drill` (recorded when it ends; see `lastDrill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<super::common::ActionRecord>,
    /// Where the engine's `move` action put the VM: overrides `spec.hostRef`
    /// until the spec changes (its generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<MovedTo>,
    /// The VM instance (its uid) a `restart`, `recreate` or `move` replaced:
    /// the health stays `Starting` until another instance runs and is ready,
    /// so a recovery is never counted before the VM runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_instance: Option<String>,
    /// The steps of the last multi-step action (`restoreSnapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_progress: Option<VmActionProgress>,
    /// The last drill (`drill` action): the newest ready snapshot restored
    /// into a scratch VM, started until ready, then deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<VmDrill>,
}

/// A VM drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmDrill {
    /// The drill's request id.
    pub id: String,
    /// The snapshot restored.
    pub snapshot: String,
    /// The scratch VM it was restored into (deleted at the end).
    pub scratch: String,
    /// `Restoring`, `Starting`, `Verified` or `Failed`.
    pub phase: String,
    /// When it started.
    pub started: Time,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// Seconds from the restore's start until the scratch VM was ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// What happened.
    #[serde(default)]
    pub message: String,
}

/// Annotation naming the Server a `move` action moves the VM to.
pub const MOVE_TO_ANNOTATION: &str = "reprise.dev/move-to";

/// A move asked by the engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MovedTo {
    /// The Server the VM runs on now.
    pub server: String,
    /// The `metadata.generation` the move applies to.
    pub generation: i64,
}

/// What the recovery engine reads to know whether a VM failed.
///
/// - `Healthy`: running and ready (or stopped, as asked).
/// - `Starting`: not ready yet, within the grace period (not a failure).
/// - `NotReady`: not ready beyond the grace period.
/// - `Failed`: the VM instance failed.
/// - `Missing`: the provider's VM is gone (reprise recreates it).
/// - `Restoring`: a snapshot restore is under way (not a failure).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VmHealthState {
    Healthy,
    Starting,
    NotReady,
    Failed,
    Missing,
    Restoring,
}

impl super::contract::HealthState for VmHealthState {
    fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::NotReady | Self::Missing)
    }
    fn is_healthy(self) -> bool {
        self == Self::Healthy
    }
}

/// The health signal, with when it last changed.
pub type VmHealth = super::contract::Health<VmHealthState>;

/// A multi-step recovery action in progress or done.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmActionProgress {
    /// The request id.
    pub id: String,
    /// The action.
    pub action: String,
    /// The snapshot restored from (for `restoreSnapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// `Stopping`, `Restoring`, `Starting`, `Succeeded` or `Failed`.
    pub phase: String,
    /// The steps done so far, each with when it finished.
    #[serde(default)]
    pub steps: Vec<VmActionStep>,
}

/// One step of a multi-step action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmActionStep {
    /// The step: `Stopped`, `Restored`, `Started`.
    pub step: String,
    /// When it finished.
    pub time: Time,
    /// Details.
    #[serde(default)]
    pub message: String,
}

/// A VM snapshot as recorded in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmBackupStatus {
    /// Name of the snapshot object.
    pub name: String,
    /// When it was taken.
    pub time: Time,
    /// How long it took (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Size, where the provider reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Whether the snapshot is ready to restore from.
    pub ready: bool,
}
