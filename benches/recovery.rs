//! Benchmark (not a test): recovery latency per level with the whole
//! PlastProd example applied (every peer on loopback: PostgreSQL, one Redfish
//! emulator per server, the KubeVirt stand-in, the responders' webhooks),
//! with the example's own intervals and the operator's default flags (BMC
//! poll 60 s, database probe 30 s).
//!
//! For each level, REPRISE_BENCH_ROUNDS (default 10) failures are injected in
//! turn, each once the previous one is resolved:
//! - level 1, application: web-shop's Deployment deleted;
//! - level 1, database: `DROP DATABASE shop`;
//! - level 2, virtual machine: vm-api's instance marked Failed (as virt-handler would);
//! - level 3, server: hv-01 forced off at its BMC (the emulator applies it
//!   after 1-11 s: the failure counts from when the BMC reports it Off).
//!
//! Measured, from the failure to: the first recovery action (read from the
//! API server's audit log: the Deployment recreated; the Database's status
//! checkpoint written right before its restore starts; the VM instance
//! deleted for the restart; the Server's status written right after its
//! power-on call), and the resolution (the last write of the Incident's
//! status, which marks it Resolved). Median and p99 per level, next to the
//! plan's windows.
//!
//! `cargo bench --bench recovery` (uses the shared local control plane);
//! REPRISE_BENCH_LEVELS=application,database,vm,server chooses the failures.
//! The BMCs send events (Redfish SSE, through the stand-in front of
//! tests/integration/support/bmc_events.rs, as no emulator here sends any);
//! REPRISE_BENCH_BMC_EVENTS=0 measures a BMC that sends none (polled).

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::{Api, api::DeleteParams};
use support::{
    OPERATOR_USER, audit, kubevirt,
    operator::{Operator, Options},
    plane,
    plastprod::{SERVERS, World},
};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn secs(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// Waits for the incident opened after `known`, resolved; returns its name.
async fn resolution(world: &World, kind: &str, name: &str, known: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let all = world.incidents(kind, name);
        if all.len() > known && all.iter().all(|i| i["status"]["phase"] == "Resolved") {
            let newest = all
                .iter()
                .max_by_key(|i| {
                    i["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap();
            return newest["metadata"]["name"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {name}: no resolved incident within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Level {
    level: u8,
    what: &'static str,
    window: &'static str,
    action: Vec<f64>,
    resolved: Vec<f64>,
}

/// One failure of `kind`/`name`, injected by `inject` (which returns when the failure counts from).
async fn round(
    world: &World,
    kind: &str,
    name: &str,
    inject: impl AsyncFnOnce() -> Timestamp,
    is_action: impl Fn(&audit::Write) -> bool,
) -> (f64, f64) {
    let known = world.incidents(kind, name).len();
    let t0 = inject().await;
    let incident = resolution(world, kind, name, known).await;
    // The audit log is written as requests complete: give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = audit::writes(
        plane().audit(),
        OPERATOR_USER,
        Some(&world.ns.name),
        t0,
        Timestamp::now(),
    );
    let first = writes
        .iter()
        .filter(|w| is_action(w))
        .map(|w| w.at)
        .min()
        .unwrap_or_else(|| panic!("{kind} {name}: no recovery action in the audit log"));
    let resolved = writes
        .iter()
        .filter(|w| w.object.resource == "incidents" && w.object.name.as_deref() == Some(incident.as_str()))
        .map(|w| w.done)
        .max()
        .expect("the incident's status writes");
    (secs(t0, first), secs(t0, resolved))
}

/// A write of `verbs` on `resource`/`name` (server-side apply audits as `patch`).
fn on(
    resource: &'static str,
    name: &'static str,
    verbs: &'static [&'static str],
    sub: Option<&'static str>,
) -> impl Fn(&audit::Write) -> bool {
    move |w| {
        w.object.resource == resource
            && w.object.name.as_deref() == Some(name)
            && verbs.contains(&w.verb.as_str())
            && w.object.subresource.as_deref() == sub
    }
}

async fn wait_healthy(world: &World, object: &str) {
    world
        .ns
        .wait_for(object, "healthy again", 300, |o| {
            let h = &o["status"]["health"];
            h == "Healthy" || h["state"] == "Healthy"
        })
        .await;
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench recovery`");
        return;
    }
    let rounds: usize = std::env::var("REPRISE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // REPRISE_BENCH_LEVELS: which failures to inject (default all).
    let chosen = std::env::var("REPRISE_BENCH_LEVELS").unwrap_or_else(|_| "application,database,vm,server".into());
    let want = |what: &str| chosen.split(',').any(|c| c.trim() == what);
    let rt = support::bench_runtime();
    rt.block_on(async {
        // REPRISE_BENCH_BMC_EVENTS=0: the BMCs send no events (polled every 60s).
        let events = std::env::var("REPRISE_BENCH_BMC_EVENTS").map_or(true, |v| v != "0");
        let world = World::start_with("bench-recovery", None, events).await;
        let mut op = Operator::start(Options::namespace(&world.ns.name));
        op.wait_ready().await;
        world.settle().await;
        let client = plane().client().await;
        let ns = world.ns.name.clone();
        let mut levels = [
            Level { level: 1, what: "application: Deployment deleted", window: "15m-30m", action: vec![], resolved: vec![] },
            Level { level: 1, what: "database: DROP DATABASE", window: "15m-30m", action: vec![], resolved: vec![] },
            Level { level: 2, what: "virtual machine: instance Failed", window: "30m-45m", action: vec![], resolved: vec![] },
            Level {
                level: 3,
                what: if events { "server: forced off (BMC sends events)" } else { "server: forced off (BMC polled)" },
                window: "45m and more",
                action: vec![],
                resolved: vec![],
            },
        ];
        let (_, uuid, _) = SERVERS[0];
        for i in 0..rounds {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            if want("application") {
                let (a, r) = round(
                    &world,
                    "Application",
                    "web-shop",
                    async || {
                        let t = Timestamp::now();
                        deployments.delete("web-shop", &DeleteParams::default()).await.expect("delete");
                        t
                    },
                    on("deployments", "web-shop", &["create", "patch"], None),
                )
                .await;
                levels[0].action.push(a);
                levels[0].resolved.push(r);
                wait_healthy(&world, "application/web-shop").await;
            }

            if want("database") {
                let (a, r) = round(
                    &world,
                    "Database",
                    "shop-db",
                    async || {
                        let t = Timestamp::now();
                        world.pg.sql("postgres", "DROP DATABASE shop WITH (FORCE)");
                        t
                    },
                    on("databases", "shop-db", &["patch"], Some("status")),
                )
                .await;
                levels[1].action.push(a);
                levels[1].resolved.push(r);
                wait_healthy(&world, "database/shop-db").await;
            }

            if want("vm") {
                let (a, r) = round(
                    &world,
                    "VirtualMachine",
                    "vm-api",
                    async || {
                        let t = Timestamp::now();
                        kubevirt::fail_instance(&client, &ns, "vm-api").await;
                        t
                    },
                    on("virtualmachineinstances", "vm-api", &["delete"], None),
                )
                .await;
                levels[2].action.push(a);
                levels[2].resolved.push(r);
                wait_healthy(&world, "virtualmachines.reprise.dev/vm-api").await;
            }

            if want("server") {
                let bmc = world.bmc("hv-01");
                let (a, r) = round(
                    &world,
                    "Server",
                    "hv-01",
                    async || {
                        bmc.reset(uuid, "ForceOff");
                        loop {
                            if bmc.system(uuid)["PowerState"] == "Off" {
                                return Timestamp::now();
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    on("servers", "hv-01", &["patch"], Some("status")),
                )
                .await;
                levels[3].action.push(a);
                levels[3].resolved.push(r);
                wait_healthy(&world, "server/hv-01").await;
            }
            println!("round {}/{rounds} done", i + 1);
        }
        println!(
            "\nrecovery latency over {rounds} injections per failure (example intervals: BMC poll 60s, database probe 30s, kept connection 1s):"
        );
        println!(
            "{:<6} {:<36} {:>14} {:>14} {:>14} {:>14}  PLAN WINDOW",
            "LEVEL", "FAILURE", "ACTION MEDIAN", "ACTION P99", "RESOLVED MED.", "RESOLVED P99"
        );
        for l in levels.iter_mut().filter(|l| !l.action.is_empty()) {
            l.action.sort_by(|a, b| a.partial_cmp(b).unwrap());
            l.resolved.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{:<6} {:<36} {:>13.2}s {:>13.2}s {:>13.2}s {:>13.2}s  {}",
                l.level,
                l.what,
                percentile(&l.action, 0.5),
                percentile(&l.action, 0.99),
                percentile(&l.resolved, 0.5),
                percentile(&l.resolved, 0.99),
                l.window
            );
        }
        println!("operator RSS now / peak: {:?} KiB", op.rss_kib());
    });
}
