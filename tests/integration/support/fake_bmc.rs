//! A small Redfish service on loopback that can misbehave as a compromised or
//! buggy BMC does: links to other hosts, paths that climb out of the service,
//! redirects, session locations elsewhere, huge or endless bodies, huge or
//! paged collections, slow answers, refused resets, power that never follows,
//! members that fail, `null` where an object is expected. Every request it
//! receives is recorded (time, method, path, whether credentials came), and
//! so is every request to [`Elsewhere`], a listener on another loopback
//! address (127.0.0.2) standing for "another host": it must never hear a thing.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// One request as the fake BMC saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Basic credentials or a session token came with it.
    pub credentials: bool,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log, method: &Method, uri: &Uri, headers: &HeaderMap) {
    log.lock().unwrap().push(Seen {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        credentials: headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-auth-token"),
    });
}

/// A listener on 127.0.0.2 that records whatever reaches it.
pub struct Elsewhere {
    pub base: String,
    pub log: Log,
}

impl Elsewhere {
    pub async fn start() -> Self {
        let log: Log = Arc::default();
        let sink = log.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let sink = sink.clone();
            async move {
                record(&sink, &method, &uri, &headers);
                (StatusCode::OK, "{}")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("127.0.0.2 is a loopback address");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, log }
    }

    pub fn heard(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

/// How the fake BMC behaves. `Default` is a well-behaved BMC with one system
/// (`1`), two NICs and a chassis with one network adapter.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// The MACs of the system's NICs (default two).
    pub nics: Option<Vec<String>>,
    /// The EthernetInterfaces link written as this (e.g. another host's URL).
    pub nics_link: Option<String>,
    /// Offer sessions; the session's Location header (default: its own path).
    pub sessions: Option<Option<String>>,
    /// The Systems collection answers a redirect to this.
    pub redirect_systems: Option<String>,
    /// The reset action's target (default: the usual path).
    pub reset_target: Option<String>,
    /// Every response waits this long first.
    pub delay: Option<Duration>,
    /// NIC number N answers with a body of this many bytes (not JSON).
    pub huge_nic: Option<(usize, usize)>,
    /// NIC number N answers a body that never ends.
    pub endless_nic: Option<usize>,
    /// NIC number N answers 404.
    pub missing_nic: Option<usize>,
    /// The EthernetInterfaces collection in pages of this many members.
    pub page_size: Option<usize>,
    /// The system's `Links.Chassis` is `null`.
    pub chassis_null: bool,
    /// Resets are refused with HTTP 409 and a Redfish error body.
    pub refuse_reset: bool,
    /// Resets are accepted, and the power never changes.
    pub power_stuck: bool,
    /// The power the system starts with.
    pub power: Option<String>,
    /// A reset takes this long to change the power (as real BMCs do).
    pub power_delay: Option<Duration>,
    /// The service root links an EventService that behaves so.
    pub events: Option<Events>,
}

/// How a fake BMC's event stream misbehaves.
#[derive(Clone, Debug)]
pub enum Events {
    /// `ServerSentEventUri` is this (e.g. another host's URL).
    Elsewhere(String),
    /// The stream sends one line that never ends.
    EndlessLine,
    /// The stream sends events about the system as fast as it can.
    Flood,
}

struct Bmc {
    b: Behaviour,
    power: Arc<Mutex<String>>,
    media: Mutex<bool>,
    log: Log,
}

/// A running fake BMC.
pub struct FakeBmc {
    pub url: String,
    pub log: Log,
    state: Arc<Bmc>,
}

pub const USER: &str = "admin";
pub const PASSWORD: &str = "fake-bmc-password-31";

impl FakeBmc {
    pub async fn start(b: Behaviour) -> Self {
        let log: Log = Arc::default();
        let state = Arc::new(Bmc {
            power: Arc::new(Mutex::new(b.power.clone().unwrap_or_else(|| "On".into()))),
            media: Mutex::new(false),
            b,
            log: log.clone(),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, log, state }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix` and that used `method`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(prefix))
            .count()
    }

    pub fn set_power(&self, p: &str) {
        *self.state.power.lock().unwrap() = p.into();
    }

    pub fn power(&self) -> String {
        self.state.power.lock().unwrap().clone()
    }
}

pub fn json_response(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn nic_macs(b: &Behaviour) -> Vec<String> {
    b.nics
        .clone()
        .unwrap_or_else(|| vec!["52:54:00:fa:00:01".into(), "52:54:00:fa:00:02".into()])
}

async fn handle(State(s): State<Arc<Bmc>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    record(&s.log, &method, &uri, &headers);
    if let Some(d) = s.b.delay {
        tokio::time::sleep(d).await;
    }
    let path = uri.path().trim_end_matches('/').to_string();
    let authed = headers.get(header::AUTHORIZATION).is_some() || headers.get("x-auth-token").is_some();
    let login = method == Method::POST && path == "/redfish/v1/SessionService/Sessions";
    if path != "/redfish/v1" && !login && !authed {
        return (StatusCode::UNAUTHORIZED, "{}").into_response();
    }
    match (method.clone(), path.as_str()) {
        (Method::GET, "/redfish/v1") => {
            let mut root = json!({
                "RedfishVersion": "1.15.0",
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
            });
            if s.b.sessions.is_some() {
                root["Links"] = json!({"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}});
            }
            if s.b.events.is_some() {
                root["EventService"] = json!({"@odata.id": "/redfish/v1/EventService"});
            }
            json_response(root)
        }
        (Method::GET, "/redfish/v1/EventService") => {
            let uri = match &s.b.events {
                Some(Events::Elsewhere(to)) => to.clone(),
                _ => "/redfish/v1/EventService/SSE".into(),
            };
            json_response(json!({"ServiceEnabled": true, "ServerSentEventUri": uri}))
        }
        (Method::GET, "/redfish/v1/EventService/SSE") => event_stream(&s.b),
        (Method::POST, "/redfish/v1/SessionService/Sessions") => {
            let location =
                s.b.sessions
                    .clone()
                    .flatten()
                    .unwrap_or_else(|| "/redfish/v1/SessionService/Sessions/1".into());
            Response::builder()
                .status(StatusCode::CREATED)
                .header("X-Auth-Token", "fake-session-token-77")
                .header(header::LOCATION, location)
                .body(Body::from("{}"))
                .unwrap()
        }
        (Method::DELETE, p) if p.starts_with("/redfish/v1/SessionService/Sessions/") => {
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, "/redfish/v1/Systems") => match &s.b.redirect_systems {
            Some(to) => Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, to)
                .body(Body::empty())
                .unwrap(),
            None => json_response(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]})),
        },
        (Method::GET, "/redfish/v1/Systems/1") => json_response(system(&s)),
        (Method::GET, "/redfish/v1/Systems/1/EthernetInterfaces") => nic_collection(&s.b, uri.query()),
        (Method::GET, p) if p.starts_with("/redfish/v1/Systems/1/EthernetInterfaces/") => {
            let n: usize = p.rsplit('/').next().and_then(|x| x.parse().ok()).unwrap_or(0);
            nic(&s.b, n)
        }
        (Method::GET, "/redfish/v1/Chassis/1") => {
            json_response(json!({"NetworkAdapters": {"@odata.id": "/redfish/v1/Chassis/1/NetworkAdapters"}}))
        }
        (Method::GET, "/redfish/v1/Chassis/1/NetworkAdapters") => {
            json_response(json!({"Members": [{"@odata.id": "/redfish/v1/Chassis/1/NetworkAdapters/A"}]}))
        }
        (Method::GET, "/redfish/v1/Chassis/1/NetworkAdapters/A") => json_response(
            json!({"Id": "A", "Manufacturer": "  Fake NICs Inc.  ", "Model": "FN-2", "Status": {"Health": "OK"}}),
        ),
        (Method::POST, "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => reset(&s),
        (Method::PATCH, "/redfish/v1/Systems/1") => StatusCode::NO_CONTENT.into_response(),
        (Method::GET, "/redfish/v1/Systems/1/VirtualMedia") => {
            json_response(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1/VirtualMedia/Cd"}]}))
        }
        (Method::GET, "/redfish/v1/Systems/1/VirtualMedia/Cd") => json_response(json!({
            "Id": "Cd", "MediaTypes": ["CD", "DVD"], "Inserted": *s.media.lock().unwrap(),
        })),
        (Method::POST, "/redfish/v1/Systems/1/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia") => {
            *s.media.lock().unwrap() = true;
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::POST, "/redfish/v1/Systems/1/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia") => {
            *s.media.lock().unwrap() = false;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (StatusCode::NOT_FOUND, r#"{"error": {"message": "no such resource"}}"#).into_response(),
    }
}

fn system(s: &Bmc) -> Value {
    let target =
        s.b.reset_target
            .clone()
            .unwrap_or_else(|| "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset".into());
    let mut sys = json!({
        "Id": "1",
        "Manufacturer": "Fake BMC Works",
        "Model": "FB-1   ",
        "SerialNumber": "FAKE-0001",
        "PowerState": *s.power.lock().unwrap(),
        "Status": {"Health": "OK", "HealthRollup": "OK"},
        "ProcessorSummary": {"Count": 2, "Model": "Fake CPU 3000   "},
        "MemorySummary": {"TotalSystemMemoryGiB": 64},
        "EthernetInterfaces": {"@odata.id": s.b.nics_link.clone().unwrap_or_else(|| "/redfish/v1/Systems/1/EthernetInterfaces".into())},
        "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]},
        "VirtualMedia": {"@odata.id": "/redfish/v1/Systems/1/VirtualMedia"},
        "Actions": {"#ComputerSystem.Reset": {"target": target}},
    });
    if s.b.chassis_null {
        sys["Links"]["Chassis"] = Value::Null;
    }
    sys
}

fn nic_collection(b: &Behaviour, query: Option<&str>) -> Response {
    let n = nic_macs(b).len();
    let member = |i: usize| json!({"@odata.id": format!("/redfish/v1/Systems/1/EthernetInterfaces/{i}")});
    let Some(size) = b.page_size else {
        return json_response(json!({"Members": (0..n).map(member).collect::<Vec<_>>()}));
    };
    let skip: usize = query
        .and_then(|q| q.strip_prefix("$skip="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut page = json!({"Members": (skip..(skip + size).min(n)).map(member).collect::<Vec<_>>()});
    if skip + size < n {
        page["Members@odata.nextLink"] = json!(format!(
            "/redfish/v1/Systems/1/EthernetInterfaces?$skip={}",
            skip + size
        ));
    }
    json_response(page)
}

fn nic(b: &Behaviour, n: usize) -> Response {
    if b.missing_nic == Some(n) {
        return (StatusCode::NOT_FOUND, r#"{"error": {"message": "gone"}}"#).into_response();
    }
    if let Some((which, bytes)) = b.huge_nic
        && which == n
    {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(vec![b' '; bytes]))
            .unwrap();
    }
    if b.endless_nic == Some(n) {
        let chunks = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 << 10])));
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(chunks))
            .unwrap();
    }
    let Some(mac) = nic_macs(b).get(n).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    json_response(json!({"Id": format!("NIC{n}"), "MACAddress": mac, "LinkStatus": "LinkUp", "SpeedMbps": 10000}))
}

fn event_stream(b: &Behaviour) -> Response {
    let body = match b.events {
        Some(Events::EndlessLine) => Body::from_stream(futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 16 << 10]))
        })),
        Some(Events::Flood) => Body::from_stream(futures::stream::unfold(0u64, |i| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let event = json!({"Events": [{"EventId": i.to_string(), "OriginOfCondition": {"@odata.id": "/redfish/v1/Systems/1"}}]});
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from(format!("data: {event}\n\n"))),
                i + 1,
            ))
        })),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap()
}

fn reset(s: &Bmc) -> Response {
    if s.b.refuse_reset {
        return (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": {"code": "Base.1.8.GeneralError", "message": "A general error has occurred.",
                "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.ResourceInUse",
                    "Message": "The change to the requested resource failed because the resource is in use or in transition.",
                    "Resolution": "Remove the condition and resubmit the request if the operation failed."}]}})
            .to_string(),
        )
            .into_response();
    }
    if !s.b.power_stuck {
        match s.b.power_delay {
            None => *s.power.lock().unwrap() = "On".into(),
            Some(d) => {
                let power = s.power.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    *power.lock().unwrap() = "On".into();
                });
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The Server manifest for a fake BMC (with its credentials Secret `name-bmc`).
pub fn server_yaml(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-bmc, annotations: {{reprise.dev/for: \"Server/*\"}}}}\nstringData: {{username: {USER}, password: {PASSWORD}}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: Server\nmetadata: {{name: {name}}}\nspec:\n  bmc: {{address: \"{url}\", credentialsSecretRef: {{name: {name}-bmc}}}}\n{extra}---\n"
    )
}

/// Requests grouped by path, for messages.
pub fn by_path(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in seen {
        *m.entry(format!("{} {}", s.method, s.path)).or_default() += 1;
    }
    m
}
