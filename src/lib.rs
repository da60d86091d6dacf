//! reprise: a Kubernetes operator that turns an IT disaster-recovery plan
//! into running software.

pub mod api;
pub mod components;
pub mod crash;
pub mod docs;
pub mod drift;
mod hostile;
pub mod http;
pub mod leader;
pub mod metrics_auth;
pub mod operator;
pub mod plugin;
pub mod providers;
pub mod recovery;
pub mod report;
pub mod runtime;
pub mod telemetry;

/// Selects ring as rustls' process-wide crypto provider (kube uses ring), so
/// every TLS client in the process agrees. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
