//! Continuous WAL archiving of a Database (PostgreSQL): one task per
//! Database with `spec.backup.wal`, outside the reconcile passes. It keeps
//! the replication slot, runs pg_receivewal into a spool directory in the
//! operator's temporary space, and copies to every usable store each segment
//! pg_receivewal completes (then drops it from the spool) and, every
//! `uploadInterval`, the segment being written (`<segment>.partial`). The
//! position every store holds is shared with the passes, which publish it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};

use crate::{
    api::database::WalStatus,
    providers::{
        backup_store::{Store, Stores, Upload, wal_folder},
        database::Target,
        postgres::{dump::Tools, wal},
    },
};

/// What an archiver has done so far.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub streaming: bool,
    pub message: String,
    pub archived: Option<(u64, Timestamp)>,
    pub segments: u64,
}

/// What the archiver works with; a change restarts it.
#[derive(Clone)]
pub struct Setup {
    pub target: Target,
    pub tools: Tools,
    pub stores: Stores,
    pub slot: String,
    pub interval: Duration,
    /// What identifies the setup (the spec and Secrets' versions).
    pub key: String,
    /// Whether the Database still asks for archiving (it may be deleted).
    pub wanted: Arc<dyn Fn() -> bool + Send + Sync>,
}

struct Running {
    key: String,
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
}

fn running() -> &'static Mutex<HashMap<String, Running>> {
    static R: OnceLock<Mutex<HashMap<String, Running>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Makes sure the archiver of Database `uid` runs with `setup`; its progress.
pub fn ensure(uid: &str, setup: Setup) -> Progress {
    let mut all = running().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = all.get(uid)
        && r.key == setup.key
        && !r.task.is_finished()
    {
        return r.progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
    }
    if let Some(old) = all.remove(uid) {
        old.task.abort();
    }
    let progress = Arc::new(Mutex::new(Progress::default()));
    let key = setup.key.clone();
    let spool = std::env::temp_dir().join("reprise-wal").join(uid);
    let task = tokio::spawn(run(setup, spool, progress.clone()));
    all.insert(
        uid.to_string(),
        Running {
            key,
            progress: progress.clone(),
            task,
        },
    );
    Progress::default()
}

/// The WAL position every store holds for Database `uid`, if its archiver runs.
pub fn archived(uid: &str) -> Option<u64> {
    let all = running().lock().unwrap_or_else(|p| p.into_inner());
    let r = all.get(uid)?;
    let p = r.progress.lock().unwrap_or_else(|p| p.into_inner());
    p.archived.map(|(lsn, _)| lsn)
}

/// Waits (at most `limit`) until the stores hold the WAL of Database `uid`
/// up to `lsn`: a base backup is usable only with the WAL to its end.
pub async fn wait_archived(uid: &str, lsn: u64, limit: Duration) -> Result<(), String> {
    let until = std::time::Instant::now() + limit;
    loop {
        let at = archived(uid);
        if at.is_some_and(|a| a >= lsn) {
            return Ok(());
        }
        if std::time::Instant::now() >= until {
            return Err(format!(
                "its WAL is archived up to {}, short of {} where the base backup ended",
                at.map_or("nothing".into(), wal::format_lsn),
                wal::format_lsn(lsn)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stops the archiver of Database `uid` (its pg_receivewal dies with the task).
pub fn stop(uid: &str) {
    if let Some(old) = running().lock().unwrap_or_else(|p| p.into_inner()).remove(uid) {
        old.task.abort();
    }
}

/// The progress as status shows it.
pub fn status(p: &Progress, slot: &str) -> WalStatus {
    WalStatus {
        streaming: p.streaming,
        message: p.message.clone(),
        slot: slot.into(),
        archived_lsn: p.archived.map(|(l, _)| wal::format_lsn(l)),
        archived_at: p.archived.map(|(_, t)| MicroTime(t)),
        segments: p.segments,
    }
}

fn set(progress: &Mutex<Progress>, f: impl FnOnce(&mut Progress)) {
    f(&mut progress.lock().unwrap_or_else(|p| p.into_inner()));
}

async fn run(setup: Setup, spool: PathBuf, progress: Arc<Mutex<Progress>>) {
    loop {
        if !(setup.wanted)() {
            let _ = std::fs::remove_dir_all(&spool);
            return;
        }
        if let Err(why) = stream(&setup, &spool, &progress).await {
            tracing::warn!(slot = setup.slot, error = %why, "WAL archiving stopped; starting again in 5 s");
            set(&progress, |p| {
                p.streaming = false;
                p.message = why;
            });
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One life of pg_receivewal: until it stops or a store write fails.
async fn stream(setup: &Setup, spool: &Path, progress: &Mutex<Progress>) -> Result<(), String> {
    std::fs::create_dir_all(spool).map_err(|e| format!("the WAL spool {}: {e}", spool.display()))?;
    wal::ensure_slot(&setup.target, &setup.slot)
        .await
        .map_err(|e| format!("the replication slot {}: {e}", setup.slot))?;
    let conn = setup.target.connect("postgres").await.map_err(|e| e.to_string())?;
    let size = wal::segment_size(&conn).await.map_err(|e| e.to_string())?;
    let folder = wal_folder(Some(&wal::system_id(&conn).await.map_err(|e| e.to_string())?));
    let mut receiver = wal::receive(&setup.tools, &setup.target, spool, &setup.slot).map_err(|e| e.to_string())?;
    set(progress, |p| {
        p.streaming = true;
        p.message = format!("pg_receivewal streams from slot {}", setup.slot);
    });
    let mut uploaded_partial: Option<(String, u64)> = None;
    loop {
        tokio::time::sleep(setup.interval).await;
        if !(setup.wanted)() {
            return Err("the Database no longer asks for WAL archiving".into());
        }
        if let Ok(Some(status)) = receiver.child.try_wait() {
            return Err(format!("pg_receivewal exited ({status})"));
        }
        // The server's flush position before we read the spool: what the
        // stores hold once this round's uploads land.
        let (server, slot) = wal::positions(&conn, &setup.slot).await.map_err(|e| e.to_string())?;
        let read_at = Timestamp::now();
        let stores = setup.stores.usable();
        let done = ship_complete(&stores, &folder, spool).await?;
        if done > 0 {
            set(progress, |p| p.segments += done);
        }
        let confirmed = slot.unwrap_or(0);
        if let Some((name, path)) = partial(spool)?
            && uploaded_partial.as_ref() != Some(&(name.clone(), confirmed))
        {
            // Only what is written: the rest of the segment is zeros (padded
            // back when a recovery reads it).
            let used = wal::segment_start(&name, size).map_or(size, |start| confirmed.saturating_sub(start).min(size));
            let mut bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            bytes.truncate((used.div_ceil(8192) * 8192).min(size) as usize);
            ship(&stores, &folder, &bytes, &format!("{name}.partial")).await?;
            uploaded_partial = Some((name, confirmed));
        }
        // Everything up to the slot's position is in the stores now; when
        // it has caught up with the server, nothing written is missing.
        set(progress, |p| {
            let moved = p.archived.is_none_or(|(l, _)| l != confirmed);
            if moved && confirmed > 0 {
                p.archived = Some((confirmed, if confirmed >= server { read_at } else { Timestamp::now() }));
            }
        });
    }
}

/// Complete segments in the spool, oldest first, copied then removed.
async fn ship_complete(stores: &[&Store], folder: &str, spool: &Path) -> Result<u64, String> {
    let mut names: Vec<String> = std::fs::read_dir(spool)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| wal::is_segment(n))
        .collect();
    names.sort();
    for n in &names {
        let path = spool.join(n);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        ship(stores, folder, &bytes, n).await?;
        std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    }
    Ok(names.len() as u64)
}

/// The segment being written, if any.
fn partial(spool: &Path) -> Result<Option<(String, PathBuf)>, String> {
    let mut names: Vec<String> = std::fs::read_dir(spool)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.strip_suffix(".partial").is_some_and(wal::is_segment))
        .collect();
    names.sort();
    Ok(names
        .pop()
        .map(|n| (n.trim_end_matches(".partial").to_string(), spool.join(&n))))
}

/// Copies WAL to every store as `<folder>/<name>`; fails if any store does.
async fn ship(stores: &[&Store], folder: &str, bytes: &[u8], name: &str) -> Result<(), String> {
    let mut up = Upload::open(stores, folder, name, Some(Timestamp::now())).await;
    up.write(bytes).await.map_err(|e| e.to_string())?;
    let failed: Vec<String> = up
        .finish()
        .await
        .into_iter()
        .filter_map(|l| l.result.err().map(|e| format!("store {}: {e}", l.store)))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("copying WAL {name}: {}", failed.join("; ")))
    }
}
