//! Point-in-time recovery, away from the live instance: a base backup is
//! unpacked into the operator's temporary space, the archived WAL is laid
//! next to it, and a private PostgreSQL server (the same major version's
//! `postgres`, listening on a Unix socket in that directory only, trusted
//! there alone) replays it up to the target and is promoted. The databases
//! are then dumped from it like from any instance. The server never runs as
//! root (PostgreSQL refuses): when the operator is root, it runs as the
//! `postgres` user. It is stopped and its directory removed when dropped.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use tokio::process::{Child, Command};

use super::{PgError, Target, dump::Tools};
use crate::api::database::SslMode;
use crate::providers::database::{DumpError, Password};

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq)]
pub enum Point {
    /// The end of the archived WAL.
    Latest,
    /// The last transaction committed at or before this time.
    Time(Timestamp),
}

impl Point {
    /// `latest` or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "latest" | "" => Ok(Self::Latest),
            t => t
                .parse::<Timestamp>()
                .map(Self::Time)
                .map_err(|e| format!("{t:?} is neither `latest` nor an RFC 3339 time: {e}")),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Latest => "latest".into(),
            Self::Time(t) => t.to_string(),
        }
    }
}

/// A private server recovering a base backup.
pub struct Scratch {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

/// The uid and gid of the `postgres` user, when the operator runs as root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: checked non-null above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown_all(p: &Path, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p)? {
            chown_all(&e?.path(), (uid, gid))?;
        }
    }
    Ok(())
}

impl Scratch {
    /// A directory in the operator's temporary space: `data/` for the base
    /// backup, `wal/` for the segments.
    pub fn new() -> Result<Self, DumpError> {
        let dir = tempfile::Builder::new()
            .prefix("reprise-recovery-")
            .tempdir()
            .map_err(|e| DumpError::Tool(format!("a recovery directory: {e}")))?;
        for sub in ["data", "wal"] {
            std::fs::create_dir(dir.path().join(sub)).map_err(|e| DumpError::Tool(e.to_string()))?;
        }
        Ok(Self {
            dir,
            child: None,
            port: 5432,
        })
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn wal(&self) -> PathBuf {
        self.dir.path().join("wal")
    }

    /// Unpacks a base backup (tar) from `input` into `data/`.
    pub async fn unpack(&self, input: Box<dyn tokio::io::AsyncRead + Send + Unpin>) -> Result<(), DumpError> {
        let data = self.data();
        let sync = tokio_util::io::SyncIoBridge::new(input);
        tokio::task::spawn_blocking(move || {
            let mut a = tar::Archive::new(sync);
            a.set_preserve_permissions(true);
            a.set_overwrite(false);
            // Entries stay inside `data/` (tar refuses `..` and absolute paths).
            a.unpack(&data)
        })
        .await
        .map_err(|e| DumpError::Tool(e.to_string()))?
        .map_err(|e| DumpError::Corrupt(format!("unpacking the base backup: {e}")))
    }

    /// Starts the server on the unpacked backup, replaying the WAL in `wal/`
    /// up to `point`, and waits until it is promoted. `admin` is the account
    /// reprise then connects as (trusted on the private socket only).
    pub async fn recover(&mut self, tools: &Tools, point: &Point, admin: &str) -> Result<Target, DumpError> {
        let dir = self.dir.path().to_path_buf();
        let data = self.data();
        std::fs::write(data.join("recovery.signal"), b"").map_err(|e| DumpError::Tool(e.to_string()))?;
        std::fs::write(dir.join("hba.conf"), "local all all trust\n").map_err(|e| DumpError::Tool(e.to_string()))?;
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| DumpError::Tool(e.to_string()))?;
        let user = run_as();
        if let Some(ids) = user {
            chown_all(&dir, ids)
                .map_err(|e| DumpError::Tool(format!("giving the recovery directory to postgres: {e}")))?;
        }
        self.port = 5432;
        let program = tools
            .bin_dir
            .as_ref()
            .map(|d| d.join("postgres"))
            .unwrap_or_else(|| "postgres".into());
        let mut c = Command::new(program);
        let restore = format!("cp \"{}/%f\" \"%p\"", self.wal().display());
        c.arg("-D").arg(&data).args([
            "-c",
            "listen_addresses=",
            "-c",
            &format!("unix_socket_directories={}", dir.display()),
            "-c",
            &format!("port={}", self.port),
            "-c",
            &format!("hba_file={}", dir.join("hba.conf").display()),
            "-c",
            &format!("restore_command={restore}"),
            "-c",
            "recovery_target_action=promote",
            "-c",
            "archive_mode=off",
            "-c",
            "max_connections=100",
            // No connection before the promotion: the source's settings
            // (max_connections...) then need not be matched.
            "-c",
            "hot_standby=off",
            "-c",
            "shared_buffers=32MB",
            "-c",
            "fsync=off",
            "-c",
            "ssl=off",
        ]);
        match point {
            Point::Latest => {}
            Point::Time(t) => {
                c.args([
                    "-c",
                    &format!("recovery_target_time={}", t.strftime("%Y-%m-%d %H:%M:%S%.6f+00")),
                ]);
                c.args(["-c", "recovery_target_inclusive=true"]);
            }
        }
        c.kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).map_err(|e| DumpError::Tool(e.to_string()))?);
        super::dump::die_with_parent(&mut c);
        if let Some((uid, gid)) = user {
            c.uid(uid).gid(gid);
        }
        self.child = Some(
            c.spawn()
                .map_err(|e| DumpError::Tool(format!("cannot start postgres: {e}")))?,
        );
        let target = Target {
            host: dir.display().to_string(),
            port: self.port,
            user: admin.into(),
            password: Password(String::new()),
            ssl_mode: SslMode::Disable,
            ca_pem: None,
            connect_timeout: Duration::from_secs(5),
        };
        self.promoted(&target).await?;
        Ok(target)
    }

    /// Waits (at most 10 minutes) for the recovery to end with a promotion.
    async fn promoted(&mut self, target: &Target) -> Result<(), DumpError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(DumpError::Tool(format!(
                    "the recovery server stopped ({status}): {}",
                    self.log_tail()
                )));
            }
            if let Ok(c) = target.connect("postgres").await
                && let Ok(row) = c.query_one("SELECT pg_is_in_recovery()", &[]).await
                && !row.get::<_, bool>(0)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DumpError::Tool(format!(
                    "recovery did not end within 10 minutes: {}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The last lines of the server's log (what recovery said).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("FATAL") || l.contains("recovery"))
            .collect();
        lines[lines.len().saturating_sub(4)..].join(" | ")
    }

    /// The commit time of the last transaction the recovery replayed.
    pub async fn recovered_to(target: &Target) -> Result<Option<Timestamp>, PgError> {
        let c = target.connect("postgres").await?;
        let row = c
            .query_one(
                "SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                &[],
            )
            .await?;
        Ok(row.get::<_, Option<String>>(0).and_then(|t| t.parse().ok()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(c) = &self.child
            && let Some(pid) = c.id()
        {
            // SIGQUIT: immediate shutdown; the directory goes with it.
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGQUIT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_latest_or_a_time() {
        assert_eq!(Point::parse("latest").unwrap(), Point::Latest);
        assert_eq!(
            Point::parse("2026-11-30T12:00:00.5Z").unwrap().describe(),
            "2026-11-30T12:00:00.5Z"
        );
        assert!(Point::parse("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
