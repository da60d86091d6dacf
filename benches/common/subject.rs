//! The operator a benchmark measures: reprise, or the controller-runtime
//! peer (hack/tools/crpeer, built from the Go module proxy on first use),
//! each as its own process, optionally in a CPU-limited cgroup.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::support::{
    Plane,
    operator::{Operator, Options},
};

pub enum Subject {
    Reprise(Operator),
    Peer {
        child: Child,
        log: PathBuf,
        metrics: String,
    },
}

/// The CPU limit in cores (REPRISE_BENCH_CPU, default 0.5; 0: none).
pub fn cpu_limit() -> f64 {
    std::env::var("REPRISE_BENCH_CPU")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5)
}

/// Whether this run measures the peer (REPRISE_BENCH_PEER=1).
pub fn peer() -> bool {
    std::env::var("REPRISE_BENCH_PEER").is_ok_and(|v| v == "1")
}

fn peer_binary() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .args(["-c", "source hack/lib.sh && build_tool crpeer . crpeer"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash");
    assert!(out.status.success(), "cannot build the controller-runtime peer");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Puts `pid` in a cgroup (v1 cpu controller) limited to `cores`; says which limit holds.
fn limit(pid: u32, cores: f64) -> String {
    if cores <= 0.0 {
        return "no CPU limit".into();
    }
    let dir = PathBuf::from(format!("/sys/fs/cgroup/cpu/reprise-bench-{pid}"));
    let quota = (cores * 100_000.0) as u64;
    let done = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("cpu.cfs_period_us"), "100000"))
        .and_then(|_| std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()))
        .and_then(|_| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
    match done {
        Ok(()) => format!("{cores} CPU (cgroup v1 cpu quota {quota}/100000 us)"),
        Err(e) => format!("no CPU limit (cgroup not writable here: {e})"),
    }
}

impl Subject {
    pub fn name(&self) -> &'static str {
        match self {
            Subject::Reprise(_) => "reprise",
            Subject::Peer { .. } => "controller-runtime peer",
        }
    }

    pub async fn start(plane: &Plane, ns: &str) -> Self {
        let s = if peer() {
            let log = std::env::temp_dir().join(format!("crpeer-{}.log", std::process::id()));
            let file = std::fs::File::create(&log).expect("peer log");
            let metrics = format!("127.0.0.1:{}", crate::support::free_port());
            // REPRISE_BENCH_PEER_EVENTS=0: the peer publishes no Event per repair (reprise does).
            let events = std::env::var("REPRISE_BENCH_PEER_EVENTS").map_or(true, |v| v != "0");
            let child = Command::new(peer_binary())
                .args(["--namespace", ns, "--metrics-addr", &metrics])
                .arg(format!("--events={events}"))
                .env("KUBECONFIG", &plane.operator_kubeconfig)
                .stdout(file.try_clone().expect("fd"))
                .stderr(file)
                .spawn()
                .expect("start the peer");
            Subject::Peer { child, log, metrics }
        } else {
            Subject::Reprise(Operator::start(Options {
                plane: Some(plane),
                ..Options::namespace(ns)
            }))
        };
        println!("{}: {}", s.name(), limit(s.pid(), cpu_limit()));
        s
    }

    pub fn pid(&self) -> u32 {
        match self {
            Subject::Reprise(op) => op.pid(),
            Subject::Peer { child, .. } => child.id(),
        }
    }

    /// Until its caches are synced and its controllers run.
    pub async fn wait_ready(&mut self) {
        match self {
            Subject::Reprise(op) => op.wait_ready().await,
            Subject::Peer { log, .. } => {
                for _ in 0..600 {
                    if std::fs::read_to_string(&*log)
                        .unwrap_or_default()
                        .contains("Starting workers")
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("the peer did not start its workers in 30s");
            }
        }
    }

    /// Application reconciles so far.
    pub async fn reconciles(&mut self) -> f64 {
        match self {
            Subject::Reprise(op) => op.metric("reprise_reconciles_total", "kind=\"Application\"").await,
            Subject::Peer { metrics, .. } => {
                reprise::install_crypto_provider();
                let body = reqwest::get(format!("http://{metrics}/metrics"))
                    .await
                    .ok()
                    .map(|r| r.text());
                let body = match body {
                    Some(t) => t.await.unwrap_or_default(),
                    None => String::new(),
                };
                body.lines()
                    .filter(|l| l.starts_with("controller_runtime_reconcile_total") && l.contains("application"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            }
        }
    }

    /// (RSS, peak RSS) in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        crate::support::operator::rss_kib(self.pid())
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let ticks = field(11) + field(12);
        ticks as f64 / 100.0
    }

    /// Time the CPU limit held the operator back so far (cgroup v1 `throttled_time`), in seconds.
    pub fn throttled_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/reprise-bench-{}/cpu.stat", self.pid()))
            .unwrap_or_default();
        let ns = stat
            .lines()
            .find_map(|l| l.strip_prefix("throttled_time "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        ns as f64 / 1e9
    }

    pub fn kill(&mut self) {
        match self {
            Subject::Reprise(op) => op.kill(),
            Subject::Peer { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/cpu/reprise-bench-{}", self.pid()));
    }
}
