//! A Redfish client for BMCs (Dell iDRAC, HPE iLO, Lenovo XCC, Supermicro,
//! sushy-tools): service root discovery, a session when the service offers
//! one (logged out after use) or basic authentication, TLS checked against a
//! CA bundle or explicitly not, a timeout on every call, If-Match with the
//! resource's ETag on every PATCH, and errors naming the BMC, the resource,
//! the HTTP status and the service's `@Message.ExtendedInfo`.
//!
//! A BMC's answers are untrusted input: every link, action target, session
//! location and redirect must stay on the BMC's own origin and under
//! `/redfish/` ([`origin`]); every body is read up to [`Limits::max_body_bytes`];
//! a collection is read up to [`Limits::max_members`] members (following
//! `Members@odata.nextLink` pages), saying so when it stops early.

pub mod events;
pub mod model;
pub mod origin;

use std::time::Duration;

use reqwest::{Method, StatusCode, Url, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    api::server::{Inventory, ObservedAdapter, ObservedNic},
    providers::{postgres::Password, tls},
};
use model::*;

/// How the BMC's certificate is checked.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The system's roots.
    System,
    /// A CA bundle (PEM); the host name is checked too.
    Ca(Vec<u8>),
    /// Nothing is checked (labs only).
    Insecure,
}

/// What a BMC may make reprise read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest response body read; past it the call fails (`ResponseTooLarge`).
    pub max_body_bytes: usize,
    /// The most members read from one collection (pages included).
    pub max_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_members: 64,
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BMC {bmc}: {resource}: {message}")]
pub struct RedfishError {
    /// A CamelCase word for conditions: `AuthenticationFailed`, `TLSFailed`,
    /// `Timeout`, `ConnectionRefused`, `Unreachable`, `HTTPError`, `BadResponse`,
    /// `NotSupported`, `LinkRefused`, `ResponseTooLarge`, `BadAddress`.
    pub reason: &'static str,
    pub bmc: String,
    pub resource: String,
    pub status: Option<u16>,
    pub message: String,
}

pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
pub const TLS_FAILED: &str = "TLSFailed";
pub const TIMEOUT: &str = "Timeout";
pub const NOT_SUPPORTED: &str = "NotSupported";
pub const LINK_REFUSED: &str = "LinkRefused";
pub const TOO_LARGE: &str = "ResponseTooLarge";
pub const HTTP_ERROR: &str = "HTTPError";

enum Auth {
    Basic,
    Session { token: String, location: Option<Url> },
}

/// One conversation with a BMC: open it, make calls, close it.
pub struct Bmc {
    base: Url,
    http: reqwest::Client,
    user: String,
    password: Password,
    auth: Auth,
    root: ServiceRoot,
    limits: Limits,
}

/// A collection's members, read up to the limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Members {
    pub links: Vec<String>,
    /// Why the list is not whole (more members than the limit, a member that
    /// is not a link, a page that could not be read), if it is not.
    pub incomplete: Option<String>,
}

impl Trust {
    /// What tells two trusts apart (for fingerprints; never shown).
    pub fn key(&self) -> &[u8] {
        match self {
            Trust::System => b"system",
            Trust::Ca(pem) => pem,
            Trust::Insecure => b"insecure",
        }
    }
}

/// Builds the HTTP client for a BMC: `timeout` bounds every call; redirects
/// are followed only on the BMC's own origin and under `/redfish/` (credentials
/// never travel to another host).
pub fn http_client(trust: &Trust, timeout: Duration) -> Result<reqwest::Client, String> {
    crate::install_crypto_provider();
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first().cloned() else {
            return attempt.stop();
        };
        if attempt.previous().len() > 5 {
            return attempt.error("more than 5 redirects");
        }
        if origin::check(&first, attempt.url()).is_ok() {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    let builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(redirects)
        .pool_max_idle_per_host(1);
    let builder = match trust {
        Trust::System => builder,
        Trust::Ca(pem) => builder.tls_backend_preconfigured(tls::client_config(tls::Check::Full, Some(pem))?),
        Trust::Insecure => builder.tls_backend_preconfigured(tls::client_config(tls::Check::Nothing, None)?),
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The last path segment of a link: a member's id.
pub fn last_segment(link: &str) -> &str {
    link.split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// The `@odata.id` of a collection member, if it is a link object.
fn member_link(v: &Value) -> Option<String> {
    v.get("@odata.id")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Bmc {
    fn error(&self, resource: &str, reason: &'static str, status: Option<u16>, message: String) -> RedfishError {
        RedfishError {
            reason,
            bmc: self.base.as_str().trim_end_matches('/').to_string(),
            resource: resource.chars().take(200).collect(),
            status,
            message,
        }
    }

    fn transport(&self, resource: &str, e: &reqwest::Error) -> RedfishError {
        let text = crate::providers::artifacts::error_chain(e);
        let mut reason = if e.is_timeout() { TIMEOUT } else { "Unreachable" };
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if err.is::<rustls::Error>() {
                reason = TLS_FAILED;
                break;
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
                    reason = TLS_FAILED;
                    break;
                }
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => reason = "ConnectionRefused",
                    std::io::ErrorKind::TimedOut => reason = TIMEOUT,
                    _ => {}
                }
            }
            cur = err.source();
        }
        if reason == "Unreachable" && (text.contains("certificate") || text.contains("InvalidCertificate")) {
            reason = TLS_FAILED;
        }
        self.error(resource, reason, None, text)
    }

    /// Opens a conversation: reads the service root, then logs in (a session
    /// when the service offers sessions, else basic authentication).
    pub async fn open(
        address: &str,
        user: &str,
        password: Password,
        http: reqwest::Client,
        limits: Limits,
    ) -> Result<Self, RedfishError> {
        let bad = |message: String| RedfishError {
            reason: "BadAddress",
            bmc: origin::redact(address),
            resource: String::new(),
            status: None,
            message,
        };
        let base = Url::parse(address).map_err(|e| bad(e.to_string()))?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad(
                "the address carries user information; put the credentials in spec.bmc.credentialsSecretRef".into(),
            ));
        }
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad("not an http(s) URL with a host".into()));
        }
        let mut bmc = Bmc {
            base,
            http,
            user: user.into(),
            password,
            auth: Auth::Basic,
            root: ServiceRoot::default(),
            limits,
        };
        // The service root answers without credentials on most BMCs; try with them when it does not.
        bmc.root = bmc.get::<ServiceRoot>("/redfish/v1/").await?.0;
        if let Some(sessions) = bmc.root.links.as_ref().and_then(|l| l.sessions.clone()) {
            let body = json!({"UserName": bmc.user, "Password": bmc.password.0});
            match bmc.send(Method::POST, &sessions.id, Some(&body), None, false).await {
                Ok(resp) => bmc.auth = bmc.session_from(&resp),
                // Sessions advertised but not usable: basic authentication (checked by the next call).
                Err(e) if e.reason == AUTHENTICATION_FAILED => return Err(e),
                Err(_) => {}
            }
        }
        Ok(bmc)
    }

    /// The session a successful login answered with. A Location on another
    /// origin is not kept: the session's DELETE (with its token) never goes there.
    fn session_from(&self, resp: &reqwest::Response) -> Auth {
        let h = resp.headers();
        let Some(token) = h.get("X-Auth-Token").and_then(|v| v.to_str().ok()).map(str::to_string) else {
            return Auth::Basic;
        };
        let location = h
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| match origin::resolve(&self.base, loc) {
                Ok(u) => Some(u),
                Err(why) => {
                    tracing::warn!(bmc = %self.base, %why, "session Location refused; the session will expire by itself");
                    None
                }
            });
        Auth::Session { token, location }
    }

    /// Closes the conversation (deletes the session, if any).
    pub async fn close(mut self) {
        if let Auth::Session {
            location: Some(loc), ..
        } = &self.auth
        {
            let _ = self.send(Method::DELETE, loc.as_str(), None, None, true).await;
        }
        self.auth = Auth::Basic;
    }

    /// `req` with the conversation's credentials.
    fn authenticated(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Basic => req.basic_auth(&self.user, Some(&self.password.0)),
            Auth::Session { token, .. } => req.header("X-Auth-Token", token),
        }
    }

    pub fn root(&self) -> &ServiceRoot {
        &self.root
    }

    async fn send(
        &self,
        method: Method,
        link: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        authenticated: bool,
    ) -> Result<reqwest::Response, RedfishError> {
        let url =
            origin::resolve(&self.base, link).map_err(|why| self.error(link, LINK_REFUSED, None, why.to_string()))?;
        let mut req = self
            .http
            .request(method, url)
            .header(header::ACCEPT, "application/json")
            .header("OData-Version", "4.0");
        if authenticated {
            req = self.authenticated(req);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(etag) = if_match {
            req = req.header(header::IF_MATCH, etag);
        }
        let resp = req.send().await.map_err(|e| self.transport(link, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere")
                .chars()
                .take(200)
                .collect::<String>();
            return Err(self.error(
                link,
                LINK_REFUSED,
                Some(status.as_u16()),
                format!(
                    "HTTP {}: redirect to {to:?} not followed (another origin, or outside /redfish/)",
                    status.as_u16()
                ),
            ));
        }
        let text = String::from_utf8_lossy(&self.read(link, resp, 64 << 10).await.unwrap_or_default()).into_owned();
        let reason = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AUTHENTICATION_FAILED,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => NOT_SUPPORTED,
            _ => HTTP_ERROR,
        };
        Err(self.error(
            link,
            reason,
            Some(status.as_u16()),
            format!("HTTP {}: {}", status.as_u16(), error_detail(&text)),
        ))
    }

    /// A response's body, up to `max` bytes: a larger one (announced or
    /// streamed) ends the call with `ResponseTooLarge`.
    async fn read(&self, link: &str, mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, RedfishError> {
        let too_large = |n: String| {
            self.error(
                link,
                TOO_LARGE,
                None,
                format!("the response is larger than {max} bytes ({n}); not read"),
            )
        };
        if let Some(len) = resp.content_length()
            && len > max as u64
        {
            return Err(too_large(format!("{len} announced")));
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(link, &e))? {
            if out.len() + chunk.len() > max {
                return Err(too_large("more sent".into()));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// GETs a resource: the parsed body and its ETag.
    pub async fn get<T: DeserializeOwned>(&self, link: &str) -> Result<(T, Option<String>), RedfishError> {
        let resp = self.send(Method::GET, link, None, None, true).await?;
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        let body = self.read(link, resp, self.limits.max_body_bytes).await?;
        let parsed = serde_json::from_slice(&body)
            .map_err(|e| self.error(link, "BadResponse", None, format!("not the expected JSON: {e}")))?;
        Ok((parsed, etag))
    }

    /// The members of a collection, following its pages, up to the limit.
    pub async fn members(&self, link: &str) -> Result<Members, RedfishError> {
        let max = self.limits.max_members;
        let mut out = Members::default();
        let mut page = Some(link.to_string());
        let mut pages = 0;
        while let Some(next) = page.take() {
            pages += 1;
            if pages > max {
                out.incomplete = Some(format!("{link} pages on past {max} pages; the rest was not read"));
                break;
            }
            let c = match self.get::<Collection>(&next).await {
                Ok((c, _)) => c,
                // The first page is the collection: its failure is the caller's to judge.
                Err(e) if pages == 1 => return Err(e),
                Err(e) => {
                    out.incomplete = Some(format!("page {pages} could not be read: {e}"));
                    break;
                }
            };
            let mut dropped = false;
            for m in &c.members {
                match member_link(m) {
                    Some(l) if out.links.len() < max => out.links.push(l),
                    Some(_) => dropped = true,
                    None => {
                        let shown: String = m.to_string().chars().take(100).collect();
                        out.incomplete = Some(format!("a member of {link} is not a link: {shown}"));
                    }
                }
            }
            if out.links.len() >= max {
                if dropped || c.next_link.is_some() {
                    out.incomplete = Some(format!("{link} has more than {max} members; the first {max} were read"));
                }
                break;
            }
            page = c.next_link.filter(|n| !n.is_empty());
        }
        Ok(out)
    }

    pub async fn post(&self, link: &str, body: &Value) -> Result<(), RedfishError> {
        self.send(Method::POST, link, Some(body), None, true).await.map(|_| ())
    }

    /// PATCHes a resource, with If-Match set to the ETag it was read with.
    pub async fn patch(&self, link: &str, body: &Value, etag: Option<&str>) -> Result<(), RedfishError> {
        self.send(Method::PATCH, link, Some(body), etag, true).await.map(|_| ())
    }

    /// The ComputerSystem `id` (or the only one): its link, content and ETag.
    pub async fn system(&self, id: Option<&str>) -> Result<(String, ComputerSystem, Option<String>), RedfishError> {
        let systems = self
            .root
            .systems
            .clone()
            .map(|l| l.id)
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "/redfish/v1/Systems".into());
        let list = self.members(&systems).await?;
        let path = match id {
            Some(id) => list
                .links
                .iter()
                .find(|m| last_segment(m) == id)
                .cloned()
                .ok_or_else(|| {
                    self.error(
                        &systems,
                        NOT_SUPPORTED,
                        None,
                        format!("no ComputerSystem {id:?} among {} member(s)", list.links.len()),
                    )
                })?,
            None => match list.links.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(self.error(
                        &systems,
                        NOT_SUPPORTED,
                        None,
                        "the BMC manages no ComputerSystem".into(),
                    ));
                }
                many => {
                    return Err(self.error(
                        &systems,
                        NOT_SUPPORTED,
                        None,
                        format!("the BMC manages {} systems: set spec.bmc.systemId", many.len()),
                    ));
                }
            },
        };
        let (sys, etag) = self.get::<ComputerSystem>(&path).await?;
        Ok((path, sys, etag))
    }

    /// Hardware and network inventory of a system. A part the BMC does not
    /// give (a member that fails, a page that cannot be read) is named in
    /// `errors`; the rest is kept. At most `max_members` NICs and adapters.
    pub async fn inventory(&self, sys: &ComputerSystem) -> Inventory {
        let mut inv = Inventory {
            manufacturer: text(sys.manufacturer.clone()),
            model: text(sys.model.clone()),
            serial: text(sys.serial_number.clone()),
            bios_version: text(sys.bios_version.clone()),
            cpus: sys.processor_summary.as_ref().and_then(|p| p.count),
            cpu_model: text(sys.processor_summary.as_ref().and_then(|p| p.model.clone())),
            memory_gib: sys
                .memory_summary
                .as_ref()
                .and_then(|m| m.total_system_memory_gib)
                .filter(|m| m.is_finite() && *m >= 0.0),
            ..Default::default()
        };
        let mut errors = vec![];
        if inv.cpu_model.is_none()
            && let Some(p) = sys.processors.as_ref().filter(|p| !p.id.is_empty())
        {
            match self.members(&p.id).await {
                Ok(list) => {
                    if let Some(first) = list.links.first() {
                        match self.get::<Processor>(first).await {
                            Ok((cpu, _)) => inv.cpu_model = text(cpu.model),
                            Err(e) => errors.push(format!("processor {}: {}", last_segment(first), e.message)),
                        }
                    }
                }
                Err(e) => errors.push(format!("processors: {}", e.message)),
            }
        }
        self.adapters(sys, &mut inv, &mut errors).await;
        self.nics(sys, &mut inv, &mut errors).await;
        inv.nics.sort_by(|a, b| a.name.cmp(&b.name));
        errors.truncate(16);
        inv.errors = errors;
        inv
    }

    /// The chassis' network adapters.
    async fn adapters(&self, sys: &ComputerSystem, inv: &mut Inventory, errors: &mut Vec<String>) {
        let chassis_links = sys
            .links
            .iter()
            .flat_map(|l| l.chassis.iter())
            .filter(|c| !c.id.is_empty());
        for c in chassis_links.take(self.limits.max_members) {
            let chassis = match self.get::<Chassis>(&c.id).await {
                Ok((ch, _)) => ch,
                Err(e) => {
                    errors.push(format!("chassis {}: {}", last_segment(&c.id), e.message));
                    continue;
                }
            };
            let Some(adapters) = chassis.network_adapters.filter(|a| !a.id.is_empty()) else {
                continue;
            };
            let list = match self.members(&adapters.id).await {
                Ok(l) => l,
                Err(e) if e.reason == NOT_SUPPORTED => continue,
                Err(e) => {
                    errors.push(format!(
                        "network adapters of chassis {}: {}",
                        last_segment(&c.id),
                        e.message
                    ));
                    continue;
                }
            };
            errors.extend(list.incomplete.clone());
            for m in list.links {
                if inv.network_adapters.len() >= self.limits.max_members {
                    break;
                }
                match self.get::<NetworkAdapter>(&m).await {
                    Ok((a, _)) => inv.network_adapters.push(ObservedAdapter {
                        id: text(a.id).unwrap_or_else(|| last_segment(&m).to_string()),
                        manufacturer: text(a.manufacturer),
                        model: text(a.model),
                        health: text(a.status.and_then(|s| s.health)),
                    }),
                    Err(e) => errors.push(format!("network adapter {}: {}", last_segment(&m), e.message)),
                }
            }
        }
    }

    /// The system's Ethernet interfaces.
    async fn nics(&self, sys: &ComputerSystem, inv: &mut Inventory, errors: &mut Vec<String>) {
        let Some(e) = sys.ethernet_interfaces.as_ref().filter(|e| !e.id.is_empty()) else {
            return;
        };
        let list = match self.members(&e.id).await {
            Ok(l) => l,
            Err(e) if e.reason == NOT_SUPPORTED => return,
            Err(e) => {
                errors.push(format!("ethernet interfaces: {}", e.message));
                return;
            }
        };
        errors.extend(list.incomplete.clone());
        for m in list.links {
            match self.get::<EthernetInterface>(&m).await {
                Ok((nic, _)) => {
                    let name = text(nic.id.clone())
                        .or(text(nic.name.clone()))
                        .unwrap_or_else(|| last_segment(&m).to_string());
                    inv.nics.push(ObservedNic {
                        name,
                        mac_address: text(nic.mac_address.or(nic.permanent_mac_address))
                            .map(|m| m.to_ascii_lowercase()),
                        link_status: text(nic.link_status),
                        speed_mbps: nic.speed_mbps,
                    });
                }
                Err(e) => errors.push(format!("NIC {}: {}", last_segment(&m), e.message)),
            }
        }
    }

    /// Resets the system (`On`, `ForceOff`, `GracefulShutdown`, `ForceRestart`, …).
    pub async fn reset(&self, system_path: &str, sys: &ComputerSystem, reset_type: &str) -> Result<(), RedfishError> {
        let action = sys.actions.as_ref().and_then(|a| a.reset.clone()).unwrap_or_default();
        if let Some(allowed) = &action.allowed
            && !allowed.iter().any(|a| a.as_str() == Some(reset_type))
        {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            return Err(self.error(
                system_path,
                NOT_SUPPORTED,
                None,
                format!("reset type {reset_type} is not allowed (allowed: {})", names.join(", ")),
            ));
        }
        let target = action
            .target
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("{}/Actions/ComputerSystem.Reset", system_path.trim_end_matches('/')));
        self.post(&target, &json!({"ResetType": reset_type})).await
    }

    /// The virtual CD/DVD drive of a system (under the system, else under its manager).
    pub async fn virtual_cd(&self, sys: &ComputerSystem) -> Result<(String, VirtualMedia), RedfishError> {
        let mut collections = vec![];
        collections.extend(sys.virtual_media.clone());
        for m in sys
            .links
            .iter()
            .flat_map(|l| l.managed_by.iter())
            .filter(|m| !m.id.is_empty())
        {
            if let Ok((mgr, _)) = self.get::<Manager>(&m.id).await {
                collections.extend(mgr.virtual_media);
            }
        }
        for c in collections.iter().filter(|c| !c.id.is_empty()) {
            let Ok(list) = self.members(&c.id).await else {
                continue;
            };
            for m in list.links {
                let (vm, _) = self.get::<VirtualMedia>(&m).await?;
                if vm
                    .media_types
                    .iter()
                    .any(|t| matches!(t.as_str(), Some("CD") | Some("DVD")))
                {
                    return Ok((m, vm));
                }
            }
        }
        Err(self.error("VirtualMedia", NOT_SUPPORTED, None, "no virtual CD or DVD drive".into()))
    }

    pub async fn insert_media(&self, path: &str, vm: &VirtualMedia, image: &str) -> Result<(), RedfishError> {
        let target = vm
            .actions
            .as_ref()
            .and_then(|a| a.insert.as_ref())
            .and_then(|a| a.target.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("{}/Actions/VirtualMedia.InsertMedia", path.trim_end_matches('/')));
        self.post(
            &target,
            &json!({"Image": image, "Inserted": true, "WriteProtected": true}),
        )
        .await
    }

    pub async fn eject_media(&self, path: &str, vm: &VirtualMedia) -> Result<(), RedfishError> {
        let target = vm
            .actions
            .as_ref()
            .and_then(|a| a.eject.as_ref())
            .and_then(|a| a.target.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("{}/Actions/VirtualMedia.EjectMedia", path.trim_end_matches('/')));
        self.post(&target, &json!({})).await
    }

    /// Boots once from the virtual CD, in `mode` (`UEFI` or `Legacy`).
    pub async fn boot_once_from_cd(
        &self,
        system_path: &str,
        etag: Option<&str>,
        mode: &str,
    ) -> Result<(), RedfishError> {
        let body = json!({"Boot": {
            "BootSourceOverrideEnabled": "Once",
            "BootSourceOverrideTarget": "Cd",
            "BootSourceOverrideMode": mode,
        }});
        self.patch(system_path, &body, etag).await
    }
}

impl Drop for Bmc {
    /// A conversation cut short (its deadline passed) still logs its session out, in the background.
    fn drop(&mut self) {
        let Auth::Session {
            token,
            location: Some(loc),
        } = std::mem::replace(&mut self.auth, Auth::Basic)
        else {
            return;
        };
        let http = self.http.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = http.delete(loc).header("X-Auth-Token", token).send().await;
            });
        }
    }
}

/// What a Redfish error body says (`message`, each `@Message.ExtendedInfo`
/// with its id and resolution), else the start of the body.
pub fn error_detail(body: &str) -> String {
    let detail = serde_json::from_str::<ErrorBody>(body).ok().map(|b| {
        let mut parts: Vec<String> = b.error.message.into_iter().collect();
        for x in b.error.extended.into_iter().take(4) {
            let mut s = x.message.unwrap_or_default();
            if let Some(id) = x.message_id {
                s = format!("{s} ({id})");
            }
            if let Some(r) = x.resolution {
                s = format!("{s}; resolution: {r}");
            }
            parts.push(s);
        }
        parts.join("; ")
    });
    let detail = detail.filter(|s| !s.is_empty()).unwrap_or_else(|| body.to_string());
    detail.chars().filter(|c| !c.is_control()).take(500).collect()
}

/// A ComputerSystem as read in one conversation: its link, content and ETag.
pub struct RedfishSystem {
    pub path: String,
    pub sys: ComputerSystem,
    pub etag: Option<String>,
}

impl crate::providers::bmc::SystemView for RedfishSystem {
    fn power_state(&self) -> Option<&str> {
        self.sys.power_state.as_deref()
    }

    fn health(&self) -> Option<String> {
        text(
            self.sys
                .status
                .as_ref()
                .and_then(|st| st.health_rollup.clone().or(st.health.clone())),
        )
    }

    fn boot_marks(&self) -> String {
        let s = &self.sys;
        format!(
            "power {}, last reset {}, boot progress {} at {}",
            s.power_state.as_deref().unwrap_or("unknown"),
            s.last_reset_time.as_deref().unwrap_or("not reported"),
            s.boot_progress
                .as_ref()
                .and_then(|b| b.last_state.as_deref())
                .unwrap_or("not reported"),
            s.boot_progress
                .as_ref()
                .and_then(|b| b.last_state_time.as_deref())
                .unwrap_or("-"),
        )
    }

    fn location(&self) -> &str {
        &self.path
    }
}

impl crate::providers::bmc::Board for Bmc {
    type System = RedfishSystem;
    type Feed = events::Feed;

    fn offers_events(&self) -> bool {
        Bmc::offers_events(self)
    }

    async fn feed(&self) -> Result<Option<events::Feed>, RedfishError> {
        Bmc::feed(self).await
    }

    async fn system(&self, id: Option<&str>) -> Result<RedfishSystem, RedfishError> {
        let (path, sys, etag) = Bmc::system(self, id).await?;
        Ok(RedfishSystem { path, sys, etag })
    }

    async fn inventory(&self, s: &RedfishSystem) -> Inventory {
        Bmc::inventory(self, &s.sys).await
    }

    async fn reset(&self, s: &RedfishSystem, reset_type: &str) -> Result<(), RedfishError> {
        Bmc::reset(self, &s.path, &s.sys, reset_type).await
    }

    async fn insert_media(&self, s: &RedfishSystem, image: &str) -> Result<String, RedfishError> {
        let (path, vm) = self.virtual_cd(&s.sys).await?;
        if vm.inserted == Some(true) {
            self.eject_media(&path, &vm).await?;
        }
        Bmc::insert_media(self, &path, &vm, image).await?;
        Ok(path)
    }

    async fn eject_media(&self, s: &RedfishSystem) -> Result<String, RedfishError> {
        let (path, vm) = self.virtual_cd(&s.sys).await?;
        Bmc::eject_media(self, &path, &vm).await?;
        Ok(path)
    }

    async fn boot_once_from_media(&self, s: &RedfishSystem, mode: &str) -> Result<(), RedfishError> {
        self.boot_once_from_cd(&s.path, s.etag.as_deref(), mode).await
    }

    fn version(&self) -> String {
        self.root.redfish_version.clone().unwrap_or_default()
    }

    async fn close(self) {
        Bmc::close(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_their_last_segment() {
        assert_eq!(last_segment("/redfish/v1/Systems/437XR1138R2"), "437XR1138R2");
        assert_eq!(last_segment("/redfish/v1/Systems/1/"), "1");
        assert_eq!(last_segment("/redfish/v1/Systems?$skip=2"), "Systems");
    }

    #[test]
    fn error_bodies_keep_the_extended_info() {
        let body = r#"{"error": {"code": "Base.1.8.GeneralError", "message": "A general error has occurred.",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.ResourceInUse", "Message": "The change could not be made because the resource is in use.", "Resolution": "Retry later."}]}}"#;
        let d = error_detail(body);
        assert!(
            d.contains("resource is in use. (Base.1.8.ResourceInUse); resolution: Retry later."),
            "{d}"
        );
        assert_eq!(error_detail("plain\ntext"), "plaintext");
    }
}
