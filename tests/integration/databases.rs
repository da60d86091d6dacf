//! Databases against a real PostgreSQL server started for each test: roles
//! and grants as the spec says, password rotation from Secrets, backups with
//! a manifest, restores verified against it (also past a corrupted backup),
//! unreachable instances reported without a hot loop, and no password in any
//! log line, Event or status.

use std::{path::Path, time::Duration};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::support::{
    OPERATOR_USER, TestNamespace, audit, condition, eventually,
    operator::{Operator, Options},
    plane,
    postgres::{ADMIN, Postgres},
    tls::certs,
};

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

pub(crate) const APP_PW: &str = "app-Pw-5e1f0c";
pub(crate) const SHOP_ADMIN_PW: &str = "shopadmin-Pw-77b2";
pub(crate) const REPORTING_PW: &str = "reporting-Pw-19ad";
const REPORTING_PW2: &str = "reporting-Pw-rotated-3c4d";

pub(crate) fn secrets_yaml(admin_password: &str, reporting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: \"{admin_password}\"}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-accounts, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{shop-app: \"{APP_PW}\", shop-admin: \"{SHOP_ADMIN_PW}\", reporting: \"{reporting}\"}}\n"
    )
}

/// The example's Database, pointed at the test's server and backup directory.
fn database_yaml(port: u16, backups: &Path, retention: u32) -> String {
    format!(
        r#"apiVersion: reprise.dev/v1alpha1
kind: Database
metadata: {{name: shop-db}}
spec:
  instance:
    external: {{host: 127.0.0.1, port: {port}, adminSecretRef: {{name: pg-admin}}, sslMode: Prefer, connectTimeout: 3s}}
  databases:
    - {{name: shop, owner: shop_admin}}
  roles:
    - name: shop_app
      passwordSecretRef: {{name: shop-accounts, key: shop-app}}
      grants:
        - {{database: shop, privileges: [Connect]}}
        - {{database: shop, schema: public, privileges: [Usage]}}
        - {{database: shop, schema: public, tables: [orders, products], privileges: [Select, Insert, Update, Delete]}}
    - name: shop_admin
      passwordSecretRef: {{name: shop-accounts, key: shop-admin}}
      grants:
        - {{database: shop, privileges: [All]}}
    - name: reporting
      passwordSecretRef: {{name: shop-accounts, key: reporting}}
      grants:
        - {{database: shop, privileges: [Connect]}}
        - {{database: shop, schema: public, privileges: [Usage]}}
        - {{database: shop, schema: public, tables: [orders, products], privileges: [Select]}}
  backup:
    schedule: "0 0 1 1 *"
    retention: {{count: {retention}}}
    store:
      local: {{path: {}}}
  verify:
    tables:
      - {{database: shop, name: orders}}
      - {{database: shop, name: products}}
"#,
        backups.display()
    )
}

pub(crate) const SCHEMA: &str = "CREATE TABLE products (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2));\
     CREATE TABLE orders (id serial PRIMARY KEY, product int REFERENCES products(id), qty int, placed timestamptz DEFAULT now());\
     CREATE INDEX orders_placed_idx ON orders (placed);";

pub(crate) fn seed(pg: &Postgres, orders: u32) {
    pg.sql(
        "shop",
        "INSERT INTO products (name, price) SELECT 'p' || g, g * 1.5 FROM generate_series(1, 50) g",
    );
    pg.sql(
        "shop",
        &format!("INSERT INTO orders (product, qty) SELECT 1 + g % 50, g FROM generate_series(1, {orders}) g"),
    );
}

fn get(ns: &TestNamespace) -> Value {
    serde_json::from_str(&ns.k(&["get", "database/shop-db", "-o", "json"])).expect("json")
}

fn operator(ns: &TestNamespace) -> Operator {
    Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        ..Options::namespace(&ns.name)
    })
}

async fn wait_for(ns: &TestNamespace, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    ns.wait_for("database/shop-db", what, secs, f).await
}

pub(crate) fn cond_is(v: &Value, type_: &str, status: &str) -> bool {
    condition(v, type_).is_some_and(|(s, _, _)| s == status)
}

/// No password shows in the operator's log, the namespace's Events or the Database's status.
fn assert_no_passwords(op: &Operator, ns: &TestNamespace, passwords: &[&str]) {
    let logs = op.logs();
    let events = ns.k(&["get", "events", "-o", "yaml"]);
    let status = serde_json::to_string(&get(ns)["status"]).unwrap();
    for p in passwords {
        assert!(!logs.contains(p), "a password appears in the operator's log");
        assert!(!events.contains(p), "a password appears in an Event");
        assert!(!status.contains(p), "a password appears in the status");
    }
}

#[tokio::test]
async fn roles_grants_and_password_rotation_follow_the_spec() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("db-accounts");
    let backups = tempfile::tempdir().unwrap();
    let mut op = operator(&ns);
    op.wait_ready().await;
    let (ok, out) = ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW));
    assert!(ok, "{out}");
    let (ok, out) = ns.apply(&database_yaml(pg.port, backups.path(), 7));
    assert!(ok, "{out}");
    let out = ns.k(&["wait", "--for=condition=Ready", "database/shop-db", "--timeout=60s"]);
    assert!(out.contains("condition met"), "{out}");
    let v = get(&ns);
    assert!(cond_is(&v, "Reachable", "True"), "{v}");
    assert_eq!(v["status"]["health"]["state"], "Healthy");
    assert!(
        v["status"]["pendingGrants"].as_array().is_some_and(|p| !p.is_empty()),
        "grants on tables that do not exist yet wait: {v}"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
        ),
        "shop_admin"
    );

    // A backup before the verify tables exist cannot be verified: it fails, and says so.
    ns.k(&["annotate", "database/shop-db", "reprise.dev/backup-now=early"]);
    let v = wait_for(&ns, "BackupsHealthy=False", 30, |v| {
        condition(v, "BackupsHealthy").is_some_and(|(s, r, _)| s == "False" && r == "BackupFailed")
    })
    .await;
    let (_, _, message) = condition(&v, "BackupsHealthy").unwrap();
    assert!(
        message.contains("verify table shop.public.orders does not exist"),
        "{message}"
    );
    assert!(v["status"]["lastBackup"].is_null());
    let reasons = ns.k(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
    ]);
    assert!(reasons.lines().any(|r| r == "BackupFailed"), "{reasons}");

    // The owner creates the tables; the waiting grants follow.
    pg.try_sql("shop_admin", SHOP_ADMIN_PW, "shop", SCHEMA)
        .expect("the owner logs in and creates tables");
    seed(&pg, 100);
    wait_for(&ns, "the pending grants to be applied", 30, |v| {
        v["status"]["pendingGrants"].as_array().is_none_or(|p| p.is_empty())
    })
    .await;

    // Each role logs in with its Secret's password and can do exactly what its grants say.
    assert_eq!(
        pg.try_sql("reporting", REPORTING_PW, "shop", "SELECT count(*) FROM orders"),
        Ok("100".into())
    );
    let denied = pg
        .try_sql("reporting", REPORTING_PW, "shop", "DELETE FROM orders WHERE id = 1")
        .unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    assert!(
        pg.try_sql(
            "reporting",
            REPORTING_PW,
            "shop",
            "INSERT INTO products (name) VALUES ('x')"
        )
        .is_err()
    );
    pg.try_sql(
        "shop_app",
        APP_PW,
        "shop",
        "INSERT INTO orders (product, qty) VALUES (1, 1)",
    )
    .expect("shop_app may insert orders");
    pg.try_sql(
        "shop_app",
        APP_PW,
        "shop",
        "DELETE FROM orders WHERE qty = 1 AND id > 100",
    )
    .expect("shop_app may delete orders");
    assert!(pg.try_sql("reporting", "wrong", "shop", "SELECT 1").is_err());

    // A privilege granted by hand is revoked.
    pg.sql("shop", "GRANT DELETE ON orders TO reporting");
    eventually("the hand-made grant to be revoked", Duration::from_secs(30), || async {
        pg.try_sql("reporting", REPORTING_PW, "shop", "DELETE FROM orders WHERE id = -1")
            .is_err()
            .then_some(())
    })
    .await;

    // The connection Secret applications mount.
    let uri = ns.k(&["get", "secret", "shop-db-reporting", "-o", "jsonpath={.data.uri}"]);
    let uri = String::from_utf8(base64_decode(&uri)).unwrap();
    assert_eq!(
        uri,
        format!(
            "postgresql://reporting:{REPORTING_PW}@127.0.0.1:{}/shop?sslmode=prefer",
            pg.port
        )
    );

    // Rotate the reporting password: the old one stops working, the new one works.
    let (ok, out) = ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW2));
    assert!(ok, "{out}");
    eventually("the rotated password to work", Duration::from_secs(30), || async {
        pg.try_sql("reporting", REPORTING_PW2, "shop", "SELECT 1").ok()
    })
    .await;
    let old = pg.try_sql("reporting", REPORTING_PW, "shop", "SELECT 1").unwrap_err();
    assert!(old.contains("password authentication failed"), "{old}");
    eventually(
        "the connection Secret to carry the new password",
        Duration::from_secs(30),
        || async {
            let p = ns.k(&["get", "secret", "shop-db-reporting", "-o", "jsonpath={.data.password}"]);
            (base64_decode(&p) == REPORTING_PW2.as_bytes()).then_some(())
        },
    )
    .await;

    // A connection Secret deleted by hand comes back.
    ns.k(&["delete", "secret", "shop-db-shop-app"]);
    eventually(
        "the connection Secret to be recreated",
        Duration::from_secs(30),
        || async {
            plane()
                .kubectl()
                .args(["-n", &ns.name, "get", "secret", "shop-db-shop-app"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| ())
        },
    )
    .await;

    // Steady state: probes every 2 s, and no write at all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let writes = audit::writes(plane().audit(), OPERATOR_USER, Some(&ns.name), from, Timestamp::now());
    assert!(writes.is_empty(), "steady state wrote: {writes:?}");

    // A role left the spec: reported, kept (prune is off).
    let yaml = database_yaml(pg.port, backups.path(), 7).replace(
        "    - name: reporting\n      passwordSecretRef: {name: shop-accounts, key: reporting}\n      grants:\n        - {database: shop, privileges: [Connect]}\n        - {database: shop, schema: public, privileges: [Usage]}\n        - {database: shop, schema: public, tables: [orders, products], privileges: [Select]}\n",
        "",
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    wait_for(&ns, "the orphan role to be reported", 30, |v| {
        v["status"]["orphanRoles"] == serde_json::json!(["reporting"])
    })
    .await;
    assert_eq!(
        pg.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'reporting'"),
        "1"
    );
    let (ok, out) = ns.apply(&yaml.replace("spec:\n", "spec:\n  prune: true\n"));
    assert!(ok, "{out}");
    eventually(
        "the orphan role to be dropped with prune",
        Duration::from_secs(30),
        || async {
            (pg.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'reporting'") == "0").then_some(())
        },
    )
    .await;
    assert_no_passwords(
        &op,
        &ns,
        &[&pg.admin_password, APP_PW, SHOP_ADMIN_PW, REPORTING_PW, REPORTING_PW2],
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .expect("base64")
}

fn manifest(backups: &Path, ns: &str, id: &str) -> Value {
    let p = backups.join(ns).join("shop-db").join(id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

async fn backup_now(ns: &TestNamespace, token: &str, previous: Option<&str>) -> String {
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        &format!("reprise.dev/backup-now={token}"),
    ]);
    let v = wait_for(ns, "a new backup", 60, |v| {
        v["status"]["lastBackup"]["id"]
            .as_str()
            .is_some_and(|id| Some(id) != previous)
    })
    .await;
    v["status"]["lastBackup"]["id"].as_str().unwrap().to_string()
}

/// The example's Database with its Secrets, Ready, and the shop's tables made.
async fn shop_db_ready(ns: &TestNamespace, pg: &Postgres, backups: &Path) {
    let (ok, out) = ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW));
    assert!(ok, "{out}");
    let (ok, out) = ns.apply(&database_yaml(pg.port, backups, 2));
    assert!(ok, "{out}");
    wait_for(ns, "Ready", 60, |v| cond_is(v, "Ready", "True")).await;
    pg.try_sql("shop_admin", SHOP_ADMIN_PW, "shop", SCHEMA).unwrap();
}

#[tokio::test]
async fn backups_are_restored_and_verified_past_a_corrupted_one() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("db-restore");
    let backups = tempfile::tempdir().unwrap();
    let mut op = operator(&ns);
    op.wait_ready().await;
    shop_db_ready(&ns, &pg, backups.path()).await;
    seed(&pg, 1000);
    let sums = |t: &str| {
        pg.sql(
            "shop",
            &format!("SELECT count(*), sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric) FROM {t} t"),
        )
    };
    let (orders_before, products_before) = (sums("orders"), sums("products"));

    // A backup with its manifest: row counts of the verify tables.
    let first = backup_now(&ns, "1", None).await;
    let m = manifest(backups.path(), &ns.name, &first);
    let tables = &m["databases"][0]["tables"];
    assert_eq!(tables[0]["name"], "orders");
    assert_eq!(tables[0]["rows"], 1000);
    assert_eq!(tables[1]["rows"], 50);
    assert_eq!(
        format!("1000|{}", tables[0]["checksum"].as_str().unwrap()),
        orders_before
    );
    let v = get(&ns);
    assert!(cond_is(&v, "BackupsHealthy", "True"), "{v}");
    assert!(v["status"]["rpoSeconds"].as_i64().is_some(), "{v}");
    assert!(v["status"]["lastBackup"]["bytes"].as_u64().unwrap() > 1000);

    // Drop the database by hand: reprise restores it and verifies it.
    pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)");
    let v = wait_for(&ns, "a verified restore", 90, |v| {
        v["status"]["lastRestore"]["outcome"] == "Verified" && v["status"]["health"]["state"] == "Healthy"
    })
    .await;
    let r = &v["status"]["lastRestore"];
    assert_eq!(r["backupId"], first.as_str());
    assert_eq!(r["targets"], serde_json::json!(["database shop"]));
    assert!(r["dataLossWindowSeconds"].as_i64().is_some(), "{r}");
    assert!(r["bytesRestored"].as_u64().unwrap() > 1000);
    for t in r["verification"].as_array().unwrap() {
        assert_eq!(t["rows"], t["expectedRows"]);
        assert_eq!(t["checksumMatches"], true);
    }
    assert_eq!(sums("orders"), orders_before);
    assert_eq!(sums("products"), products_before);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
        ),
        "shop_admin"
    );
    pg.try_sql("reporting", REPORTING_PW, "shop", "SELECT count(*) FROM orders")
        .expect("grants hold after the restore");

    // A second backup, then corrupt it: a lost table is restored from the first.
    pg.sql(
        "shop",
        "INSERT INTO orders (product, qty) SELECT 1, g FROM generate_series(1, 10) g",
    );
    let second = backup_now(&ns, "2", Some(&first)).await;
    let dump = backups
        .path()
        .join(&ns.name)
        .join("shop-db")
        .join(&second)
        .join("shop.dump");
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    pg.sql("shop", "DROP TABLE orders");
    let v = wait_for(&ns, "the table restored from the previous good backup", 90, |v| {
        v["status"]["lastRestore"]["targets"] == serde_json::json!(["table shop.public.orders"])
            && v["status"]["lastRestore"]["outcome"].as_str().is_some()
    })
    .await;
    let r = &v["status"]["lastRestore"];
    assert_eq!(r["outcome"], "Verified", "{r}");
    assert_eq!(r["backupId"], first.as_str(), "{r}");
    let skipped = r["skippedBackups"].to_string();
    assert!(skipped.contains(&second) && skipped.contains("sha256"), "{skipped}");
    assert_eq!(sums("orders"), orders_before, "orders as in the first backup");
    assert_eq!(
        pg.sql("shop", "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'"),
        "2",
        "the primary key and the index came back"
    );
    pg.sql("shop", "INSERT INTO orders (product, qty) VALUES (2, 2)"); // the sequence and the default came back
    let events = ns.k(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("BackupCorrupt") && events.contains("Restored"),
        "{events}"
    );

    // The engine's actions: `restore` with nothing gone touches nothing; `backup` runs one.
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        "reprise.dev/action=restore/r1",
    ]);
    let v = wait_for(&ns, "the restore action to be answered", 30, |v| {
        v["status"]["lastAction"]["id"] == "r1"
    })
    .await;
    assert_eq!(v["status"]["lastAction"]["outcome"], "Done");
    assert!(
        v["status"]["lastAction"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to restore")
    );
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        "reprise.dev/action=backup/b3",
    ]);
    let v = wait_for(&ns, "the backup action to be answered", 60, |v| {
        v["status"]["lastAction"]["id"] == "b3"
    })
    .await;
    assert_eq!(
        v["status"]["lastAction"]["outcome"], "Done",
        "{}",
        v["status"]["lastAction"]
    );
    let third = v["status"]["lastBackup"]["id"].as_str().unwrap().to_string();
    assert_ne!(third, second);

    // Retention keeps 2: the third backup removed the first.
    let dir = backups.path().join(&ns.name).join("shop-db");
    eventually("retention to leave two backups", Duration::from_secs(10), || async {
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        let catalog: serde_json::Value = serde_json::from_slice(&read(&dir.join("catalog.json"))).unwrap();
        let listed: Vec<&str> = catalog["backups"]
            .as_array()?
            .iter()
            .filter_map(|b| b["id"].as_str())
            .collect();
        (ids == [second.clone(), third.clone()] && listed == [third.as_str(), second.as_str()]).then_some(())
    })
    .await;
    assert_no_passwords(&op, &ns, &[&pg.admin_password, APP_PW, SHOP_ADMIN_PW, REPORTING_PW]);
}

#[tokio::test]
async fn a_wrong_admin_password_is_reported_without_a_hot_loop() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("db-auth");
    let backups = tempfile::tempdir().unwrap();
    let mut op = operator(&ns);
    op.wait_ready().await;
    let wrong = "not-the-admin-password-81";
    let (ok, out) = ns.apply(&secrets_yaml(wrong, REPORTING_PW));
    assert!(ok, "{out}");
    let (ok, out) = ns.apply(&database_yaml(pg.port, backups.path(), 7));
    assert!(ok, "{out}");
    let v = wait_for(&ns, "Reachable=False", 30, |v| cond_is(v, "Reachable", "False")).await;
    let (_, reason, message) = condition(&v, "Reachable").unwrap();
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    assert_eq!(v["status"]["health"]["state"], "Unreachable");
    assert!(cond_is(&v, "Ready", "False"));

    // Probes every 2 s, no status write while nothing changes, no crash.
    let from = Timestamp::now();
    let failures_before = pg.server_log().matches("password authentication failed").count();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = audit::writes(plane().audit(), OPERATOR_USER, Some(&ns.name), from, Timestamp::now());
    assert!(writes.is_empty(), "{writes:?}");
    let attempts = pg.server_log().matches("password authentication failed").count() - failures_before;
    assert!(
        (2..=8).contains(&attempts),
        "{attempts} login attempts in 10 s with a 2 s probe"
    );
    assert!(op.exited().is_none(), "the operator runs on");

    // Fixed password: reachable again.
    let (ok, out) = ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW));
    assert!(ok, "{out}");
    wait_for(&ns, "Reachable=True", 30, |v| {
        cond_is(v, "Reachable", "True") && cond_is(v, "Ready", "True")
    })
    .await;
    assert_no_passwords(
        &op,
        &ns,
        &[&pg.admin_password, wrong, APP_PW, SHOP_ADMIN_PW, REPORTING_PW],
    );
}

#[test]
fn a_hostile_role_name_is_rejected_by_the_api_server() {
    let ns = TestNamespace::new("db-hostile");
    let yaml = database_yaml(5432, Path::new("/tmp/none"), 7)
        .replace("- name: shop_app", "- name: 'robert\"; DROP TABLE orders;--'");
    let (ok, out) = ns.apply(&yaml);
    assert!(!ok, "the API server accepted a hostile role name: {out}");
    assert!(out.contains("spec.roles[0].name"), "{out}");
}

#[tokio::test]
async fn connection_failures_name_their_reason() {
    use reprise::{
        api::database::SslMode,
        providers::postgres::{Password, Target},
    };
    reprise::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let right = certs(dir.path(), "right");
    let wrong = certs(dir.path(), "wrong");
    let (ca, cert, key) = (read(&right.ca), read(&right.cert), read(&right.key));
    let wrong_ca = read(&wrong.ca);
    let pg = Postgres::start_with(
        &["ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key"],
        &[("server.crt", &cert), ("server.key", &key)],
    );
    let target = |port: u16, mode: SslMode, ca: Option<&[u8]>| Target {
        host: "127.0.0.1".into(),
        port,
        user: ADMIN.into(),
        password: Password(pg.admin_password.clone()),
        ssl_mode: mode,
        ca_pem: ca.map(<[u8]>::to_vec),
        connect_timeout: Duration::from_secs(2),
    };
    // TLS verified against the right CA, with and without the host name check.
    for mode in [SslMode::VerifyFull, SslMode::VerifyCA, SslMode::Require] {
        let c = target(pg.port, mode, Some(&ca)).connect("postgres").await;
        let c = c.unwrap_or_else(|e| panic!("{mode:?} with the right CA: {e}"));
        let ssl: bool = c
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{mode:?} encrypts");
    }
    let e = target(pg.port, SslMode::VerifyFull, Some(&wrong_ca))
        .connect("postgres")
        .await
        .unwrap_err();
    assert_eq!(e.reason, "TLSFailed", "{e}");
    // Authentication.
    let mut bad = target(pg.port, SslMode::Prefer, None);
    bad.password = Password("wrong-password".into());
    let e = bad.connect("postgres").await.unwrap_err();
    assert_eq!(e.reason, "AuthenticationFailed", "{e}");
    assert!(!e.message.contains("wrong-password"));
    // Nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = target(closed, SslMode::Prefer, None)
        .connect("postgres")
        .await
        .unwrap_err();
    assert_eq!(e.reason, "ConnectionRefused", "{e}");
    // Accepts and never answers: bounded by the connect timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let e = target(port, SslMode::Prefer, None)
        .connect("postgres")
        .await
        .unwrap_err();
    assert_eq!(e.reason, "Timeout", "{e}");
    hold.abort();
}

/// Between full probes (ten minutes apart here), a connection kept open to
/// the instance sees it: a server that stops and a database dropped by hand
/// are acted on within seconds. Nothing else triggers these reconciles (the
/// backup schedule is yearly), so without the kept connection the waits
/// below would run out.
#[tokio::test]
async fn a_kept_connection_sees_failures_between_probes() {
    let mut pg = Postgres::start();
    let ns = TestNamespace::new("db-liveness");
    let backups = tempfile::tempdir().unwrap();
    let mut op = Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "600".into()],
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    shop_db_ready(&ns, &pg, backups.path()).await;
    seed(&pg, 200);
    let first = backup_now(&ns, "1", None).await;
    // The reconcile that the backup's own status write triggers comes and
    // goes first: the server's stop must be seen by the kept connection alone.
    tokio::time::sleep(Duration::from_secs(3)).await;

    pg.stop();
    wait_for(&ns, "Unreachable, seen on the closed connection", 20, |v| {
        v["status"]["health"]["state"] == "Unreachable" && cond_is(v, "Reachable", "False")
    })
    .await;
    pg.restart();
    wait_for(&ns, "reachable again", 20, |v| {
        v["status"]["health"]["state"] == "Healthy" && cond_is(v, "Reachable", "True")
    })
    .await;

    pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)");
    let v = wait_for(&ns, "the dropped database restored", 30, |v| {
        v["status"]["lastRestore"]["outcome"] == "Verified" && v["status"]["health"]["state"] == "Healthy"
    })
    .await;
    assert_eq!(v["status"]["lastRestore"]["backupId"], first.as_str());
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM orders"), "200");
    let logs = op.logs();
    assert!(logs.contains("the instance changed; reconciling now"), "{logs}");
    assert_no_passwords(&op, &ns, &[&pg.admin_password, APP_PW, SHOP_ADMIN_PW, REPORTING_PW]);
}
