//! Backups of a Database: when one is due, taking it (one dump per database,
//! then the manifest), and retention.

use k8s_openapi::jiff::Timestamp;

use crate::{
    api::{
        Database,
        database::{BackupFileRecord, BackupRecord},
    },
    providers::{
        backup_store::{Manifest, Store, expired},
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

/// Takes a backup of every database of the spec into `store`.
pub async fn take(engine: &impl DatabaseEngine, store: &Store, db: &Database) -> Result<Manifest, String> {
    let started = Timestamp::now();
    let id = new_id(started);
    // What a failed or interrupted backup left (only one backup of a Database runs at a time).
    for old in store.unfinished(&id).await.map_err(|e| e.to_string())? {
        store.delete(&old).await.map_err(|e| e.to_string())?;
    }
    let mut files = vec![];
    for d in &db.spec.databases {
        let verify: Vec<(String, String)> = db
            .spec
            .verify
            .iter()
            .flat_map(|v| v.tables.iter())
            .filter(|t| t.database == d.name)
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        match engine.dump(store, &id, &d.name, &verify).await {
            Ok(f) => files.push(f),
            Err(e) => {
                // Leave nothing half-written behind.
                let _ = store.delete(&id).await;
                return Err(format!("database {}: {e}", d.name));
            }
        }
    }
    let manifest = Manifest {
        id,
        started,
        finished: Timestamp::now(),
        server_version: engine.version().to_string(),
        databases: files,
    };
    if let Err(e) = store.finish(&manifest).await {
        let _ = store.delete(&manifest.id).await;
        return Err(format!("writing the manifest: {e}"));
    }
    Ok(manifest)
}

/// Applies retention; returns the ids it did delete.
pub async fn prune(store: &Store, db: &Database) -> Result<Vec<String>, String> {
    let Some(spec) = &db.spec.backup else {
        return Ok(vec![]);
    };
    let manifests = store.manifests().await.map_err(|e| e.to_string())?;
    let expired = expired(
        &manifests,
        spec.retention.count as usize,
        spec.retention.max_age.as_ref().map(|a| a.as_std()),
        Timestamp::now(),
    );
    let mut gone = vec![];
    for id in expired {
        if store.delete(&id).await.map_err(|e| e.to_string())? {
            gone.push(id);
        }
    }
    Ok(gone)
}

/// A manifest as status records it.
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
                bytes: d.bytes,
                sha256: d.sha256.clone(),
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
    }
}
