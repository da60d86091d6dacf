//! What a standby could rebuild from, measured where it stands: for each
//! Database of the plan bundle, the newest finished backup and the newest
//! archived WAL in its off-site stores, read with this site's credentials
//! (its replicated RPO); for each VirtualMachine, whether a VM provider is
//! here; for each Server, whether this site's own stands for it. The
//! active site's word is not taken for it.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use kube::ResourceExt;

use super::{
    bundle::Payload,
    failover::exists,
    mapping::{replacement, with_overrides},
};
use crate::{
    api::{Database, Site, site::Replica},
    providers::backup_store::{S3Credentials, Store},
    runtime::{Context, Error, secrets},
};

/// How often a standby measures, at most (else every lease duration).
pub const EVERY: Duration = Duration::from_secs(60);

/// Each component of the bundle this site could rebuild, and from what.
pub async fn measure(ctx: &Context, site: &Site, payload: &Payload) -> Result<Vec<Replica>, Error> {
    let ns = site.namespace().unwrap_or_default();
    let mut out = vec![];
    for o in &payload.objects {
        let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match o["kind"].as_str() {
            Some("Database") => out.push(database(ctx, site, o, &name).await?),
            Some("Server") => {
                let here = replacement(site, "Server", &name).unwrap_or(&name);
                out.push(server(site, &name, exists(ctx, "Server", &ns, here)));
            }
            Some("VirtualMachine") => out.push(Replica {
                component: format!("VirtualMachine/{name}"),
                store: None,
                newest_backup: None,
                newest_wal: None,
                can_rebuild: ctx.settings.kubevirt_installed,
                message: if ctx.settings.kubevirt_installed {
                    String::new()
                } else {
                    "no VM provider (KubeVirt) in this cluster".into()
                },
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// A bundle Server: rebuilt here by this site's own Server standing for it
/// (`held`: whether this cluster holds that one), else created as the
/// bundle has it.
fn server(site: &Site, name: &str, held: bool) -> Replica {
    let (can_rebuild, message) = match replacement(site, "Server", name) {
        Some(r) if held => (true, format!("this site's Server {r} stands for it")),
        Some(r) => (false, format!("its replacement, Server {r}, is not in this cluster")),
        None if held => (true, "this cluster holds it already".to_string()),
        None => (
            true,
            "created as the bundle has it (no replacement in spec.overrides): its BMC must answer from here"
                .to_string(),
        ),
    };
    Replica {
        component: format!("Server/{name}"),
        store: None,
        newest_backup: None,
        newest_wal: None,
        can_rebuild,
        message,
    }
}

async fn database(ctx: &Context, site: &Site, o: &serde_json::Value, name: &str) -> Result<Replica, Error> {
    let ns = site.namespace().unwrap_or_default();
    let mut r = Replica {
        component: format!("Database/{name}"),
        store: None,
        newest_backup: None,
        newest_wal: None,
        can_rebuild: false,
        message: String::new(),
    };
    let db: Database = match serde_json::from_value(with_overrides(site, o)) {
        Ok(d) => d,
        Err(e) => {
            r.message = format!("its spec in the bundle does not read as a Database: {e}");
            return Ok(r);
        }
    };
    let Some(backup) = db.spec.backup.as_ref() else {
        r.message = "no backups: nothing off site to rebuild its data from".into();
        return Ok(r);
    };
    let mut notes = vec![];
    let mut best: Option<(Timestamp, String, Option<Timestamp>, Option<Timestamp>)> = None;
    for (i, spec) in backup.all_stores().iter().enumerate().filter(|(_, s)| s.offsite) {
        let Some(s3) = &spec.s3 else { continue };
        let who = secrets::Requester { kind: "Database", name };
        let data = match secrets::read(ctx, &ns, &s3.credentials_secret_ref.name, who).await? {
            Ok(d) => d,
            Err(why) => {
                notes.push(format!("store {}: {why}", spec.name));
                continue;
            }
        };
        let creds = match S3Credentials::from_data(&data) {
            Ok(c) => c,
            Err(k) => {
                notes.push(format!("store {}: its Secret has no key {k:?}", spec.name));
                continue;
            }
        };
        let store = match Store::open(spec, &backup.field(i), Some(creds), None, &ns, name) {
            Ok(s) => s,
            Err(why) => {
                notes.push(format!("store {}: {why}", spec.name));
                continue;
            }
        };
        let backup_at = match store.catalog().await {
            Ok(c) => c.and_then(|c| c.backups.first().map(|b| b.finished)),
            Err(why) => {
                notes.push(format!("store {}: {why}", spec.name));
                continue;
            }
        };
        let wal_at = store.newest_wal().await.unwrap_or_else(|why| {
            notes.push(format!("store {}: WAL: {why}", spec.name));
            None
        });
        let Some(point) = backup_at.max(wal_at) else {
            notes.push(format!("store {}: no backup yet", spec.name));
            continue;
        };
        if best.as_ref().is_none_or(|b| point > b.0) {
            best = Some((point, spec.name.clone(), backup_at, wal_at));
        }
    }
    if let Some((_, store, backup_at, wal_at)) = best {
        r.store = Some(store);
        r.newest_backup = backup_at.map(MicroTime);
        r.newest_wal = wal_at.map(MicroTime);
        r.can_rebuild = backup_at.is_some();
    } else if notes.is_empty() {
        notes.push("no off-site store (offsite: true): its local copies are lost with the site".into());
    }
    r.message = notes.join("; ");
    Ok(r)
}

/// Seconds from the newest point each replica reaches to `now` (the metric).
pub fn ages(replicas: &[Replica], now: Timestamp) -> Vec<(String, f64)> {
    replicas
        .iter()
        .filter_map(|r| {
            let newest = [r.newest_backup.as_ref(), r.newest_wal.as_ref()]
                .into_iter()
                .flatten()
                .map(|t| t.0)
                .max()?;
            Some((
                r.component.clone(),
                (now.as_millisecond() - newest.as_millisecond()).max(0) as f64 / 1000.0,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_rebuilt_by_its_stand_in_only_when_this_cluster_holds_it() {
        let site: Site = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Site",
            "metadata": {"name": "lyon", "namespace": "shop"},
            "spec": {"overrides": [{"kind": "Server", "name": "hv-01", "replacedBy": "hv-11"}]},
        }))
        .unwrap();
        let r = server(&site, "hv-01", true);
        assert!(r.can_rebuild && r.message.contains("hv-11 stands for it"), "{r:?}");
        let r = server(&site, "hv-01", false);
        assert!(
            !r.can_rebuild && r.message.contains("Server hv-11, is not in this cluster"),
            "{r:?}"
        );
        let r = server(&site, "hv-02", false);
        assert!(
            r.can_rebuild && r.message.contains("its BMC must answer from here"),
            "{r:?}"
        );
        assert!(ages(&[r], Timestamp::now()).is_empty(), "a Server has no data age");
    }

    #[test]
    fn a_replica_is_as_old_as_its_newest_backup_or_wal() {
        let t = |s: i64| MicroTime(Timestamp::from_second(1_800_000_000 + s).unwrap());
        let r = |backup: Option<i64>, wal: Option<i64>| Replica {
            component: "Database/shop-db".into(),
            store: Some("vault".into()),
            newest_backup: backup.map(t),
            newest_wal: wal.map(t),
            can_rebuild: backup.is_some(),
            message: String::new(),
        };
        let now = t(100).0;
        assert_eq!(
            ages(&[r(Some(10), Some(97))], now),
            [("Database/shop-db".to_string(), 3.0)]
        );
        assert_eq!(ages(&[r(Some(40), None)], now)[0].1, 60.0);
        assert!(ages(&[r(None, None)], now).is_empty(), "nothing to measure from");
    }
}
