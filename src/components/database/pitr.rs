//! Point-in-time restores (PostgreSQL): the newest base backup taken before
//! the point, from the first store whose copy verifies, is recovered with the
//! archived WAL in a private server up to the point; every database of the
//! spec is dumped from it (its tables measured there, at the recovery point)
//! and restored over the live one by the crash-safe path of every restore
//! (staged, verified against those measures, swapped in).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::io::AsyncWriteExt;

use super::{backup, restore};
use crate::{
    api::{
        Database,
        database::{NamedStore, RestoreRecord},
    },
    providers::{
        backup_store::{Manifest, Store, Stores, check_dump, wal_folder},
        database::{DatabaseEngine, DumpError, Target},
        postgres::{
            Postgres,
            dump::Tools,
            replay::{Point, Scratch},
            wal,
        },
    },
};

/// The base backups a recovery to `point` may start from, newest first.
pub fn candidates<'m>(manifests: &'m [Manifest], point: &Point) -> Vec<&'m Manifest> {
    manifests
        .iter()
        .filter(|m| m.base.is_some())
        .filter(|m| match point {
            Point::Latest => true,
            Point::Time(t) => m.finished <= *t,
        })
        .collect()
}

/// The WAL files a recovery from `start` needs, as (object name, file name):
/// complete segments from `start` on, then the newest partial segment when
/// it is past them (saved under its segment's name).
pub fn wal_needed(names: &[String], start: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = names
        .iter()
        .filter(|n| wal::is_segment(n) && n.as_str() >= start)
        .map(|n| (n.clone(), n.clone()))
        .collect();
    let last = out.last().map(|(n, _)| n.clone()).unwrap_or_default();
    if let Some(p) = names
        .iter()
        .filter_map(|n| n.strip_suffix(".partial"))
        .filter(|s| wal::is_segment(s) && *s >= start && *s > last.as_str())
        .max()
    {
        out.push((format!("{p}.partial"), p.to_string()));
    }
    out
}

/// What a point-in-time restore works with: the live instance (its engine
/// and admin account), PostgreSQL's programs, the Database's stores.
pub struct Recovery<'a, E> {
    pub engine: &'a E,
    pub tools: &'a Tools,
    pub admin: &'a Target,
    pub stores: &'a Stores,
}

/// Restores every database of the spec to `point` over the live ones.
pub async fn run(
    r: &Recovery<'_, impl DatabaseEngine>,
    db: &Database,
    manifests: &[Manifest],
    point: &Point,
    record: &mut RestoreRecord,
) {
    record.recovery_target = Some(point.describe());
    let observed = record.failure_observed.0;
    let mut failures = vec![];
    for m in candidates(manifests, point) {
        let Some(store) = r.stores.get(m.source) else { continue };
        match recover_from(r, store, db, m, point, record).await {
            Ok(()) => return,
            Err(e) => failures.push(format!("base backup {} in store {}: {e}", m.id, store.name)),
        }
        // A restore that was tried (staged) is not retried from an older base.
        if record.bytes_restored > 0 {
            break;
        }
    }
    if failures.is_empty() {
        failures.push(format!(
            "no base backup was taken before {}: point-in-time restores start from the backups taken since spec.backup.wal was set",
            point.describe()
        ));
    }
    restore::conclude(record, &[], None, &failures, observed);
}

async fn recover_from(
    r: &Recovery<'_, impl DatabaseEngine>,
    store: &Store,
    db: &Database,
    m: &Manifest,
    point: &Point,
    record: &mut RestoreRecord,
) -> Result<(), String> {
    let base = m.base.as_ref().expect("candidates have a base");
    check_dump(store, &m.id, &base.as_dump())
        .await
        .map_err(|e| e.to_string())?;
    let mut scratch = Scratch::new().map_err(|e| e.to_string())?;
    scratch
        .unpack(
            store
                .open_dump(&m.id, &base.as_dump())
                .await
                .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;
    let folder = wal_folder(base.system.as_deref());
    let names = store.wal_names(&folder).await?;
    for (object, file) in wal_needed(&names, &base.start_segment) {
        fetch(store, &folder, &object, &scratch.wal().join(&file), base.segment_size)
            .await
            .map_err(|e| e.to_string())?;
    }
    let target = scratch
        .recover(r.tools, point, &r.admin.user)
        .await
        .map_err(|e| e.to_string())?;
    let recovered_to = Scratch::recovered_to(&target).await.map_err(|e| e.to_string())?;
    // Dumped from the recovered server, its tables measured there.
    let recovered = Postgres::connect(target, r.tools.clone())
        .await
        .map_err(|e| e.to_string())?;
    let dumps = scratch.data().with_file_name("dumps");
    let spec: NamedStore = serde_json::from_value(serde_json::json!({"name": "recovery", "local": {"path": dumps}}))
        .map_err(|e| e.to_string())?;
    let temp = Store::open(&spec, "recovery", None, None, "r", "r")?;
    let mut plain = db.clone();
    if let Some(b) = plain.spec.backup.as_mut() {
        b.wal = None;
    }
    let taken = backup::take(&recovered, &[&temp], &plain).await?;
    let mut at = taken
        .landed
        .into_iter()
        .next()
        .ok_or("the recovered databases were not dumped")?;
    at.started = recovered_to.unwrap_or(at.started);
    drop(recovered);
    let temps = Stores(vec![Ok(temp)]);
    let missing: Vec<restore::Missing> = db
        .spec
        .databases
        .iter()
        .map(|d| restore::Missing::Database(d.name.clone()))
        .collect();
    let manifests = [at];
    let (chosen, failures) = restore::choose(&temps, &missing, &manifests, record).await;
    let peers = restore::Peers {
        engine: r.engine,
        stores: &temps,
    };
    let observed = record.failure_observed.0;
    restore::run(&peers, db, &chosen, failures, observed, record).await;
    record.backup_id = Some(format!("{} + WAL", m.id));
    record.store = Some(store.name.clone());
    record.recovered_to = recovered_to.map(MicroTime);
    if let Some(t) = recovered_to {
        record.backup_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t));
        record.data_loss_window_seconds = Some((observed.as_second() - t.as_second()).max(0));
    }
    Ok(())
}

/// Downloads one archived WAL file, decrypted, into `to`, padded with zeros
/// to a whole segment (a partial one is archived as far as it is written).
async fn fetch(store: &Store, folder: &str, name: &str, to: &std::path::Path, segment: u64) -> Result<(), DumpError> {
    let mut r = store.open_wal(folder, name).await?;
    let mut f = tokio::fs::File::create(to)
        .await
        .map_err(|e| DumpError::Tool(format!("{}: {e}", to.display())))?;
    tokio::io::copy(&mut r, &mut f)
        .await
        .map_err(|e| DumpError::Corrupt(format!("WAL {name} in store {}: {e}", store.name)))?;
    f.flush().await.map_err(|e| DumpError::Tool(e.to_string()))?;
    let len = f.metadata().await.map_err(|e| DumpError::Tool(e.to_string()))?.len();
    if len < segment {
        f.set_len(segment).await.map_err(|e| DumpError::Tool(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_takes_the_segments_from_the_base_on_and_the_newest_partial() {
        let names: Vec<String> = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000004.partial",
            "000000010000000000000005.partial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = wal_needed(&names, "000000010000000000000003");
        let files: Vec<&str> = got.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(
            files,
            [
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005"
            ]
        );
        assert_eq!(got[2].0, "000000010000000000000005.partial");
        assert!(wal_needed(&names, "000000010000000000000009").is_empty());
    }
}
