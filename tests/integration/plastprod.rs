//! The whole PlastProd example, as a user applies it (peers on loopback):
//! quiet in steady state, then one failure of each level in turn, each
//! opening one Incident that the plan's procedure resolves within its window.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::support::{
    OPERATOR_USER, audit, eventually, kubevirt,
    operator::{Operator, Options},
    plane,
    plastprod::World,
};

/// Waits for the component's one incident to be resolved; checks what every resolved incident must hold.
async fn resolved(world: &World, kind: &str, name: &str, level: u64) -> Value {
    let inc = eventually(
        &format!("the {kind} {name} incident resolved"),
        Duration::from_secs(180),
        || async {
            // Resolved, and every delivery to responders ended (they run apart from the recovery).
            let all = world.incidents(kind, name);
            all.first()
                .filter(|i| i["status"]["phase"] == "Resolved")
                .filter(|i| {
                    i["status"]["timeline"]
                        .as_array()
                        .is_some_and(|t| t.iter().all(|e| e["outcome"] != "Running"))
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(world.incidents(kind, name).len(), 1, "one incident for one failure");
    assert_eq!(inc["spec"]["level"], level);
    let st = &inc["status"];
    let timeline = st["timeline"].as_array().unwrap();
    assert!(!timeline.is_empty(), "{st}");
    assert!(
        timeline
            .iter()
            .all(|e| e["finished"].is_string() && e["outcome"] != "Running"),
        "every step finished: {st}"
    );
    assert_eq!(
        timeline[0]["step"], "notify-plastprod-it",
        "the first responder told first: {st}"
    );
    assert_eq!(timeline[0]["outcome"], "Succeeded");
    let m = &st["measures"];
    assert!(m["timeToDetect"].as_str().unwrap().ends_with('s'), "{m}");
    assert!(m["timeToRecover"].as_str().unwrap().ends_with('s'), "{m}");
    assert_eq!(m["steps"].as_array().unwrap().len(), timeline.len(), "{m}");
    assert_eq!(st["breached"], false);
    inc
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_is_quiet_then_recovers_one_failure_per_level() {
    let world = World::start("plastprod", Some("3s")).await;
    let ns = &world.ns;
    let mut op = Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    world.settle().await;

    // Steady state: everything applied, nothing failing, nothing written for 60 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let to = Timestamp::now();
    let writes = audit::writes(plane().audit(), OPERATOR_USER, Some(&ns.name), from, to);
    assert!(
        writes.is_empty(),
        "the operator wrote in steady state:\n{}",
        writes.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("\n")
    );
    let all: Value = serde_json::from_str(&ns.k(&["get", "incidents", "-o", "json"])).unwrap();
    assert!(
        all["items"].as_array().unwrap().is_empty(),
        "no incident while nothing fails"
    );
    // What Flux or Argo CD would say of the example: every object Current.
    let judged = crate::support::kstatus(
        &ns.name,
        "servers,virtualmachines.reprise.dev,databases,applications,recoveryplans,maintenancewindows",
    );
    let not_current: Vec<_> = judged.iter().filter(|(_, (s, _))| s != "Current").collect();
    assert!(judged.len() >= 9, "{judged:?}");
    assert!(not_current.is_empty(), "kstatus: {not_current:?}");

    // Level 1, application: its Deployment deleted.
    ns.k(&["delete", "deployment", "web-shop", "--wait=false"]);
    let app = resolved(&world, "Application", "web-shop", 1).await;
    assert_eq!(app["status"]["measures"]["deadlineMet"], true);
    // The controller recreated it at once: the procedure let that finish, restarting nothing.
    let steps: Vec<&str> = app["status"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert!(!steps.contains(&"restart"), "{steps:?}");

    // Level 1, database: dropped on the server; restored from the backup and verified.
    world.pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)");
    let db = resolved(&world, "Database", "shop-db", 1).await;
    let m = &db["status"]["measures"];
    assert!(m["dataRestoredBytes"].as_u64().unwrap() > 0, "{m}");
    assert!(m["dataLossWindow"].as_str().is_some(), "{m}");
    assert_eq!(m["deadlineMet"], true);
    assert_eq!(world.pg.sql("shop", "SELECT count(*) FROM orders").trim(), "5000");

    // Level 2, virtual machine: its instance fails; nothing restarts it but the procedure.
    kubevirt::fail_instance(&plane().client().await, &ns.name, "vm-api").await;
    let vm = resolved(&world, "VirtualMachine", "vm-api", 2).await;
    let steps: Vec<(&str, &str)> = vm["status"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["step"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("notify-plastprod-it", "Succeeded"), ("restart", "Succeeded")]);
    assert_eq!(vm["status"]["measures"]["deadlineMet"], true);

    // Level 3, server: forced off at its BMC; level 3 is open-ended (no deadline).
    let (_, uuid, _) = crate::support::plastprod::SERVERS[0];
    world.bmc("hv-01").reset(uuid, "ForceOff");
    let server = resolved(&world, "Server", "hv-01", 3).await;
    assert!(server["status"]["deadline"].is_null(), "{}", server["status"]);
    assert!(server["status"]["measures"]["deadlineMet"].is_null());
    assert_eq!(world.bmc("hv-01").system(uuid)["PowerState"], "On");

    // The internal team was told of each, in order, by its webhook with its token;
    // the level-3 call carries what a technician needs.
    let got = world.hooks.lock().unwrap().clone();
    let order: Vec<(String, String, u64)> = got
        .iter()
        .map(|d| {
            (
                d.path.clone(),
                d.body["component"]["name"].as_str().unwrap_or_default().to_string(),
                d.body["level"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = [("web-shop", 1), ("shop-db", 1), ("vm-api", 2), ("hv-01", 3)]
        .iter()
        .map(|(c, l)| ("/plastprod-it".to_string(), c.to_string(), *l))
        .collect();
    assert_eq!(order, expected, "{got:?}");
    assert!(
        got.iter()
            .all(|d| d.auth.as_deref() == Some("Bearer change-me-webhook-token"))
    );
    assert!(got[3].body["server"].is_object(), "{}", got[3].body);
    // What a user sees of it all with kubectl reprise.
    crate::plugin::check_world(&ns.name, &[&app, &db, &vm, &server]);
    crate::plugin::queries_name_exported_metrics(&mut op).await;
    assert!(op.exited().is_none(), "the operator is still running");
}
