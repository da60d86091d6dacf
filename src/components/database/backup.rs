//! Backups of a Database: when one is due, taking it (one dump per database,
//! then the manifest), and retention.

use k8s_openapi::jiff::Timestamp;

use crate::{
    api::{
        Database,
        database::{BackupFileRecord, BackupRecord},
    },
    providers::{
        backup_store::{BaseRecord, DumpRecord, Manifest, Store, Upload, expired, wal_folder},
        database::DatabaseEngine,
    },
};

/// When the next scheduled backup is due, counting from the last attempt (or
/// from the object's creation). None without a schedule or a valid one.
pub fn next_due(db: &Database, last_attempt: Option<Timestamp>) -> Option<Timestamp> {
    let schedule = &db.spec.backup.as_ref()?.schedule;
    crate::runtime::schedule::next_due(schedule, last_attempt, db.metadata.creation_timestamp.as_ref())
}

/// A backup id: sortable, readable, unique per millisecond.
pub fn new_id(now: Timestamp) -> String {
    now.strftime("%Y%m%dT%H%M%S%.3fZ").to_string().replace('.', "")
}

/// A backup taken: what each store made of it.
pub struct Taken {
    pub id: String,
    /// The manifest of each store that holds the whole backup.
    pub landed: Vec<Manifest>,
    /// The stores that do not, with why.
    pub failed: Vec<(String, String)>,
}

/// Takes a backup of every database of the spec into every store at once. A
/// store that fails drops out (its part of the backup removed); the backup
/// fails only when no store holds it whole.
pub async fn take(engine: &impl DatabaseEngine, stores: &[&Store], db: &Database) -> Result<Taken, String> {
    let started = Timestamp::now();
    let id = new_id(started);
    let mut failed: Vec<(String, String)> = vec![];
    let mut live: Vec<&Store> = vec![];
    // What a failed or interrupted backup left (only one backup of a Database runs at a time).
    for store in stores {
        match clean(store, &id).await {
            Ok(()) => live.push(store),
            Err(e) => failed.push((store.name.clone(), e)),
        }
    }
    let mut records: std::collections::BTreeMap<String, Vec<DumpRecord>> = Default::default();
    for d in &db.spec.databases {
        let failing = |s: &&Store| failed.iter().any(|(n, _)| *n == s.name);
        let targets: Vec<&Store> = live.iter().copied().filter(|s| !failing(s)).collect();
        let verify: Vec<(String, String)> = db
            .spec
            .verify
            .iter()
            .flat_map(|v| v.tables.iter())
            .filter(|t| t.database == d.name)
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        let mut up = Upload::open(&targets, &id, &format!("{}.dump", d.name), Some(started)).await;
        let rec = match engine.dump(&mut up, &d.name, &verify).await {
            Ok(rec) => rec,
            Err(e) => {
                up.abort().await;
                // Leave nothing half-written behind.
                for s in &live {
                    let _ = s.delete(&id).await;
                }
                return Err(format!("database {}: {e}", d.name));
            }
        };
        for landed in up.finish().await {
            match landed.result {
                Ok(stored) => records
                    .entry(landed.store)
                    .or_default()
                    .push(DumpRecord { stored, ..rec.clone() }),
                Err(why) => failed.push((landed.store, format!("database {}: {why}", d.name))),
            }
        }
    }
    let mut bases = match db.spec.backup.as_ref().and_then(|b| b.wal.as_ref()) {
        Some(_) => base_backup(engine, &live, &id, started, &mut failed).await?,
        None => Default::default(),
    };
    let finished = Timestamp::now();
    let mut landed = vec![];
    for store in live {
        if failed.iter().any(|(n, _)| *n == store.name) {
            let _ = store.delete(&id).await;
            continue;
        }
        let databases = records.remove(&store.name).unwrap_or_default();
        let manifest = Manifest {
            id: id.clone(),
            started,
            finished,
            server_version: engine.version().to_string(),
            databases,
            locked: store.lock_for(started),
            base: bases.remove(&store.name),
            source: 0,
        };
        match store.finish(&manifest).await {
            Ok(()) => landed.push(manifest),
            Err(e) => {
                let _ = store.delete(&id).await;
                failed.push((store.name.clone(), format!("writing the manifest: {e}")));
            }
        }
    }
    if landed.is_empty() {
        let why: Vec<String> = failed.iter().map(|(n, w)| format!("store {n}: {w}")).collect();
        return Err(why.join("; "));
    }
    Ok(Taken { id, landed, failed })
}

/// A base backup of the instance into every store still in: each store's record.
async fn base_backup(
    engine: &impl DatabaseEngine,
    live: &[&Store],
    id: &str,
    started: Timestamp,
    failed: &mut Vec<(String, String)>,
) -> Result<std::collections::BTreeMap<String, BaseRecord>, String> {
    let targets: Vec<&Store> = live
        .iter()
        .copied()
        .filter(|s| !failed.iter().any(|(n, _)| *n == s.name))
        .collect();
    let mut up = Upload::open(&targets, id, "base.tar", Some(started)).await;
    let base = match engine.base_backup(&mut up).await {
        Ok(b) => b,
        Err(e) => {
            up.abort().await;
            for s in live {
                let _ = s.delete(id).await;
            }
            return Err(format!("base backup: {e}"));
        }
    };
    let mut out = std::collections::BTreeMap::new();
    for landed in up.finish().await {
        match landed.result {
            Ok(stored) => {
                out.insert(landed.store, BaseRecord { stored, ..base.clone() });
            }
            Err(why) => failed.push((landed.store, format!("base backup: {why}"))),
        }
    }
    Ok(out)
}

/// Removes what failed or interrupted backups left in `store`.
async fn clean(store: &Store, except: &str) -> Result<(), String> {
    for old in store.unfinished(except).await.map_err(|e| e.to_string())? {
        store.delete(&old).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Copies backup `m` (read from `from`, decrypted there, checked against its
/// manifest as it streams) into `to`, encrypted and locked as `to` says.
pub async fn copy(from: &Store, m: &Manifest, to: &Store) -> Result<Manifest, String> {
    clean(to, &m.id).await?;
    let mut databases = vec![];
    for rec in &m.databases {
        let copied = copy_one(from, m, rec, to).await;
        match copied {
            Ok(r) => databases.push(r),
            Err(e) => {
                let _ = to.delete(&m.id).await;
                return Err(format!("database {}: {e}", rec.name));
            }
        }
    }
    let base = match &m.base {
        Some(b) => match copy_one(from, m, &b.as_dump(), to).await {
            Ok(r) => Some(BaseRecord {
                stored: r.stored,
                ..b.clone()
            }),
            Err(e) => {
                let _ = to.delete(&m.id).await;
                return Err(format!("base backup: {e}"));
            }
        },
        None => None,
    };
    let manifest = Manifest {
        databases,
        base,
        locked: to.lock_for(m.started),
        ..m.clone()
    };
    if let Err(e) = to.finish(&manifest).await {
        let _ = to.delete(&m.id).await;
        return Err(format!("writing the manifest: {e}"));
    }
    Ok(manifest)
}

async fn copy_one(from: &Store, m: &Manifest, rec: &DumpRecord, to: &Store) -> Result<DumpRecord, String> {
    use tokio::io::AsyncReadExt;
    let mut input = from.open_dump(&m.id, rec).await.map_err(|e| e.to_string())?;
    let mut up = Upload::open(&[to], &m.id, &rec.file, Some(m.started)).await;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                up.abort().await;
                return Err(format!("reading it from store {}: {e}", from.name));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = up.write(&buf[..n]).await {
            up.abort().await;
            return Err(e.to_string());
        }
    }
    if up.plain() != (rec.bytes, rec.sha256.clone()) {
        up.abort().await;
        return Err(format!(
            "the copy read from store {} does not match the manifest's sha256",
            from.name
        ));
    }
    let landed = up.finish().await.pop().ok_or("no store")?;
    let stored = landed.result?;
    Ok(DumpRecord { stored, ..rec.clone() })
}

/// What retention did in one store.
#[derive(Default)]
pub struct Pruned {
    /// Backups deleted.
    pub gone: Vec<String>,
    /// Backups due for deletion that the store keeps locked, with until when.
    pub waiting: Vec<(String, Timestamp)>,
}

/// Applies retention to `manifests` (one store's, newest first).
pub async fn prune(store: &Store, db: &Database, manifests: &[Manifest]) -> Result<Pruned, String> {
    let Some(spec) = &db.spec.backup else {
        return Ok(Pruned::default());
    };
    let (now, waiting) = expired(
        manifests,
        spec.retention.count as usize,
        spec.retention.max_age.as_ref().map(|a| a.as_std()),
        Timestamp::now(),
    );
    let mut gone = vec![];
    for id in now {
        if store.delete(&id).await.map_err(|e| e.to_string())? {
            gone.push(id);
        }
    }
    if spec.wal.is_some() {
        prune_wal(store, manifests, &gone).await?;
    }
    Ok(Pruned { gone, waiting })
}

/// The archived WAL no kept base backup needs: before the oldest kept base
/// backup's start. A file the store keeps locked stays until a later pass.
pub fn wal_unneeded(names: &[String], oldest_start: &str) -> Vec<String> {
    names
        .iter()
        .filter(|n| n.get(..24).is_some_and(|seg| seg < oldest_start))
        .cloned()
        .collect()
}

/// Per instance whose WAL the kept base backups need: what is older than
/// the oldest of them. (The WAL of an instance no kept backup starts from
/// is left: a failover's old site, for a person to remove.)
async fn prune_wal(store: &Store, manifests: &[Manifest], gone: &[String]) -> Result<(), String> {
    let mut oldest: std::collections::BTreeMap<String, String> = Default::default();
    for b in manifests
        .iter()
        .filter(|m| !gone.contains(&m.id))
        .filter_map(|m| m.base.as_ref())
    {
        let e = oldest
            .entry(wal_folder(b.system.as_deref()))
            .or_insert_with(|| b.start_segment.clone());
        if b.start_segment < *e {
            *e = b.start_segment.clone();
        }
    }
    for (folder, start) in oldest {
        for name in wal_unneeded(&store.wal_names(&folder).await?, &start) {
            store.delete_wal(&folder, &name).await;
        }
    }
    Ok(())
}

/// A manifest as status records it: sizes and SHA-256 of the objects as
/// the store holds them.
pub fn record(m: &Manifest) -> BackupRecord {
    let took = m.finished.duration_since(m.started);
    BackupRecord {
        id: m.id.clone(),
        time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(m.started),
        duration: format!("{:.3}s", took.as_secs_f64()),
        bytes: m.bytes(),
        files: m
            .databases
            .iter()
            .map(|d| BackupFileRecord {
                database: d.name.clone(),
                bytes: d.stored.as_ref().map_or(d.bytes, |s| s.bytes),
                sha256: d.stored.as_ref().map_or_else(|| d.sha256.clone(), |s| s.sha256.clone()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_counts_from_the_last_attempt() {
        let db: Database = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Database",
            "metadata": {"name": "d", "creationTimestamp": "2026-11-29T10:17:00Z"},
            "spec": {
                "instance": {"external": {"host": "db", "adminSecretRef": {"name": "a"}}},
                "backup": {"schedule": "0 */6 * * *", "store": {"local": {"path": "/b"}}}
            }
        }))
        .unwrap();
        assert_eq!(next_due(&db, None).unwrap().to_string(), "2026-11-29T12:00:00Z");
        let last: Timestamp = "2026-11-29T12:00:03Z".parse().unwrap();
        assert_eq!(next_due(&db, Some(last)).unwrap().to_string(), "2026-11-29T18:00:00Z");
        assert_eq!(
            new_id("2026-11-29T12:00:03.25Z".parse().unwrap()),
            "20261129T120003250Z"
        );
        let names: Vec<String> = [
            "000000010000000000000002",
            "000000010000000000000003.partial",
            "000000010000000000000004",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            wal_unneeded(&names, "000000010000000000000004"),
            ["000000010000000000000002", "000000010000000000000003.partial"],
            "what precedes the oldest kept base backup"
        );
    }
}
