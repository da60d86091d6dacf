//! Backups that survive the site, against a real PostgreSQL and a real S3
//! server (SeaweedFS): every backup in a local store and an off-site bucket
//! with Object Lock, encrypted there with age; what reprise wrote checked with
//! an independent S3 client (boto3) and the `age` command; restores from the
//! off-site store when the local one is gone; key rotation and a wrong key;
//! stores that fail named one by one while the others are served.

use std::{path::Path, time::Duration};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::databases::{REPORTING_PW, SCHEMA, SHOP_ADMIN_PW, cond_is, secrets_yaml, seed};
use crate::support::{
    OPERATOR_USER, TestNamespace, audit, condition, eventually,
    operator::{Operator, Options},
    plane,
    postgres::Postgres,
    s3::Seaweed,
    unique_suffix,
};

fn operator(ns: &TestNamespace) -> Operator {
    crashing(ns, None)
}

/// An age identity from `age-keygen`: (secret key, public recipient).
fn age_keygen() -> (String, String) {
    let out = std::process::Command::new("age-keygen")
        .output()
        .expect("age-keygen (Debian's age)");
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (secret, public)
}

fn key_secret(keys: &[(&str, &str)]) -> String {
    let data: Vec<String> = keys.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: backup-key, annotations: {{reprise.dev/for: \"Database/shop-db\"}}}}\nstringData: {{{}}}\n",
        data.join(", ")
    )
}

/// The key Secret with exactly `keys`, in one write (apply would keep
/// removed keys; delete and create would leave a moment without it).
fn replace_key_secret(ns: &TestNamespace, keys: &[(&str, &str)]) {
    let (ok, out) = plane().k_stdin(&["replace", "-n", &ns.name, "-f", "-"], &key_secret(keys));
    assert!(ok, "{out}");
}

/// Applies the Database and waits until the operator has acted on it.
async fn apply_seen(ns: &TestNamespace, yaml: &str) {
    let (ok, out) = ns.apply(yaml);
    assert!(ok, "{out}");
    ns.wait_for("database/shop-db", "the new spec seen", 30, |v| {
        v["status"]["observedGeneration"] == v["metadata"]["generation"]
    })
    .await;
}

/// The shop Database with `stores` (YAML list items, indented by 4).
pub(crate) fn database_yaml(port: u16, stores: &str) -> String {
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
    - name: shop_admin
      passwordSecretRef: {{name: shop-accounts, key: shop-admin}}
      grants:
        - {{database: shop, privileges: [All]}}
  backup:
    schedule: "0 0 1 1 *"
    retention: {{count: 1}}
    stores:
{stores}
  verify:
    tables:
      - {{database: shop, name: orders}}
      - {{database: shop, name: products}}
"#
    )
}

fn local_store(name: &str, path: &Path) -> String {
    format!("    - {{name: {name}, local: {{path: {}}}}}\n", path.display())
}

pub(crate) fn s3_store(name: &str, endpoint: &str, bucket: &str, secret: &str, extra: &str) -> String {
    format!(
        "    - {{name: {name}, offsite: true, s3: {{endpoint: \"{endpoint}\", bucket: {bucket}, credentialsSecretRef: {{name: {secret}}}}}{extra}}}\n"
    )
}

fn get(ns: &TestNamespace) -> Value {
    ns.json("database/shop-db")
}

pub(crate) async fn backup_now(ns: &TestNamespace, token: &str, previous: Option<&str>) -> Value {
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        &format!("reprise.dev/backup-now={token}"),
    ]);
    ns.wait_for("database/shop-db", "a new backup", 90, |v| {
        v["status"]["lastBackup"]["id"]
            .as_str()
            .is_some_and(|id| Some(id) != previous)
            && v["status"]["lastBackupAttempt"].as_str().is_some()
    })
    .await
}

fn store<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["status"]["stores"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no store {name} in {}", v["status"]))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The local store's backups and some data lost while the operator is frozen.
fn lose(op: &Operator, local: &Path, ns: &TestNamespace, data: impl FnOnce() -> String) {
    op.freeze(true);
    let _ = std::fs::remove_dir_all(local.join(&ns.name));
    data();
    op.freeze(false);
}

/// Waits for a restore of `targets` to end, and returns the Database.
async fn restored(ns: &TestNamespace, targets: Value, after: &str) -> Value {
    ns.wait_for("database/shop-db", "a restore to end", 120, |v| {
        let r = &v["status"]["lastRestore"];
        r["targets"] == targets
            && r["started"].as_str().is_some_and(|s| s > after)
            && v["status"]["restoreInProgress"].is_null()
    })
    .await
}

#[tokio::test]
async fn backups_survive_the_site_encrypted_and_locked_off_site() {
    let pg = Postgres::start();
    let s3 = Seaweed::start();
    let bucket = format!("offsite-{}", unique_suffix());
    s3.create_bucket(&bucket, true);
    let ns = TestNamespace::new("offsite");
    let local = tempfile::tempdir().unwrap();
    let (k1, k1_public) = age_keygen();
    let mut op = operator(&ns);
    op.wait_ready().await;
    let (ok, out) = ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW));
    assert!(ok, "{out}");
    let creds = serde_json::to_string(&s3.credentials_secret("s3-keys", "shop-db")).unwrap();
    assert!(ns.apply(&creds).0);
    assert!(ns.apply(&key_secret(&[("k1", &k1)])).0);
    let offsite = |key: &str| {
        s3_store(
            "vault",
            &s3.endpoint(),
            &bucket,
            "s3-keys",
            &format!(
                ", objectLock: {{mode: Compliance, days: 1}}, encryption: {{keySecretRef: {{name: backup-key, key: {key}}}}}"
            ),
        )
    };
    let stores = local_store("here", local.path()) + &offsite("k1");
    let (ok, out) = ns.apply(&database_yaml(pg.port, &stores));
    assert!(ok, "{out}");
    // A plan covers it: the loss below opens an Incident.
    let plan = "apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {name: pra}\nspec:\n  selector: {}\n  procedures:\n  - kind: Database\n    steps: [{name: restore, action: Restore, timeout: 20m}]\n";
    let (ok, out) = ns.apply(plan);
    assert!(ok, "{out}");
    ns.wait_for("database/shop-db", "Ready", 60, |v| cond_is(v, "Ready", "True"))
        .await;
    pg.try_sql("shop_admin", SHOP_ADMIN_PW, "shop", SCHEMA).unwrap();
    seed(&pg, 2000);
    let sums = |t: &str| {
        pg.sql(
            "shop",
            &format!("SELECT count(*), sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric) FROM {t} t"),
        )
    };
    let orders_before = sums("orders");

    // One backup, in both stores.
    let v = backup_now(&ns, "1", None).await;
    let first = v["status"]["lastBackup"]["id"].as_str().unwrap().to_string();
    let v = ns
        .wait_for("database/shop-db", "both stores to hold it", 30, |v| {
            cond_is(v, "BackupsHealthy", "True")
        })
        .await;
    let (here, vault) = (store(&v, "here"), store(&v, "vault"));
    assert_eq!(here["lastCopy"]["id"], first.as_str(), "{here}");
    assert_eq!(vault["lastCopy"]["id"], first.as_str(), "{vault}");
    assert_eq!(vault["offsite"], true);
    assert!(vault["keyId"].as_str().unwrap() == format!("k1:{k1_public}"), "{vault}");
    assert!(vault["lockedUntil"].as_str().is_some(), "{vault}");
    assert!(vault["rpoSeconds"].as_i64().is_some(), "{vault}");

    // Read back with boto3: the dump is an age file whose SHA-256 is the one
    // status gives, and `age -d` with the key gives the dump the local store holds.
    let prefix = format!("{}/shop-db/{first}/", ns.name);
    let keys: Vec<String> = s3.keys(&bucket, &prefix).into_iter().map(|(k, _)| k).collect();
    assert!(
        keys.contains(&format!("{prefix}shop.dump")) && keys.contains(&format!("{prefix}manifest.json")),
        "{keys:?}"
    );
    let sealed = s3.get(&bucket, &format!("{prefix}shop.dump"));
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"), "not an age file");
    assert_eq!(
        sha256_hex(&sealed),
        vault["lastCopy"]["files"][0]["sha256"].as_str().unwrap()
    );
    let keyfile = local.path().join("k1.txt");
    std::fs::write(&keyfile, &k1).unwrap();
    let mut age = std::process::Command::new("age")
        .args(["-d", "-i"])
        .arg(&keyfile)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut age.stdin.take().unwrap(), &sealed).unwrap();
    let plain = age.wait_with_output().unwrap();
    assert!(plain.status.success(), "age -d failed");
    let local_dump = std::fs::read(
        local
            .path()
            .join(&ns.name)
            .join("shop-db")
            .join(&first)
            .join("shop.dump"),
    )
    .unwrap();
    assert_eq!(
        sha256_hex(&plain.stdout),
        sha256_hex(&local_dump),
        "the off-site copy decrypts to the dump"
    );
    assert_eq!(
        sha256_hex(&local_dump),
        here["lastCopy"]["files"][0]["sha256"].as_str().unwrap()
    );
    // The catalog lists it, in each store.
    let catalog: Value =
        serde_json::from_slice(&s3.get(&bucket, &format!("{}/shop-db/catalog.json", ns.name))).unwrap();
    assert_eq!(catalog["backups"][0]["id"], first.as_str(), "{catalog}");
    assert!(local.path().join(&ns.name).join("shop-db/catalog.json").exists());

    // Locked: deleting the dump's version is refused by the store.
    let refused = s3.boto(&format!(
        "v = s3.list_object_versions(Bucket='{bucket}', Prefix='{prefix}shop.dump')['Versions'][0]['VersionId']\n\
         print(s3.get_object_retention(Bucket='{bucket}', Key='{prefix}shop.dump')['Retention']['Mode'])\n\
         s3.delete_object(Bucket='{bucket}', Key='{prefix}shop.dump', VersionId=v)"
    ));
    let refused = refused.expect_err("a locked version was deleted");
    assert!(refused.contains("AccessDenied"), "{refused}");

    // The site's store is lost with the database (the operator frozen
    // meanwhile, so it sees both at once): restored from the vault.
    let t0 = Timestamp::now().to_string();
    lose(&op, local.path(), &ns, || {
        pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)")
    });
    let v = restored(&ns, serde_json::json!(["database shop"]), &t0).await;
    let r = &v["status"]["lastRestore"];
    assert_eq!(r["outcome"], "Verified", "{r}");
    assert_eq!(r["store"], "vault", "{r}");
    assert_eq!(r["backupId"], first.as_str());
    assert_eq!(sums("orders"), orders_before);
    let events = ns.k(&[
        "get",
        "events",
        "--field-selector",
        "reason=Restored",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("in store vault"), "{events}");
    // The Incident's timeline says which store the data came from.
    let incident = eventually("the incident resolved", Duration::from_secs(60), || async {
        let v: Value = serde_json::from_str(&ns.k(&["get", "incidents", "-o", "json"])).unwrap();
        v["items"]
            .as_array()?
            .iter()
            .find(|i| i["status"]["phase"] == "Resolved")
            .cloned()
    })
    .await;
    let timeline = incident["status"]["timeline"].to_string();
    assert!(timeline.contains("in store vault"), "{timeline}");

    // Rotation: k2 for new backups, k1 kept for the old one.
    let (k2, k2_public) = age_keygen();
    assert!(ns.apply(&key_secret(&[("k1", &k1), ("k2", &k2)])).0);
    let stores = local_store("here", local.path()) + &offsite("k2");
    assert!(ns.apply(&database_yaml(pg.port, &stores)).0);
    pg.sql(
        "shop",
        "INSERT INTO orders (product, qty) SELECT 1, g FROM generate_series(1, 5) g",
    );
    let v = backup_now(&ns, "2", Some(&first)).await;
    let second = v["status"]["lastBackup"]["id"].as_str().unwrap().to_string();
    let v = ns
        .wait_for("database/shop-db", "the vault to hold the second", 30, |v| {
            store(v, "vault")["lastCopy"]["id"] == second.as_str()
        })
        .await;
    assert_eq!(store(&v, "vault")["keyId"], format!("k2:{k2_public}").as_str());
    let listed = s3.keys(&bucket, &format!("{}/shop-db/", ns.name));
    assert!(
        listed.iter().any(|(k, _)| k.contains(&first)),
        "retention waits for the lock: {listed:?}"
    );
    assert!(
        store(&v, "vault")["message"].as_str().unwrap().contains("stay locked"),
        "{}",
        store(&v, "vault")
    );

    // Without k2 the newest cannot be read: the restore says so and takes
    // the older backup, which k1 still opens.
    replace_key_secret(&ns, &[("k1", &k1), ("k3", &age_keygen().0)]);
    let stores = local_store("here", local.path()) + &offsite("k3");
    apply_seen(&ns, &database_yaml(pg.port, &stores)).await;
    let t1 = Timestamp::now().to_string();
    lose(&op, local.path(), &ns, || pg.sql("shop", "DROP TABLE orders"));
    let v = restored(&ns, serde_json::json!(["table shop.public.orders"]), &t1).await;
    let r = &v["status"]["lastRestore"];
    assert_eq!(r["outcome"], "Verified", "{r}");
    assert_eq!(r["backupId"], first.as_str(), "{r}");
    let skipped = r["skippedBackups"].to_string();
    assert!(
        skipped.contains(&second) && skipped.contains(&format!("k2:{k2_public}")),
        "{skipped}"
    );
    assert_eq!(sums("orders"), orders_before);

    // No key that opens either: RestoreFailed naming the keys, nothing staged.
    replace_key_secret(&ns, &[("k3", &age_keygen().0)]);
    tokio::time::sleep(Duration::from_secs(3)).await; // a pass with the new Secret
    let t2 = Timestamp::now().to_string();
    lose(&op, local.path(), &ns, || {
        pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)")
    });
    let v = restored(&ns, serde_json::json!(["database shop"]), &t2).await;
    let r = &v["status"]["lastRestore"];
    assert_eq!(r["outcome"], "Failed", "{r}");
    assert_eq!(v["status"]["health"]["state"], "RestoreFailed");
    let skipped = r["skippedBackups"].to_string();
    assert!(
        skipped.contains(&format!("k1:{k1_public}")) && skipped.contains("backup-key"),
        "{skipped}"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'shop%'"
        ),
        "0",
        "nothing staged, nothing half-restored"
    );
    for secret in [&k1, &k2, &s3.secret_key] {
        assert!(!op.logs().contains(secret.as_str()), "a key in the operator's log");
        assert!(
            !serde_json::to_string(&get(&ns)).unwrap().contains(secret.as_str()),
            "a key in status"
        );
    }
}

#[tokio::test]
async fn each_failing_store_is_named_and_the_others_are_served() {
    let pg = Postgres::start();
    let mut late = Seaweed::start();
    late.create_bucket("late", false);
    let good = Seaweed::start();
    good.create_bucket("plain", false);
    late.stop();
    let ns = TestNamespace::new("stores-bad");
    let local = tempfile::tempdir().unwrap();
    let mut op = operator(&ns);
    op.wait_ready().await;
    assert!(ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW)).0);
    assert!(
        ns.apply(&serde_json::to_string(&late.credentials_secret("late-keys", "shop-db")).unwrap())
            .0
    );
    assert!(
        ns.apply(&serde_json::to_string(&good.credentials_secret("good-keys", "shop-db")).unwrap())
            .0
    );
    let mut wrong = good.credentials_secret("wrong-keys", "shop-db");
    wrong["stringData"]["secretAccessKey"] = "not-the-secret".into();
    assert!(ns.apply(&serde_json::to_string(&wrong).unwrap()).0);
    let stores = local_store("here", local.path())
        + &s3_store("late", &late.endpoint(), "late", "late-keys", "")
        + &s3_store("wrongkeys", &good.endpoint(), "plain", "wrong-keys", "")
        + &s3_store(
            "nolock",
            &good.endpoint(),
            "plain",
            "good-keys",
            ", objectLock: {mode: Governance, days: 1}",
        )
        + &s3_store(
            "nokey",
            &good.endpoint(),
            "plain",
            "good-keys",
            ", encryption: {keySecretRef: {name: absent, key: k}}",
        );
    let (ok, out) = ns.apply(&database_yaml(pg.port, &stores));
    assert!(ok, "{out}");
    ns.wait_for("database/shop-db", "Reachable", 60, |v| cond_is(v, "Reachable", "True"))
        .await;
    pg.try_sql("shop_admin", SHOP_ADMIN_PW, "shop", SCHEMA).unwrap();
    seed(&pg, 100);
    let v = backup_now(&ns, "1", None).await;
    let id = v["status"]["lastBackup"]["id"].as_str().unwrap().to_string();
    let v = ns
        .wait_for("database/shop-db", "every store's status", 60, |v| {
            v["status"]["stores"].as_array().is_some_and(|a| a.len() == 5)
        })
        .await;
    assert_eq!(
        store(&v, "here")["lastCopy"]["id"],
        id.as_str(),
        "the local store is served"
    );
    assert_eq!(store(&v, "here")["healthy"], true);
    let (_, reason, message) = condition(&v, "BackupsHealthy").unwrap();
    assert_eq!(reason, "StoreUnavailable", "{message}");
    for (name, says) in [
        ("late", "spec.backup.stores[1]"),
        ("wrongkeys", "SignatureDoesNotMatch"),
        ("nolock", "Object Lock"),
        ("nokey", "spec.backup.stores[4].encryption.keySecretRef"),
    ] {
        let s = store(&v, name);
        assert_eq!(s["healthy"], false, "{s}");
        let m = s["message"].as_str().unwrap();
        assert!(m.contains(says), "store {name}: {m}");
        assert!(message.contains(&format!("store {name}")), "{message}");
    }
    assert!(!message.contains("store here"), "{message}");

    // Quiet while nothing changes: no status write loop over 10 s, no crash.
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = audit::writes(plane().audit(), OPERATOR_USER, Some(&ns.name), from, Timestamp::now());
    assert!(writes.len() <= 1, "{} writes in 10 s: {writes:?}", writes.len());
    assert!(op.exited().is_none(), "the operator runs on");

    // The late store comes up: the backup is copied to it, it turns healthy.
    late.restart();
    let v = ns
        .wait_for("database/shop-db", "the late store to catch up", 90, |v| {
            store(v, "late")["lastCopy"]["id"] == id.as_str()
        })
        .await;
    assert_eq!(store(&v, "late")["healthy"], true, "{}", store(&v, "late"));
    let keys = late.keys("late", &format!("{}/shop-db/{id}/", ns.name));
    assert_eq!(keys.len(), 2, "dump and manifest: {keys:?}");
}

#[tokio::test]
async fn wal_is_archived_off_site_and_a_restore_goes_back_to_a_point_in_time() {
    let pg = Postgres::start();
    let s3 = Seaweed::start();
    s3.create_bucket("wal", false);
    let ns = TestNamespace::new("pitr");
    let local = tempfile::tempdir().unwrap();
    let (k1, _) = age_keygen();
    let mut op = operator(&ns);
    op.wait_ready().await;
    assert!(ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW)).0);
    assert!(
        ns.apply(&serde_json::to_string(&s3.credentials_secret("s3-keys", "shop-db")).unwrap())
            .0
    );
    assert!(ns.apply(&key_secret(&[("k1", &k1)])).0);
    let stores = local_store("here", local.path())
        + &s3_store(
            "vault",
            &s3.endpoint(),
            "wal",
            "s3-keys",
            ", encryption: {keySecretRef: {name: backup-key, key: k1}}",
        );
    let yaml = database_yaml(pg.port, &stores).replace("    stores:\n", "    wal: {uploadInterval: 1s}\n    stores:\n");
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    ns.wait_for("database/shop-db", "Ready", 60, |v| cond_is(v, "Ready", "True"))
        .await;
    pg.try_sql("shop_admin", SHOP_ADMIN_PW, "shop", SCHEMA).unwrap();
    seed(&pg, 10);
    pg.try_sql(
        "shop_admin",
        SHOP_ADMIN_PW,
        "shop",
        "CREATE TABLE events (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .unwrap();
    ns.wait_for("database/shop-db", "WAL streaming", 60, |v| {
        v["status"]["wal"]["streaming"] == true
    })
    .await;
    let v = backup_now(&ns, "1", None).await;
    let base = v["status"]["lastBackup"]["id"].as_str().unwrap().to_string();
    let keys = s3.keys("wal", &format!("{}/shop-db/{base}/", ns.name));
    assert!(keys.iter().any(|(k, _)| k.ends_with("base.tar")), "{keys:?}");

    // A steady write load: one row every 0.5 s for 20 s, with its time.
    let mut times = vec![];
    for _ in 0..40 {
        let out = pg.sql("shop", "INSERT INTO events DEFAULT VALUES RETURNING to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
        times.push(out.lines().next().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // How long the stores take to hold the last write (reported, not asserted:
    // timings are measured in the benchmarks).
    let written = pg.sql("postgres", "SELECT pg_current_wal_lsn()::text");
    let lsn = |t: &str| {
        let (a, b) = t.split_once('/').unwrap();
        (u64::from_str_radix(a, 16).unwrap() << 32) | u64::from_str_radix(b, 16).unwrap()
    };
    let t0 = std::time::Instant::now();
    ns.wait_for("database/shop-db", "the stores to hold the last write", 60, |v| {
        v["status"]["wal"]["archivedLsn"]
            .as_str()
            .is_some_and(|a| lsn(a) >= lsn(&written))
    })
    .await;
    eprintln!(
        "WAL archived past the last write after {:?} (status seen every 2 s)",
        t0.elapsed()
    );
    let wal = s3.keys("wal", &format!("{}/shop-db/wal-", ns.name));
    assert!(!wal.is_empty(), "WAL in the off-site store");
    let first_wal = s3.get("wal", &wal[0].0);
    assert!(
        first_wal.starts_with(b"age-encryption.org/v1"),
        "WAL is encrypted off-site"
    );

    // Back to the middle: between the 20th and the 21st row.
    let (t20, t21): (Timestamp, Timestamp) = (times[19].parse().unwrap(), times[20].parse().unwrap());
    let middle = Timestamp::from_nanosecond((t20.as_nanosecond() + t21.as_nanosecond()) / 2).unwrap();
    // The local store is lost first: the restore reads the vault.
    op.freeze(true);
    std::fs::remove_dir_all(local.path().join(&ns.name)).unwrap();
    op.freeze(false);
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        &format!("reprise.dev/restore-to={middle}"),
        "reprise.dev/action=restore/p1",
    ]);
    let v = ns
        .wait_for("database/shop-db", "the point-in-time restore", 240, |v| {
            v["status"]["lastAction"]["id"] == "p1"
        })
        .await;
    let r = &v["status"]["lastRestore"];
    assert_eq!(
        v["status"]["lastAction"]["outcome"], "Done",
        "{}\n{r}",
        v["status"]["lastAction"]
    );
    assert_eq!(r["outcome"], "Verified", "{r}");
    assert_eq!(r["store"], "vault", "{r}");
    assert_eq!(r["recoveryTarget"], middle.to_string().as_str());
    let recovered: Timestamp = r["recoveredTo"].as_str().unwrap().parse().unwrap();
    assert!(
        recovered <= middle && recovered >= t20,
        "recovered to {recovered}, asked {middle}"
    );
    assert_eq!(
        pg.sql("shop", "SELECT count(*), max(id) FROM events"),
        "20|20",
        "exactly the rows up to the point"
    );
    for t in r["verification"].as_array().unwrap() {
        assert_eq!(t["checksumMatches"], true, "{t}");
    }

    // Forward again, to just after the last row (before the first restore
    // replaced the database; `latest` is now that restore's result): all 40.
    let t40: Timestamp = times[39].parse().unwrap();
    let after = Timestamp::from_nanosecond(t40.as_nanosecond() + 200_000_000).unwrap();
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        &format!("reprise.dev/restore-to={after}"),
        "reprise.dev/action=restore/p2",
    ]);
    let v = ns
        .wait_for("database/shop-db", "the restore to the newest point", 240, |v| {
            v["status"]["lastAction"]["id"] == "p2"
        })
        .await;
    assert_eq!(
        v["status"]["lastRestore"]["outcome"], "Verified",
        "{}",
        v["status"]["lastRestore"]
    );
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM events"), "40");
}

fn crashing(ns: &TestNamespace, at: Option<&str>) -> Operator {
    Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        env: at
            .map(|p| vec![("REPRISE_TEST_CRASH_AT".to_string(), p.to_string())])
            .unwrap_or_default(),
        ..Options::namespace(&ns.name)
    })
}

/// A point-in-time restore killed (with the recovery server, a child) once
/// its copy is restored into the staging database: the successor drops that
/// copy and, the request still standing, restores again; the live database
/// is replaced once, verified, to the point.
#[tokio::test]
async fn a_point_in_time_restore_killed_midway_leaves_the_live_database_and_says_so() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("pitr-crash");
    let local = tempfile::tempdir().unwrap();
    let mut op = crashing(&ns, None);
    op.wait_ready().await;
    assert!(ns.apply(&secrets_yaml(&pg.admin_password, REPORTING_PW)).0);
    let yaml = database_yaml(pg.port, &local_store("here", local.path()))
        .replace("    stores:\n", "    wal: {uploadInterval: 1s}\n    stores:\n");
    assert!(ns.apply(&yaml).0);
    ns.wait_for("database/shop-db", "Ready", 60, |v| cond_is(v, "Ready", "True"))
        .await;
    pg.try_sql("shop_admin", SHOP_ADMIN_PW, "shop", SCHEMA).unwrap();
    seed(&pg, 10);
    ns.wait_for("database/shop-db", "WAL streaming", 60, |v| {
        v["status"]["wal"]["streaming"] == true
    })
    .await;
    backup_now(&ns, "1", None).await;
    pg.sql(
        "shop",
        "INSERT INTO orders (product, qty) SELECT 1, g FROM generate_series(1, 5) g",
    );
    let point = pg.sql(
        "postgres",
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.sql(
        "shop",
        "INSERT INTO orders (product, qty) SELECT 2, g FROM generate_series(1, 7) g",
    );
    let written = pg.sql("postgres", "SELECT pg_current_wal_lsn()::text");
    ns.wait_for("database/shop-db", "the last write archived", 60, |v| {
        v["status"]["wal"]["archivedLsn"]
            .as_str()
            .is_some_and(|a| a.len() >= written.len() && a >= written.as_str())
    })
    .await;
    assert_eq!(pg.sql("shop", "SELECT count(*) FROM orders"), "22");

    // Killed once the recovered copy is restored into its staging database.
    drop(op);
    let mut op = crashing(&ns, Some("restore:restored"));
    op.wait_ready().await;
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        &format!("reprise.dev/restore-to={point}"),
        "reprise.dev/action=restore/p1",
    ]);
    assert!(
        op.wait_exit(Duration::from_secs(180)).await.is_some(),
        "the operator died at the crash point"
    );
    assert!(
        std::process::Command::new("pgrep")
            .args(["-f", "reprise-recovery-"])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "the recovery server died with the operator"
    );
    assert_eq!(
        pg.sql("shop", "SELECT count(*) FROM orders"),
        "22",
        "the live database untouched so far"
    );
    let mut op = crashing(&ns, None);
    op.wait_ready().await;
    let v = ns
        .wait_for("database/shop-db", "the restore redone by the successor", 240, |v| {
            v["status"]["lastAction"]["id"] == "p1" && v["status"]["restoreInProgress"].is_null()
        })
        .await;
    assert_eq!(
        v["status"]["lastAction"]["outcome"], "Done",
        "{}",
        v["status"]["lastAction"]
    );
    assert_eq!(
        v["status"]["lastRestore"]["outcome"], "Verified",
        "{}",
        v["status"]["lastRestore"]
    );
    assert_eq!(
        pg.sql("shop", "SELECT count(*) FROM orders"),
        "15",
        "the rows up to the point"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'shop\\_%'"
        ),
        "0",
        "no staged or set-aside copy left"
    );
    let restored = ns.k(&["get", "events", "--field-selector", "reason=Restored", "-o", "name"]);
    assert_eq!(restored.lines().count(), 1, "one restore: {restored}");
    let resumed = ns.k(&[
        "get",
        "events",
        "--field-selector",
        "reason=RestoreResumed",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        resumed.contains("dropped"),
        "the staged copy of the killed restore was dropped: {resumed}"
    );
    drop(op);
}
