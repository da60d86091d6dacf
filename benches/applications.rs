//! Benchmark (not a test): Applications against a real control plane.
//!
//! 1. Cold start: N Applications (REPRISE_BENCH_APPS, 1,000) applied on 50
//!    kwok nodes — time until all are Ready, how long each waited for the
//!    first write of its Deployment, writes, CPU and memory.
//! 2. Self-healing latency, among all N, every one Ready: the time from a
//!    Deployment's deletion (the API server's answer to the delete) to the
//!    recreate call the operator makes, both read from the API server's
//!    audit log, over 100 deletions one after another.
//! 3. Burst: 50 Deployments deleted at once (REPRISE_BENCH_BURST), from the
//!    last delete to all recreated; the operator's writes per repair by
//!    resource (audit log), and any 429.
//! 4. Restart: a fresh operator over the reconciled world, until it has
//!    reconciled every Application; then, with REPRISE_BENCH_IDLE_SECS, its
//!    writes and CPU while nothing changes.
//!
//! REPRISE_OPERATOR_BIN runs another build of the operator (an A/B).
//!
//! Runs on a private control plane (50 fake nodes) that it stops at the end:
//! `cargo bench --bench applications`. Sizes: REPRISE_BENCH_DELETIONS (0
//! skips the self-healing part), REPRISE_BENCH_APPS. REPRISE_BENCH_PERF=FILE
//! records the operator's CPU profile during the burst (`perf report -i FILE`),
//! or during the cold start with REPRISE_BENCH_PERF_PHASE=cold.
//! REPRISE_PLANE_QPS: the controller-manager's and scheduler's rate (500).

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;

use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
#[path = "common/subject.rs"]
mod subject;

use subject::Subject;
use support::{OPERATOR_USER, Plane, audit};

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

/// Counts the Ready Applications from a watch: a list of thousands every
/// 2 s (kubectl, as before) was itself load on the API server both operators
/// share. Dynamic objects: the peer writes the status its own way.
struct Readiness {
    store: kube::runtime::reflector::Store<kube::api::DynamicObject>,
    task: tokio::task::JoinHandle<()>,
}

impl Readiness {
    async fn watch(plane: &Plane, ns: &str) -> Self {
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let ar = kube::api::ApiResource::erase::<reprise::api::Application>(&());
        let api = Api::<kube::api::DynamicObject>::namespaced_with(plane.client().await, ns, &ar);
        let writer = reflector::store::Writer::new(ar.clone());
        let store = writer.as_reader();
        let task = tokio::spawn(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .for_each(|_| futures::future::ready(())),
        );
        store.wait_until_ready().await.expect("the Applications listed");
        Self { store, task }
    }

    fn count(&self) -> usize {
        let ready = |o: &kube::api::DynamicObject| {
            o.data["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        self.store.state().iter().filter(|o| ready(o)).count()
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.task.abort();
    }
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
    let from = Timestamp::now();
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
    let to = Timestamp::now();
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
    println!("writes per repair: {}", writes_each(&log, ns, from, to, deletions));
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

/// The operator's writes between `from` and `to`, each divided by `per`
/// (the repairs they made), in all and per resource; and the 429s.
fn writes_each(log: &std::path::Path, ns: &str, from: Timestamp, to: Timestamp, per: usize) -> String {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    let writes = audit::writes(log, OPERATOR_USER, Some(ns), from, to);
    for w in &writes {
        let what = match &w.object.subresource {
            Some(sub) => format!("{} {}/{sub}", w.verb, w.object.resource),
            None => format!("{} {}", w.verb, w.object.resource),
        };
        *by.entry(what).or_default() += 1;
    }
    let each: Vec<String> = by
        .iter()
        .map(|(k, n)| format!("{k} {:.2}", *n as f64 / per as f64))
        .collect();
    format!(
        "{:.2} ({}); 429s: {}",
        writes.len() as f64 / per as f64,
        each.join(", "),
        writes.iter().filter(|w| w.code == 429).count()
    )
}

/// `n` Deployments deleted at once: from the last delete to every one recreated.
async fn burst(plane: &Plane, ns: &str, n: usize, op: &Subject, ready: &Readiness) {
    let client = plane.client().await;
    let api: Api<Deployment> = Api::namespaced(client, ns);
    let names: Vec<String> = (0..n).map(|i| format!("app-{i:04}")).collect();
    let mut uids = std::collections::HashMap::new();
    for name in &names {
        let uid = api.get(name).await.expect("deployment").uid().expect("uid");
        uids.insert(name.clone(), uid);
    }
    let ready_before = ready.count();
    let perf = profile("burst", op.pid());
    let cpu = op.cpu_seconds();
    let from = Timestamp::now();
    let deletes = names.iter().map(|name| {
        let api = api.clone();
        async move { api.delete(name, &DeleteParams::background()).await.expect("delete") }
    });
    futures::future::join_all(deletes).await;
    let last_delete = Instant::now();
    loop {
        let list = api.list_metadata(&ListParams::default()).await.expect("list");
        let recreated = list
            .items
            .iter()
            .filter(|d| {
                uids.get(&d.name_any())
                    .is_some_and(|old| d.uid().as_deref() != Some(old.as_str()))
            })
            .count();
        if recreated == n {
            break;
        }
        assert!(
            last_delete.elapsed() < Duration::from_secs(300),
            "only {recreated} of {n} recreated after 5 minutes"
        );
        // Not faster: a list of every Deployment is itself load on the API server both operators share.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = last_delete.elapsed();
    let cpu = op.cpu_seconds() - cpu;
    stop_profile(perf);
    // A repair's writes end when its Application is Ready again.
    while ready.count() < ready_before {
        assert!(last_delete.elapsed() < Duration::from_secs(600), "not all Ready again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let healed = last_delete.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = plane.audit_log.clone().expect("audit log");
    println!(
        "burst: {n} Deployments deleted at once, last delete -> all recreated {:.2}s ({cpu:.2}s CPU meanwhile), all Ready again {:.1}s; writes per repair: {}",
        took.as_secs_f64(),
        healed.as_secs_f64(),
        writes_each(&log, ns, from, Timestamp::now(), n)
    );
}

fn stop_profile(perf: Option<std::process::Child>) {
    if let Some(mut p) = perf {
        // perf writes its file on SIGINT.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
}

/// REPRISE_BENCH_PERF=FILE: `phase` sampled by `perf record` (call graphs)
/// into FILE when it is the one REPRISE_BENCH_PERF_PHASE names (`burst`, the
/// default, or `cold`).
fn profile(phase: &str, pid: u32) -> Option<std::process::Child> {
    let out = std::env::var("REPRISE_BENCH_PERF").ok()?;
    let profiled = std::env::var("REPRISE_BENCH_PERF_PHASE").unwrap_or_else(|_| "burst".into());
    if profiled != phase {
        return None;
    }
    let child = std::process::Command::new("perf")
        .args(["record", "-F", "499", "-g", "-o", &out, "-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("perf");
    std::thread::sleep(Duration::from_millis(500));
    Some(child)
}

async fn throughput(plane: &Plane, ns: &str, apps: usize, op: &mut Subject, ready: &Readiness) {
    let from = Timestamp::now();
    let start = Instant::now();
    let (cpu, throttled) = (op.cpu_seconds(), op.throttled_seconds());
    let perf = profile("cold", op.pid());
    // 32 applies at once (kubectl applies one at a time: thousands took minutes).
    let api: Api<reprise::api::Application> = Api::namespaced(plane.client().await, ns);
    let applies = (0..apps).map(|i| {
        let (api, name) = (api.clone(), format!("app-{i:04}"));
        async move {
            let body: serde_json::Value = serde_yaml_ng::from_str(&app(&name, 1)).expect("manifest");
            api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&body))
                .await
                .expect("apply an Application");
            (name, Timestamp::now())
        }
    });
    let applied_at: std::collections::HashMap<String, Timestamp> =
        futures::stream::iter(applies).buffer_unordered(32).collect().await;
    let applied = start.elapsed();
    loop {
        let n = ready.count();
        if n >= apps {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1200.max(apps as u64 / 3)),
            "only {n} of {apps} Applications Ready after {}s",
            start.elapsed().as_secs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let all_ready = start.elapsed();
    stop_profile(perf);
    let (cpu, throttled) = (op.cpu_seconds() - cpu, op.throttled_seconds() - throttled);
    let reconciles = op.reconciles().await;
    let (rss, peak) = op.rss_kib();
    let log = plane.audit_log.clone().expect("audit log");
    let all = audit::writes(&log, OPERATOR_USER, Some(ns), from, Timestamp::now());
    let writes = all.len();
    println!("{}", first_acts(&applied_at, &all));
    println!(
        "cold start: {apps} Applications ({apps} pods on 50 kwok nodes): applied in {:.1}s, all Ready after {:.1}s; {reconciles} Application reconciles, \
         {writes} writes ({:.2} per Application); {cpu:.1}s CPU, held back by the CPU limit {throttled:.1}s; RSS {} MiB (peak {} MiB)",
        applied.as_secs_f64(),
        all_ready.as_secs_f64(),
        writes as f64 / apps as f64,
        rss / 1024,
        peak / 1024
    );
}

/// How long each Application waited, once applied, for the operator's first
/// write of its Deployment: whether every object gets its turn under load.
fn first_acts(applied: &std::collections::HashMap<String, Timestamp>, writes: &[audit::Write]) -> String {
    let mut first: std::collections::HashMap<&str, Timestamp> = Default::default();
    for w in writes.iter().filter(|w| w.object.resource == "deployments") {
        if let Some(name) = w.object.name.as_deref() {
            first.entry(name).and_modify(|t| *t = (*t).min(w.at)).or_insert(w.at);
        }
    }
    let mut waits: Vec<f64> = applied
        .iter()
        .filter_map(|(name, at)| Some(at.duration_until(*first.get(name.as_str())?).as_secs_f64().max(0.0)))
        .collect();
    waits.sort_by(f64::total_cmp);
    if waits.is_empty() {
        return "applied → first write of its Deployment: none seen".into();
    }
    format!(
        "applied → first write of its Deployment ({} of {}): median {:.1}s, p99 {:.1}s, max {:.1}s",
        waits.len(),
        applied.len(),
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
        waits[waits.len() - 1]
    )
}

/// A fresh operator over a reconciled world: until every Application is
/// reconciled once; then its writes and CPU while nothing changes.
async fn full_pass(plane: &Plane, ns: &str, apps: usize, ready: &Readiness) {
    let from = Timestamp::now();
    let start = Instant::now();
    let mut op = Subject::start(plane, ns).await;
    op.wait_ready().await;
    let synced = start.elapsed();
    loop {
        let n = op.reconciles().await;
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
    let log = plane.audit_log.clone().expect("audit log");
    let writes = audit::writes(&log, OPERATOR_USER, Some(ns), from, Timestamp::now()).len();
    let (rss, peak) = op.rss_kib();
    println!(
        "restart over {apps} reconciled Applications: caches synced {:.2}s after start; all {apps} reconciled {:.2}s after start \
         (the metric is polled every 0.1s); {writes} writes; RSS {} MiB (peak {} MiB)",
        synced.as_secs_f64(),
        took.as_secs_f64(),
        rss / 1024,
        peak / 1024
    );
    let idle = env_usize("REPRISE_BENCH_IDLE_SECS", 0);
    if idle > 0 {
        // Idle means every Application Ready (those the burst repaired too).
        while ready.count() < apps {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (cpu, from) = (op.cpu_seconds(), Timestamp::now());
        tokio::time::sleep(Duration::from_secs(idle as u64)).await;
        println!(
            "idle {idle}s over {apps} Ready Applications: {:.2}s CPU; RSS {} MiB; writes: {}",
            op.cpu_seconds() - cpu,
            op.rss_kib().0 / 1024,
            writes_each(&log, ns, from, Timestamp::now(), 1)
        );
    }
    op.kill();
}

fn main() {
    // `cargo bench` passes --bench; a test run (`cargo test --benches`) does not: it is no place for this.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench applications`");
        return;
    }
    // Set before any thread starts: the control-plane script reads it.
    unsafe { std::env::set_var("REPRISE_KWOK_NODES", "50") };
    // Thousands of pods: the controller-manager's default client rate (20/s)
    // would be what the cold start measures, not the operator.
    if std::env::var_os("REPRISE_PLANE_QPS").is_none() {
        unsafe { std::env::set_var("REPRISE_PLANE_QPS", "500") };
    }
    // Only what Deployments, their pods (on nodes whose not-ready taint comes
    // off) and owner references need: the endpoint controllers add an
    // EndpointSlice and an Endpoints object per Service, rewritten as pods
    // get ready, which neither operator reads. Both operators run on the
    // same plane.
    if std::env::var_os("REPRISE_PLANE_CONTROLLERS").is_none() {
        unsafe {
            std::env::set_var(
                "REPRISE_PLANE_CONTROLLERS",
                "deployment,replicaset,serviceaccount,garbagecollector,namespace,nodelifecycle",
            )
        };
    }
    let deletions = env_usize("REPRISE_BENCH_DELETIONS", 100);
    let apps = env_usize("REPRISE_BENCH_APPS", 1000);
    let rt = support::bench_runtime();
    rt.block_on(async {
        let dir = std::env::temp_dir().join("reprise-bench-plane");
        // A plane a failed run left up still holds its Applications: start afresh.
        let _ = std::process::Command::new(support::repo_root().join("hack/control-plane"))
            .arg("down")
            .env("REPRISE_STATE_DIR", &dir)
            .status();
        let plane = Plane::up(Some(&dir));
        let nodes = plane.k(&["get", "nodes", "-o", "name"]).lines().count();
        println!(
            "control plane: private, {nodes} kwok nodes, controller-manager ({}) and scheduler at {} requests/s",
            std::env::var("REPRISE_PLANE_CONTROLLERS").unwrap_or_default(),
            std::env::var("REPRISE_PLANE_QPS").unwrap_or_default()
        );
        let ns = "bench";
        let _ = plane.kubectl().args(["create", "namespace", ns]).output();
        plane.grant_operator(ns);
        let ready = Readiness::watch(&plane, ns).await;
        let mut op = Subject::start(&plane, ns).await;
        op.wait_ready().await;
        throughput(&plane, ns, apps, &mut op, &ready).await;
        // Repairs one after another among all the others, every one Ready.
        if deletions > 0 {
            healing(&plane, ns, deletions).await;
        }
        let bursts = env_usize("REPRISE_BENCH_BURST", 50).min(apps);
        if bursts > 0 {
            burst(&plane, ns, bursts, &op, &ready).await;
        }
        op.kill();
        // The self-healing part adds its own Application, "heal".
        full_pass(&plane, ns, apps + usize::from(deletions > 0), &ready).await;
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(plane.client().await, ns)
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        println!("pods in the namespace: {pods}");
        plane.script("down");
    });
}
