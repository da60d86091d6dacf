//! The parts of the Redfish schema reprise reads (DMTF DSP0268). Every field
//! is optional, and `null` reads as absent: BMCs differ in what they fill in,
//! and a BMC's answer is untrusted input. Strings are trimmed and bounded
//! where they reach status ([`text`]).

use serde::{Deserialize, Deserializer};

/// A link to another resource. A link without `@odata.id` reads as empty
/// (and is skipped by whoever follows links).
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Link {
    #[serde(rename = "@odata.id", deserialize_with = "null_default")]
    pub id: String,
}

/// `null` (or a missing field) as the type's default: a list or a link
/// object that a BMC sends as `null` is absent, not an error.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The longest string from a BMC kept in status.
pub const MAX_TEXT: usize = 256;

/// A string from a BMC as status keeps it: trimmed (some BMCs pad model
/// names with blanks), control characters removed, at most [`MAX_TEXT`]
/// characters; None when nothing is left.
pub fn text(s: Option<String>) -> Option<String> {
    let cleaned: String = s?.chars().filter(|c| !c.is_control()).take(MAX_TEXT).collect();
    let trimmed = cleaned.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceRoot {
    pub redfish_version: Option<String>,
    pub systems: Option<Link>,
    pub chassis: Option<Link>,
    pub managers: Option<Link>,
    pub links: Option<RootLinks>,
    /// Optional, and only a hint: one that is not a link reads as absent (the Server is polled).
    #[serde(deserialize_with = "link_or_none")]
    pub event_service: Option<Link>,
}

/// A link, or None for anything else (a lenient read of an optional feature).
fn link_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Link>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value::<Link>(v).ok().filter(|l| !l.id.is_empty()))
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RootLinks {
    pub sessions: Option<Link>,
}

/// A collection: its members' links, and the next page's link where the
/// service pages (`Members@odata.nextLink`). Members that are not link
/// objects are kept as they are, to be reported.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Collection {
    #[serde(rename = "Members", deserialize_with = "null_default")]
    pub members: Vec<serde_json::Value>,
    #[serde(rename = "Members@odata.nextLink")]
    pub next_link: Option<String>,
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
    /// When the system was last reset (Redfish 1.12+), where the BMC reports it.
    pub last_reset_time: Option<String>,
    /// The boot's progress (Redfish 1.13+), where the BMC reports it.
    pub boot_progress: Option<BootProgress>,
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct BootProgress {
    pub last_state: Option<String>,
    pub last_state_time: Option<String>,
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
    #[serde(deserialize_with = "null_default")]
    pub managed_by: Vec<Link>,
    #[serde(deserialize_with = "null_default")]
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
    pub allowed: Option<Vec<serde_json::Value>>,
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
    #[serde(deserialize_with = "null_default")]
    pub media_types: Vec<serde_json::Value>,
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
    #[serde(rename = "@Message.ExtendedInfo", deserialize_with = "null_default")]
    pub extended: Vec<ExtendedInfo>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExtendedInfo {
    pub message_id: Option<String>,
    pub message: Option<String>,
    pub resolution: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_read_as_absent() {
        let sys: ComputerSystem = serde_json::from_value(serde_json::json!({
            "Model": "  ProLiant DL380 Gen10   ",
            "Links": {"Chassis": null, "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/1"}]},
            "ProcessorSummary": null,
            "EthernetInterfaces": null,
        }))
        .unwrap();
        let links = sys.links.unwrap();
        assert!(links.chassis.is_empty());
        assert_eq!(links.managed_by[0].id, "/redfish/v1/Managers/1");
        assert_eq!(text(sys.model).as_deref(), Some("ProLiant DL380 Gen10"));
        let c: Collection = serde_json::from_value(serde_json::json!({"Members": null})).unwrap();
        assert!(c.members.is_empty());
        let c: Collection = serde_json::from_value(serde_json::json!({
            "Members": [{"@odata.id": "/a"}, "junk", {"@odata.id": null}],
            "Members@odata.nextLink": "/redfish/v1/x?$skip=2"
        }))
        .unwrap();
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.next_link.as_deref(), Some("/redfish/v1/x?$skip=2"));
        assert_eq!(text(Some("   ".into())), None);
        assert_eq!(text(Some("x".repeat(1000))).unwrap().len(), MAX_TEXT);
    }
}
