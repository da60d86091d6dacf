//! The bundle's effects: the active site publishes it when its objects
//! change; a standby reads and checks it; a site that takes over creates,
//! wave by wave, the objects its cluster lacks.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::reflector::Store,
};

use super::bundle::{self, MAX_BUNDLE_BYTES, Payload};
use crate::{
    api::{
        Application, Database, MaintenanceWindow, RecoveryPlan, Server, VirtualMachine,
        site::{BundleStatus, FailoverRecord, Site},
    },
    providers::witness::{BundleRead, S3Witness},
    runtime::{Context, Error, kind::Kind, secrets},
};

/// Field manager of what a takeover creates.
pub const MANAGER: &str = "reprise/site-failover";

/// What each namespace's site last published or read: (fingerprint or ETag, payload).
fn memory() -> &'static Mutex<HashMap<String, Known>> {
    static M: std::sync::OnceLock<Mutex<HashMap<String, Known>>> = std::sync::OnceLock::new();
    M.get_or_init(Default::default)
}

#[derive(Clone, Default)]
struct Known {
    published: Option<String>,
    etag: Option<String>,
    payload: Option<Payload>,
    /// The key the payload was checked with (another key checks again).
    key: Option<String>,
}

fn key_id(key: &[u8]) -> String {
    bundle::fingerprint(&[serde_json::Value::String(crate::providers::artifacts::hex(key))])
}

fn known(ns: &str) -> Known {
    memory()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(ns)
        .cloned()
        .unwrap_or_default()
}

fn remember(ns: &str, f: impl FnOnce(&mut Known)) {
    f(memory()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(ns.into())
        .or_default());
}

/// The bundle key from the Secret the local Site names (Err: why not).
pub async fn key(ctx: &Context, site: &Site) -> Result<Option<Result<Vec<u8>, String>>, Error> {
    let Some(b) = &site.spec.bundle else {
        return Ok(None);
    };
    let ns = site.namespace().unwrap_or_default();
    let who = secrets::Requester {
        kind: "Site",
        name: site.metadata.name.as_deref().unwrap_or_default(),
    };
    let field = "spec.bundle.keySecretRef";
    Ok(Some(
        match secrets::read(ctx, &ns, &b.key_secret_ref.name, who).await? {
            Ok(data) => data
                .get(&b.key_secret_ref.key)
                .filter(|k| !k.is_empty())
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{field}: Secret {:?} has no key {:?}",
                        b.key_secret_ref.name, b.key_secret_ref.key
                    )
                }),
            Err(why) => Err(format!("{field}: {why}")),
        },
    ))
}

fn portable_all<K: Kind>(store: &Store<DeserializeGuard<K>>, ns: &str, out: &mut Vec<serde_json::Value>) {
    for o in store.state() {
        if let Ok(obj) = &o.0
            && obj.namespace().as_deref() == Some(ns)
            && let Ok(v) = serde_json::to_value(obj)
            && let Some(p) = bundle::portable(&v)
        {
            out.push(p);
        }
    }
}

/// The namespace's objects as a bundle carries them, in wave order.
fn objects(ctx: &Context, ns: &str) -> Vec<serde_json::Value> {
    let s = &ctx.stores;
    let mut out = vec![];
    portable_all(&s.servers, ns, &mut out);
    portable_all(&s.virtual_machines, ns, &mut out);
    portable_all(&s.databases, ns, &mut out);
    portable_all(&s.applications, ns, &mut out);
    portable_all(&s.maintenance_windows, ns, &mut out);
    portable_all(&s.recovery_plans, ns, &mut out);
    bundle::sort(&mut out);
    out
}

/// Publishes the bundle when the objects changed since the last time (the
/// active site). Returns its status, if it published or already had.
pub async fn publish(
    ctx: &Context,
    w: &S3Witness,
    key: &[u8],
    ns: &str,
    me: &str,
    epoch: u64,
    was: Option<&BundleStatus>,
) -> BundleStatus {
    let objects = objects(ctx, ns);
    let fp = bundle::fingerprint(&objects);
    let version = fp[..12].to_string();
    if known(ns).published.as_deref() == Some(fp.as_str())
        && let Some(b) = was.filter(|b| b.version == version && b.site == me)
    {
        return b.clone();
    }
    let payload = Payload {
        site: me.into(),
        epoch,
        published: Timestamp::now().to_string(),
        objects,
    };
    let signed = serde_json::to_vec(&bundle::sign(key, &payload)).expect("a bundle serializes");
    let n = payload.objects.len() as u32;
    match w.put_bundle(signed).await {
        Ok(()) => {
            remember(ns, |k| k.published = Some(fp));
            BundleStatus {
                version,
                site: me.into(),
                epoch,
                published: payload.published,
                objects: n,
                verified: true,
                message: String::new(),
            }
        }
        Err(e) => BundleStatus {
            message: format!("publishing the bundle: {e}"),
            ..was.cloned().unwrap_or(BundleStatus {
                version,
                site: me.into(),
                epoch,
                ..Default::default()
            })
        },
    }
}

/// Reads and checks the bundle (a standby), unless unchanged since the last reading.
pub async fn read(w: &S3Witness, key: &[u8], ns: &str, was: Option<&BundleStatus>) -> Option<BundleStatus> {
    let k = known(ns);
    let id = key_id(key);
    let etag = k
        .etag
        .as_deref()
        .filter(|_| k.payload.is_some() && k.key.as_deref() == Some(id.as_str()));
    match w.get_bundle(etag, MAX_BUNDLE_BYTES).await {
        Ok(BundleRead::Absent) => None,
        Ok(BundleRead::Unchanged) => was.cloned(),
        Ok(BundleRead::New { bytes, etag }) => Some(match bundle::open(key, &bytes) {
            Ok(p) => {
                let status = BundleStatus {
                    version: bundle::fingerprint(&p.objects)[..12].to_string(),
                    site: p.site.clone(),
                    epoch: p.epoch,
                    published: p.published.clone(),
                    objects: p.objects.len() as u32,
                    verified: true,
                    message: String::new(),
                };
                remember(ns, |k| {
                    k.etag = Some(etag);
                    k.payload = Some(p);
                    k.key = Some(id);
                });
                status
            }
            Err(why) => {
                remember(ns, |k| {
                    k.etag = None;
                    k.payload = None;
                });
                BundleStatus {
                    verified: false,
                    message: why,
                    ..was.cloned().unwrap_or_default()
                }
            }
        }),
        Err(e) => was.cloned().map(|b| BundleStatus {
            message: format!("reading the bundle: {e}"),
            ..b
        }),
    }
}

/// After taking the lease: creates, wave by wave, the bundle's objects this
/// cluster lacks (what it holds is left as it is: GitOps may own it).
pub async fn rebuild(ctx: &Context, w: &S3Witness, key: &[u8], site: &Site, epoch: u64) -> FailoverRecord {
    let ns = site.namespace().unwrap_or_default();
    let ns = ns.as_str();
    let mut rec = FailoverRecord {
        at: Time(Timestamp::now()),
        epoch,
        bundle: None,
        created: vec![],
        present: vec![],
        overridden: vec![],
        message: String::new(),
    };
    // Fresh from the witness: the last one published by the old holder.
    let payload = match w.get_bundle(None, MAX_BUNDLE_BYTES).await {
        Ok(BundleRead::New { bytes, .. }) => match bundle::open(key, &bytes) {
            Ok(p) => p,
            Err(why) => {
                rec.message = why;
                return rec;
            }
        },
        Ok(_) => match known(ns).payload {
            Some(p) => p,
            None => {
                rec.message = "no plan bundle in the witness: nothing to rebuild from".into();
                return rec;
            }
        },
        Err(e) => match known(ns).payload {
            // The last one read and checked, while the witness answered.
            Some(p) => {
                rec.message = format!("the bundle could not be read ({e}); the last one checked was used");
                p
            }
            None => {
                rec.message = format!("the bundle could not be read: {e}");
                return rec;
            }
        },
    };
    rec.bundle = Some(bundle::fingerprint(&payload.objects)[..12].to_string());
    let mut failed = vec![];
    for o in &payload.objects {
        let (kind, name) = (
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let id = format!("{kind}/{name}");
        let Some(resource) = resource(kind) else { continue };
        if exists(ctx, kind, ns, name) {
            rec.present.push(id);
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
        let mut body = o.clone();
        body["metadata"]["namespace"] = ns.into();
        for over in site.spec.overrides.iter().filter(|x| x.kind == kind && x.name == name) {
            bundle::merge(&mut body["spec"], &over.spec_patch);
            if !rec.overridden.contains(&id) {
                rec.overridden.push(id.clone());
            }
        }
        // One object the API server refuses (an override gone wrong) is
        // named; the others are still created.
        match api
            .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                ctx.metrics.wrote(kind, "failover");
                rec.created.push(id);
            }
            Err(e) => failed.push(format!("{id}: {}", crate::runtime::report::truncate(e.to_string()))),
        }
    }
    if !failed.is_empty() {
        rec.message = format!("not created: {}", failed.join("; "));
    }
    let unknown: Vec<String> = site
        .spec
        .overrides
        .iter()
        .filter(|x| {
            !payload
                .objects
                .iter()
                .any(|o| o["kind"] == x.kind.as_str() && o["metadata"]["name"] == x.name.as_str())
        })
        .map(|x| format!("{}/{}", x.kind, x.name))
        .collect();
    if !unknown.is_empty() {
        let said = format!(
            "spec.overrides name objects the bundle does not hold: {}",
            unknown.join(", ")
        );
        rec.message = [rec.message.clone(), said]
            .into_iter()
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
    }
    rec
}

/// Whether the stores hold every object of `ids` (`Kind/name`) yet.
pub fn all_seen(ctx: &Context, ns: &str, ids: &[String]) -> bool {
    ids.iter().all(|id| {
        id.split_once('/')
            .is_some_and(|(kind, name)| exists(ctx, kind, ns, name))
    })
}

fn resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "Server" => ApiResource::erase::<Server>(&()),
        "VirtualMachine" => ApiResource::erase::<VirtualMachine>(&()),
        "Database" => ApiResource::erase::<Database>(&()),
        "Application" => ApiResource::erase::<Application>(&()),
        "MaintenanceWindow" => ApiResource::erase::<MaintenanceWindow>(&()),
        "RecoveryPlan" => ApiResource::erase::<RecoveryPlan>(&()),
        _ => return None,
    })
}

fn has<K: Kind>(store: &Store<DeserializeGuard<K>>, ns: &str, name: &str) -> bool {
    store
        .state()
        .iter()
        .any(|o| o.namespace().as_deref() == Some(ns) && o.name_any() == name)
}

fn exists(ctx: &Context, kind: &str, ns: &str, name: &str) -> bool {
    let s = &ctx.stores;
    match kind {
        "Server" => has(&s.servers, ns, name),
        "VirtualMachine" => has(&s.virtual_machines, ns, name),
        "Database" => has(&s.databases, ns, name),
        "Application" => has(&s.applications, ns, name),
        "MaintenanceWindow" => has(&s.maintenance_windows, ns, name),
        "RecoveryPlan" => has(&s.recovery_plans, ns, name),
        _ => true,
    }
}
