//! The operator under test, as a child process (`reprise run`) under the
//! operator's ServiceAccount, limited to one test namespace so that tests in
//! parallel do not reconcile each other's objects.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{OPERATOR_NAMESPACE, eventually, plane, unique_suffix};

/// Lease options: where the Lease lives and the election's timings.
pub fn lease_args(namespace: &str, duration: u64, renew: u64, retry: u64) -> Vec<String> {
    vec![
        "--lease-namespace".into(),
        namespace.into(),
        "--lease-duration-seconds".into(),
        duration.to_string(),
        "--renew-deadline-seconds".into(),
        renew.to_string(),
        "--retry-period-seconds".into(),
        retry.to_string(),
    ]
}

pub struct Operator {
    child: Child,
    pub log: PathBuf,
    pub identity: String,
    addr: Option<String>,
}

/// How to start an operator.
pub struct Options<'a> {
    /// The control plane to run against (default: the shared one).
    pub plane: Option<&'a super::Plane>,
    pub namespace: &'a str,
    /// Lease name when leader election is on.
    pub lease: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub extra: Vec<String>,
    /// Extra environment, e.g. a test crash point (`REPRISE_TEST_CRASH_AT`).
    pub env: Vec<(String, String)>,
    /// Another kubeconfig for the operator's identity (e.g. through a relay).
    pub kubeconfig: Option<PathBuf>,
}

impl<'a> Options<'a> {
    pub fn namespace(ns: &'a str) -> Self {
        Self {
            plane: None,
            namespace: ns,
            lease: None,
            identity: None,
            extra: vec![],
            env: vec![],
            kubeconfig: None,
        }
    }
}

impl Operator {
    pub fn start(opts: Options<'_>) -> Self {
        let p = opts.plane.unwrap_or_else(|| plane());
        let identity = opts
            .identity
            .map(str::to_string)
            .unwrap_or_else(|| format!("op-{}", unique_suffix()));
        let log = std::env::temp_dir().join(format!("reprise-{identity}.log"));
        let file = std::fs::File::create(&log).expect("operator log file");
        // REPRISE_OPERATOR_BIN runs another build (a benchmark's A/B); tests leave it unset.
        let bin = std::env::var_os("REPRISE_OPERATOR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_reprise").into());
        let mut cmd = Command::new(bin);
        cmd.args([
            "run",
            "--http-addr",
            "127.0.0.1:0",
            "--namespace",
            opts.namespace,
            "--identity",
            &identity,
        ])
        .env("KUBECONFIG", opts.kubeconfig.as_ref().unwrap_or(&p.operator_kubeconfig))
        .env("REPRISE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,reprise=debug")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        // Its own process group, as a pod: killing it kills its children too.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log fd"))
        .stderr(file);
        if let Some(lease) = opts.lease {
            cmd.args(["--leader-election", "--lease-name", lease]);
            if !opts.extra.iter().any(|a| a == "--lease-namespace") {
                cmd.args(["--lease-namespace", OPERATOR_NAMESPACE]);
            }
        }
        if !opts.extra.iter().any(|a| a == "--backup-root") {
            // Tests keep their backups in temporary directories.
            cmd.arg("--backup-root").arg(std::env::temp_dir());
        }
        cmd.args(&opts.extra);
        let child = cmd.spawn().expect("cannot start reprise run");
        Self {
            child,
            log,
            identity,
            addr: None,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the health endpoint, read from the operator's log.
    pub async fn addr(&mut self) -> String {
        if let Some(a) = &self.addr {
            return a.clone();
        }
        let log = self.log.clone();
        let addr = eventually(
            "the operator to log its listening address",
            Duration::from_secs(30),
            || {
                let log = log.clone();
                async move {
                    std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).ok()?;
                        (v["message"] == "health and metrics endpoints listening")
                            .then(|| v["addr"].as_str().map(str::to_string))?
                    })
                }
            },
        )
        .await;
        self.addr = Some(addr.clone());
        addr
    }

    /// GET a path of the health endpoint: (status code, body).
    pub async fn get(&mut self, path: &str) -> (u16, String) {
        reprise::install_crypto_provider();
        let url = format!("http://{}{path}", self.addr().await);
        match reqwest::get(&url).await {
            Ok(r) => {
                let code = r.status().as_u16();
                (code, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    pub async fn wait_ready(&mut self) {
        let timeout = Duration::from_secs(60);
        let start = std::time::Instant::now();
        loop {
            if self.get("/readyz").await.0 == 200 {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the operator exited ({status}) before it was ready; log:\n{}",
                    self.logs()
                );
            }
            if start.elapsed() > timeout {
                panic!("the operator was not ready after {timeout:?}; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value of an unlabelled or labelled series in /metrics, summed.
    pub async fn metric(&mut self, name: &str, label_filter: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(label_filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([sig, &self.child.id().to_string()]).status();
    }

    /// Kills the operator and its children at once, as when its pod is deleted.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }

    /// SIGSTOP / SIGCONT: the operator frozen and thawed (its process group).
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .status();
    }

    /// SIGTERM, then waits for the exit; returns whether it exited cleanly.
    pub async fn terminate(&mut self) -> bool {
        self.signal("-TERM");
        for _ in 0..150 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the operator did not stop within 15s of SIGTERM; log:\n{}", self.logs());
    }

    /// Waits until this replica leads; returns how long that took, None on timeout.
    pub async fn wait_leading(&mut self, timeout: Duration) -> Option<Duration> {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if self.metric("reprise_leader", "").await == 1.0 {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Waits until the process exits.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The operator's resident memory and its peak so far, in KiB (from /proc).
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_kib(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}

/// A process's resident memory and its peak so far, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
