//! The health and metrics endpoints: `/healthz`, `/readyz`, `/metrics`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// What this replica knows about leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Leadership {
    /// Not known yet: the Lease was not read.
    Unknown = 0,
    /// Another replica leads; this one waits.
    Follower = 1,
    /// This replica leads and runs the controllers.
    Leader = 2,
}

/// Health of the process, read by the probes.
#[derive(Default)]
pub struct Health {
    leadership: AtomicU8,
    caches_synced: AtomicBool,
    /// Set when a part that must run forever (a controller, the lease
    /// renewal) stopped: the liveness probe then fails and the pod restarts.
    broken: AtomicBool,
}

impl Health {
    pub fn set_leadership(&self, l: Leadership) {
        self.leadership.store(l as u8, Ordering::SeqCst);
    }

    pub fn leadership(&self) -> Leadership {
        match self.leadership.load(Ordering::SeqCst) {
            1 => Leadership::Follower,
            2 => Leadership::Leader,
            _ => Leadership::Unknown,
        }
    }

    pub fn set_caches_synced(&self, v: bool) {
        self.caches_synced.store(v, Ordering::SeqCst);
    }

    pub fn set_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }

    /// Ready: a follower once it knows it follows; the leader once its caches are synced.
    pub fn ready(&self) -> Result<(), &'static str> {
        match self.leadership() {
            Leadership::Unknown => Err("leadership not known yet"),
            Leadership::Follower => Ok(()),
            Leadership::Leader if self.caches_synced.load(Ordering::SeqCst) => Ok(()),
            Leadership::Leader => Err("caches not synced yet"),
        }
    }

    pub fn alive(&self) -> Result<(), &'static str> {
        if self.broken.load(Ordering::SeqCst) {
            Err("a controller or the lease renewal stopped")
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    gate: Arc<crate::metrics_auth::Gate>,
}

fn answer(r: Result<(), &'static str>) -> impl IntoResponse {
    match r {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
    }
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    answer(s.health.alive())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    answer(s.health.alive().and_then(|_| s.health.ready()))
}

async fn metrics_text(State(s): State<AppState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    use crate::metrics_auth::Verdict;
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match s.gate.check(auth).await {
        Verdict::Allowed => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            s.metrics.encode(),
        )
            .into_response(),
        Verdict::Unauthenticated => (StatusCode::UNAUTHORIZED, "a bearer token is needed").into_response(),
        Verdict::Forbidden => (StatusCode::FORBIDDEN, "not allowed to get /metrics").into_response(),
    }
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address
/// (useful with port 0) and the serving task.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    gate: Arc<crate::metrics_auth::Gate>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics, gate });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let stop = async move { shutdown.cancelled().await };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    Ok((bound, task))
}
