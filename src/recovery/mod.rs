//! The recovery engine: plans (coverage, readiness), detection, incidents,
//! the procedure executor (a pure decision and its effects), notification,
//! drills and maintenance windows. It sees the components only through the
//! contract (`crate::api::contract`), never their controllers.

pub mod detection;
pub mod drills;
pub mod executor;
pub mod gauges;
pub mod incident;
pub mod maintenance;
pub mod notify;
pub mod opening;
pub mod plan;
pub mod sites;
