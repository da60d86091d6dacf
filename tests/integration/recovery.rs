//! Detection: a covered component's failure opens one Incident (level from
//! the plan, deadline from its window) that resolves, with its measures, once
//! the component's controller has repaired it; none inside a Pause window.

use std::time::Duration;

use k8s_openapi::jiff::{Timestamp, ToSpan};
use serde_json::Value;

use crate::support::{
    TestNamespace, eventually,
    operator::{Operator, Options},
    postgres::{ADMIN, Postgres},
    webhooks::{self, Received},
};

/// A responder's webhook on loopback: every JSON body it receives, with its Authorization header.
async fn receiver() -> (String, Received) {
    let (base, got) = webhooks::receiver().await;
    (format!("{base}/hook"), got)
}

/// A VirtualMachine (label `tier: vm`) and a plan covering it, with the
/// KubeVirt stand-in and an operator (5 s VM grace period); the VM is Ready.
struct VmScene {
    ns: TestNamespace,
    op: Operator,
    _standin: crate::support::kubevirt::StandIn,
}

fn vm_operator(ns: &TestNamespace) -> Operator {
    Operator::start(Options {
        extra: vec!["--vm-ready-grace-seconds".into(), "5".into()],
        ..Options::namespace(&ns.name)
    })
}

async fn vm_scene(prefix: &str, vm: &str, plan_spec: &str) -> VmScene {
    let ns = TestNamespace::new(prefix);
    let standin = crate::support::kubevirt::StandIn::start(crate::support::plane().client().await, &ns.name);
    let mut op = vm_operator(&ns);
    op.wait_ready().await;
    let yaml = format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {{name: {vm}, labels: {{tier: vm}}}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: [{{name: root, containerDisk: {{image: \"registry.example/vm/debian:12\"}}}}]\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: pra}}\nspec:\n  selector: {{matchLabels: {{tier: vm}}}}\n{plan_spec}"
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    ns.wait_for(
        &format!("virtualmachines.reprise.dev/{vm}"),
        "the VM to be Ready",
        60,
        |v| crate::support::condition(v, "Ready").is_some_and(|(s, _, _)| s == "True"),
    )
    .await;
    assert!(incidents(&ns).is_empty());
    crate::support::kubevirt::fail_instance(&crate::support::plane().client().await, &ns.name, vm).await;
    VmScene {
        ns,
        op,
        _standin: standin,
    }
}

/// An incident's timeline: (step, outcome, attempt) of each entry.
fn timeline(inc: &Value) -> Vec<(String, String, u64)> {
    inc["status"]["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits for an incident of the namespace in `phase`.
async fn incident_in(ns: &TestNamespace, phase: &str) -> Value {
    // A bound on the wait, not a measure: the suite shares two cores.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let all = incidents(ns);
        if let Some(i) = all.iter().find(|i| i["status"]["phase"] == phase) {
            return i.clone();
        }
        if std::time::Instant::now() > until {
            // What was seen instead, to find why.
            let seen: Vec<&Value> = all.iter().map(|i| &i["status"]).collect();
            let components = ns.k(&[
                "get",
                "virtualmachines.reprise.dev,databases,applications",
                "-o",
                "json",
            ]);
            panic!(
                "timed out after 120s waiting for: an incident {phase}; incidents: {seen:?}; components: {components}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn incidents(ns: &TestNamespace) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ns.k(&["get", "incidents", "-o", "json"])).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn db(ns: &TestNamespace) -> Value {
    serde_json::from_str(&ns.k(&["get", "database/shop-db", "-o", "json"])).unwrap()
}

/// A PostgreSQL server, a namespace, a backup directory, and an operator probing databases every 2 s.
async fn db_world(prefix: &str) -> (Postgres, TestNamespace, tempfile::TempDir, Operator) {
    let pg = Postgres::start();
    let ns = TestNamespace::new(prefix);
    let backups = tempfile::tempdir().unwrap();
    let mut op = Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    (pg, ns, backups, op)
}

/// The admin Secret and Database shop-db (label `tier: data`) on `pg`, with
/// `databases` and verify `tables` (YAML flow lists), backed up to `backups`.
fn shop_db(pg: &Postgres, backups: &tempfile::TempDir, databases: &str, tables: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: \"{}\"}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {{name: shop-db, labels: {{tier: data}}}}\nspec:\n  instance: {{external: {{host: 127.0.0.1, port: {}, adminSecretRef: {{name: pg-admin}}, sslMode: Disable}}}}\n  databases: {databases}\n  backup: {{schedule: \"0 0 1 1 *\", store: {{local: {{path: {}}}}}}}\n  verify: {{tables: {tables}}}\n",
        pg.admin_password,
        pg.port,
        backups.path().display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_database_opens_one_incident_that_resolves_with_its_measures() {
    let (hook, received) = receiver().await;
    let (pg, ns, backups, _op) = db_world("detect").await;
    let yaml = format!(
        "{}---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: pager, annotations: {{reprise.dev/for: \"RecoveryPlan/*\"}}}}\nstringData: {{token: pager-token-77}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: pra}}\nspec:\n  selector: {{matchLabels: {{tier: data}}}}\n\
         \x20 levels:\n  - {{level: 1, appliesTo: [Application, Database], minWindow: 15m, maxWindow: 30m, responders: [{{name: it}}, {{name: vendor, modes: [Phone]}}]}}\n\
         \x20 responders:\n  - {{name: it, type: Internal, webhook: {{url: \"{hook}\", tokenSecretRef: {{name: pager, key: token}}}}}}\n\
         \x20 - {{name: vendor, type: Vendor, webhook: {{url: \"{hook}\"}}, contract: {{until: \"2020-01-01\", reference: OLD-1}}}}\n",
        shop_db(&pg, &backups, "[{name: shop}]", "[{database: shop, name: orders}]")
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "database/shop-db", "--timeout=60s"]);
    pg.sql("shop", "CREATE TABLE orders (id serial PRIMARY KEY, qty int); INSERT INTO orders (qty) SELECT g FROM generate_series(1, 500) g");
    ns.k(&["annotate", "database/shop-db", "reprise.dev/backup-now=1"]);
    eventually("a backup", Duration::from_secs(60), || async {
        db(&ns)["status"]["lastBackup"]["id"].as_str().map(|_| ())
    })
    .await;
    assert!(incidents(&ns).is_empty(), "nothing failed yet");

    // The database is dropped: one incident, level 1, resolved once restored.
    pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)");
    let inc = eventually("the incident to resolve", Duration::from_secs(90), || async {
        let all = incidents(&ns);
        all.iter().find(|i| i["status"]["phase"] == "Resolved").cloned()
    })
    .await;
    assert_eq!(incidents(&ns).len(), 1, "one incident for one failure");
    assert_eq!(inc["spec"]["component"]["kind"], "Database");
    assert_eq!(inc["spec"]["component"]["name"], "shop-db");
    assert_eq!(inc["spec"]["level"], 1);
    assert!(
        inc["spec"]["cause"].as_str().unwrap().contains("shop"),
        "{}",
        inc["spec"]
    );
    let st = &inc["status"];
    let detected: Timestamp = st["detectedAt"].as_str().unwrap().parse().unwrap();
    let deadline: Timestamp = st["deadline"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        deadline,
        detected.checked_add(30.minutes()).unwrap(),
        "level 1's window is 30 minutes"
    );
    assert_eq!(st["breached"], false);
    let m = &st["measures"];
    assert!(m["timeToDetect"].as_str().unwrap().ends_with('s'), "{m}");
    assert!(m["timeToRecover"].as_str().unwrap().ends_with('s'), "{m}");
    assert!(m["dataRestoredBytes"].as_u64().unwrap() > 0, "{m}");
    assert!(m["dataLossWindow"].as_str().is_some(), "{m}");
    let events = ns.k(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    assert!(
        events.contains("IncidentOpened") && events.contains("Resolved"),
        "{events}"
    );

    // The level's first responder was told, by its webhook, with its token.
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery: {got:?}");
    let (auth, body) = (&got[0].auth, &got[0].body);
    assert_eq!(auth.as_deref(), Some("Bearer pager-token-77"));
    assert_eq!(body["incident"], inc["metadata"]["name"]);
    assert_eq!(body["component"]["name"], "shop-db");
    assert_eq!(body["level"], 1);
    assert_eq!(body["deadline"], st["deadline"]);
    let timeline = st["timeline"].as_array().unwrap();
    let outcome = |step: &str| {
        timeline.iter().find(|e| e["step"] == step).map(|e| {
            (
                e["outcome"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
    };
    assert_eq!(outcome("notify-it").unwrap().0, "Succeeded", "{timeline:?}");
    assert!(
        outcome("notify-vendor").is_none(),
        "the next responders are for escalation"
    );

    // Inside a Pause window: the failure is recorded, nothing is repaired, no incident opens.
    let start = Timestamp::now().checked_sub(1.minute()).unwrap();
    let end = Timestamp::now().checked_add(1.hour()).unwrap();
    let window = |end: Timestamp| {
        format!(
            "apiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: upgrade}}\nspec:\n  selector: {{matchLabels: {{tier: data}}}}\n  start: \"{start}\"\n  end: \"{end}\"\n  reason: PostgreSQL upgrade\n  mode: Pause\n"
        )
    };
    let (ok, out) = ns.apply(&window(end));
    assert!(ok, "{out}");
    ns.wait_for("maintenancewindow/upgrade", "the window to be active", 30, |w| {
        w["status"]["phase"] == "Active"
    })
    .await;
    let first_restore = db(&ns)["status"]["lastRestore"]["started"].clone();
    pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)");
    let health = eventually("the failure seen", Duration::from_secs(60), || async {
        let h = db(&ns)["status"]["health"].clone();
        (h["state"] == "DataMissing").then_some(h)
    })
    .await;
    assert!(
        health["message"]
            .as_str()
            .unwrap()
            .contains("MaintenanceWindow upgrade holds recovery"),
        "{health}"
    );
    // Several probes (2 s apart) later: still not restored, still no incident.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        db(&ns)["status"]["lastRestore"]["started"],
        first_restore,
        "no restore inside the window"
    );
    assert_eq!(incidents(&ns).len(), 1, "no incident inside the Pause window");
    let mw: Value = serde_json::from_str(&ns.k(&["get", "maintenancewindow/upgrade", "-o", "json"])).unwrap();
    assert_eq!(mw["status"]["failuresRecorded"], 1, "{}", mw["status"]);
    assert_eq!(mw["status"]["failures"][0]["component"]["name"], "shop-db");

    // The window ends: the failure opens its incident and is recovered.
    let (ok, out) = ns.apply(&window(Timestamp::now().checked_add(2.seconds()).unwrap()));
    assert!(ok, "{out}");
    let second = eventually("an incident after the window", Duration::from_secs(90), || async {
        let all = incidents(&ns);
        (all.len() == 2)
            .then(|| {
                all.into_iter()
                    .find(|i| i["metadata"]["name"] != inc["metadata"]["name"])
            })
            .flatten()
            .filter(|i| i["status"]["phase"] == "Resolved")
    })
    .await;
    assert_eq!(second["spec"]["component"]["name"], "shop-db");
    let r = db(&ns)["status"]["lastRestore"].clone();
    assert!(r["started"] != first_restore && r["outcome"] == "Verified", "{r}");
    assert_eq!(
        pg.sql("shop", "SELECT count(*) FROM orders").trim(),
        "500",
        "restored after the window"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_vm_is_recovered_by_the_plans_procedure() {
    // The instance fails; nothing restarts it on its own: the plan's first step does.
    let scene = vm_scene(
        "procedure",
        "vm-web",
        "  levels:\n  - {level: 2, appliesTo: [VirtualMachine], minWindow: 30m, maxWindow: 45m}\n  procedures:\n  - kind: VirtualMachine\n    steps:\n    - {name: restart, action: Restart, timeout: 60s}\n    - {name: recreate, action: Recreate, timeout: 60s}\n  incidentRetention: 10s\n",
    )
    .await;
    let ns = &scene.ns;
    let inc = incident_in(ns, "Resolved").await;
    assert_eq!(incidents(ns).len(), 1);
    assert_eq!(inc["spec"]["level"], 2);
    assert_eq!(
        timeline(&inc),
        [("restart".to_string(), "Succeeded".to_string(), 1)],
        "one step, run once: {}",
        inc["status"]["timeline"]
    );
    assert!(inc["status"]["timeline"][0]["finished"].is_string());
    // The VM's controller carried out the request the executor made.
    let vm: Value = serde_json::from_str(&ns.k(&["get", "virtualmachines.reprise.dev/vm-web", "-o", "json"])).unwrap();
    assert_eq!(vm["status"]["lastAction"]["action"], "restart");
    assert_eq!(vm["status"]["lastAction"]["outcome"], "Done");
    assert_eq!(vm["status"]["health"]["state"], "Healthy");
    let m = &inc["status"]["measures"];
    assert!(m["timeToRecover"].as_str().is_some(), "{m}");
    assert_eq!(m["steps"][0]["step"], "restart", "{m}");
    assert!(inc["status"]["closedAt"].is_string());
    // Kept as the audit trail for the plan's retention (10 s here), then deleted.
    assert_eq!(incidents(ns).len(), 1);
    eventually(
        "the incident past its retention deleted",
        Duration::from_secs(60),
        || async { incidents(ns).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notify_only_window_opens_an_incident_whose_procedure_only_notifies() {
    let (hook, received) = receiver().await;
    let ns = TestNamespace::new("notify-only");
    let client = crate::support::plane().client().await;
    let _standin = crate::support::kubevirt::StandIn::start(client.clone(), &ns.name);
    let mut op = vm_operator(&ns);
    op.wait_ready().await;
    let start = Timestamp::now().checked_sub(1.minute()).unwrap();
    let end = Timestamp::now().checked_add(1.hour()).unwrap();
    let yaml = format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {{name: vm-api, labels: {{tier: vm}}}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: [{{name: root, containerDisk: {{image: \"registry.example/vm/debian:12\"}}}}]\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: pra}}\nspec:\n  selector: {{matchLabels: {{tier: vm}}}}\n\
         \x20 levels:\n  - {{level: 2, appliesTo: [VirtualMachine], minWindow: 30m, maxWindow: 45m, responders: [{{name: it}}]}}\n\
         \x20 responders:\n  - {{name: it, type: Internal, webhook: {{url: \"{hook}\"}}}}\n\
         \x20 procedures:\n  - kind: VirtualMachine\n    steps:\n    - {{name: restart, action: Restart, timeout: 60s}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: change-freeze}}\nspec:\n  selector: {{matchLabels: {{tier: vm}}}}\n  start: \"{start}\"\n  end: \"{end}\"\n  reason: year-end change freeze, people decide\n  mode: NotifyOnly\n"
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    ns.k(&[
        "wait",
        "--for=condition=Ready",
        "virtualmachines.reprise.dev/vm-api",
        "--timeout=60s",
    ]);
    crate::support::kubevirt::fail_instance(&client, &ns.name, "vm-api").await;
    // Deliveries run apart from the reconciles: wait for the notify step to end too.
    let inc = eventually("the restart skipped", Duration::from_secs(60), || async {
        incidents(&ns).into_iter().find(|i| {
            let t = timeline(i);
            t.iter().any(|(s, o, _)| s == "restart" && o == "Skipped") && t.iter().all(|(_, o, _)| o != "Running")
        })
    })
    .await;
    assert_eq!(inc["spec"]["notifyOnly"], "change-freeze");
    assert_eq!(
        timeline(&inc),
        [
            ("notify-it".to_string(), "Succeeded".to_string(), 1),
            ("restart".to_string(), "Skipped".to_string(), 1)
        ],
        "{}",
        inc["status"]["timeline"]
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "the responder was told: {got:?}");
    // Nothing restarts the VM: it stays failed, the incident open for people.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let vm = ns.json("virtualmachines.reprise.dev/vm-api");
    assert_eq!(vm["status"]["health"]["state"], "Failed", "{}", vm["status"]);
    assert!(
        vm["status"]["lastAction"].is_null(),
        "no action asked: {}",
        vm["status"]
    );
    let inc = ns.json(&format!("incident/{}", inc["metadata"]["name"].as_str().unwrap()));
    assert_ne!(inc["status"]["phase"], "Resolved");
    assert_ne!(
        inc["status"]["phase"], "Failed",
        "a notify-only incident waits for people"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_operator_resumes_the_procedure_where_it_stopped() {
    let mut scene = vm_scene(
        "resume",
        "vm-db",
        "  levels:\n  - {level: 2, appliesTo: [VirtualMachine], minWindow: 30m, maxWindow: 45m}\n  procedures:\n  - kind: VirtualMachine\n    steps:\n    - {name: approve, action: WaitForApproval, timeout: 5m}\n    - {name: restart, action: Restart, timeout: 60s}\n",
    )
    .await;
    let ns = &scene.ns;
    let inc = incident_in(ns, "AwaitingApproval").await;
    let name = inc["metadata"]["name"].as_str().unwrap().to_string();

    // The operator dies in the middle of the procedure; another one takes over.
    scene.op.kill();
    let mut op2 = vm_operator(ns);
    op2.wait_ready().await;
    ns.k(&["annotate", "incident", &name, "reprise.dev/approve=alice"]);
    let inc = incident_in(ns, "Resolved").await;
    assert_eq!(inc["status"]["approvedBy"], "alice");
    assert_eq!(
        timeline(&inc),
        [
            ("approve".to_string(), "Succeeded".to_string(), 1),
            ("restart".to_string(), "Succeeded".to_string(), 1)
        ],
        "each step once, in order"
    );
    // The restart was asked once, and carried out once.
    let vm: Value = serde_json::from_str(&ns.k(&["get", "virtualmachines.reprise.dev/vm-db", "-o", "json"])).unwrap();
    assert_eq!(vm["status"]["lastAction"]["action"], "restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_fails_for_good_escalates_to_the_next_responder() {
    let (hook, received) = receiver().await;
    // `move` without a target is refused by the VM controller: the step fails for good (no retries).
    let plan = format!(
        "  levels:\n  - {{level: 2, appliesTo: [VirtualMachine], minWindow: 30m, maxWindow: 45m, responders: [{{name: it}}, {{name: old-vendor}}, {{name: vendor, modes: [Phone]}}]}}\n\
         \x20 responders:\n  - {{name: it, type: Internal, webhook: {{url: \"{hook}\"}}}}\n\
         \x20 - {{name: old-vendor, type: Vendor, webhook: {{url: \"{hook}\"}}, contract: {{until: \"2020-01-01\"}}}}\n\
         \x20 - {{name: vendor, type: Vendor, webhook: {{url: \"{hook}\"}}, contract: {{until: \"2099-12-31\", reference: SALTY-1}}}}\n\
         \x20 procedures:\n  - kind: VirtualMachine\n    steps:\n    - {{name: move, action: Move, retries: 0}}\n    - {{name: restart, action: Restart}}\n"
    );
    let scene = vm_scene("escalate", "vm-api", &plan).await;
    let ns = &scene.ns;
    let inc = incident_in(ns, "Resolved").await;
    let steps: Vec<(String, String)> = timeline(&inc).into_iter().map(|(s, o, _)| (s, o)).collect();
    let expected: Vec<(String, String)> = [
        ("notify-it", "Succeeded"),
        ("move", "Failed"),
        ("escalate-old-vendor", "Skipped"),
        ("escalate-vendor", "Succeeded"),
        ("restart", "Succeeded"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(steps, expected, "{}", inc["status"]["timeline"]);
    // The webhooks in order: the internal team at opening, the vendor on escalation.
    let got = received.lock().unwrap().clone();
    let order: Vec<(&str, &str)> = got
        .iter()
        .map(|d| {
            (
                d.body["phase"].as_str().unwrap_or_default(),
                d.body["modes"][0].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(order, [("Detected", "Remote"), ("Escalated", "Phone")], "{got:?}");
    let events = ns.k(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("Escalated"), "{events}");
    drop(scene);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_restores_into_scratch_copies_and_leaves_the_live_database_alone() {
    let (pg, ns, backups, _op) = db_world("drill").await;
    let yaml = format!(
        "{}---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: pra}}\nspec:\n  selector: {{matchLabels: {{tier: data}}}}\n  drills: {{schedule: \"0 3 1 1 *\"}}\n",
        shop_db(
            &pg,
            &backups,
            "[{name: shop}, {name: stock}]",
            "[{database: shop, name: orders}, {database: stock, name: items}]"
        )
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "database/shop-db", "--timeout=60s"]);
    pg.sql("shop", "CREATE TABLE orders (id serial PRIMARY KEY, qty int); INSERT INTO orders (qty) SELECT g FROM generate_series(1, 2000) g");
    pg.sql("stock", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 300) g");
    ns.k(&["annotate", "database/shop-db", "reprise.dev/backup-now=1"]);
    eventually("a backup", Duration::from_secs(60), || async {
        db(&ns)["status"]["lastBackup"]["id"].as_str().map(|_| ())
    })
    .await;
    // Changed after the backup: a drill must restore the backup, not copy the live data.
    pg.sql("shop", "INSERT INTO orders (qty) VALUES (7)");
    let checksum = |d: &str, t: &str| {
        pg.sql(
            d,
            &format!("SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY x.id)) FROM {t} x"),
        )
    };
    let before = (checksum("shop", "orders"), checksum("stock", "items"));
    let databases = || {
        pg.sql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
        )
    };
    let dbs_before = databases();
    let restore_before = db(&ns)["status"]["lastRestore"].clone();

    ns.k(&["annotate", "recoveryplan/pra", "reprise.dev/drill-now=first"]);
    let plan = ns
        .wait_for("recoveryplan/pra", "the drill to finish", 120, |p| {
            p["status"]["lastDrill"]["finished"].is_string()
        })
        .await;
    let drill = &plan["status"]["lastDrill"];
    assert_eq!(drill["trigger"], "first");
    let comps = drill["components"].as_array().unwrap();
    assert_eq!(comps.len(), 1, "{drill}");
    assert_eq!(comps[0]["component"]["name"], "shop-db");
    assert_eq!(comps[0]["outcome"], "Verified", "{drill}");
    assert!(comps[0]["seconds"].as_f64().unwrap() > 0.0, "{drill}");
    let level1 = drill["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["level"] == 1)
        .unwrap();
    assert_eq!(level1["met"], true, "{drill}");
    assert_eq!(level1["window"], "30m");
    assert!(level1["measured"].as_str().unwrap().ends_with('s'), "{drill}");
    let level3 = drill["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["level"] == 3)
        .unwrap();
    assert_eq!(level3["met"], false, "nothing of level 3 is drilled: {drill}");
    assert!(level3["message"].as_str().unwrap().contains("not drilled"), "{drill}");

    // What the database's controller did: both databases restored and verified against the manifest.
    let st = db(&ns)["status"].clone();
    let rec = &st["lastDrill"];
    assert_eq!(rec["outcome"], "Verified", "{rec}");
    let tables: Vec<(String, u64, u64, bool)> = rec["verification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["table"].as_str().unwrap().to_string(),
                v["rows"].as_u64().unwrap(),
                v["expectedRows"].as_u64().unwrap(),
                v["checksumMatches"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        [
            ("shop.public.orders".to_string(), 2000, 2000, true),
            ("stock.public.items".to_string(), 300, 300, true)
        ],
        "the backup's rows, not the live table's 2001"
    );
    assert_eq!(st["lastAction"]["action"], "drill");
    assert_eq!(st["lastAction"]["outcome"], "Done");

    // No scratch copy left, the live data unchanged, no restore, no incident.
    assert_eq!(databases(), dbs_before, "no scratch database left behind");
    assert_eq!((checksum("shop", "orders"), checksum("stock", "items")), before);
    assert_eq!(st["lastRestore"], restore_before, "the live database was not restored");
    assert!(incidents(&ns).is_empty());
    let events = ns.k(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    for reason in ["DrillStarted", "DrillVerified", "DrillFinished"] {
        assert!(events.contains(reason), "{reason} in {events}");
    }

    // The same value does not start another drill; a new one does, with a new id.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ns.json("recoveryplan/pra")["status"]["lastDrill"]["id"], drill["id"]);
    ns.k(&[
        "annotate",
        "--overwrite",
        "recoveryplan/pra",
        "reprise.dev/drill-now=second",
    ]);
    let again = ns
        .wait_for("recoveryplan/pra", "the second drill", 120, |p| {
            p["status"]["lastDrill"]["trigger"] == "second" && p["status"]["lastDrill"]["finished"].is_string()
        })
        .await;
    assert_ne!(again["status"]["lastDrill"]["id"], drill["id"]);
    assert_eq!(again["status"]["lastDrill"]["components"][0]["outcome"], "Verified");
    assert_eq!(databases(), dbs_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_drill_starts_a_scratch_copy_of_its_snapshot_and_deletes_it() {
    let ns = TestNamespace::new("vm-drill");
    let client = crate::support::plane().client().await;
    let _standin = crate::support::kubevirt::StandIn::start(client.clone(), &ns.name);
    let mut op = vm_operator(&ns);
    op.wait_ready().await;
    let yaml = "apiVersion: reprise.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {name: vm-web, labels: {tier: vm}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: [{name: root, containerDisk: {image: \"registry.example/vm/debian:12\"}}]\n  backup: {schedule: \"0 0 1 1 *\"}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {name: pra}\nspec:\n  selector: {matchLabels: {tier: vm}}\n  drills: {schedule: \"0 3 1 1 *\"}\n";
    let (ok, out) = ns.apply(yaml);
    assert!(ok, "{out}");
    ns.k(&[
        "wait",
        "--for=condition=Ready",
        "virtualmachines.reprise.dev/vm-web",
        "--timeout=60s",
    ]);
    ns.k(&[
        "annotate",
        "virtualmachines.reprise.dev/vm-web",
        "reprise.dev/backup-now=1",
    ]);
    ns.wait_for("virtualmachines.reprise.dev/vm-web", "a ready snapshot", 60, |v| {
        v["status"]["lastBackup"]["ready"] == true
    })
    .await;
    let live = |what: &str| ns.json(&format!("{what}/vm-web"))["metadata"]["uid"].clone();
    let (vm_before, vmi_before) = (
        live("virtualmachines.kubevirt.io"),
        live("virtualmachineinstances.kubevirt.io"),
    );

    ns.k(&["annotate", "recoveryplan/pra", "reprise.dev/drill-now=1"]);
    let plan = ns
        .wait_for("recoveryplan/pra", "the drill to finish", 120, |p| {
            p["status"]["lastDrill"]["finished"].is_string()
        })
        .await;
    let drill = &plan["status"]["lastDrill"];
    let c = &drill["components"][0];
    assert_eq!(c["component"]["kind"], "VirtualMachine", "{drill}");
    assert_eq!(c["outcome"], "Verified", "{drill}");
    assert!(c["seconds"].as_f64().unwrap() > 0.0, "{drill}");
    let level2 = drill["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["level"] == 2)
        .unwrap();
    assert_eq!(level2["met"], true, "{drill}");
    assert_eq!(level2["window"], "45m");

    let vm = ns.json("virtualmachines.reprise.dev/vm-web");
    let d = &vm["status"]["lastDrill"];
    assert_eq!(d["phase"], "Verified", "{d}");
    let scratch = d["scratch"].as_str().unwrap();
    assert!(scratch.starts_with("vm-web-drill-"), "{d}");
    assert_eq!(vm["status"]["lastAction"]["action"], "drill");
    assert_eq!(vm["status"]["lastAction"]["outcome"], "Done");
    // The scratch VM and its restore are gone; the live VM and its instance are the same objects.
    eventually("the scratch VM deleted", Duration::from_secs(60), || async {
        let names = ns.k(&[
            "get",
            "virtualmachines.kubevirt.io,virtualmachinerestores.snapshot.kubevirt.io",
            "-o",
            "name",
        ]);
        (!names.contains(scratch)).then_some(())
    })
    .await;
    assert_eq!(live("virtualmachines.kubevirt.io"), vm_before);
    assert_eq!(
        live("virtualmachineinstances.kubevirt.io"),
        vmi_before,
        "the live instance was not restarted"
    );
    assert!(incidents(&ns).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_would_end_past_the_deadline_is_skipped_for_escalation_and_the_breach_is_recorded() {
    let (hook, received) = receiver().await;
    // A 20 s window: the 60 s restart cannot end before the deadline.
    let plan = format!(
        "  levels:\n  - {{level: 2, appliesTo: [VirtualMachine], minWindow: 5s, maxWindow: 20s, responders: [{{name: it}}, {{name: vendor, modes: [Phone]}}]}}\n\
         \x20 responders:\n  - {{name: it, type: Internal, webhook: {{url: \"{hook}\"}}}}\n\
         \x20 - {{name: vendor, type: Vendor, webhook: {{url: \"{hook}\"}}, contract: {{until: \"2099-12-31\"}}}}\n\
         \x20 procedures:\n  - kind: VirtualMachine\n    steps:\n    - {{name: restart, action: Restart, timeout: 60s}}\n    - {{name: approve, action: WaitForApproval, timeout: 5m}}\n"
    );
    let mut scene = vm_scene("deadline", "vm-api", &plan).await;
    let ns = &scene.ns;
    let inc = eventually("the deadline breached", Duration::from_secs(90), || async {
        incidents(ns).into_iter().find(|i| i["status"]["breached"] == true)
    })
    .await;
    let steps: Vec<(String, String)> = timeline(&inc).into_iter().map(|(s, o, _)| (s, o)).collect();
    assert_eq!(
        steps[..3],
        [
            ("notify-it".to_string(), "Succeeded".to_string()),
            ("restart".to_string(), "Skipped".to_string()),
            ("escalate-vendor".to_string(), "Succeeded".to_string()),
        ],
        "{}",
        inc["status"]["timeline"]
    );
    let skipped = &inc["status"]["timeline"][1]["message"];
    assert!(skipped.as_str().unwrap().contains("past the deadline"), "{skipped}");
    assert_eq!(inc["status"]["phase"], "AwaitingApproval", "people decide now");
    assert_eq!(inc["status"]["measures"]["deadlineMet"], false);
    let vm = ns.json("virtualmachines.reprise.dev/vm-api");
    assert!(
        vm["status"]["lastAction"].is_null(),
        "no restart asked: {}",
        vm["status"]
    );
    let got = received.lock().unwrap().clone();
    // Two deliveries to two responders, sent side by side: either may land first.
    let mut phases: Vec<&str> = got
        .iter()
        .map(|d| d.body["phase"].as_str().unwrap_or_default())
        .collect();
    phases.sort();
    assert_eq!(phases, ["Detected", "Escalated"], "{got:?}");
    let events = ns.k(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("DeadlineBreached"), "{events}");
    assert_eq!(
        scene.op.metric("reprise_deadline_breaches_total", "level=\"2\"").await,
        1.0
    );
}
