//! The write-ahead log, with PostgreSQL's own tools: a physical replication
//! slot so no segment is recycled before reprise has it, `pg_receivewal`
//! streaming into a spool directory, and `pg_basebackup` as a tar stream to
//! the stores. What the DBA must allow: the admin account has REPLICATION (or
//! is a superuser), pg_hba.conf has a `replication` line for it, and
//! `max_wal_senders` / `max_replication_slots` leave one of each to reprise.

use std::path::Path;

use tokio::{io::AsyncReadExt, process::Child};

use super::{
    PgError, Target,
    dump::{Tools, env, finish, spawn, stderr_tail},
};
use crate::providers::{
    backup_store::{BaseRecord, Upload},
    database::DumpError,
};

/// The slot of Database `namespace/name` unless the spec names one.
pub fn slot_name(namespace: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut s = format!("reprise_{}_{}", clean(namespace), clean(name));
    s.truncate(63);
    s
}

/// A WAL position as PostgreSQL writes it (`X/Y`), as a number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The name of the segment holding `lsn` on `timeline` (24 hex digits).
pub fn segment_of(timeline: u32, lsn: u64, segment_size: u64) -> String {
    let seg = lsn / segment_size;
    let per_id = 0x1_0000_0000 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", seg / per_id, seg % per_id)
}

/// Where segment `name` starts, for segments of `size` bytes.
pub fn segment_start(name: &str, size: u64) -> Option<u64> {
    if !is_segment(name) {
        return None;
    }
    let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
    let lo = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some((hi * (0x1_0000_0000 / size) + lo) * size)
}

/// Whether `name` is a WAL segment file's name (24 hex digits).
pub fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit())
}

/// Creates the physical slot if it does not exist (reserving WAL at once).
pub async fn ensure_slot(target: &Target, slot: &str) -> Result<(), PgError> {
    let c = target.connect("postgres").await?;
    let exists = c
        .query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await?
        .is_some();
    if !exists {
        c.execute("SELECT pg_create_physical_replication_slot($1, true)", &[&slot])
            .await?;
    }
    Ok(())
}

/// The server's WAL segment size in bytes.
/// The instance's system identifier: what tells its WAL from another
/// instance's (two clusters both write segment 000000010000000000000003).
pub async fn system_id(c: &tokio_postgres::Client) -> Result<String, PgError> {
    let row = c
        .query_one("SELECT system_identifier::text FROM pg_control_system()", &[])
        .await?;
    Ok(row.get::<_, String>(0))
}

/// The server's WAL flush position.
pub async fn current_flush(c: &tokio_postgres::Client) -> Result<String, PgError> {
    let row = c.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await?;
    Ok(row.get::<_, String>(0))
}

pub async fn segment_size(c: &tokio_postgres::Client) -> Result<u64, PgError> {
    let row = c
        .query_one(
            "SELECT setting::bigint * 1 FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Where the server has flushed its WAL, and where the slot stands (what
/// pg_receivewal has confirmed flushed on our side).
pub async fn positions(c: &tokio_postgres::Client, slot: &str) -> Result<(u64, Option<u64>), PgError> {
    let row = c
        .query_one(
            "SELECT pg_current_wal_flush_lsn()::text, \
             (SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await?;
    let server = parse_lsn(row.get::<_, &str>(0)).unwrap_or(0);
    let slot = row.get::<_, Option<&str>>(1).and_then(parse_lsn);
    Ok((server, slot))
}

/// pg_receivewal running, with its environment (a CA file lives as long).
pub struct Receiver {
    pub child: Child,
    _env: super::dump::Env,
}

/// Starts pg_receivewal into `spool`, confirming each flush at once.
pub fn receive(tools: &Tools, target: &Target, spool: &Path, slot: &str) -> Result<Receiver, DumpError> {
    let env = env(target)?;
    let dir = spool.display().to_string();
    let slot_arg = format!("--slot={slot}");
    let child = spawn(
        tools,
        "pg_receivewal",
        &[
            "-D",
            &dir,
            &slot_arg,
            "--synchronous",
            "--status-interval=1",
            "--no-loop",
            "--no-password",
        ],
        &env,
        false,
    )?;
    Ok(Receiver { child, _env: env })
}

/// A base backup of the whole instance (tar, WAL left to the archive) into `out`.
pub async fn base_backup(
    tools: &Tools,
    target: &Target,
    out: &mut Upload<'_>,
    version_num: i32,
) -> Result<BaseRecord, DumpError> {
    let env = env(target)?;
    let mut child = spawn(
        tools,
        "pg_basebackup",
        &[
            "-D",
            "-",
            "-Ft",
            "-X",
            "none",
            "--checkpoint=fast",
            "--no-password",
            "-v",
            "-l",
            "reprise",
        ],
        &env,
        false,
    )?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut buf = vec![0u8; 1 << 20];
    // The tar starts with backup_label, which says where recovery starts.
    let mut head: Vec<u8> = Vec::new();
    loop {
        let n = stdout
            .read(&mut buf)
            .await
            .map_err(|e| DumpError::Tool(format!("reading pg_basebackup: {e}")))?;
        if n == 0 {
            break;
        }
        if head.len() < 64 << 10 {
            head.extend_from_slice(&buf[..n.min((64 << 10) - head.len())]);
        }
        out.write(&buf[..n]).await?;
    }
    let status = child.wait().await.map_err(|e| DumpError::Tool(e.to_string()))?;
    let log = err.await.unwrap_or_default();
    if !status.success() {
        let tail: String = log
            .chars()
            .rev()
            .take(1500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(DumpError::Tool(format!(
            "pg_basebackup failed ({status}): {}",
            tail.trim()
        )));
    }
    let (lsn_text, segment) = start_of(&String::from_utf8_lossy(&head))
        .ok_or_else(|| DumpError::Tool("the base backup has no backup_label saying where it starts".into()))?;
    let (bytes, sha256) = out.plain();
    let c = target.connect("postgres").await?;
    let segment_size = segment_size(&c).await?;
    let system = Some(system_id(&c).await?);
    let end = current_flush(&c).await?;
    Ok(BaseRecord {
        segment_size,
        system,
        end_lsn: Some(end),
        file: "base.tar".into(),
        bytes,
        sha256,
        stored: None,
        start_lsn: lsn_text,
        start_segment: segment,
        server_version_num: version_num,
    })
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` of a backup_label.
pub fn start_of(label: &str) -> Option<(String, String)> {
    let line = label.split("START WAL LOCATION: ").nth(1)?;
    let lsn = line.split_whitespace().next()?.to_string();
    parse_lsn(&lsn)?;
    let file = line.split("(file ").nth(1)?.get(..24)?.to_string();
    is_segment(&file).then_some((lsn, file))
}

/// Waits for a child, for tools run to their end elsewhere.
pub async fn ended(name: &str, mut child: Child) -> Result<(), DumpError> {
    let tail = stderr_tail(&mut child);
    finish(name, child, tail).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_segments_read_as_postgres_writes_them() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0300_0148), "1/3000148");
        assert_eq!(parse_lsn("nonsense"), None);
        let mb16 = 16 << 20;
        assert_eq!(segment_of(1, 0x3000148, mb16), "000000010000000000000003");
        assert_eq!(segment_of(2, (1 << 32) + 0x2000000, mb16), "000000020000000100000002");
        assert!(is_segment("000000010000000000000003") && !is_segment("000000010000000000000003.partial"));
        assert_eq!(
            segment_start("000000020000000100000002", mb16),
            Some((1 << 32) + 0x2000000)
        );
        let label = "ustar\0backup_label\0START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n";
        assert_eq!(
            start_of(label),
            Some(("0/2000028".into(), "000000010000000000000002".into()))
        );
        assert_eq!(start_of("START WAL LOCATION: nonsense"), None);
        let s = slot_name("Shop-NS", &"x".repeat(80));
        assert!(s.len() == 63 && s.starts_with("reprise_shop_ns_x"), "{s}");
    }
}
