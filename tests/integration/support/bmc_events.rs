//! STAND-IN for what cannot run here: a BMC that sends Redfish events. No
//! Redfish emulator installable here has an EventService (sushy-tools 2.2.0,
//! the newest on PyPI, has none; DMTF's emulators are not packaged), so this
//! front stands before a real sushy-tools emulator and adds only that part:
//!
//! - every request is passed to sushy-tools as it came (credentials, body,
//!   ETags), and its answer back (a `Location` on sushy's origin is moved to
//!   the front's, as a BMC answers on its own origin);
//! - the service root gains an `EventService` link; `/redfish/v1/EventService`
//!   offers `ServerSentEventUri`, as DSP0266 §13.5 describes;
//! - the SSE stream (credentials checked by sushy-tools itself) sends a
//!   `ResourceEvent.1.0.ResourceChanged` event naming the system as
//!   `OriginOfCondition` when a system's `PowerState` changes. A BMC knows its
//!   own power at once; the front learns it by reading sushy every 100 ms.
//!
//! Everything else (power, resets, boot, media, inventory) is sushy-tools'.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{fake_bmc::json_response, redfish::Sushy};

struct Front {
    upstream: String,
    own: String,
    user: String,
    password: String,
    http: reqwest::Client,
    sent: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
}

/// The front: its URL (the BMC address a Server names) and the events it sent.
pub struct EventFront {
    pub url: String,
    sent: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
}

const SSE: &str = "/redfish/v1/EventService/SSE";

impl EventFront {
    pub async fn start(sushy: &Sushy) -> Self {
        reprise::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (sent, streams) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let front = Arc::new(Front {
            upstream: sushy.url(),
            own: url.clone(),
            user: sushy.user.clone(),
            password: sushy.password.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            sent: sent.clone(),
            streams: streams.clone(),
        });
        let app = Router::new().fallback(handle).with_state(front);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, sent, streams }
    }

    /// How many event streams are open.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// How many events the front has sent, over all its streams.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

async fn handle(State(f): State<Arc<Front>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_end_matches('/');
    match (&method, path) {
        (&Method::GET, "/redfish/v1/EventService") => match authorised(&f, &headers).await {
            Ok(()) => json_response(json!({
                "@odata.id": "/redfish/v1/EventService",
                "@odata.type": "#EventService.v1_7_0.EventService",
                "Id": "EventService",
                "Name": "Event Service",
                "ServiceEnabled": true,
                "ServerSentEventUri": SSE,
            })),
            Err(r) => r,
        },
        (&Method::GET, SSE) => match authorised(&f, &headers).await {
            Ok(()) => stream(f).await,
            Err(r) => r,
        },
        _ => pass(&f, method, &uri, &headers, body).await,
    }
}

/// Whether sushy-tools takes these credentials (a read it answers with them).
async fn authorised(f: &Front, headers: &HeaderMap) -> Result<(), Response> {
    let mut req = f.http.get(format!("{}/redfish/v1/Systems", f.upstream));
    for h in [header::AUTHORIZATION.as_str(), "x-auth-token"] {
        if let Some(v) = headers.get(h) {
            req = req.header(h, v.as_bytes());
        }
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(StatusCode::from_u16(r.status().as_u16()).unwrap().into_response()),
        Err(_) => Err(StatusCode::BAD_GATEWAY.into_response()),
    }
}

async fn pass(f: &Front, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let target = format!(
        "{}{}",
        f.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = f
        .http
        .request(reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(), target);
    for (k, v) in headers {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = match req.body(body.to_vec()).send().await {
        Ok(r) => r,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let mut out = HeaderMap::new();
    for (k, v) in resp.headers() {
        if k == reqwest::header::CONTENT_LENGTH || k == reqwest::header::TRANSFER_ENCODING {
            continue;
        }
        let v = String::from_utf8_lossy(v.as_bytes()).replace(&f.upstream, &f.own);
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            out.insert(k, v);
        }
    }
    let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
    let root = method == Method::GET && uri.path().trim_end_matches('/') == "/redfish/v1";
    if root
        && status.is_success()
        && let Ok(mut v) = serde_json::from_slice::<Value>(&bytes)
    {
        v["EventService"] = json!({"@odata.id": "/redfish/v1/EventService"});
        bytes = serde_json::to_vec(&v).unwrap();
    }
    (status, out, bytes).into_response()
}

/// The event stream: an event each time a system's power changes.
async fn stream(f: Arc<Front>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        f.streams.fetch_add(1, Ordering::SeqCst);
        watch_power(&f, tx).await;
        f.streams.fetch_sub(1, Ordering::SeqCst);
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| (v, rx))
    }));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// Sends an event on `tx` each time a system's power changes, until the client goes.
async fn watch_power(f: &Front, tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let mut power: HashMap<String, String> = HashMap::new();
    let mut id = 0u64;
    if tx
        .send(Ok(Bytes::from_static(b": reprise test front\n\n")))
        .await
        .is_err()
    {
        return;
    }
    while !tx.is_closed() {
        for (system, now) in powers(f).await {
            let before = power.insert(system.clone(), now.clone());
            if before.is_none() || before.as_deref() == Some(now.as_str()) {
                continue;
            }
            id += 1;
            let event = json!({
                "@odata.type": "#Event.v1_7_0.Event",
                "Id": id.to_string(),
                "Name": "Event",
                "Events": [{
                    "EventId": id.to_string(),
                    "EventTimestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
                    "MessageId": "ResourceEvent.1.0.ResourceChanged",
                    "Message": format!("PowerState is now {now}"),
                    "OriginOfCondition": {"@odata.id": system},
                }],
            });
            let text = format!("id: {id}\ndata: {event}\n\n");
            if tx.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
            f.sent.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each system's link and power state, as sushy-tools reports them.
async fn powers(f: &Front) -> Vec<(String, String)> {
    let get = |path: String| {
        f.http
            .get(format!("{}{path}", f.upstream))
            .basic_auth(&f.user, Some(&f.password))
            .send()
    };
    let Ok(list) = get("/redfish/v1/Systems".into()).await else {
        return vec![];
    };
    let list: Value = list.json().await.unwrap_or_default();
    let mut out = vec![];
    for m in list["Members"].as_array().cloned().unwrap_or_default() {
        let Some(link) = m["@odata.id"].as_str() else { continue };
        if let Ok(r) = get(link.to_string()).await {
            let sys: Value = r.json().await.unwrap_or_default();
            if let Some(p) = sys["PowerState"].as_str() {
                out.push((link.to_string(), p.to_string()));
            }
        }
    }
    out
}
