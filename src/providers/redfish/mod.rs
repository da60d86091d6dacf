//! A Redfish client for BMCs (Dell iDRAC, HPE iLO, Lenovo XCC, Supermicro,
//! sushy-tools): service root discovery, a session when the service offers
//! one (logged out after use) or basic authentication, TLS checked against a
//! CA bundle or explicitly not, a timeout on every call, If-Match with the
//! resource's ETag on every PATCH, and errors naming the BMC, the resource,
//! the HTTP status and the service's `@Message.ExtendedInfo`.

pub mod model;

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    api::server::{Inventory, ObservedNic},
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

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BMC {bmc}: {resource}: {message}")]
pub struct RedfishError {
    /// A CamelCase word for conditions: `AuthenticationFailed`, `TLSFailed`,
    /// `Timeout`, `ConnectionRefused`, `Unreachable`, `HTTPError`, `BadResponse`, `NotSupported`.
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

enum Auth {
    Basic,
    Session { token: String, location: Option<String> },
}

/// One conversation with a BMC: open it, make calls, close it.
pub struct Bmc {
    base: reqwest::Url,
    http: reqwest::Client,
    user: String,
    password: Password,
    auth: Auth,
    root: ServiceRoot,
}

/// Builds the HTTP client for a BMC: `timeout` bounds every call.
pub fn http_client(trust: &Trust, timeout: Duration) -> Result<reqwest::Client, String> {
    crate::install_crypto_provider();
    let builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
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

impl Bmc {
    fn error(&self, resource: &str, reason: &'static str, status: Option<u16>, message: String) -> RedfishError {
        RedfishError {
            reason,
            bmc: self.base.as_str().trim_end_matches('/').to_string(),
            resource: resource.to_string(),
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
    ) -> Result<Self, RedfishError> {
        let base = reqwest::Url::parse(address).map_err(|e| RedfishError {
            reason: "BadAddress",
            bmc: address.into(),
            resource: String::new(),
            status: None,
            message: e.to_string(),
        })?;
        let mut bmc = Bmc {
            base,
            http,
            user: user.into(),
            password,
            auth: Auth::Basic,
            root: ServiceRoot::default(),
        };
        // The service root answers without credentials on most BMCs; try with them when it does not.
        bmc.root = bmc.get::<ServiceRoot>("/redfish/v1/").await?.0;
        if let Some(sessions) = bmc.root.links.as_ref().and_then(|l| l.sessions.clone()) {
            let body = json!({"UserName": bmc.user, "Password": bmc.password.0});
            let r = bmc.send(Method::POST, &sessions.id, Some(&body), None, false).await;
            match r {
                Ok(resp) => {
                    let h = resp.headers();
                    let token = h.get("X-Auth-Token").and_then(|v| v.to_str().ok()).map(str::to_string);
                    let location = h
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    if let Some(token) = token {
                        bmc.auth = Auth::Session { token, location };
                    }
                }
                // Sessions advertised but not usable: basic authentication (checked by the next call).
                Err(e) if e.reason == AUTHENTICATION_FAILED => return Err(e),
                Err(_) => {}
            }
        }
        Ok(bmc)
    }

    /// Closes the conversation (deletes the session, if any).
    pub async fn close(self) {
        if let Auth::Session {
            location: Some(loc), ..
        } = &self.auth
        {
            let _ = self.send(Method::DELETE, loc, None, None, true).await;
        }
    }

    pub fn root(&self) -> &ServiceRoot {
        &self.root
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        authenticated: bool,
    ) -> Result<reqwest::Response, RedfishError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| self.error(path, "BadAddress", None, e.to_string()))?;
        let mut req = self
            .http
            .request(method, url)
            .header(header::ACCEPT, "application/json")
            .header("OData-Version", "4.0");
        if authenticated {
            req = match &self.auth {
                Auth::Basic => req.basic_auth(&self.user, Some(&self.password.0)),
                Auth::Session { token, .. } => req.header("X-Auth-Token", token),
            };
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(etag) = if_match {
            req = req.header(header::IF_MATCH, etag);
        }
        let resp = req.send().await.map_err(|e| self.transport(path, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<ErrorBody>(&text)
            .ok()
            .map(|b| {
                let mut parts: Vec<String> = b.error.message.into_iter().collect();
                for x in b.error.extended {
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
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| text.chars().take(200).collect());
        let reason = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AUTHENTICATION_FAILED,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => NOT_SUPPORTED,
            _ => "HTTPError",
        };
        Err(self.error(
            path,
            reason,
            Some(status.as_u16()),
            format!("HTTP {}: {detail}", status.as_u16()),
        ))
    }

    /// GETs a resource: the parsed body and its ETag.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Option<String>), RedfishError> {
        let resp = self.send(Method::GET, path, None, None, true).await?;
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(|e| self.transport(path, &e))?;
        let parsed = serde_json::from_slice(&body)
            .map_err(|e| self.error(path, "BadResponse", None, format!("not the expected JSON: {e}")))?;
        Ok((parsed, etag))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(), RedfishError> {
        self.send(Method::POST, path, Some(body), None, true).await.map(|_| ())
    }

    /// PATCHes a resource, with If-Match set to the ETag it was read with.
    pub async fn patch(&self, path: &str, body: &Value, etag: Option<&str>) -> Result<(), RedfishError> {
        self.send(Method::PATCH, path, Some(body), etag, true).await.map(|_| ())
    }

    /// The ComputerSystem `id` (or the only one): its path, content and ETag.
    pub async fn system(&self, id: Option<&str>) -> Result<(String, ComputerSystem, Option<String>), RedfishError> {
        let systems = self
            .root
            .systems
            .clone()
            .map(|l| l.id)
            .unwrap_or_else(|| "/redfish/v1/Systems".into());
        let (list, _) = self.get::<Collection>(&systems).await?;
        let path = match id {
            Some(id) => list
                .members
                .iter()
                .find(|m| m.id.trim_end_matches('/').rsplit('/').next() == Some(id))
                .map(|m| m.id.clone())
                .ok_or_else(|| {
                    self.error(
                        &systems,
                        NOT_SUPPORTED,
                        None,
                        format!("no ComputerSystem {id:?} among {} member(s)", list.members.len()),
                    )
                })?,
            None => match list.members.as_slice() {
                [only] => only.id.clone(),
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

    /// Hardware and network inventory of a system.
    pub async fn inventory(&self, sys: &ComputerSystem) -> Result<Inventory, RedfishError> {
        let mut inv = Inventory {
            manufacturer: sys.manufacturer.clone(),
            model: sys.model.clone(),
            serial: sys.serial_number.clone(),
            bios_version: sys.bios_version.clone(),
            cpus: sys.processor_summary.as_ref().and_then(|p| p.count),
            cpu_model: sys.processor_summary.as_ref().and_then(|p| p.model.clone()),
            memory_gib: sys.memory_summary.as_ref().and_then(|m| m.total_system_memory_gib),
            nics: vec![],
            network_adapters: vec![],
        };
        if inv.cpu_model.is_none()
            && let Some(p) = &sys.processors
            && let Ok((list, _)) = self.get::<Collection>(&p.id).await
            && let Some(first) = list.members.first()
            && let Ok((cpu, _)) = self.get::<Processor>(&first.id).await
        {
            inv.cpu_model = cpu.model;
        }
        // Optional parts: a BMC that lacks one (404) still has an inventory.
        let optional = |r: Result<(Collection, Option<String>), RedfishError>| match r {
            Ok((c, _)) => Ok(c),
            Err(e) if e.reason == NOT_SUPPORTED => Ok(Collection::default()),
            Err(e) => Err(e),
        };
        for c in sys.links.iter().flat_map(|l| l.chassis.iter()) {
            let Ok((chassis, _)) = self.get::<Chassis>(&c.id).await else {
                continue;
            };
            let Some(adapters) = chassis.network_adapters else {
                continue;
            };
            for m in optional(self.get::<Collection>(&adapters.id).await)?.members {
                let (a, _) = self.get::<NetworkAdapter>(&m.id).await?;
                inv.network_adapters.push(crate::api::server::ObservedAdapter {
                    id: a
                        .id
                        .unwrap_or_else(|| m.id.rsplit('/').next().unwrap_or_default().to_string()),
                    manufacturer: a.manufacturer,
                    model: a.model,
                    health: a.status.and_then(|s| s.health),
                });
            }
        }
        if let Some(e) = &sys.ethernet_interfaces {
            let list = optional(self.get::<Collection>(&e.id).await)?;
            for m in list.members {
                let (nic, _) = self.get::<EthernetInterface>(&m.id).await?;
                let name = nic
                    .id
                    .clone()
                    .or(nic.name.clone())
                    .unwrap_or_else(|| m.id.rsplit('/').next().unwrap_or_default().to_string());
                inv.nics.push(ObservedNic {
                    name,
                    mac_address: nic
                        .mac_address
                        .or(nic.permanent_mac_address)
                        .map(|m| m.to_ascii_lowercase()),
                    link_status: nic.link_status,
                    speed_mbps: nic.speed_mbps,
                });
            }
            inv.nics.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(inv)
    }

    /// Resets the system (`On`, `ForceOff`, `GracefulShutdown`, `ForceRestart`, …).
    pub async fn reset(&self, system_path: &str, sys: &ComputerSystem, reset_type: &str) -> Result<(), RedfishError> {
        let action = sys.actions.as_ref().and_then(|a| a.reset.clone()).unwrap_or_default();
        if let Some(allowed) = &action.allowed
            && !allowed.iter().any(|a| a == reset_type)
        {
            return Err(self.error(
                system_path,
                NOT_SUPPORTED,
                None,
                format!(
                    "reset type {reset_type} is not allowed (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let target = action
            .target
            .unwrap_or_else(|| format!("{}/Actions/ComputerSystem.Reset", system_path.trim_end_matches('/')));
        self.post(&target, &json!({"ResetType": reset_type})).await
    }

    /// The virtual CD/DVD drive of a system (under the system, else under its manager).
    pub async fn virtual_cd(&self, sys: &ComputerSystem) -> Result<(String, VirtualMedia), RedfishError> {
        let mut collections = vec![];
        collections.extend(sys.virtual_media.clone());
        for m in sys.links.iter().flat_map(|l| l.managed_by.iter()) {
            if let Ok((mgr, _)) = self.get::<Manager>(&m.id).await {
                collections.extend(mgr.virtual_media);
            }
        }
        for c in collections {
            let Ok((list, _)) = self.get::<Collection>(&c.id).await else {
                continue;
            };
            for m in list.members {
                let (vm, _) = self.get::<VirtualMedia>(&m.id).await?;
                if vm.media_types.iter().any(|t| t == "CD" || t == "DVD") {
                    return Ok((m.id, vm));
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
