//! Benchmark (not a test): Database backups and restores of a generated
//! PostgreSQL database, reprise side by side with bare pg_dump/pg_restore to
//! the same disk in the same run, and the operator's memory while it backs up.
//!
//! For each size (REPRISE_BENCH_DB_MIB, default "256,1024"): generate a
//! database of at least that size, time `pg_dump -Fc` to a file and
//! `pg_restore --single-transaction --exit-on-error` from it, then have
//! reprise (release build, under its ServiceAccount) back it up to a local
//! store on the same disk and restore it after a `DROP DATABASE`, reading the
//! durations reprise records in status. reprise's backup also measures the
//! verify table in the dump's snapshot, and its restore first reads the whole
//! file to check its SHA-256, then verifies the table: both are counted.
//! The operator's RSS is sampled every 100 ms during the backup.
//!
//! With REPRISE_BENCH_OFFSITE=1 every backup goes to two stores at once: the
//! local one and an off-site bucket on SeaweedFS (loopback), encrypted there
//! with age; the restore reads the local store.
//!
//! With REPRISE_BENCH_WAL=1 (and REPRISE_BENCH_OFFSITE=1) it then measures
//! continuous archiving: a Database with `backup.wal` archiving to the
//! off-site bucket only (not encrypted, so the sizes are readable), a steady
//! pgbench load (REPRISE_BENCH_WAL_TPS, default 200 transactions/s) for
//! REPRISE_BENCH_WAL_SECONDS (default 60), and every 250 ms a sample of the
//! server's WAL position after a commit; a sample's lag is the time until the
//! bucket holds it (`wal/<segment>` whole, or `wal/<segment>.partial` past the
//! sample's page: an upper bound by at most one 8 KiB WAL page). The lags'
//! p50/p99/max are the data-loss window if the site were lost then.
//!
//! `cargo bench --bench databases` (uses the shared local control plane).

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use support::{
    TestNamespace,
    operator::{Operator, Options},
    postgres::{ADMIN, Postgres},
};

fn seconds(d: &str) -> f64 {
    d.trim_end_matches('s').parse().expect("a duration in seconds")
}

fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn tool(pg: &Postgres, name: &str) -> Command {
    let mut c = Command::new(pg.bin.join(name));
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", ADMIN)
        .env("PGPASSWORD", &pg.admin_password);
    c
}

/// Grows database `bench` to at least `mib` MiB; returns its size in bytes.
fn generate(pg: &Postgres, mib: u64) -> u64 {
    pg.sql("postgres", "DROP DATABASE IF EXISTS bench WITH (FORCE)");
    pg.sql("postgres", "CREATE DATABASE bench");
    pg.sql(
        "bench",
        "CREATE TABLE big (id bigint PRIMARY KEY, a text, b text, n int); \
         CREATE TABLE orders (id serial PRIMARY KEY, qty int); \
         INSERT INTO orders (qty) SELECT g FROM generate_series(1, 10000) g",
    );
    let mut next = 1u64;
    loop {
        let size: u64 = pg.sql("bench", "SELECT pg_database_size('bench')").parse().unwrap();
        if size >= mib << 20 {
            return size;
        }
        let n = 500_000;
        pg.sql(
            "bench",
            &format!(
                "INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text), md5((g * 7)::text), g % 1000 \
                 FROM generate_series({next}, {}) g",
                next + n - 1
            ),
        );
        next += n;
    }
}

/// The off-site vault of REPRISE_BENCH_OFFSITE=1: SeaweedFS, its keys and an age key.
struct Vault {
    s3: support::s3::Seaweed,
    key: String,
}

impl Vault {
    fn start() -> Self {
        let s3 = support::s3::Seaweed::start();
        s3.create_bucket("vault", false);
        let out = Command::new("age-keygen").output().expect("age-keygen");
        let key = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .to_string();
        Self { s3, key }
    }

    /// The Secrets and the `stores:` list replacing the single store.
    fn patch(&self, yaml: &str, local: &Path) -> String {
        let secrets = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: vault, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{accessKeyId: {}, secretAccessKey: {}, k1: \"{}\"}}\n---\n",
            self.s3.access_key, self.s3.secret_key, self.key
        );
        let stores = format!(
            "stores: [{{name: here, local: {{path: {}}}}}, {{name: vault, offsite: true, s3: {{endpoint: \"{}\", bucket: vault, credentialsSecretRef: {{name: vault}}}}, encryption: {{keySecretRef: {{name: vault, key: k1}}}}}}]",
            local.display(),
            self.s3.endpoint()
        );
        let single = format!("store: {{local: {{path: {}}}}}", local.display());
        secrets + &yaml.replace(&single, &stores)
    }
}

fn database(port: u16, store: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: \"PW\"}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {{name: bench}}\nspec:\n  instance:\n    external: {{host: 127.0.0.1, port: {port}, adminSecretRef: {{name: pg-admin}}, sslMode: Disable}}\n  databases: [{{name: bench}}]\n  backup:\n    schedule: \"0 0 1 1 *\"\n    retention: {{count: 1}}\n    store: {{local: {{path: {}}}}}\n  verify:\n    tables: [{{database: bench, name: orders}}]\n",
        store.display()
    )
}

fn status(ns: &TestNamespace) -> serde_json::Value {
    status_of(ns, "bench")
}

async fn run(pg: &Postgres, mib: u64, work: &Path, vault: Option<&Vault>) {
    let size = generate(pg, mib);
    println!("\n== database of {} MiB (pg_database_size)", size >> 20);
    let bare = work.join("bare.dump");
    let dump_s = timed(tool(pg, "pg_dump").args(["-Fc", "-f"]).arg(&bare).arg("bench"));
    let dump_bytes = std::fs::metadata(&bare).unwrap().len();
    pg.sql("postgres", "CREATE DATABASE bare_restore");
    let restore_s = timed(
        tool(pg, "pg_restore")
            .args(["--single-transaction", "--exit-on-error", "-d", "bare_restore"])
            .arg(&bare),
    );
    pg.sql("postgres", "DROP DATABASE bare_restore");
    std::fs::remove_file(&bare).unwrap();

    let ns = TestNamespace::new("bench-db");
    let mut op = Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    let store = work.join("store");
    let mut yaml = database(pg.port, &store).replace("\"PW\"", &format!("\"{}\"", pg.admin_password));
    if let Some(v) = vault {
        yaml = v.patch(&yaml, &store);
    }
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "database/bench", "--timeout=120s"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = op.rss_kib().0;
    ns.k(&["annotate", "--overwrite", "database/bench", "reprise.dev/backup-now=1"]);
    let mut peak = idle;
    let backup = loop {
        peak = peak.max(op.rss_kib().0);
        let s = status(&ns);
        let copies = s["status"]["stores"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|c| c["lastCopy"]["id"] == s["status"]["lastBackup"]["id"])
                .count()
        });
        if s["status"]["lastBackup"]["id"].is_string() && copies == if vault.is_some() { 2 } else { 1 } {
            break s["status"]["lastBackup"].clone();
        }
        if s["status"]["conditions"].to_string().contains("BackupFailed") {
            panic!("backup failed: {}", s["status"]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r_dump_s = seconds(backup["duration"].as_str().unwrap());
    let r_bytes = backup["bytes"].as_u64().unwrap();

    pg.sql("postgres", "DROP DATABASE bench WITH (FORCE)");
    let restore = loop {
        let s = status(&ns);
        let r = &s["status"]["lastRestore"];
        if r["outcome"].is_string() {
            break r.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(restore["outcome"], "Verified", "{restore}");
    let r_restore_s = seconds(restore["duration"].as_str().unwrap());
    let rows: String = pg.sql("bench", "SELECT count(*) FROM big");
    op.kill();

    let mib_s = |b: u64, s: f64| b as f64 / s / (1 << 20) as f64;
    println!(
        "backup : bare pg_dump {dump_s:.1}s ({} MiB, {:.1} MiB/s) | reprise {r_dump_s:.1}s ({} MiB, {:.1} MiB/s) | ratio {:.2}",
        dump_bytes >> 20,
        mib_s(dump_bytes, dump_s),
        r_bytes >> 20,
        mib_s(r_bytes, r_dump_s),
        dump_s / r_dump_s
    );
    println!(
        "restore: bare pg_restore {restore_s:.1}s ({:.1} MiB/s) | reprise {r_restore_s:.1}s ({:.1} MiB/s, checksum pass and verification included) | ratio {:.2}; {rows} rows back",
        mib_s(dump_bytes, restore_s),
        mib_s(r_bytes, r_restore_s),
        restore_s / r_restore_s
    );
    println!(
        "operator RSS: {} MiB before the backup, peak {} MiB during it",
        idle / 1024,
        peak / 1024
    );
    std::fs::remove_dir_all(&store).ok();
}

/// WAL segment name (timeline 1, 16 MiB segments) and offset of `lsn`.
fn segment_of(lsn: u64) -> (String, u64) {
    let seg = lsn >> 24;
    (format!("{:08X}{:08X}{:08X}", 1, seg >> 8, seg & 0xFF), lsn & 0xFF_FFFF)
}

fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Whether the bucket holds WAL up to `lsn`.
async fn archived(bucket: &dyn object_store::ObjectStore, prefix: &str, lsn: u64) -> bool {
    use object_store::{ObjectStoreExt, path::Path as Key};
    let (name, offset) = segment_of(lsn);
    if bucket.head(&Key::from(format!("{prefix}{name}"))).await.is_ok() {
        return true;
    }
    match bucket.head(&Key::from(format!("{prefix}{name}.partial"))).await {
        // Past the page holding `lsn`: the shipped part is rounded up to pages.
        Ok(m) => m.size >= (offset / 8192 + 2) * 8192,
        Err(_) => false,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Continuous archiving under a steady write load: lag from commit to the
/// off-site bucket.
async fn wal_lag(pg: &Postgres, vault: &Vault) {
    let tps: u32 = std::env::var("REPRISE_BENCH_WAL_TPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let secs: u64 = std::env::var("REPRISE_BENCH_WAL_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    pg.sql("postgres", "DROP DATABASE IF EXISTS walbench WITH (FORCE)");
    pg.sql("postgres", "CREATE DATABASE walbench");
    timed(tool(pg, "pgbench").args(["-i", "-q", "-s", "10", "walbench"]));
    let ns = TestNamespace::new("bench-wal");
    let mut op = Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: \"{pw}\"}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: vault, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{accessKeyId: {ak}, secretAccessKey: {sk}}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {{name: walbench}}\nspec:\n  instance:\n    external: {{host: 127.0.0.1, port: {port}, adminSecretRef: {{name: pg-admin}}, sslMode: Disable}}\n  databases: [{{name: walbench}}]\n  backup:\n    schedule: \"0 0 1 1 *\"\n    retention: {{count: 1}}\n    wal: {{}}\n    stores: [{{name: vault, offsite: true, s3: {{endpoint: \"{endpoint}\", bucket: vault, credentialsSecretRef: {{name: vault}}}}}}]\n",
        pw = pg.admin_password,
        ak = vault.s3.access_key,
        sk = vault.s3.secret_key,
        port = pg.port,
        endpoint = vault.s3.endpoint(),
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    let started = Instant::now();
    while status_of(&ns, "walbench")["status"]["wal"]["archivedLsn"]
        .as_str()
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "WAL archiving never started: {}",
            status_of(&ns, "walbench")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("vault")
        .with_access_key_id(&vault.s3.access_key)
        .with_secret_access_key(&vault.s3.secret_key)
        .with_region("us-east-1")
        .with_endpoint(vault.s3.endpoint())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    // The instance's WAL folder: `wal-<system identifier>`.
    let system = pg.sql("postgres", "SELECT system_identifier FROM pg_control_system()");
    let prefix = format!("{}/walbench/wal-{}/", ns.name, system.trim());
    let mut load = tool(pg, "pgbench")
        .args([
            "-n",
            "-c",
            "2",
            "-R",
            &tps.to_string(),
            "-T",
            &(secs + 10).to_string(),
            "walbench",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pgbench");
    let idle = op.rss_kib().0;
    let mut peak = idle;
    let mut pending: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut lags = vec![];
    let begin = Instant::now();
    let mut next_sample = begin;
    while begin.elapsed() < Duration::from_secs(secs) || !pending.is_empty() {
        if begin.elapsed() < Duration::from_secs(secs) && Instant::now() >= next_sample {
            let lsn = parse_lsn(&pg.sql("walbench", "SELECT pg_current_wal_lsn()"));
            pending.push_back((Instant::now(), lsn));
            next_sample += Duration::from_millis(250);
        }
        while let Some(&(t, lsn)) = pending.front() {
            if !archived(&bucket, &prefix, lsn).await {
                break;
            }
            lags.push(t.elapsed().as_secs_f64());
            pending.pop_front();
        }
        assert!(
            begin.elapsed() < Duration::from_secs(secs + 60),
            "WAL stopped reaching the bucket: {}",
            status_of(&ns, "walbench")["status"]["wal"]
        );
        peak = peak.max(op.rss_kib().0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = load.kill();
    let _ = load.wait();
    let wal = status_of(&ns, "walbench")["status"]["wal"].clone();
    op.kill();
    lags.sort_by(f64::total_cmp);
    println!(
        "\n== WAL archiving to the off-site bucket under pgbench at {tps} tx/s for {secs}s ({} samples, {} segments shipped)",
        lags.len(),
        wal["segments"]
    );
    println!(
        "commit -> in the bucket: p50 {:.2}s, p99 {:.2}s, max {:.2}s (uploadInterval 2s); operator RSS {} MiB before, peak {} MiB",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().unwrap(),
        idle / 1024,
        peak / 1024
    );
    pg.sql("postgres", "DROP DATABASE IF EXISTS walbench WITH (FORCE)");
}

fn status_of(ns: &TestNamespace, name: &str) -> serde_json::Value {
    serde_json::from_str(&ns.k(&["get", &format!("database/{name}"), "-o", "json"])).unwrap()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench databases`");
        return;
    }
    let sizes: Vec<u64> = std::env::var("REPRISE_BENCH_DB_MIB")
        .unwrap_or_else(|_| "256,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = support::bench_runtime();
    rt.block_on(async {
        support::plane();
        let pg = Postgres::start();
        let work = tempfile::Builder::new().prefix("reprise-bench-db-").tempdir().unwrap();
        println!(
            "PostgreSQL {} on 127.0.0.1:{}; files under {}",
            pg.sql("postgres", "SHOW server_version"),
            pg.port,
            work.path().display()
        );
        let vault = std::env::var("REPRISE_BENCH_OFFSITE")
            .is_ok_and(|v| v == "1")
            .then(Vault::start);
        if let Some(v) = &vault {
            println!(
                "every backup also goes to an encrypted off-site store: SeaweedFS at {}",
                v.s3.endpoint()
            );
        }
        for mib in sizes {
            run(&pg, mib, work.path(), vault.as_ref()).await;
        }
        if std::env::var("REPRISE_BENCH_WAL").is_ok_and(|v| v == "1") {
            wal_lag(
                &pg,
                vault
                    .as_ref()
                    .expect("REPRISE_BENCH_WAL=1 needs REPRISE_BENCH_OFFSITE=1"),
            )
            .await;
        }
    });
}
