//! Under faults, what reprise says stays true: an operator killed (with its
//! children, as a pod dies) at each step of a restore is replaced by one that
//! finishes it once, with every table of the backup and the failure's own
//! time; a backup cut short leaves nothing behind.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    TestNamespace, eventually,
    operator::{Operator, Options},
    postgres::{ADMIN, Postgres},
};

/// The shop: orders and products are verify tables; customers is not.
fn seed(pg: &Postgres) {
    pg.sql(
        "shop",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text);
         CREATE TABLE products (id serial PRIMARY KEY, name text, price numeric(10,2));
         CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, product int REFERENCES products, qty int);
         INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 300) g;
         INSERT INTO products (name, price) SELECT 'product ' || g, g FROM generate_series(1, 50) g;
         INSERT INTO orders (customer, product, qty) SELECT 1 + g % 300, 1 + g % 50, g FROM generate_series(1, 20000) g;",
    );
}

fn counts(pg: &Postgres) -> String {
    pg.sql(
        "shop",
        "SELECT (SELECT count(*) FROM customers) || ' ' || (SELECT count(*) FROM products) || ' ' || (SELECT count(*) FROM orders)",
    )
}

fn database_yaml(pg: &Postgres, backups: &std::path::Path) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin}}\nstringData: {{username: {ADMIN}, password: \"{}\"}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {{name: shop-db}}\nspec:\n  instance: {{external: {{host: 127.0.0.1, port: {}, adminSecretRef: {{name: pg-admin}}, sslMode: Disable}}}}\n  databases: [{{name: shop}}]\n  backup: {{schedule: \"0 0 1 1 *\", retention: {{count: 2}}, store: {{local: {{path: {}}}}}}}\n  verify: {{tables: [{{database: shop, name: orders}}, {{database: shop, name: products}}]}}\n",
        pg.admin_password,
        pg.port,
        backups.display()
    )
}

fn operator(ns: &TestNamespace, crash_at: Option<&str>) -> Operator {
    Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        env: crash_at
            .map(|p| vec![("REPRISE_TEST_CRASH_AT".to_string(), p.to_string())])
            .unwrap_or_default(),
        ..Options::namespace(&ns.name)
    })
}

/// Databases reprise restores into or sets aside, left on the server.
fn leftovers(pg: &Postgres) -> String {
    pg.sql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'shop\\_%'",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_at_any_step_is_finished_once_with_every_table() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("crash-restore");
    let backups = tempfile::tempdir().unwrap();
    pg.sql("postgres", "CREATE DATABASE shop");
    seed(&pg);
    let expected = counts(&pg);
    let mut op = operator(&ns, None);
    op.wait_ready().await;
    let (ok, out) = ns.apply(&database_yaml(&pg, backups.path()));
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "database/shop-db", "--timeout=60s"]);
    ns.k(&["annotate", "database/shop-db", "reprise.dev/backup-now=1"]);
    ns.wait_for("database/shop-db", "a backup", 60, |v| {
        v["status"]["lastBackup"]["id"].is_string()
    })
    .await;
    op.kill();

    // Each point where a restore can be cut short; the last two need a database
    // under the live name (an empty shell, as an interrupted restore used to leave).
    let points = [
        ("restore:recorded", false),
        ("restore:staged", false),
        ("restore:restored", false),
        ("restore:verified", false),
        ("restore:set-aside", true),
        ("restore:swapped", true),
        ("restore:swapped", false),
    ];
    for (point, shell) in points {
        pg.sql("postgres", "DROP DATABASE IF EXISTS shop WITH (FORCE)");
        if shell {
            pg.sql("postgres", "CREATE DATABASE shop");
        }
        let before: Value = ns.json("database/shop-db");
        let mut doomed = operator(&ns, Some(point));
        let died = doomed.wait_exit(Duration::from_secs(90)).await;
        assert!(
            died.is_some(),
            "{point}: the operator did not reach its crash point: {}",
            doomed.logs()
        );
        let failure = ns.json("database/shop-db")["status"]["health"]["since"].clone();
        let mut op = operator(&ns, None);
        op.wait_ready().await;
        let v = ns
            .wait_for(
                "database/shop-db",
                &format!("{point}: the restore recorded"),
                120,
                |v| {
                    v["status"]["lastRestore"]["started"] != before["status"]["lastRestore"]["started"]
                        && v["status"]["restoreInProgress"].is_null()
                        && v["status"]["health"]["state"] == "Healthy"
                },
            )
            .await;
        let r = &v["status"]["lastRestore"];
        assert_eq!(r["outcome"], "Verified", "{point}: {r}");
        assert_eq!(counts(&pg), expected, "{point}: every table as the backup holds it");
        assert_eq!(r["contentsChecked"]["tables"], 3, "{point}: {r}");
        assert_eq!(r["failureObserved"], failure, "{point}: the failure's own time is kept");
        assert_eq!(leftovers(&pg), "", "{point}: nothing left behind");
        op.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_database_is_restored_whole_not_just_its_verify_tables() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("shell-restore");
    let backups = tempfile::tempdir().unwrap();
    pg.sql("postgres", "CREATE DATABASE shop");
    seed(&pg);
    let expected = counts(&pg);
    let mut op = operator(&ns, None);
    op.wait_ready().await;
    let (ok, out) = ns.apply(&database_yaml(&pg, backups.path()));
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "database/shop-db", "--timeout=60s"]);
    ns.k(&["annotate", "database/shop-db", "reprise.dev/backup-now=1"]);
    let v = ns
        .wait_for("database/shop-db", "a backup", 60, |v| {
            v["status"]["lastBackup"]["id"].is_string()
        })
        .await;
    let id = v["status"]["lastBackup"]["id"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            backups
                .path()
                .join(&ns.name)
                .join("shop-db")
                .join(&id)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let contents = crate::support::each(&manifest["databases"][0]["contents"], "name");
    assert_eq!(
        contents,
        ["customers", "orders", "products"],
        "every table in the manifest"
    );

    // A table outside the verify list is dropped: it comes back too.
    pg.sql("shop", "DROP TABLE orders; DROP TABLE customers");
    ns.wait_for("database/shop-db", "the tables restored", 90, |v| {
        v["status"]["lastRestore"]["outcome"] == "Verified"
    })
    .await;
    assert_eq!(counts(&pg), expected);
    // The database emptied (as a restore cut short by a crash used to leave it):
    // restored whole into a staging database and swapped in.
    pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)");
    pg.sql("postgres", "CREATE DATABASE shop");
    let v = ns
        .wait_for("database/shop-db", "the database restored whole", 90, |v| {
            v["status"]["lastRestore"]["targets"][0] == "database shop"
                && v["status"]["lastRestore"]["outcome"] == "Verified"
        })
        .await;
    assert_eq!(counts(&pg), expected);
    assert_eq!(v["status"]["lastRestore"]["contentsChecked"]["tables"], 3);
    assert_eq!(leftovers(&pg), "");

    // A backup cut short by a crash: the next one removes what it left, and
    // retention says only what it removed.
    op.kill();
    let mut doomed = operator(&ns, Some("backup:writing"));
    doomed.wait_ready().await;
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        "reprise.dev/backup-now=2",
    ]);
    assert!(
        doomed.wait_exit(Duration::from_secs(60)).await.is_some(),
        "{}",
        doomed.logs()
    );
    let dir = backups.path().join(&ns.name).join("shop-db");
    let folders = || {
        let mut f: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        f.sort();
        f
    };
    assert_eq!(
        folders().len(),
        2,
        "the finished backup and the one cut short: {:?}",
        folders()
    );
    let mut op = operator(&ns, None);
    op.wait_ready().await;
    ns.k(&[
        "annotate",
        "--overwrite",
        "database/shop-db",
        "reprise.dev/backup-now=3",
    ]);
    let v = eventually("a new backup", Duration::from_secs(60), || async {
        let v = ns.json("database/shop-db");
        (v["status"]["lastBackup"]["id"] != id.as_str() && v["status"]["lastBackup"]["id"].is_string()).then_some(v)
    })
    .await;
    let newest = v["status"]["lastBackup"]["id"].as_str().unwrap().to_string();
    assert_eq!(folders(), [id.clone(), newest.clone()], "the cut-short backup is gone");
    let message = crate::support::condition(&v, "BackupsHealthy").unwrap().2;
    assert!(
        !message.contains("retention removed"),
        "nothing was past retention: {message}"
    );
    op.kill();
}
