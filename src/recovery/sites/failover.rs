//! The bundle's effects: the active site publishes it when its objects
//! change; a standby reads and checks it; a site that takes over creates,
//! wave by wave, the objects its cluster lacks, each wave once the one
//! before reports healthy.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::reflector::Store,
};

use super::{
    bundle::{self, MAX_BUNDLE_BYTES, Payload},
    mapping::{replacement, with_overrides},
};
use crate::{
    api::{
        Application, Database, MaintenanceWindow, RecoveryPlan, Server, VirtualMachine,
        common::{ComponentKind, ComponentRef, SecretKeyRef},
        contract::{ACTION_ANNOTATION, ActionVerb, Request},
        database::RESTORE_TO_ANNOTATION,
        site::{BundleStatus, FailoverRecord, Site, Wave},
    },
    providers::witness::{BundleRead, Lease, S3Witness},
    runtime::{Context, Error, kind::Kind, secrets, stores as registry},
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
    Ok(Some(
        secret_key(ctx, site, &b.key_secret_ref, "spec.bundle.keySecretRef").await?,
    ))
}

/// The value of key `r` of a Secret the local Site names at `field`, when
/// the Secret offers itself to the Site and the value is not empty (Err:
/// why not, naming the field).
async fn secret_key(
    ctx: &Context,
    site: &Site,
    r: &SecretKeyRef,
    field: &str,
) -> Result<Result<Vec<u8>, String>, Error> {
    let ns = site.namespace().unwrap_or_default();
    let who = secrets::Requester {
        kind: "Site",
        name: site.metadata.name.as_deref().unwrap_or_default(),
    };
    Ok(match secrets::read(ctx, &ns, &r.name, who).await? {
        Ok(data) => data
            .get(&r.key)
            .filter(|k| !k.is_empty())
            .cloned()
            .ok_or_else(|| format!("{field}: Secret {:?} has no key {:?}", r.name, r.key)),
        Err(why) => Err(format!("{field}: {why}")),
    })
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

/// The order a failover brings the bundle's kinds up in: the plan first (so
/// the site Incident has its level and window at once), then servers, what
/// runs on them, the data, what serves.
pub const ORDER: [&str; 6] = [
    "RecoveryPlan",
    "MaintenanceWindow",
    "Server",
    "VirtualMachine",
    "Database",
    "Application",
];

/// After taking the lease from `from`: the failover's record, and its first
/// waves started (see [`advance`]).
pub async fn rebuild(
    ctx: &Context,
    w: &S3Witness,
    key: &[u8],
    site: &Site,
    epoch: u64,
    from: Option<&Lease>,
) -> FailoverRecord {
    let ns = site.namespace().unwrap_or_default();
    let mut rec = FailoverRecord {
        at: Time(Timestamp::now()),
        epoch,
        bundle: None,
        created: vec![],
        present: vec![],
        overridden: vec![],
        replaced: vec![],
        message: String::new(),
        from: from.map(|l| l.site.clone()),
        last_heartbeat: from.map(|l| MicroTime(l.renewed)),
        waves: vec![],
        completed: None,
    };
    // Fresh from the witness: the last one published by the old holder.
    let payload = match w.get_bundle(None, MAX_BUNDLE_BYTES).await {
        Ok(BundleRead::New { bytes, etag }) => match bundle::open(key, &bytes) {
            Ok(p) => {
                remember(&ns, |k| {
                    k.etag = Some(etag);
                    k.payload = Some(p.clone());
                    k.key = Some(key_id(key));
                });
                p
            }
            Err(why) => return nothing_to_rebuild(rec, why),
        },
        Ok(_) => match known(&ns).payload {
            Some(p) => p,
            None => return nothing_to_rebuild(rec, "no plan bundle in the witness: nothing to rebuild from".into()),
        },
        Err(e) => match known(&ns).payload {
            // The last one read and checked, while the witness answered.
            Some(p) => {
                rec.message = format!("the bundle could not be read ({e}); the last one checked was used");
                p
            }
            None => return nothing_to_rebuild(rec, format!("the bundle could not be read: {e}")),
        },
    };
    rec.bundle = Some(bundle::fingerprint(&payload.objects)[..12].to_string());
    rec.message = joined(&rec.message, &unknown_overrides(site, &payload));
    advance_with(ctx, site, &mut rec, &payload).await;
    rec
}

fn joined(a: &str, b: &str) -> String {
    [a, b]
        .into_iter()
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn nothing_to_rebuild(mut rec: FailoverRecord, why: String) -> FailoverRecord {
    rec.message = why;
    rec.completed = Some(MicroTime(Timestamp::now()));
    rec
}

/// Overrides naming no object of the bundle, in words (empty: none).
fn unknown_overrides(site: &Site, payload: &Payload) -> String {
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
    if unknown.is_empty() {
        return String::new();
    }
    format!(
        "spec.overrides name objects the bundle does not hold: {}",
        unknown.join(", ")
    )
}

/// The plans of the last bundle checked that name `site`, created here
/// when this cluster lacks them (a standby that needs a person's approval
/// opens its site Incident under one). Returns what it created, or why not.
pub async fn plans_from_bundle(ctx: &Context, site: &Site) -> Result<Vec<String>, String> {
    let ns = site.namespace().unwrap_or_default();
    let me = site.name_any();
    let payload = known(&ns)
        .payload
        .ok_or("no plan bundle was read and checked since reprise started")?;
    let mut created = vec![];
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ns, &ApiResource::erase::<RecoveryPlan>(&()));
    for o in payload.objects.iter().filter(|o| {
        o["kind"] == "RecoveryPlan"
            && o["spec"]["sites"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == me.as_str()))
    }) {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let mut body = with_overrides(site, o);
        body["metadata"]["namespace"] = ns.as_str().into();
        api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&body))
            .await
            .map_err(|e| format!("RecoveryPlan {name}: {e}"))?;
        ctx.metrics.wrote("RecoveryPlan", "failover");
        created.push(name.to_string());
    }
    if created.is_empty() {
        return Err(format!("the plan bundle holds no RecoveryPlan naming site {me}"));
    }
    Ok(created)
}

/// A failover under way, one round on: the payload it started from (kept,
/// or read again after a restart: nothing newer is published before it
/// completes), then [`advance_with`].
pub async fn advance(ctx: &Context, w: &S3Witness, key: &[u8], site: &Site, rec: &mut FailoverRecord) {
    let ns = site.namespace().unwrap_or_default();
    let wanted = rec.bundle.clone().unwrap_or_default();
    let same = |p: &Payload| bundle::fingerprint(&p.objects).starts_with(&wanted);
    let mut payload = known(&ns).payload.filter(same);
    if payload.is_none() {
        read(w, key, &ns, None).await;
        payload = known(&ns).payload.filter(same);
    }
    match payload {
        Some(p) => advance_with(ctx, site, rec, &p).await,
        None => {
            if let Some(w) = rec.waves.last_mut().filter(|w| w.finished.is_none()) {
                w.message = format!("bundle {wanted} could not be read again: waiting for the witness");
            }
        }
    }
}

/// Ends the wave whose objects all report healthy and starts the next, as
/// long as waves end at once (a plan has no health to wait for).
async fn advance_with(ctx: &Context, site: &Site, rec: &mut FailoverRecord, payload: &Payload) {
    let ns = site.namespace().unwrap_or_default();
    loop {
        let now = MicroTime(Timestamp::now());
        let heartbeat = rec.last_heartbeat.as_ref().map(|t| t.0);
        if rec
            .waves
            .last()
            .is_some_and(|w| w.kind == TRAFFIC && w.finished.is_none())
        {
            return traffic(ctx, site, rec).await;
        }
        if let Some(wave) = rec.waves.last_mut().filter(|w| w.finished.is_none()) {
            let (waiting, said) = wave_state(ctx, &ns, wave, heartbeat, rec.epoch).await;
            if !waiting.is_empty() {
                wave.message = format!("waiting for {}", waiting.join("; "));
                return;
            }
            wave.finished = Some(now.clone());
            wave.message = said;
        }
        let next = rec
            .waves
            .last()
            .and_then(|w| ORDER.iter().position(|k| *k == w.kind))
            .map_or(0, |i| i + 1);
        let Some(kind) = ORDER
            .iter()
            .skip(next)
            .find(|k| payload.objects.iter().any(|o| o["kind"] == **k))
        else {
            if let Some(hook) = site
                .spec
                .traffic
                .as_ref()
                .filter(|_| !rec.waves.iter().any(|w| w.kind == TRAFFIC))
            {
                // Recorded before it is sent (the next round sends it): a
                // restart sends it again, with the same deliveryId.
                rec.waves.push(Wave {
                    kind: TRAFFIC.into(),
                    started: now,
                    finished: None,
                    objects: vec![webhook_host(&hook.url)],
                    message: "switching the traffic".into(),
                });
                return;
            }
            rec.completed = Some(now);
            return;
        };
        let wave = start_wave(ctx, site, rec, payload, kind).await;
        rec.waves.push(wave);
    }
}

/// The last wave of a takeover: the site's traffic webhook.
pub const TRAFFIC: &str = "Traffic";

/// A webhook's host, for status (never its path or query: they may carry secrets).
fn webhook_host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
        })
        .unwrap_or_else(|| "an invalid URL".into())
}

/// Sends the traffic step (at least once: the `deliveryId` tells a repeat);
/// the failover completes when the receiver said yes, else it says why and
/// sends again next round.
async fn traffic(ctx: &Context, site: &Site, rec: &mut FailoverRecord) {
    let Some(hook) = site.spec.traffic.as_ref() else {
        rec.completed = Some(MicroTime(Timestamp::now()));
        return;
    };
    let ns = site.namespace().unwrap_or_default();
    let token = match &hook.token_secret_ref {
        None => Ok(None),
        Some(r) => match secret_key(ctx, site, r, "spec.traffic.tokenSecretRef").await {
            Ok(Ok(v)) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| "spec.traffic.tokenSecretRef: the token is not UTF-8".to_string()),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(e.to_string()),
        },
    };
    let body = serde_json::json!({
        "deliveryId": format!("{}-e{}-traffic", site.uid().unwrap_or_default().chars().take(8).collect::<String>(), rec.epoch),
        "site": site.name_any(),
        "namespace": ns,
        "epoch": rec.epoch,
        "from": rec.from,
        "bundle": rec.bundle,
        "waves": rec.waves.iter().filter(|w| w.kind != TRAFFIC).map(|w| &w.kind).collect::<Vec<_>>(),
    });
    let said = match token {
        Err(why) => Err(why),
        Ok(token) => {
            let d = crate::providers::webhook::post(&ctx.webhook, &hook.url, token.as_deref(), &body, 1).await;
            if d.ok {
                crate::crash::point("failover:traffic-sent");
                Ok(d.message)
            } else {
                Err(d.message)
            }
        }
    };
    let wave = rec.waves.last_mut().expect("the traffic wave is the last");
    match said {
        Ok(answer) => {
            let now = MicroTime(Timestamp::now());
            wave.message = format!("{answer} from {}", webhook_host(&hook.url));
            wave.finished = Some(now.clone());
            rec.completed = Some(now);
            ctx.metrics.wrote("Traffic", "webhook");
        }
        Err(why) => wave.message = format!("not switched yet ({why}): sent again in a moment"),
    }
}

/// Creates the objects of one kind the cluster lacks (what it holds is left
/// as it is: GitOps may own it). One the API server refuses (an override
/// gone wrong) is named; the others are still created.
async fn start_wave(ctx: &Context, site: &Site, rec: &mut FailoverRecord, payload: &Payload, kind: &str) -> Wave {
    let ns = site.namespace().unwrap_or_default();
    let ns = ns.as_str();
    let mut wave = Wave {
        kind: kind.into(),
        started: MicroTime(Timestamp::now()),
        finished: None,
        objects: vec![],
        message: String::new(),
    };
    let mut failed = vec![];
    for o in payload.objects.iter().filter(|o| o["kind"] == kind) {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let id = format!("{kind}/{name}");
        let Some(resource) = resource(kind) else { continue };
        let here = replacement(site, kind, name).unwrap_or(name);
        let held = exists(ctx, kind, ns, here);
        if here != name {
            if !held {
                failed.push(format!("{id}: its replacement {kind} {here} is not in this namespace"));
                continue;
            }
            rec.replaced.push(format!("{id} → {here}"));
        }
        wave.objects.push(here.to_string());
        if held {
            if kind == "Database" && archives_wal(ctx, ns, here) {
                // Held here already (a failback, GitOps, this site's own):
                // its instance has stood by, so its data comes back from
                // the stores too.
                if let Err(e) = restore_latest(ctx, ns, here, rec.epoch).await {
                    failed.push(format!("{kind}/{here}: asking its restore: {e}"));
                }
            }
            if here == name {
                rec.present.push(id);
            }
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
        let body = body_for(site, rec, o, ns, kind, name);
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
        rec.message = joined(&rec.message, &format!("not created: {}", failed.join("; ")));
    }
    if kind == "Database" {
        crate::crash::point("failover:databases-asked");
    }
    wave
}

/// What is applied for a bundle object: this site's overrides merged into
/// its spec; a database with archived WAL asked to come back to the newest
/// point the WAL holds.
fn body_for(
    site: &Site,
    rec: &mut FailoverRecord,
    o: &serde_json::Value,
    ns: &str,
    kind: &str,
    name: &str,
) -> serde_json::Value {
    let id = format!("{kind}/{name}");
    let mut body = with_overrides(site, o);
    body["metadata"]["namespace"] = ns.into();
    if site.spec.overrides.iter().any(|x| x.kind == kind && x.name == name) && !rec.overridden.contains(&id) {
        rec.overridden.push(id.clone());
    }
    if kind == "Database" && body["spec"]["backup"]["wal"].is_object() {
        body["metadata"]["annotations"] = restore_annotations(rec.epoch);
    }
    body
}

/// The payload last read and checked (or rebuilt from) in `ns`.
pub fn known_payload(ns: &str) -> Option<Payload> {
    known(ns).payload
}

/// The request id of a takeover's restores.
fn restore_id(epoch: u64) -> String {
    format!("failover-e{epoch}")
}

/// A Database's restore to the newest point its stores hold, asked through
/// its action annotation (once per takeover: the id names the epoch).
fn restore_annotations(epoch: u64) -> serde_json::Value {
    serde_json::json!({
        ACTION_ANNOTATION: Request::format(ActionVerb::Restore, &restore_id(epoch)),
        RESTORE_TO_ANNOTATION: "latest",
    })
}

async fn restore_latest(ctx: &Context, ns: &str, name: &str, epoch: u64) -> Result<(), kube::Error> {
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({"metadata": {"annotations": restore_annotations(epoch)}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    ctx.metrics.wrote("Database", "action");
    Ok(())
}

/// A wave's objects not healthy yet (`Kind name: state, message`), and, when
/// none is, what the wave ended with (each database's recovery point).
async fn wave_state(
    ctx: &Context,
    ns: &str,
    wave: &Wave,
    heartbeat: Option<Timestamp>,
    epoch: u64,
) -> (Vec<String>, String) {
    let Some(kind) = ComponentKind::ALL.into_iter().find(|k| k.as_str() == wave.kind) else {
        return (vec![], String::new());
    };
    let mut waiting = vec![];
    let mut said = vec![];
    for name in &wave.objects {
        let r = ComponentRef {
            kind,
            name: name.clone(),
        };
        let Some(c) = registry::component(&ctx.stores, ns, &r) else {
            if gone(ctx, ns, kind.as_str(), name).await {
                // Deleted since it was created: a person's choice, not waited for.
                said.push(format!("{kind} {name} was deleted"));
            } else {
                waiting.push(format!("{kind} {name}: not seen yet"));
            }
            continue;
        };
        // Asked to restore (every Database archiving WAL): not before it answered.
        let restoring = kind == ComponentKind::Database
            && archives_wal(ctx, ns, name)
            && c.last_action().is_none_or(|a| a.id != restore_id(epoch));
        match c.health() {
            _ if restoring => waiting.push(format!("{kind} {name}: restoring to the newest point")),
            Some(h) if h.healthy => {}
            Some(h) => waiting.push(format!("{kind} {name}: {}, {}", h.state, h.message)),
            None => waiting.push(format!("{kind} {name}: no health reported yet")),
        }
    }
    if kind == ComponentKind::Database && waiting.is_empty() {
        for name in &wave.objects {
            if let Some(db) = registry::get(&ctx.stores.databases, ns, name) {
                said.push(recovery_point(&db, heartbeat));
            }
        }
    }
    (waiting, said.join("; "))
}

/// Whether this cluster's Database `name` archives WAL (a takeover asks it
/// to restore to the newest point).
fn archives_wal(ctx: &Context, ns: &str, name: &str) -> bool {
    registry::get(&ctx.stores.databases, ns, name)
        .is_some_and(|d| d.spec.backup.as_ref().is_some_and(|b| b.wal.is_some()))
}

/// Whether the API server says the object is gone (not merely not yet in
/// the cache, as just after its creation).
async fn gone(ctx: &Context, ns: &str, kind: &str, name: &str) -> bool {
    let Some(resource) = resource(kind) else { return true };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
    matches!(api.get_opt(name).await, Ok(None))
}

/// A rebuilt database's recovery point and the data lost since the lost
/// site's last heartbeat (its RPO, as well as it can be known).
fn recovery_point(db: &Database, heartbeat: Option<Timestamp>) -> String {
    let name = db.name_any();
    let Some(r) = db.status.as_ref().and_then(|s| s.last_restore.as_ref()) else {
        return format!("Database {name}: healthy, nothing restored");
    };
    let point = r.point();
    let lost = match (point, heartbeat) {
        (Some(p), Some(h)) => format!(
            ": at most {} lost before the lost site's last heartbeat",
            crate::recovery::incident::secs(p, h)
        ),
        _ => String::new(),
    };
    let what = if r.recovered_to.is_some() {
        "its last archived transaction"
    } else {
        "its newest backup"
    };
    let passed = if r.skipped_backups.is_empty() {
        String::new()
    } else {
        format!(" (newer backups passed over: {})", r.skipped_backups.join("; "))
    };
    format!(
        "Database {name}: restored ({:?}) to {what}, {}{lost}{passed}",
        r.outcome,
        point.map_or("at an unknown time".into(), |p| p.to_string())
    )
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

/// Whether this cluster holds the object (as the caches see it).
pub fn exists(ctx: &Context, kind: &str, ns: &str, name: &str) -> bool {
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
