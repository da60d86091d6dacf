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
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: \"{}\"}}\n---\n\
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
        // Backup folders (the catalog sits next to them).
        let mut f: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().into_string().unwrap())
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
    // The successor carries out the request the crash cut short (once), and
    // removes what the cut-short backup left.
    let mut op = operator(&ns, None);
    op.wait_ready().await;
    let v = eventually("the asked-for backup", Duration::from_secs(60), || async {
        let v = ns.json("database/shop-db");
        (v["status"]["backupNow"] == "2"
            && v["status"]["lastBackup"]["id"] != id.as_str()
            && v["status"]["lastBackup"]["id"].is_string())
        .then_some(v)
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

// ---- The engine: success only on evidence, transient outages ridden out,
// ---- responders off the critical path, actions once across a crash.

use crate::support::{
    kubevirt::{self, StandIn},
    plane,
};

fn incidents(ns: &TestNamespace) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ns.k(&["get", "incidents", "-o", "json"])).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn entry<'a>(inc: &'a Value, step: &str) -> Option<&'a Value> {
    inc["status"]["timeline"].as_array()?.iter().find(|e| e["step"] == step)
}

fn time(v: &Value) -> k8s_openapi::jiff::Timestamp {
    v.as_str().unwrap_or_else(|| panic!("not a time: {v}")).parse().unwrap()
}

/// VirtualMachines `names` (label `tier: vm`), a plan restarting them, the
/// KubeVirt stand-in and an operator (5 s VM grace); every VM Ready.
async fn vms(
    prefix: &str,
    names: &[String],
    plan_extra: &str,
    crash_at: Option<&str>,
) -> (TestNamespace, StandIn, Operator) {
    let ns = TestNamespace::new(prefix);
    let standin = StandIn::start(plane().client().await, &ns.name);
    let mut op = vm_operator(&ns, crash_at);
    op.wait_ready().await;
    let mut yaml = String::new();
    for n in names {
        yaml += &format!(
            "apiVersion: reprise.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {{name: {n}, labels: {{tier: vm}}}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: [{{name: root, containerDisk: {{image: \"registry.example/vm/debian:12\"}}}}]\n---\n"
        );
    }
    yaml += &format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: pra}}\nspec:\n  selector: {{matchLabels: {{tier: vm}}}}\n{plan_extra}  procedures:\n  - kind: VirtualMachine\n    steps: [{{name: restart, action: Restart, timeout: 2m}}]\n"
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    for n in names {
        ns.k(&[
            "wait",
            "--for=condition=Ready",
            &format!("virtualmachines.reprise.dev/{n}"),
            "--timeout=90s",
        ]);
    }
    (ns, standin, op)
}

fn vm_operator(ns: &TestNamespace, crash_at: Option<&str>) -> Operator {
    Operator::start(Options {
        extra: vec!["--vm-ready-grace-seconds".into(), "5".into()],
        env: crash_at
            .map(|p| vec![("REPRISE_TEST_CRASH_AT".to_string(), p.to_string())])
            .unwrap_or_default(),
        ..Options::namespace(&ns.name)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_incident_resolves_only_once_a_new_instance_runs() {
    let (ns, standin, _op) = vms("vm-evidence", &["vm-a".into()], "", None).await;
    // virt-controller hangs: the restart deletes the instance, nothing starts a new one.
    standin.pause(true);
    kubevirt::fail_instance(&plane().client().await, &ns.name, "vm-a").await;
    let inc = eventually("the restart carried out", Duration::from_secs(60), || async {
        incidents(&ns).into_iter().find(|i| {
            entry(i, "restart").is_some_and(|e| e["outcome"] == "Running")
                && ns.json("virtualmachines.reprise.dev/vm-a")["status"]["lastAction"]["outcome"] == "Done"
        })
    })
    .await;
    let name = inc["metadata"]["name"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let inc = ns.json(&format!("incident/{name}"));
    assert_ne!(
        inc["status"]["phase"], "Resolved",
        "resolved while no instance runs: {}",
        inc["status"]
    );
    assert_eq!(
        entry(&inc, "restart").unwrap()["outcome"],
        "Running",
        "{}",
        inc["status"]
    );
    let resumed = k8s_openapi::jiff::Timestamp::now();
    standin.pause(false);
    let inc = ns
        .wait_for(&format!("incident/{name}"), "the incident resolved", 60, |v| {
            v["status"]["phase"] == "Resolved"
        })
        .await;
    let st = &inc["status"];
    assert_eq!(entry(&inc, "restart").unwrap()["outcome"], "Succeeded", "{st}");
    assert!(
        time(&st["closedAt"]) >= resumed,
        "resolved as of the new instance: {st}"
    );
    let took = crate::support::seconds(&st["measures"]["timeToRecover"]);
    assert!(took >= 12.0, "the recovery time counts until the VM runs again: {st}");
    assert_eq!(standin.started("vm-a"), 2, "one new instance");
    println!(
        "level 2, VM restart with the instance really back: {}",
        st["measures"]["timeToRecover"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_responder_that_never_answers_delays_no_recovery() {
    // A webhook that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let names: Vec<String> = (0..20).map(|i| format!("vm-{i}")).collect();
    let plan = format!(
        "  levels:\n  - {{level: 2, appliesTo: [VirtualMachine], minWindow: 30m, maxWindow: 45m, responders: [{{name: it}}]}}\n  responders:\n  - {{name: it, type: Internal, webhook: {{url: \"http://127.0.0.1:{port}/hook\"}}}}\n"
    );
    let (ns, _standin, _op) = vms("hung-hook", &names, &plan, None).await;
    let client = plane().client().await;
    for n in &names {
        kubevirt::fail_instance(&client, &ns.name, n).await;
    }
    let all = eventually("20 incidents resolved", Duration::from_secs(120), || async {
        let all = incidents(&ns);
        (all.len() == 20 && all.iter().all(|i| i["status"]["phase"] == "Resolved")).then_some(all)
    })
    .await;
    let mut slowest = 0.0f64;
    for inc in &all {
        let st = &inc["status"];
        let restart = entry(inc, "restart").unwrap_or_else(|| panic!("a restart: {st}"));
        let waited = time(&restart["started"])
            .duration_since(time(&st["detectedAt"]))
            .as_secs_f64();
        slowest = slowest.max(waited);
        let told = entry(inc, "notify-it").unwrap();
        assert!(
            told["outcome"] == "Running" || time(&told["finished"]) > time(&st["closedAt"]),
            "the recovery did not wait for the delivery: {st}"
        );
    }
    println!("20 incidents, a responder that never answers: the slowest restart started {slowest:.2}s after detection");
    assert!(
        slowest < 10.0,
        "a restart waited {slowest:.2}s: behind the responder's timeouts"
    );
    hold.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_of_25_seconds_is_ridden_out() {
    let mut pg = Postgres::start();
    let ns = TestNamespace::new("pg-restart");
    let backups = tempfile::tempdir().unwrap();
    pg.sql("postgres", "CREATE DATABASE shop");
    seed(&pg);
    let mut op = operator(&ns, None);
    op.wait_ready().await;
    let plan = "apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {name: pra}\nspec:\n  selector: {}\n  procedures:\n  - kind: Database\n    steps:\n    - {name: reconnect, action: Reconnect, timeout: 1m, retries: 3}\n    - {name: restore, action: Restore, timeout: 20m}\n";
    let (ok, out) = ns.apply(&format!("{}---\n{plan}", database_yaml(&pg, backups.path())));
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "database/shop-db", "--timeout=60s"]);
    pg.stop();
    let stopped = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(25)).await;
    // The server answers somewhere between these two: reprise's kept
    // connection may see it before this test's own polling does.
    let restarting = k8s_openapi::jiff::Timestamp::now();
    pg.restart();
    let back = k8s_openapi::jiff::Timestamp::now();
    let inc = eventually("the incident resolved", Duration::from_secs(60), || async {
        incidents(&ns).into_iter().find(|i| i["status"]["phase"] == "Resolved")
    })
    .await;
    let st = &inc["status"];
    let steps = crate::support::each(&st["timeline"], "step");
    assert_eq!(steps, ["reconnect"], "one reconnect, no restore: {st}");
    assert_eq!(entry(&inc, "reconnect").unwrap()["outcome"], "Succeeded", "{st}");
    assert!(
        time(&st["closedAt"]) >= restarting,
        "resolved before the server was started again: {st}"
    );
    println!(
        "PostgreSQL down {:.1}s: incident resolved {:.1}s after it answered again",
        stopped.duration_until(back).as_secs_f64(),
        back.duration_until(time(&st["closedAt"])).as_secs_f64()
    );
    assert_eq!(incidents(&ns).len(), 1);
    op.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_restart_killed_midway_runs_once() {
    for point in ["vm:accepted", "vm:restarted"] {
        let (ns, standin, mut doomed) = vms("crash-vm", &["vm-a".into()], "", Some(point)).await;
        kubevirt::fail_instance(&plane().client().await, &ns.name, "vm-a").await;
        assert!(
            doomed.wait_exit(Duration::from_secs(60)).await.is_some(),
            "{point}: the operator did not reach its crash point"
        );
        let mut op = vm_operator(&ns, None);
        op.wait_ready().await;
        let resolved = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                if let Some(i) = incidents(&ns).into_iter().find(|i| i["status"]["phase"] == "Resolved") {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        let Ok(inc) = resolved else {
            panic!(
                "{point}: no incident resolved in 90s; incidents: {}\nvm: {}\noperator log (end): {}",
                serde_json::to_string(&incidents(&ns)).unwrap_or_default(),
                ns.json("virtualmachines.reprise.dev/vm-a")["status"],
                op.logs()
                    .chars()
                    .rev()
                    .take(6000)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            );
        };
        assert_eq!(
            entry(&inc, "restart").unwrap()["outcome"],
            "Succeeded",
            "{}",
            inc["status"]
        );
        assert_eq!(standin.started("vm-a"), 2, "{point}: one restart, not two");
        let vm = ns.json("virtualmachines.reprise.dev/vm-a");
        assert_eq!(vm["status"]["lastAction"]["outcome"], "Done", "{}", vm["status"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_power_on_killed_midway_is_asked_once() {
    use crate::support::fake_bmc::{Behaviour, FakeBmc, server_yaml};
    let bmc = FakeBmc::start(Behaviour {
        power: Some("Off".into()),
        power_delay: Some(Duration::from_secs(6)),
        ..Default::default()
    })
    .await;
    let ns = TestNamespace::new("crash-power");
    let mut doomed = operator(&ns, Some("server:power"));
    doomed.wait_ready().await;
    let (ok, out) = ns.apply(&server_yaml("hv", &bmc.url, "  pollInterval: 2s\n"));
    assert!(ok, "{out}");
    assert!(
        doomed.wait_exit(Duration::from_secs(60)).await.is_some(),
        "no crash at the power-on"
    );
    let mut op = operator(&ns, None);
    op.wait_ready().await;
    ns.wait_for("server/hv", "the server on and healthy", 60, |v| {
        v["status"]["health"]["state"] == "Healthy" && v["status"]["powerState"] == "On"
    })
    .await;
    assert_eq!(bmc.count("POST", "/redfish/v1/Systems/1/Actions"), 1, "asked once");
    op.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_restart_killed_midway_runs_once() {
    if !plane().pods {
        return;
    }
    for point in ["application:accepted", "application:applied"] {
        let ns = TestNamespace::new("crash-app");
        let mut op = operator(&ns, None);
        op.wait_ready().await;
        let (ok, out) = ns.apply(
            "apiVersion: reprise.dev/v1alpha1\nkind: Application\nmetadata: {name: shop}\nspec: {type: Web, version: \"1.0\", image: \"registry.example/shop:{version}\", replicas: 2}\n",
        );
        assert!(ok, "{out}");
        ns.k(&["wait", "--for=condition=Ready", "application/shop", "--timeout=90s"]);
        op.kill();
        let mut doomed = operator(&ns, Some(point));
        doomed.wait_ready().await;
        ns.k(&["annotate", "application/shop", "reprise.dev/action=restart/r1"]);
        assert!(
            doomed.wait_exit(Duration::from_secs(60)).await.is_some(),
            "{point}: no crash"
        );
        let mut op = operator(&ns, None);
        op.wait_ready().await;
        let app = ns
            .wait_for("application/shop", &format!("{point}: the restart answered"), 90, |v| {
                v["status"]["lastAction"]["outcome"] == "Done" && v["status"]["health"] == "Healthy"
            })
            .await;
        let d = ns.json("deployment/shop");
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["reprise.dev/restarted-at"], "r1",
            "{point}"
        );
        let sets: Value = serde_json::from_str(&ns.k(&["get", "replicasets", "-o", "json"])).unwrap();
        assert_eq!(
            sets["items"].as_array().unwrap().len(),
            2,
            "{point}: the first rollout and one restart, not two: {}",
            app["status"]["lastAction"]
        );
        op.kill();
    }
}
