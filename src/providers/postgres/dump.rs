//! Dumps and restores with PostgreSQL's own tools, streamed: `pg_dump`'s
//! output goes to the backup store as it comes (hashed on the way), and
//! `pg_restore` reads straight from the store. Memory stays bounded by the
//! upload's part size, whatever the database's size.

use std::{path::PathBuf, process::Stdio, time::Instant};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
};

use super::{PgError, Target, tables};
use crate::providers::backup_store::{DumpRecord, Store, Upload};
pub use crate::providers::database::{DumpError, Scope};

/// Where PostgreSQL's client tools are: a directory, or the PATH.
#[derive(Clone, Debug, Default)]
pub struct Tools {
    pub bin_dir: Option<PathBuf>,
}

impl Tools {
    pub(super) fn command(&self, name: &str) -> Command {
        let program = self
            .bin_dir
            .as_ref()
            .map(|d| d.join(name))
            .unwrap_or_else(|| name.into());
        let mut c = Command::new(program);
        c.kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut c);
        c
    }
}

/// The child is killed when the operator dies, however it dies (SIGKILL
/// included, as when its pod is deleted): an orphaned pg_restore must never
/// go on writing behind a successor's back.
pub(super) fn die_with_parent(c: &mut Command) {
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody is left to wait for us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A libpq tool's environment, with the CA bundle in a file while it runs.
pub(super) struct Env {
    vars: Vec<(String, String)>,
    _ca: Option<tempfile::NamedTempFile>,
}

pub(super) fn env(target: &Target) -> Result<Env, DumpError> {
    let ca = match &target.ca_pem {
        Some(pem) => {
            let mut f = tempfile::NamedTempFile::new().map_err(|e| DumpError::Tool(format!("CA file: {e}")))?;
            std::io::Write::write_all(&mut f, pem).map_err(|e| DumpError::Tool(format!("CA file: {e}")))?;
            Some(f)
        }
        None => None,
    };
    Ok(Env {
        vars: target.libpq_env(ca.as_ref().map(|f| f.path())),
        _ca: ca,
    })
}

pub(super) fn spawn(tools: &Tools, name: &str, args: &[&str], env: &Env, stdin: bool) -> Result<Child, DumpError> {
    let mut c = tools.command(name);
    c.args(args).envs(env.vars.iter().map(|(k, v)| (k, v)));
    if stdin {
        c.stdin(Stdio::piped());
    }
    c.spawn()
        .map_err(|e| DumpError::Tool(format!("cannot run {name}: {e}")))
}

/// The last 2 KiB of a tool's stderr, read while it runs.
pub(super) fn stderr_tail(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let mut err = child.stderr.take().expect("stderr is piped");
    tokio::spawn(async move {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.len() > 2048 {
                all.drain(..all.len() - 2048);
            }
        }
        String::from_utf8_lossy(&all).trim().to_string()
    })
}

pub(super) async fn finish(
    name: &str,
    mut child: Child,
    tail: tokio::task::JoinHandle<String>,
) -> Result<(), DumpError> {
    let status = child
        .wait()
        .await
        .map_err(|e| DumpError::Tool(format!("{name}: {e}")))?;
    let tail = tail.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(DumpError::Tool(format!("{name} failed ({status}): {tail}")))
    }
}

/// Dumps `db` into `out` (pg_dump's custom format) and measures the verify
/// `tables` in the same snapshot, so the manifest describes exactly what the
/// dump holds. The caller finishes or aborts `out`.
pub async fn dump(
    tools: &Tools,
    target: &Target,
    out: &mut Upload<'_>,
    db: &str,
    verify: &[(String, String)],
) -> Result<DumpRecord, DumpError> {
    let conn = target.connect(db).await?;
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(PgError::from)?;
    let snapshot: String = conn
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(PgError::from)?
        .get(0);
    let mut measures = vec![];
    for (schema, name) in verify {
        if !tables::exists(&conn, schema, name).await? {
            return Err(DumpError::Tool(format!(
                "verify table {db}.{schema}.{name} does not exist: a backup without it could not be verified"
            )));
        }
        measures.push(tables::measure_with_objects(&conn, schema, name).await?);
    }
    let env = env(target)?;
    let snapshot_arg = format!("--snapshot={snapshot}");
    let mut child = spawn(
        tools,
        "pg_dump",
        &["--format=custom", "--no-password", &snapshot_arg, "--dbname", db],
        &env,
        false,
    )?;
    let tail = stderr_tail(&mut child);
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut buf = vec![0u8; 1 << 20];
    let copy = async {
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| DumpError::Tool(format!("reading pg_dump: {e}")))?;
            if n == 0 {
                return Ok::<(), DumpError>(());
            }
            out.write(&buf[..n]).await?;
            crate::crash::point("backup:writing");
        }
    };
    // Every table's row count, in the dump's snapshot, while pg_dump reads it.
    let (copied, contents) = tokio::join!(copy, tables::contents(&conn));
    let ended = finish("pg_dump", child, tail).await;
    let contents = copied.and(ended).and_then(|()| contents.map_err(DumpError::from))?;
    let _ = conn.batch_execute("COMMIT").await;
    let (bytes, sha256) = out.plain();
    Ok(DumpRecord {
        name: db.into(),
        file: format!("{db}.dump"),
        bytes,
        sha256,
        tables: measures,
        contents,
        stored: None,
    })
}

/// Streams `input` into `child`'s stdin; returns the bytes written.
async fn feed(child: &mut Child, mut input: impl AsyncRead + Unpin) -> Result<u64, DumpError> {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let n = tokio::io::copy(&mut input, &mut stdin).await;
    drop(stdin);
    n.map_err(|e| DumpError::Tool(format!("streaming the backup: {e}")))
}

/// Restores dump `rec` of backup `id` into `into` (a database name), in one
/// transaction: a failed restore leaves nothing half-done. Returns the bytes read.
pub async fn restore(
    tools: &Tools,
    target: &Target,
    store: &Store,
    id: &str,
    rec: &DumpRecord,
    into: &str,
    scope: Scope<'_>,
) -> Result<u64, DumpError> {
    let env = env(target)?;
    // A local store's file in the clear is read by pg_restore itself, as from any dump file.
    let local = store.local_dump(id, rec);
    let list = match scope {
        Scope::Database => None,
        Scope::Tables(wanted) => {
            let local = local.as_ref().map(|p| p.display().to_string());
            let mut args = vec!["--list"];
            args.extend(local.as_deref());
            let mut child = spawn(tools, "pg_restore", &args, &env, local.is_none())?;
            let tail = stderr_tail(&mut child);
            let mut out = child.stdout.take().expect("stdout is piped");
            let reader = tokio::spawn(async move {
                let mut s = String::new();
                out.read_to_string(&mut s).await.map(|_| s)
            });
            if local.is_none() {
                // pg_restore stops reading once it has the table of contents.
                let _ = feed(&mut child, store.open_dump(id, rec).await?).await;
            }
            finish("pg_restore --list", child, tail).await?;
            let toc = reader
                .await
                .map_err(|e| DumpError::Tool(e.to_string()))?
                .map_err(|e| DumpError::Tool(format!("reading pg_restore --list: {e}")))?;
            let mut f = tempfile::NamedTempFile::new().map_err(|e| DumpError::Tool(format!("list file: {e}")))?;
            let selected = select_tables(&toc, wanted);
            std::io::Write::write_all(&mut f, selected.as_bytes())
                .map_err(|e| DumpError::Tool(format!("list file: {e}")))?;
            Some(f)
        }
    };
    let list_arg = list.as_ref().map(|f| format!("--use-list={}", f.path().display()));
    let mut args = vec![
        "--no-password",
        "--exit-on-error",
        "--single-transaction",
        "--dbname",
        into,
    ];
    if let Some(l) = &list_arg {
        args.push(l);
    }
    let local_arg = local.as_ref().map(|p| p.display().to_string());
    args.extend(local_arg.as_deref());
    let started = Instant::now();
    let mut child = spawn(tools, "pg_restore", &args, &env, local.is_none())?;
    let tail = stderr_tail(&mut child);
    let mut out = child.stdout.take().expect("stdout is piped");
    let drain = tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::sink()).await });
    let fed = match &local {
        Some(_) => Ok(rec.bytes),
        None => feed(&mut child, store.open_dump(id, rec).await?).await,
    };
    let ended = finish("pg_restore", child, tail).await;
    let _ = drain.await;
    ended?;
    let bytes = fed?;
    tracing::debug!(backup = id, database = into, bytes, took = ?started.elapsed(), "pg_restore done");
    Ok(bytes)
}

/// The table-of-contents lines of `toc` (pg_restore --list) that belong to the
/// `wanted` tables, in their order (a streamed archive is read in order).
pub fn select_tables(toc: &str, wanted: &[tables::TableMeasure]) -> String {
    const TYPES: [&str; 14] = [
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "FK CONSTRAINT",
        "TABLE DATA",
        "ROW SECURITY",
        "CONSTRAINT",
        "SEQUENCE",
        "DEFAULT",
        "TRIGGER",
        "COMMENT",
        "POLICY",
        "INDEX",
        "TABLE",
        "ACL",
    ];
    let mut out = String::new();
    for line in toc.lines() {
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        // `<id>; <catalog oid> <oid> <TYPE> <schema> <name...> <owner>`
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(_), Some(_), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(ty) = TYPES.iter().find(|t| rest.starts_with(&format!("{t} "))) else {
            continue;
        };
        let words: Vec<&str> = rest[ty.len()..].split_whitespace().collect();
        let keep = wanted.iter().any(|t| {
            let schema_is = words.first() == Some(&t.schema.as_str());
            let name = words.get(1).copied().unwrap_or_default();
            let of_table = |w: &[&str]| w.windows(2).any(|p| p[0] == "TABLE" && p[1] == t.name);
            let of_sequence = |w: &[&str]| {
                w.windows(2)
                    .any(|p| p[0] == "SEQUENCE" && t.sequences.iter().any(|s| s == p[1]))
            };
            schema_is
                && match *ty {
                    "TABLE" | "TABLE DATA" | "CONSTRAINT" | "FK CONSTRAINT" | "DEFAULT" | "TRIGGER" | "POLICY"
                    | "ROW SECURITY" => name == t.name,
                    "INDEX" => t.indexes.iter().any(|i| i == name),
                    "SEQUENCE" | "SEQUENCE OWNED BY" | "SEQUENCE SET" => t.sequences.iter().any(|s| s == name),
                    "ACL" | "COMMENT" => of_table(&words) || of_sequence(&words),
                    _ => false,
                }
        });
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_restore_takes_the_table_and_what_belongs_to_it_only() {
        let toc = "\
;\n; Archive created at 2026-11-29\n;\n\
215; 1259 16390 TABLE public orders shop_admin\n\
216; 1259 16389 SEQUENCE public orders_id_seq shop_admin\n\
3340; 0 0 SEQUENCE OWNED BY public orders_id_seq shop_admin\n\
217; 1259 16400 TABLE public products shop_admin\n\
3190; 2604 16393 DEFAULT public orders id shop_admin\n\
3335; 0 16390 TABLE DATA public orders shop_admin\n\
3336; 0 16400 TABLE DATA public products shop_admin\n\
3345; 0 0 SEQUENCE SET public orders_id_seq shop_admin\n\
3192; 2606 16395 CONSTRAINT public orders orders_pkey shop_admin\n\
3193; 1259 16398 INDEX public orders_created_idx shop_admin\n\
3194; 1259 16399 INDEX public products_name_idx shop_admin\n\
3195; 2606 16401 FK CONSTRAINT public order_lines order_lines_order_fkey shop_admin\n\
3346; 0 0 ACL public TABLE orders shop_admin\n\
3347; 0 0 ACL public TABLE products shop_admin\n";
        let wanted = [tables::TableMeasure {
            schema: "public".into(),
            name: "orders".into(),
            rows: 0,
            checksum: "0".into(),
            indexes: vec!["orders_pkey".into(), "orders_created_idx".into()],
            sequences: vec!["orders_id_seq".into()],
        }];
        let selected = select_tables(toc, &wanted);
        let ids: Vec<&str> = selected.lines().map(|l| l.split(';').next().unwrap()).collect();
        assert_eq!(
            ids,
            ["215", "216", "3340", "3190", "3335", "3345", "3192", "3193", "3346"]
        );
    }
}
