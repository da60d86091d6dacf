//! Virtual machine engines. reprise drives an engine that runs VMs rather
//! than running them itself; KubeVirt is the first, behind the [`VmEngine`]
//! trait so that another (libvirt) can follow: an implementation of the
//! trait, and one arm where the VirtualMachine controller picks the engine
//! from `spec.provider`.

pub mod kubevirt;

use std::future::Future;

use k8s_openapi::jiff::Timestamp;

use crate::api::VirtualMachine;

/// What the provider reports about a VM.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The provider's VM object exists.
    pub exists: bool,
    /// A running instance exists.
    pub instance: bool,
    /// The instance's uid (a new instance has a new one).
    pub instance_uid: Option<String>,
    /// The instance's phase (`Pending`, `Scheduling`, `Running`, `Failed`, …).
    pub phase: Option<String>,
    pub ready: bool,
    pub node: Option<String>,
    pub ip_addresses: Vec<String>,
    /// The guest agent's report (OS and kernel), when it runs.
    pub guest: Option<String>,
    /// When the instance was created (the grace period counts from it).
    pub instance_created: Option<Timestamp>,
    /// The software revision the provider's VM carries.
    pub software_revision: Option<String>,
    /// The provider's VM object as read (to tell whether it needs applying).
    pub object: Option<serde_json::Value>,
}

/// A snapshot as the provider reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub created: Timestamp,
    pub ready: bool,
    /// When it became ready, where the provider says.
    pub ready_at: Option<Timestamp>,
    pub size_bytes: Option<u64>,
}

/// Why a VM engine's call failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Engine(String),
}

/// The operations reprise needs from a VM engine.
pub trait VmEngine {
    type Error: Into<VmError>;
    /// Whether the engine's VM as observed already holds what `apply` would write.
    fn matches(&self, observed: &Observed, vm: &VirtualMachine, running: bool) -> bool;
    /// Creates or updates the provider's VM from the spec, running or not.
    /// Returns the software revision applied.
    fn apply(&self, vm: &VirtualMachine, running: bool) -> impl Future<Output = Result<String, Self::Error>> + Send;
    fn observe(&self, vm: &VirtualMachine) -> impl Future<Output = Result<Observed, Self::Error>> + Send;
    /// A new instance (the provider starts it again).
    fn restart(&self, vm: &VirtualMachine) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn delete(&self, vm: &VirtualMachine) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn snapshot(&self, vm: &VirtualMachine, name: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The VM's snapshots, newest first.
    fn snapshots(&self, vm: &VirtualMachine) -> impl Future<Output = Result<Vec<Snapshot>, Self::Error>> + Send;
    fn delete_snapshot(&self, vm: &VirtualMachine, name: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Restores `snapshot` into the VM (stopped), as restore object `name`.
    fn restore(
        &self,
        vm: &VirtualMachine,
        snapshot: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Restores `snapshot` into a new VM `scratch` (a drill), as restore object `name`.
    fn restore_into(
        &self,
        vm: &VirtualMachine,
        snapshot: &str,
        name: &str,
        scratch: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// What the provider reports about VM `name` of the VM's namespace (a scratch VM).
    fn observe_named(
        &self,
        vm: &VirtualMachine,
        name: &str,
    ) -> impl Future<Output = Result<Observed, Self::Error>> + Send;
    /// Deletes a drill's scratch VM and its restore object.
    fn delete_scratch(
        &self,
        vm: &VirtualMachine,
        scratch: &str,
        restore: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Whether restore `name` is complete (None: it does not exist).
    fn restore_complete(
        &self,
        vm: &VirtualMachine,
        name: &str,
    ) -> impl Future<Output = Result<Option<bool>, Self::Error>> + Send;
}
