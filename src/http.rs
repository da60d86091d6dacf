//! The health and metrics endpoints: `/healthz`, `/readyz`, `/metrics`, and
//! with `--reports` the read-only reports `/reports/<namespace>/incident/<name>`
//! and `/reports/<namespace>/drill/<plan>` (HTML, see `report`).

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
    /// The client reports are read with; None: reports are off.
    reports: Option<kube::Client>,
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
    match s.gate.check(auth, crate::metrics_auth::Access::Metrics).await {
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

/// Whether `s` may be a Kubernetes object's or namespace's name (bounded, no path tricks).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['.', '-'])
}

async fn report(
    State(s): State<AppState>,
    axum::extract::Path((namespace, kind, name)): axum::extract::Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use crate::metrics_auth::{Access, Verdict};
    let Some(client) = s.reports.clone() else {
        return (StatusCode::NOT_FOUND, "reports are off (--reports)").into_response();
    };
    let resource = match kind.as_str() {
        "incident" => "incidents",
        "drill" => "recoveryplans",
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "reports are /reports/<namespace>/incident|drill/<name>",
            )
                .into_response();
        }
    };
    if !is_name(&namespace) || !is_name(&name) {
        return (StatusCode::BAD_REQUEST, "not a Kubernetes name").into_response();
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let access = Access::Get {
        namespace: &namespace,
        resource,
        name: &name,
    };
    match s.gate.check(auth, access).await {
        Verdict::Allowed => {}
        Verdict::Unauthenticated => return (StatusCode::UNAUTHORIZED, "a bearer token is needed").into_response(),
        Verdict::Forbidden => {
            return (StatusCode::FORBIDDEN, format!("not allowed to get {resource}/{name}")).into_response();
        }
    }
    match crate::report::render(&client, &namespace, resource, &name).await {
        Ok(Some(html)) => (
            [
                (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    axum::http::header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                ),
                (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            html,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no {resource}/{name} in {namespace}")).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, %namespace, %name, "cannot read a report's object");
            (StatusCode::BAD_GATEWAY, "cannot read the object").into_response()
        }
    }
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address
/// (useful with port 0) and the serving task.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    gate: Arc<crate::metrics_auth::Gate>,
    reports: Option<kube::Client>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/reports/{namespace}/{kind}/{name}", get(report))
        .with_state(AppState {
            health,
            metrics,
            gate,
            reports,
        });
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
