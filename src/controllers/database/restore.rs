//! Restores: finding what is gone, choosing the newest backup that holds it
//! and whose checksum verifies, restoring it, and checking every verify table
//! against the manifest. A restore that does not verify is a failure.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use tokio_postgres::Client;

use crate::{
    api::{
        Database,
        database::{RestoreRecord, TableVerification},
    },
    providers::{
        backup_store::{DumpRecord, Manifest, Store},
        postgres::{
            PgError, Sessions, Target, accounts,
            dump::{self, DumpError, Scope, Tools},
            tables::{self, TableMeasure},
        },
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
                .is_some_and(|r| r.tables.iter().any(|t| &t.schema == schema && &t.name == name)),
        }
    }
}

/// The databases of the spec that are gone, and the verify tables gone from the databases that are there.
pub async fn find_missing(admin: &Client, sessions: &mut Sessions<'_>, db: &Database) -> Result<Vec<Missing>, PgError> {
    let mut missing = vec![];
    for d in &db.spec.databases {
        if !accounts::database_exists(admin, &d.name).await? {
            missing.push(Missing::Database(d.name.clone()));
            continue;
        }
        let verify: Vec<_> = db
            .spec
            .verify
            .iter()
            .flat_map(|v| v.tables.iter())
            .filter(|t| t.database == d.name)
            .collect();
        if verify.is_empty() {
            continue;
        }
        let conn = sessions.get(&d.name).await?;
        for t in verify {
            if !tables::exists(conn, &t.schema, &t.name).await? {
                missing.push(Missing::Table {
                    database: d.name.clone(),
                    schema: t.schema.clone(),
                    name: t.name.clone(),
                });
            }
        }
    }
    Ok(missing)
}

/// What a restore works with.
pub struct Peers<'a> {
    pub tools: &'a Tools,
    pub target: &'a Target,
    pub admin: &'a Client,
    pub store: &'a Store,
}

/// Restores everything in `missing` (each held by some backup in `manifests`,
/// newest first) and verifies it.
pub async fn run(
    peers: &Peers<'_>,
    db: &Database,
    missing: &[Missing],
    manifests: &[Manifest],
    observed: Timestamp,
) -> RestoreRecord {
    let mut by_db: BTreeMap<&str, Vec<&Missing>> = BTreeMap::new();
    for m in missing {
        by_db.entry(m.database()).or_default().push(m);
    }
    let mut record = record(missing.iter().map(Missing::describe).collect(), observed);
    let mut used: Vec<&Manifest> = vec![];
    let mut failures: Vec<String> = vec![];
    for (name, items) in by_db {
        match restore_one(peers, db, name, &items, manifests, &mut record).await {
            Ok(m) => used.push(m),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    conclude(&mut record, &used, &failures, observed);
    record
}

/// Whether dump `rec` of backup `m` passes its checksum; a corrupt one is
/// noted in the record's skipped backups (the caller tries an older one).
pub async fn checksum_passes(
    store: &Store,
    m: &Manifest,
    rec: &DumpRecord,
    record: &mut RestoreRecord,
) -> Result<bool, String> {
    match dump::check(store, &m.id, rec).await {
        Ok(()) => Ok(true),
        Err(DumpError::Corrupt(why)) => {
            record.skipped_backups.push(why);
            Ok(false)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A record for a restore starting now.
pub fn record(targets: Vec<String>, observed: Timestamp) -> RestoreRecord {
    let started = Time(Timestamp::now());
    RestoreRecord {
        outcome: "Verified".into(),
        targets,
        failure_observed: Time(observed),
        started: started.clone(),
        finished: started,
        duration: String::new(),
        backup_id: None,
        backup_time: None,
        bytes_restored: 0,
        data_loss_window_seconds: None,
        skipped_backups: vec![],
        verification: vec![],
        message: String::new(),
    }
}

/// Ends the record: its duration, the backups `used` (the data-loss window
/// runs from the oldest to `loss_until`), and the outcome: `Failed` with the
/// failures, else `VerificationFailed` when a verify table differs from its
/// manifest, else `Verified`.
pub fn conclude(record: &mut RestoreRecord, used: &[&Manifest], failures: &[String], loss_until: Timestamp) {
    let finished = Timestamp::now();
    record.finished = Time(finished);
    record.duration = format!("{:.3}s", finished.duration_since(record.started.0).as_secs_f64());
    let mut ids: Vec<&str> = used.iter().map(|m| m.id.as_str()).collect();
    ids.dedup();
    if !ids.is_empty() {
        record.backup_id = Some(ids.join(", "));
    }
    if let Some(oldest) = used.iter().map(|m| m.started).min() {
        record.backup_time = Some(Time(oldest));
        record.data_loss_window_seconds = Some((loss_until.as_second() - oldest.as_second()).max(0));
    }
    if !failures.is_empty() {
        record.outcome = "Failed".into();
        record.message = failures.join("; ");
    } else if let Some(bad) = record
        .verification
        .iter()
        .find(|v| v.rows != v.expected_rows || !v.checksum_matches)
    {
        record.outcome = "VerificationFailed".into();
        record.message = format!(
            "table {} has {} rows (backup: {}), checksum {}",
            bad.table,
            bad.rows,
            bad.expected_rows,
            if bad.checksum_matches { "matches" } else { "differs" }
        );
    }
}

/// Measures each of `wanted` in database `restored` and records it, named as in database `name`.
pub async fn verify(
    target: &Target,
    restored: &str,
    name: &str,
    wanted: &[TableMeasure],
    record: &mut RestoreRecord,
) -> Result<(), String> {
    let conn = target.connect(restored).await.map_err(|e| e.to_string())?;
    for t in wanted {
        let found = tables::measure(&conn, &t.schema, &t.name)
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

async fn restore_one<'m>(
    peers: &Peers<'_>,
    db: &Database,
    name: &str,
    items: &[&Missing],
    manifests: &'m [Manifest],
    record: &mut RestoreRecord,
) -> Result<&'m Manifest, String> {
    let Peers {
        tools,
        target,
        admin,
        store,
    } = *peers;
    let whole = items.iter().any(|m| matches!(m, Missing::Database(_)));
    for m in manifests {
        if !items.iter().all(|i| i.held_by(m)) {
            continue;
        }
        let rec = m.database(name).expect("held_by checked it");
        if !checksum_passes(store, m, rec, record).await? {
            continue;
        }
        let wanted: Vec<TableMeasure> = if whole {
            rec.tables.clone()
        } else {
            rec.tables
                .iter()
                .filter(|t| {
                    items.iter().any(
                        |i| matches!(i, Missing::Table { schema, name, .. } if *schema == t.schema && *name == t.name),
                    )
                })
                .cloned()
                .collect()
        };
        let restored = if whole {
            let owner = db
                .spec
                .databases
                .iter()
                .find(|d| d.name == name)
                .and_then(|d| d.owner.as_deref());
            accounts::create_database(admin, name, owner)
                .await
                .map_err(|e| e.to_string())?;
            let r = dump::restore(tools, target, store, &m.id, rec, name, Scope::Database).await;
            if r.is_err() {
                // An empty database would pass for a restored one.
                let _ = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {}",
                        crate::providers::postgres::ident(name)
                    ))
                    .await;
            }
            r
        } else {
            dump::restore(tools, target, store, &m.id, rec, name, Scope::Tables(&wanted)).await
        };
        record.bytes_restored += restored.map_err(|e| format!("restoring backup {}: {e}", m.id))?;
        verify(target, name, name, &wanted, record).await?;
        return Ok(m);
    }
    let what: Vec<String> = items.iter().map(|i| i.describe()).collect();
    Err(if record.skipped_backups.is_empty() {
        format!("no backup holds {}", what.join(", "))
    } else {
        format!("no backup of {} passed its checksum", what.join(", "))
    })
}
