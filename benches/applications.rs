//! Benchmark (not a test): Applications against a real control plane.
//!
//! 1. Self-healing latency: the time from a Deployment's deletion (the API
//!    server's answer to the delete) to the recreate call reprise makes, both
//!    read from the API server's audit log, over 100 deletions.
//! 2. Throughput: 1,000 Applications on 50 kwok nodes — time until all are
//!    Ready, then a fresh operator's full pass over them (reconciles per
//!    second), and the operator's memory (RSS, peak RSS).
//!
//! Runs on a private control plane (50 fake nodes) that it stops at the end:
//! `cargo bench --bench applications`. Sizes: REPRISE_BENCH_DELETIONS,
//! REPRISE_BENCH_APPS.

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use support::{
    OPERATOR_USER, Plane, audit,
    operator::{Operator, Options},
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn app(name: &str, replicas: u32) -> String {
    format!(
        "---\napiVersion: reprise.dev/v1alpha1\nkind: Application\nmetadata: {{name: {name}}}\nspec:\n  type: Web\n  version: \"1.0.0\"\n  image: \"registry.example/{name}:{{version}}\"\n  replicas: {replicas}\n"
    )
}

async fn ready_count(plane: &Plane, ns: &str) -> usize {
    let out = plane.k(&[
        "get",
        "applications",
        "-n",
        ns,
        "-o",
        "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    ]);
    out.lines().filter(|l| *l == "True").count()
}

async fn healing(plane: &Plane, ns: &str, deletions: usize) {
    let (ok, out) = plane.k_stdin(&["apply", "-n", ns, "-f", "-"], &app("heal", 1));
    assert!(ok, "{out}");
    plane.k(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        "application/heal",
        "--timeout=120s",
    ]);
    let client = plane.client().await;
    let api: Api<Deployment> = Api::namespaced(client, ns);
    let from = k8s_openapi::jiff::Timestamp::now();
    for _ in 0..deletions {
        let uid = api.get("heal").await.expect("deployment").uid().expect("uid");
        api.delete("heal", &DeleteParams::background()).await.expect("delete");
        let start = Instant::now();
        loop {
            if let Some(d) = api.get_opt("heal").await.expect("get")
                && d.uid().as_deref() != Some(uid.as_str())
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the Deployment was not recreated within 30s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = k8s_openapi::jiff::Timestamp::now();
    let log = plane.audit_log.clone().expect("audit log");
    let admin = "reprise-test-admin";
    let deletes: Vec<_> = audit::writes(&log, admin, Some(ns), from, to)
        .into_iter()
        .filter(|w| w.verb == "delete" && w.object.resource == "deployments")
        .collect();
    let recreates: Vec<_> = audit::writes(&log, OPERATOR_USER, Some(ns), from, to)
        .into_iter()
        .filter(|w| w.verb == "patch" && w.object.resource == "deployments" && w.object.subresource.is_none())
        .collect();
    let mut latencies: Vec<f64> = deletes
        .iter()
        .filter_map(|d| {
            let r = recreates.iter().find(|r| r.at > d.done)?;
            Some(d.done.duration_until(r.at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    assert_eq!(
        latencies.len(),
        deletions,
        "every deletion is followed by a recreate in the audit log"
    );
    println!(
        "self-healing: deletion -> recreate call over {} deletions: median {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[0],
        latencies[latencies.len() - 1]
    );
}

async fn throughput(plane: &Plane, ns: &str, apps: usize, op: &mut Operator) {
    let manifests: String = (0..apps).map(|i| app(&format!("app-{i:04}"), 1)).collect();
    let start = Instant::now();
    let (ok, out) = plane.k_stdin(&["apply", "--server-side", "-n", ns, "-f", "-"], &manifests);
    assert!(ok, "{out}");
    let applied = start.elapsed();
    loop {
        let n = ready_count(plane, ns).await;
        if n >= apps {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1200),
            "only {n} of {apps} Applications Ready after 20 minutes"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let all_ready = start.elapsed();
    let reconciles = op.metric("reprise_reconciles_total", "kind=\"Application\"").await;
    let (rss, peak) = op.rss_kib();
    println!(
        "{apps} Applications ({apps} pods on 50 kwok nodes): applied in {:.1}s, all Ready after {:.1}s; {reconciles} Application reconciles meanwhile; operator RSS {} MiB (peak {} MiB)",
        applied.as_secs_f64(),
        all_ready.as_secs_f64(),
        rss / 1024,
        peak / 1024
    );
}

async fn full_pass(plane: &Plane, ns: &str, apps: usize) {
    let mut op = Operator::start(Options {
        plane: Some(plane),
        ..Options::namespace(ns)
    });
    let start = Instant::now();
    op.wait_ready().await;
    let synced = start.elapsed();
    loop {
        let n = op.metric("reprise_reconciles_total", "kind=\"Application\"").await;
        if n >= apps as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "a fresh operator reconciled only {n} of {apps} in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed();
    let writes = op.metric("reprise_api_writes_total", "").await as u64;
    let (rss, peak) = op.rss_kib();
    let after_sync = (took - synced).as_secs_f64().max(0.001);
    println!(
        "fresh operator over {apps} Ready Applications: caches synced {:.2}s after start; all {apps} reconciled {:.2}s after start \
         ({:.0}/s over the whole start, {:.0}/s after the sync; the metric is polled every 0.1s); {writes} writes; RSS {} MiB (peak {} MiB)",
        synced.as_secs_f64(),
        took.as_secs_f64(),
        apps as f64 / took.as_secs_f64(),
        apps as f64 / after_sync,
        rss / 1024,
        peak / 1024
    );
}

fn main() {
    // `cargo bench` passes --bench; a test run (`cargo test --benches`) does not: it is no place for this.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench applications`");
        return;
    }
    // Set before any thread starts: the control-plane script reads it.
    unsafe { std::env::set_var("REPRISE_KWOK_NODES", "50") };
    let deletions = env_usize("REPRISE_BENCH_DELETIONS", 100);
    let apps = env_usize("REPRISE_BENCH_APPS", 1000);
    let rt = support::bench_runtime();
    rt.block_on(async {
        let dir = std::env::temp_dir().join("reprise-bench-plane");
        let plane = Plane::up(Some(&dir));
        let nodes = plane.k(&["get", "nodes", "-o", "name"]).lines().count();
        println!("control plane: private, {nodes} kwok nodes");
        let ns = "bench";
        let _ = plane.kubectl().args(["create", "namespace", ns]).output();
        plane.grant_operator(ns);
        let mut op = Operator::start(Options {
            plane: Some(&plane),
            ..Options::namespace(ns)
        });
        op.wait_ready().await;
        healing(&plane, ns, deletions).await;
        throughput(&plane, ns, apps, &mut op).await;
        op.kill();
        full_pass(&plane, ns, apps + 1).await;
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(plane.client().await, ns)
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        println!("pods in the namespace: {pods}");
        plane.script("down");
    });
}
