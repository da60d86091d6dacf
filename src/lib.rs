//! reprise: a Kubernetes operator that turns an IT disaster-recovery plan
//! into running software.

pub mod api;
pub mod controllers;
pub mod http;
pub mod leader;
pub mod operator;
pub mod telemetry;
