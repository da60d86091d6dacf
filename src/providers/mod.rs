//! Peers reprise talks to besides the Kubernetes API.

pub mod artifacts;
