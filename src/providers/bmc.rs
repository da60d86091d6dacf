//! Baseboard management controllers, as the Server controller sees them: a
//! conversation that reads the system and its inventory, resets it, and
//! boots it once from virtual media. Redfish is the first implementation
//! (`redfish::Bmc`); another protocol is one more implementation and one
//! arm where the Server controller opens the conversation.

use std::future::Future;

use crate::api::server::Inventory;

pub use crate::providers::redfish::RedfishError as BmcError;
pub use crate::providers::redfish::events::Origins;

/// A BMC's events as they come (where it sends them).
pub trait Feed: Send {
    /// What the next event concerns; an error when the feed ends.
    fn next(&mut self) -> impl Future<Output = Result<Origins, BmcError>> + Send;
}

/// What the BMC reports about the system, as the controller reads it.
pub trait SystemView {
    /// `On`, `Off`, `PoweringOn`, `PoweringOff` (None: not reported).
    fn power_state(&self) -> Option<&str>;
    /// The health rollup (else the health): `OK`, `Warning`, `Critical`.
    fn health(&self) -> Option<String>;
    /// What a reboot changes (power, last reset time, boot progress), for evidence of one.
    fn boot_marks(&self) -> String;
    /// Where the system lives on the BMC (for messages).
    fn location(&self) -> &str;
}

/// One conversation with a BMC.
pub trait Board: Sized {
    type System: SystemView + Send + Sync;
    type Feed: Feed + 'static;
    /// The system `id` (or the only one the BMC manages).
    fn system(&self, id: Option<&str>) -> impl Future<Output = Result<Self::System, BmcError>> + Send;
    /// Hardware and network inventory; a part the BMC does not give is named
    /// in its `errors`, the rest kept.
    fn inventory(&self, s: &Self::System) -> impl Future<Output = Inventory> + Send;
    /// Resets the system (`On`, `ForceOff`, `GracefulShutdown`, `ForceRestart`).
    fn reset(&self, s: &Self::System, reset_type: &str) -> impl Future<Output = Result<(), BmcError>> + Send;
    /// Inserts `image` in the virtual CD (ejecting what it held); returns where.
    fn insert_media(&self, s: &Self::System, image: &str) -> impl Future<Output = Result<String, BmcError>> + Send;
    /// Ejects the virtual CD; returns where.
    fn eject_media(&self, s: &Self::System) -> impl Future<Output = Result<String, BmcError>> + Send;
    /// The next boot, once, from the virtual CD in `mode` (`UEFI`, `Legacy`).
    fn boot_once_from_media(&self, s: &Self::System, mode: &str) -> impl Future<Output = Result<(), BmcError>> + Send;
    /// Whether the BMC says it sends events (no call: what it said on opening).
    fn offers_events(&self) -> bool;
    /// Its feed of events, opened; None when it sends none after all.
    fn feed(&self) -> impl Future<Output = Result<Option<Self::Feed>, BmcError>> + Send;
    /// The service's version, for messages.
    fn version(&self) -> String;
    /// Ends the conversation (logs its session out).
    fn close(self) -> impl Future<Output = ()> + Send;
}
