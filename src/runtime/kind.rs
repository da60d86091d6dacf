//! What the shared reconcile machinery needs to know about each kind.

use std::fmt::Debug;

use kube::{Resource, core::NamespaceResourceScope};
use serde::{Serialize, de::DeserializeOwned};

use crate::api::{
    Application, Database, Incident, MaintenanceWindow, RecoveryPlan, Server, Site, VirtualMachine,
    application::ApplicationStatus, common::Condition, database::DatabaseStatus, incident::IncidentStatus,
    maintenance_window::MaintenanceWindowStatus, recovery_plan::RecoveryPlanStatus, server::ServerStatus,
    site::SiteStatus, virtual_machine::VirtualMachineStatus,
};

/// The parts every status has.
pub trait CommonStatus {
    fn conditions(&self) -> &Vec<Condition>;
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn set_observed_generation(&mut self, generation: i64);
}

/// A reprise kind, as the shared machinery sees it.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    type Status: CommonStatus
        + Clone
        + Default
        + PartialEq
        + Serialize
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync;
    /// Field manager of this kind's controller: `reprise/<kind>`.
    const MANAGER: &'static str;
    /// Whether its controller acts only while the site is active (see
    /// `fence`); the Site controller itself decides that.
    const FENCED: bool = true;
    fn status(&self) -> Option<&Self::Status>;
}

macro_rules! kind {
    ($kind:ty, $status:ty, $manager:literal) => {
        kind!($kind, $status, $manager, true);
    };
    ($kind:ty, $status:ty, $manager:literal, $fenced:literal) => {
        impl CommonStatus for $status {
            fn conditions(&self) -> &Vec<Condition> {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: i64) {
                self.observed_generation = generation;
            }
        }
        impl Kind for $kind {
            type Status = $status;
            const MANAGER: &'static str = $manager;
            const FENCED: bool = $fenced;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
        }
    };
}

kind!(Application, ApplicationStatus, "reprise/application");
kind!(Database, DatabaseStatus, "reprise/database");
kind!(Incident, IncidentStatus, "reprise/incident");
kind!(MaintenanceWindow, MaintenanceWindowStatus, "reprise/maintenancewindow");
kind!(RecoveryPlan, RecoveryPlanStatus, "reprise/recoveryplan");
kind!(Server, ServerStatus, "reprise/server");
kind!(Site, SiteStatus, "reprise/site", false);
kind!(VirtualMachine, VirtualMachineStatus, "reprise/virtualmachine");
