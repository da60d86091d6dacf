//! Restores: finding what is gone (judged against everything the newest
//! backup holds), choosing the newest backup that holds it and whose checksum
//! verifies, restoring it, and checking every table it holds (presence and
//! row count; the verify tables' checksums too). A restore that does not
//! verify is a failure.
//!
//! A whole database is restored into a staging database marked by a comment
//! (`{"reprise":"restore",...}`), verified there, and only then swapped in by
//! renaming: the live name never holds a half-restored database. An operator
//! that takes over after a crash finds the marker and finishes the swap of a
//! verified staging database, or drops an unverified one and restores again;
//! a restore that finished before the crash is verified and recorded.

use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::{
    api::{
        Database,
        database::{ContentsCheck, RestoreOutcome, RestoreRecord, TableVerification},
    },
    crash,
    providers::{
        backup_store::{DumpRecord, Manifest, Store, Stores, check_dump},
        database::{DatabaseConn, DatabaseEngine, DumpError, EngineError, Scope, TableMeasure},
    },
};

/// Something the spec says should be there and is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    Database(String),
    Table {
        database: String,
        schema: String,
        name: String,
    },
}

impl Missing {
    pub fn database(&self) -> &str {
        match self {
            Missing::Database(d) | Missing::Table { database: d, .. } => d,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Missing::Database(d) => format!("database {d}"),
            Missing::Table { database, schema, name } => format!("table {database}.{schema}.{name}"),
        }
    }
    /// Whether backup `m` holds it.
    pub fn held_by(&self, m: &Manifest) -> bool {
        match self {
            Missing::Database(d) => m.database(d).is_some(),
            Missing::Table { database, schema, name } => m
                .database(database)
                .is_some_and(|r| r.all_tables().iter().any(|t| &t.schema == schema && &t.name == name)),
        }
    }
}

/// What is gone from the databases of the spec: a database that does not
/// exist, or that lacks every table the newest backup of it holds (an empty
/// shell: restored whole), or the tables the newest backup holds that it
/// lacks (each restored alone). Without a backup, the verify tables that are
/// missing (nothing can restore them; they are reported).
pub async fn find_missing(
    engine: &impl DatabaseEngine,
    db: &Database,
    manifests: &[Manifest],
) -> Result<Vec<Missing>, EngineError> {
    let mut missing = vec![];
    for d in &db.spec.databases {
        if !engine.database_exists(&d.name).await? {
            missing.push(Missing::Database(d.name.clone()));
            continue;
        }
        let newest = manifests.iter().find_map(|m| m.database(&d.name));
        let wanted: Vec<(String, String)> = match newest {
            Some(rec) => rec
                .all_tables()
                .iter()
                .map(|t| (t.schema.clone(), t.name.clone()))
                .collect(),
            None => db
                .spec
                .verify
                .iter()
                .flat_map(|v| v.tables.iter())
                .filter(|t| t.database == d.name)
                .map(|t| (t.schema.clone(), t.name.clone()))
                .collect(),
        };
        if wanted.is_empty() {
            continue;
        }
        let present = engine.tables(&d.name).await?;
        let gone: Vec<(String, String)> = wanted.into_iter().filter(|t| !present.contains(t)).collect();
        if newest.is_some() && present.is_empty() && !gone.is_empty() {
            missing.push(Missing::Database(d.name.clone()));
            continue;
        }
        missing.extend(gone.into_iter().map(|(schema, name)| Missing::Table {
            database: d.name.clone(),
            schema,
            name,
        }));
    }
    Ok(missing)
}

/// What a restore works with.
pub struct Peers<'a, E> {
    pub engine: &'a E,
    pub stores: &'a Stores,
}

impl<E> Peers<'_, E> {
    /// The stores backups `used` were read from, as status names them.
    pub fn names(&self, used: &[&Manifest]) -> Option<String> {
        let mut names: Vec<&str> = used
            .iter()
            .filter_map(|m| self.stores.get(m.source).map(|s| s.name.as_str()))
            .collect();
        names.dedup();
        (!names.is_empty()).then(|| names.join(", "))
    }

    /// The store backup `m` was listed in.
    pub fn store_of(&self, m: &Manifest) -> Result<&Store, String> {
        self.stores
            .get(m.source)
            .ok_or_else(|| format!("the store backup {} was listed in is no longer usable", m.id))
    }
}

impl<E> Clone for Peers<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Peers<'_, E> {}

/// The backup chosen for one database's restore.
pub struct Chosen<'m> {
    pub database: String,
    pub manifest: &'m Manifest,
    pub dump: &'m DumpRecord,
    pub items: Vec<Missing>,
}

impl Chosen<'_> {
    fn whole(&self) -> bool {
        self.items.iter().any(|m| matches!(m, Missing::Database(_)))
    }
}

/// For each database with something missing, the newest backup that holds
/// all of it and whose checksum verifies, from the first store that holds it
/// whole (corrupt or unreadable copies are noted in the record's skipped
/// backups and the next copy is tried); the databases no backup can serve, with why.
pub async fn choose<'m>(
    stores: &Stores,
    missing: &[Missing],
    manifests: &'m [Manifest],
    record: &mut RestoreRecord,
) -> (Vec<Chosen<'m>>, Vec<String>) {
    let mut by_db: BTreeMap<&str, Vec<Missing>> = BTreeMap::new();
    for m in missing {
        by_db.entry(m.database()).or_default().push(m.clone());
    }
    let (mut chosen, mut failures) = (vec![], vec![]);
    'db: for (name, items) in by_db {
        for m in manifests.iter().filter(|m| items.iter().all(|i| i.held_by(m))) {
            let rec = m.database(name).expect("held_by checked it");
            let store = match stores.0.get(m.source) {
                Some(Ok(s)) => s,
                Some(Err(u)) => {
                    record.skipped_backups.push(format!("backup {}: {u}", m.id));
                    continue;
                }
                None => continue,
            };
            match checksum_passes(store, m, rec, record).await {
                Ok(true) => {
                    chosen.push(Chosen {
                        database: name.to_string(),
                        manifest: m,
                        dump: rec,
                        items,
                    });
                    continue 'db;
                }
                Ok(false) => {}
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue 'db;
                }
            }
        }
        let what: Vec<String> = items.iter().map(Missing::describe).collect();
        failures.push(format!(
            "{name}: {}",
            if record.skipped_backups.is_empty() {
                format!("no backup holds {}", what.join(", "))
            } else {
                format!("no backup of {} passed its checksum", what.join(", "))
            }
        ));
    }
    (chosen, failures)
}

/// Restores what `chosen` says and verifies it; ends the record.
pub async fn run(
    peers: &Peers<'_, impl DatabaseEngine>,
    db: &Database,
    chosen: &[Chosen<'_>],
    mut failures: Vec<String>,
    observed: Timestamp,
    record: &mut RestoreRecord,
) {
    let mut used: Vec<&Manifest> = vec![];
    for c in chosen {
        let done = if c.whole() {
            restore_whole(peers, db, c, record).await
        } else {
            restore_tables(peers, c, record).await
        };
        match done {
            Ok(()) => used.push(c.manifest),
            Err(e) => failures.push(format!("{}: {e}", c.database)),
        }
    }
    conclude(record, &used, peers.names(&used), &failures, observed);
}

/// Whether dump `rec` of backup `m` passes its checksum; a corrupt one is
/// noted in the record's skipped backups (the caller tries an older one).
pub async fn checksum_passes(
    store: &Store,
    m: &Manifest,
    rec: &DumpRecord,
    record: &mut RestoreRecord,
) -> Result<bool, String> {
    match check_dump(store, &m.id, rec).await {
        Ok(()) => Ok(true),
        Err(DumpError::Corrupt(why) | DumpError::Key(why)) => {
            record.skipped_backups.push(why);
            Ok(false)
        }
        // The store stopped answering: its other copies are passed over too.
        Err(e) => {
            record
                .skipped_backups
                .push(format!("backup {} in store {}: {e}", m.id, store.name));
            Ok(false)
        }
    }
}

/// A record for a restore starting now.
pub fn record(targets: Vec<String>, observed: Timestamp) -> RestoreRecord {
    let started = MicroTime(Timestamp::now());
    RestoreRecord {
        outcome: RestoreOutcome::Verified,
        targets,
        failure_observed: MicroTime(observed),
        started: started.clone(),
        finished: started,
        duration: String::new(),
        backup_id: None,
        backup_time: None,
        store: None,
        recovery_target: None,
        recovered_to: None,
        bytes_restored: 0,
        data_loss_window_seconds: None,
        skipped_backups: vec![],
        verification: vec![],
        contents_checked: None,
        message: String::new(),
    }
}

/// Ends the record: its duration, the backups `used` (the data-loss window
/// runs from the oldest to `loss_until`), and the outcome: `Failed` with the
/// failures, else `VerificationFailed` when a table differs from the backup,
/// else `Verified`.
pub fn conclude(
    record: &mut RestoreRecord,
    used: &[&Manifest],
    store_names: Option<String>,
    failures: &[String],
    loss_until: Timestamp,
) {
    let finished = Timestamp::now();
    record.finished = MicroTime(finished);
    record.duration = format!("{:.3}s", finished.duration_since(record.started.0).as_secs_f64());
    let mut ids: Vec<&str> = used.iter().map(|m| m.id.as_str()).collect();
    ids.dedup();
    if !ids.is_empty() {
        record.backup_id = Some(ids.join(", "));
    }
    if let Some(names) = store_names {
        record.store = Some(names);
    }
    if let Some(oldest) = used.iter().map(|m| m.started).min() {
        record.backup_time = Some(Time(oldest));
        record.data_loss_window_seconds = Some((loss_until.as_second() - oldest.as_second()).max(0));
    }
    let mismatch = record
        .contents_checked
        .as_ref()
        .and_then(|c| c.mismatches.first().cloned());
    if !failures.is_empty() {
        record.outcome = RestoreOutcome::Failed;
        record.message = failures.join("; ");
    } else if let Some(bad) = record
        .verification
        .iter()
        .find(|v| v.rows != v.expected_rows || !v.checksum_matches)
    {
        record.outcome = RestoreOutcome::VerificationFailed;
        record.message = format!(
            "table {} has {} rows (backup: {}), checksum {}",
            bad.table,
            bad.rows,
            bad.expected_rows,
            if bad.checksum_matches { "matches" } else { "differs" }
        );
    } else if let Some(m) = mismatch {
        record.outcome = RestoreOutcome::VerificationFailed;
        record.message = format!("table {m}");
    }
}

/// Measures each of `wanted` in database `restored` and records it, named as in database `name`.
pub async fn verify(
    engine: &impl DatabaseEngine,
    restored: &str,
    name: &str,
    wanted: &[TableMeasure],
    record: &mut RestoreRecord,
) -> Result<(), String> {
    let conn = engine.open(restored).await.map_err(|e| e.to_string())?;
    for t in wanted {
        let found = conn
            .measure(&t.schema, &t.name)
            .await
            .map_err(|e| format!("verifying {name}.{}.{}: {e}", t.schema, t.name))?;
        record.verification.push(TableVerification {
            table: format!("{name}.{}.{}", t.schema, t.name),
            expected_rows: t.rows,
            rows: found.rows,
            checksum_matches: found.checksum == t.checksum,
        });
    }
    Ok(())
}

/// Checks that each of `wanted` is in database `restored` with the row count
/// the backup recorded (named as in database `name`), adding to the record's check.
pub async fn check_contents(
    engine: &impl DatabaseEngine,
    restored: &str,
    name: &str,
    wanted: &[TableMeasure],
    record: &mut RestoreRecord,
) -> Result<(), String> {
    let conn = engine.open(restored).await.map_err(|e| e.to_string())?;
    let present = conn.tables().await.map_err(|e| e.to_string())?;
    let check = record.contents_checked.get_or_insert_with(ContentsCheck::default);
    for t in wanted {
        check.tables += 1;
        let shown = format!("{name}.{}.{}", t.schema, t.name);
        if !present.iter().any(|(s, n)| *s == t.schema && *n == t.name) {
            if check.mismatches.len() < 20 {
                check
                    .mismatches
                    .push(format!("{shown}: missing (backup: {} rows)", t.rows));
            }
            continue;
        }
        let rows = conn
            .count(&t.schema, &t.name)
            .await
            .map_err(|e| format!("counting {shown}: {e}"))?;
        check.rows += rows;
        if rows != t.rows && check.mismatches.len() < 20 {
            check
                .mismatches
                .push(format!("{shown}: found {rows} rows, backup {}", t.rows));
        }
    }
    Ok(())
}

/// The verify tables of database `name` as the dump recorded them.
fn verify_tables(db: &Database, name: &str, rec: &DumpRecord) -> Vec<TableMeasure> {
    let spec: Vec<(&str, &str)> = db
        .spec
        .verify
        .iter()
        .flat_map(|v| v.tables.iter())
        .filter(|t| t.database == name)
        .map(|t| (t.schema.as_str(), t.name.as_str()))
        .collect();
    rec.tables
        .iter()
        .filter(|t| spec.contains(&(t.schema.as_str(), t.name.as_str())))
        .cloned()
        .collect()
}

/// The marker on a database reprise restores into (or sets aside).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Always `restore`.
    pub reprise: String,
    /// The database it stands in for.
    pub target: String,
    /// The backup restored.
    pub backup: String,
    /// `Restoring` (pg_restore may not have finished), `Verified` (ready to
    /// swap in), `Replaced` (the database it replaced, to drop).
    pub state: String,
}

const MARKER_PREFIX: &str = r#"{"reprise":"restore""#;

impl Marker {
    fn new(target: &str, backup: &str, state: &str) -> Self {
        Self {
            reprise: "restore".into(),
            target: target.into(),
            backup: backup.into(),
            state: state.into(),
        }
    }
    fn text(&self) -> String {
        serde_json::to_string(self).expect("a marker serializes")
    }
}

/// A short tag of a target and a backup: staging names differ per restore.
fn tag(target: &str, backup: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{target}/{backup}").as_bytes());
    d.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The staging database a restore of `target` from `backup` goes into (at most 63 bytes).
pub fn staging_name(target: &str, backup: &str) -> String {
    let base: String = target.chars().take(40).collect();
    format!("{base}_restore_{}", tag(target, backup))
}

/// Where the database a restore replaces is set aside until it is dropped.
fn replaced_name(target: &str, backup: &str) -> String {
    let base: String = target.chars().take(40).collect();
    format!("{base}_replaced_{}", tag(target, backup))
}

/// A whole database: into a marked staging database, verified there, swapped in.
async fn restore_whole(
    peers: &Peers<'_, impl DatabaseEngine>,
    db: &Database,
    c: &Chosen<'_>,
    record: &mut RestoreRecord,
) -> Result<(), String> {
    let engine = peers.engine;
    let name = c.database.as_str();
    let backup = c.manifest.id.as_str();
    let stage = staging_name(name, backup);
    let owner = db
        .spec
        .databases
        .iter()
        .find(|d| d.name == name)
        .and_then(|d| d.owner.as_deref());
    let fail = |e: EngineError| e.to_string();
    engine.drop_database(&stage).await.map_err(fail)?;
    engine.create_database(&stage, owner).await.map_err(fail)?;
    engine
        .mark_database(&stage, Some(&Marker::new(name, backup, "Restoring").text()))
        .await
        .map_err(fail)?;
    crash::point("restore:staged");
    let (checked_before, verified_before) = (
        record.contents_checked.as_ref().map_or(0, |c| c.mismatches.len()),
        record.verification.len(),
    );
    let restored = async {
        record.bytes_restored += engine
            .restore(peers.store_of(c.manifest)?, backup, c.dump, &stage, Scope::Database)
            .await
            .map_err(|e| format!("restoring backup {backup}: {e}"))?;
        crash::point("restore:restored");
        check_contents(engine, &stage, name, c.dump.all_tables(), record).await?;
        verify(engine, &stage, name, &verify_tables(db, name, c.dump), record).await
    }
    .await;
    let verified = restored.is_ok()
        && record.contents_checked.as_ref().map_or(0, |c| c.mismatches.len()) == checked_before
        && record.verification[verified_before..]
            .iter()
            .all(|v| v.rows == v.expected_rows && v.checksum_matches);
    if !verified {
        // Nothing of it reaches the live name.
        let _ = engine.drop_database(&stage).await;
        return restored;
    }
    engine
        .mark_database(&stage, Some(&Marker::new(name, backup, "Verified").text()))
        .await
        .map_err(fail)?;
    crash::point("restore:verified");
    swap(engine, name, &stage, backup).await.map_err(fail)
}

/// Puts the verified staging database in place of `target`: whatever holds the
/// name is set aside (marked) and dropped once the staging database has it.
async fn swap(engine: &impl DatabaseEngine, target: &str, stage: &str, backup: &str) -> Result<(), EngineError> {
    let aside = replaced_name(target, backup);
    if engine.database_exists(target).await? {
        engine.rename_database(target, &aside).await?;
        engine
            .mark_database(&aside, Some(&Marker::new(target, backup, "Replaced").text()))
            .await?;
        crash::point("restore:set-aside");
    }
    engine.rename_database(stage, target).await?;
    crash::point("restore:swapped");
    engine.mark_database(target, None).await?;
    engine.drop_database(&aside).await
}

/// Tables alone, into the live database, in one transaction.
async fn restore_tables(
    peers: &Peers<'_, impl DatabaseEngine>,
    c: &Chosen<'_>,
    record: &mut RestoreRecord,
) -> Result<(), String> {
    let name = c.database.as_str();
    let backup = c.manifest.id.as_str();
    let wanted: Vec<TableMeasure> = c
        .dump
        .all_tables()
        .iter()
        .filter(|t| {
            c.items
                .iter()
                .any(|i| matches!(i, Missing::Table { schema, name, .. } if *schema == t.schema && *name == t.name))
        })
        .cloned()
        .collect();
    record.bytes_restored += peers
        .engine
        .restore(
            peers.store_of(c.manifest)?,
            backup,
            c.dump,
            name,
            Scope::Tables(&wanted),
        )
        .await
        .map_err(|e| format!("restoring backup {backup}: {e}"))?;
    crash::point("restore:tables");
    check_contents(peers.engine, name, name, &wanted, record).await?;
    let checksummed: Vec<TableMeasure> = c
        .dump
        .tables
        .iter()
        .filter(|t| wanted.iter().any(|w| w.schema == t.schema && w.name == t.name))
        .cloned()
        .collect();
    verify(peers.engine, name, name, &checksummed, record).await
}

/// Finishes or clears what an interrupted restore of the spec's databases
/// left behind: a verified staging database is swapped in (unless the live
/// name holds data again), an unverified one is dropped (its restore starts
/// over), one set aside is dropped. Returns what it did, one line each.
pub async fn finish_interrupted(
    peers: &Peers<'_, impl DatabaseEngine>,
    db: &Database,
) -> Result<Vec<String>, EngineError> {
    let engine = peers.engine;
    let mut done = vec![];
    let ours = |t: &str| db.spec.databases.iter().any(|d| d.name == t);
    let mut marked: Vec<(String, Marker)> = engine
        .databases_marked(MARKER_PREFIX)
        .await?
        .into_iter()
        .filter_map(|(d, c)| Some((d, serde_json::from_str::<Marker>(&c).ok()?)))
        .filter(|(_, m)| ours(&m.target))
        .collect();
    // Set-aside databases last: a swap may still need the name they freed.
    marked.sort_by_key(|(_, m)| m.state == "Replaced");
    for (name, m) in marked {
        match m.state.as_str() {
            "Verified" if name == m.target => {
                engine.mark_database(&name, None).await?;
            }
            "Verified" => {
                // A connection of its own: the swap renames the live database.
                let live_empty = !engine.database_exists(&m.target).await?
                    || engine.open(&m.target).await?.tables().await?.is_empty();
                if live_empty {
                    swap(engine, &m.target, &name, &m.backup).await?;
                    done.push(format!(
                        "finished swapping in database {} restored from backup {} before a restart",
                        m.target, m.backup
                    ));
                } else {
                    engine.drop_database(&name).await?;
                    done.push(format!(
                        "dropped {name}: a restore of {} interrupted by a restart, which holds data again",
                        m.target
                    ));
                }
            }
            _ => {
                engine.drop_database(&name).await?;
                done.push(format!(
                    "dropped {name} ({} of {} from backup {}), left by a restart",
                    m.state, m.target, m.backup
                ));
            }
        }
    }
    Ok(done)
}

/// A restore that finished before a restart but was never recorded: each
/// target checked against the backup it came from, the record ended as the
/// check says.
pub async fn verify_finished(
    peers: &Peers<'_, impl DatabaseEngine>,
    db: &Database,
    backups: &[(String, &Manifest)],
    record: &mut RestoreRecord,
    observed: Timestamp,
) {
    let mut failures = vec![];
    let mut used = vec![];
    for (name, m) in backups {
        let Some(rec) = m.database(name) else {
            failures.push(format!("{name}: backup {} does not hold it", m.id));
            continue;
        };
        let checked = async {
            check_contents(peers.engine, name, name, rec.all_tables(), record).await?;
            verify(peers.engine, name, name, &verify_tables(db, name, rec), record).await
        }
        .await;
        match checked {
            Ok(()) => used.push(*m),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    conclude(record, &used, peers.names(&used), &failures, observed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_fit_and_are_the_same_for_the_same_restore() {
        let long = "d".repeat(63);
        let a = staging_name(&long, "20261130T120000000Z");
        assert!(a.len() <= 63, "{a}");
        assert_eq!(a, staging_name(&long, "20261130T120000000Z"));
        assert_ne!(a, staging_name(&long, "20261130T180000000Z"));
        assert!(replaced_name(&long, "x").len() <= 63);
        let m = Marker::new("shop", "b1", "Verified").text();
        assert!(m.starts_with(MARKER_PREFIX), "{m}");
    }
}
