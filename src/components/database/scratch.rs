//! Drills: for each database of the spec, the newest backup that verifies is
//! restored into a scratch database, checked against its manifest as a real
//! restore would be, and dropped. The live databases are only read by name:
//! nothing is written to them. Scratch databases carry a comment, so one an
//! interrupted drill left behind is dropped by the next drill.

use k8s_openapi::jiff::Timestamp;

use super::restore::{self, Peers};
use crate::{
    api::{Database, database::RestoreRecord},
    providers::{
        backup_store::Manifest,
        database::{DatabaseEngine, EngineError, Scope},
    },
};

/// The comment that marks a scratch database as reprise's.
pub const SCRATCH_COMMENT: &str = "reprise drill scratch copy";

/// The scratch database of `db` for drill `id`: at most 63 bytes, distinct per drill.
pub fn scratch_name(db: &str, id: &str) -> String {
    let base: String = db.chars().take(40).collect();
    format!("{base}_drill_{}", crate::api::contract::drill_tag(id, 16))
}

/// Scratch databases left by an interrupted drill.
pub async fn leftovers(engine: &impl DatabaseEngine) -> Result<Vec<String>, EngineError> {
    Ok(engine
        .databases_marked(SCRATCH_COMMENT)
        .await?
        .into_iter()
        .filter(|(_, c)| c == SCRATCH_COMMENT)
        .map(|(d, _)| d)
        .collect())
}

/// Runs drill `id` over every database of the spec.
pub async fn run(
    peers: &Peers<'_, impl DatabaseEngine>,
    db: &Database,
    manifests: &[Manifest],
    id: &str,
) -> RestoreRecord {
    let now = Timestamp::now();
    let mut record = restore::record(
        db.spec
            .databases
            .iter()
            .map(|d| format!("database {} into scratch {}", d.name, scratch_name(&d.name, id)))
            .collect(),
        now,
    );
    let mut failures = vec![];
    match leftovers(peers.engine).await {
        Ok(old) => {
            for name in old {
                if let Err(e) = peers.engine.drop_database(&name).await {
                    failures.push(format!("dropping the leftover scratch database {name}: {e}"));
                }
            }
        }
        Err(e) => failures.push(format!("looking for leftover scratch databases: {e}")),
    }
    let mut used: Vec<&Manifest> = vec![];
    for d in &db.spec.databases {
        match one(peers, &d.name, manifests, id, &mut record).await {
            Ok(m) => used.push(m),
            Err(e) => failures.push(format!("{}: {e}", d.name)),
        }
    }
    // The data-loss window: what a restore now would lose.
    restore::conclude(&mut record, &used, peers.names(&used), &failures, now);
    record
}

async fn one<'m>(
    peers: &Peers<'_, impl DatabaseEngine>,
    name: &str,
    manifests: &'m [Manifest],
    id: &str,
    record: &mut RestoreRecord,
) -> Result<&'m Manifest, String> {
    let engine = peers.engine;
    for m in manifests {
        let Some(rec) = m.database(name) else { continue };
        let Ok(store) = peers.store_of(m) else { continue };
        if !restore::checksum_passes(store, m, rec, record).await? {
            continue;
        }
        let scratch = scratch_name(name, id);
        engine
            .create_database(&scratch, None)
            .await
            .map_err(|e| format!("creating scratch database {scratch}: {e}"))?;
        let restored = async {
            engine
                .mark_database(&scratch, Some(SCRATCH_COMMENT))
                .await
                .map_err(|e| e.to_string())?;
            let bytes = engine
                .restore(store, &m.id, rec, &scratch, Scope::Database)
                .await
                .map_err(|e| format!("restoring backup {} into {scratch}: {e}", m.id))?;
            record.bytes_restored += bytes;
            restore::check_contents(engine, &scratch, name, rec.all_tables(), record).await?;
            restore::verify(engine, &scratch, name, &rec.tables, record).await
        }
        .await;
        let dropped = engine.drop_database(&scratch).await;
        restored?;
        dropped.map_err(|e| format!("dropping scratch database {scratch}: {e}"))?;
        return Ok(m);
    }
    Err(if record.skipped_backups.is_empty() {
        format!("no backup holds database {name}")
    } else {
        format!("no backup of database {name} passed its checksum")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_fit_and_differ_per_drill() {
        let long = "d".repeat(63);
        let a = scratch_name(&long, "0a1b2c3d.drill.1764400000");
        let b = scratch_name(&long, "0a1b2c3d.drill.1764400060");
        assert!(a.len() <= 63, "{a}");
        assert_ne!(a, b);
        assert_eq!(scratch_name("shop", "0A1B2C3D.drill.17"), "shop_drill_0a1b2c3d17");
        assert_eq!(a.len(), 63, "{a}");
    }
}
