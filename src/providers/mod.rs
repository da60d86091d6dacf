//! Peers reprise talks to besides the Kubernetes API.

pub mod artifacts;
pub mod backup_store;
pub mod bmc;
pub mod database;
pub mod postgres;
pub mod redfish;
pub mod tls;
pub mod vm;
pub mod webhook;
pub mod witness;
