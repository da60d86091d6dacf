//! The parts of the Redfish schema reprise reads (DMTF DSP0268). Every field
//! is optional: BMCs differ in what they fill in.

use serde::Deserialize;

/// A link to another resource.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Link {
    #[serde(rename = "@odata.id")]
    pub id: String,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceRoot {
    pub redfish_version: Option<String>,
    pub systems: Option<Link>,
    pub chassis: Option<Link>,
    pub managers: Option<Link>,
    pub links: Option<RootLinks>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RootLinks {
    pub sessions: Option<Link>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Collection {
    #[serde(rename = "Members")]
    pub members: Vec<Link>,
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Status {
    pub state: Option<String>,
    pub health: Option<String>,
    pub health_rollup: Option<String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ComputerSystem {
    pub id: Option<String>,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    pub bios_version: Option<String>,
    pub power_state: Option<String>,
    pub status: Option<Status>,
    pub processor_summary: Option<ProcessorSummary>,
    pub memory_summary: Option<MemorySummary>,
    pub processors: Option<Link>,
    pub ethernet_interfaces: Option<Link>,
    pub virtual_media: Option<Link>,
    pub boot: Option<Boot>,
    pub links: Option<SystemLinks>,
    pub actions: Option<SystemActions>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProcessorSummary {
    pub count: Option<u32>,
    pub model: Option<String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct MemorySummary {
    #[serde(rename = "TotalSystemMemoryGiB")]
    pub total_system_memory_gib: Option<f64>,
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Boot {
    pub boot_source_override_enabled: Option<String>,
    pub boot_source_override_target: Option<String>,
    pub boot_source_override_mode: Option<String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct SystemLinks {
    pub managed_by: Vec<Link>,
    pub chassis: Vec<Link>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct SystemActions {
    #[serde(rename = "#ComputerSystem.Reset")]
    pub reset: Option<ResetAction>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct ResetAction {
    pub target: Option<String>,
    #[serde(rename = "ResetType@Redfish.AllowableValues")]
    pub allowed: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Processor {
    pub model: Option<String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct EthernetInterface {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "MACAddress")]
    pub mac_address: Option<String>,
    #[serde(rename = "PermanentMACAddress")]
    pub permanent_mac_address: Option<String>,
    pub link_status: Option<String>,
    pub speed_mbps: Option<u64>,
    pub status: Option<Status>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Manager {
    pub virtual_media: Option<Link>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct VirtualMedia {
    pub id: Option<String>,
    pub media_types: Vec<String>,
    pub image: Option<String>,
    pub inserted: Option<bool>,
    pub actions: Option<VirtualMediaActions>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct VirtualMediaActions {
    #[serde(rename = "#VirtualMedia.InsertMedia")]
    pub insert: Option<ResetAction>,
    #[serde(rename = "#VirtualMedia.EjectMedia")]
    pub eject: Option<ResetAction>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Chassis {
    pub network_adapters: Option<Link>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkAdapter {
    pub id: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub status: Option<Status>,
}

/// A Redfish error body: `{"error": {"code", "message", "@Message.ExtendedInfo": [...]}}`.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct ErrorDetail {
    pub code: Option<String>,
    pub message: Option<String>,
    #[serde(rename = "@Message.ExtendedInfo")]
    pub extended: Vec<ExtendedInfo>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExtendedInfo {
    pub message_id: Option<String>,
    pub message: Option<String>,
    pub resolution: Option<String>,
}
