//! The integration-test harness: the local control plane (started once per
//! run, or reused), the CRDs and the chart's RBAC installed once, a namespace
//! per test, and the operator under test as a child process running under
//! its own ServiceAccount (the chart's ClusterRole), never as cluster admin.
//!
//! A test that needs the control plane fails loudly when it cannot start.

#![allow(dead_code)]

pub mod audit;
pub mod bmc_events;
pub mod fake_bmc;
pub mod kubevirt;
pub mod operator;
pub mod plastprod;
pub mod postgres;
pub mod proxy;
pub mod redfish;
pub mod s3;
pub mod tls;
pub mod webhooks;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

pub const OPERATOR_NAMESPACE: &str = "reprise-system";
pub const OPERATOR_SA: &str = "reprise";
pub const OPERATOR_USER: &str = "system:serviceaccount:reprise-system:reprise";

/// The running control plane, as `hack/control-plane env` describes it.
pub struct Plane {
    pub env: HashMap<String, String>,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    pub audit_log: Option<PathBuf>,
    /// Whether Deployments get pods (controller-manager, scheduler and kwok run).
    pub pods: bool,
    /// A kubeconfig with the operator's ServiceAccount token.
    pub operator_kubeconfig: PathBuf,
}

/// The checkout under test. Read at run time: cargo's builds are relocatable,
/// so a test binary built from another clone sharing the target directory
/// carries that clone's compile-time path.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shared control plane: started once per test run (or reused if up).
pub fn plane() -> &'static Plane {
    static PLANE: OnceLock<Plane> = OnceLock::new();
    PLANE.get_or_init(|| Plane::up(None))
}

/// A second control plane, for the tests of two sites (each site's cluster
/// its own plane): started on first use, kept next to the shared one
/// (`<its state directory>-b`) and, like it, reused by reruns.
pub fn plane_b() -> &'static Plane {
    static PLANE: OnceLock<Plane> = OnceLock::new();
    PLANE.get_or_init(|| {
        let first = plane().env.get("REPRISE_STATE_DIR").expect("REPRISE_STATE_DIR");
        Plane::up(Some(Path::new(&format!("{first}-b"))))
    })
}

impl Plane {
    /// Starts (or reuses) the control plane kept in `state_dir` (default: the
    /// shared one), installs the CRDs and the operator's identity.
    pub fn up(state_dir: Option<&Path>) -> Plane {
        let script = repo_root().join("hack/control-plane");
        let with_state = |c: &mut Command| {
            if let Some(d) = state_dir {
                c.env("REPRISE_STATE_DIR", d);
            }
        };
        let mut up = Command::new(&script);
        up.arg("up").stdout(Stdio::inherit()).stderr(Stdio::inherit());
        with_state(&mut up);
        let status = up.status().expect("cannot run hack/control-plane");
        assert!(
            status.success(),
            "the control plane did not start: see the output of hack/control-plane above"
        );
        let mut env_cmd = Command::new(&script);
        env_cmd.arg("env");
        with_state(&mut env_cmd);
        let env = parse_env(&run(&mut env_cmd));
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("hack/control-plane env lacks {k}"))
        };
        let kubectl = PathBuf::from(get("REPRISE_KUBECTL"));
        let kubeconfig = PathBuf::from(get("KUBECONFIG"));
        let helm = PathBuf::from(get("REPRISE_HELM"));
        let audit_log = env
            .get("REPRISE_AUDIT_LOG")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let pods = env.get("REPRISE_PLANE_PODS").map(|v| v == "true").unwrap_or(false);
        let mut plane = Plane {
            env,
            kubeconfig,
            kubectl,
            helm,
            audit_log,
            pods,
            operator_kubeconfig: PathBuf::new(),
        };
        plane.install_crds();
        plane.operator_kubeconfig = plane.install_operator_identity();
        plane
    }

    /// Runs a hack/control-plane command against this plane.
    pub fn script(&self, command: &str) {
        let state = self.env.get("REPRISE_STATE_DIR").expect("REPRISE_STATE_DIR");
        run(Command::new(repo_root().join("hack/control-plane"))
            .arg(command)
            .env("REPRISE_STATE_DIR", state));
    }
}

impl Plane {
    /// kubectl as the cluster admin (the test's own identity).
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// Runs kubectl with `args`, panicking on failure.
    pub fn k(&self, args: &[&str]) -> String {
        run(self.kubectl().args(args))
    }

    /// Runs kubectl with `args` and `stdin`, returning (success, stdout+stderr).
    pub fn k_stdin(&self, args: &[&str], stdin: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("kubectl output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn helm(&self) -> Command {
        let mut c = Command::new(&self.helm);
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// reprise's CRDs, and KubeVirt's (generated from its Go module by
    /// hack/kubevirt-crds), which the VirtualMachine controller drives.
    fn install_crds(&self) {
        let kubevirt = run(Command::new(repo_root().join("hack/kubevirt-crds")).stderr(Stdio::inherit()));
        for dir in [repo_root().join("crds"), PathBuf::from(kubevirt.trim())] {
            let dir = dir.to_str().expect("utf-8 path");
            self.k(&["apply", "--server-side", "--force-conflicts", "-f", dir]);
            self.k(&["wait", "--for=condition=Established", "--timeout=60s", "-f", dir]);
        }
    }

    /// The chart's Role and RoleBinding for the operator in `ns` (its
    /// namespaced mode, `watchNamespaces`): the operator works with exactly the
    /// chart's rules, and none outside its namespaces.
    pub fn grant_operator(&self, ns: &str) {
        static RENDERED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let p = self;
        let rendered = RENDERED.get_or_init(|| {
            let all = p.render_chart("{x-placeholder-ns}", &["rbac"]);
            // Only what lands in the placeholder namespace.
            all.split("\n---")
                .filter(|d| d.contains("namespace: x-placeholder-ns"))
                .collect::<Vec<_>>()
                .join("\n---\n")
        });
        let (ok, out) = p.k_stdin(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &rendered.replace("x-placeholder-ns", ns),
        );
        assert!(ok, "cannot grant the operator its Role in {ns}: {out}");
    }

    /// The chart's `templates` (by file stem), rendered for the operator's
    /// namespace with `watchNamespaces` set to `namespaces` (`{a,b}`).
    fn render_chart(&self, namespaces: &str, templates: &[&str]) -> String {
        let chart = repo_root().join("charts/reprise");
        let set = format!("watchNamespaces={namespaces}");
        let mut args = vec![
            "template".to_string(),
            "reprise".into(),
            chart.to_str().expect("utf-8 path").into(),
            "--namespace".into(),
            OPERATOR_NAMESPACE.into(),
            "--set".into(),
            set,
        ];
        for t in templates {
            args.extend(["--show-only".into(), format!("templates/{t}.yaml")]);
        }
        run(self.helm().args(&args))
    }

    /// Renders the chart's ServiceAccount and RBAC, applies them, and writes a
    /// kubeconfig with a token of that ServiceAccount.
    fn install_operator_identity(&self) -> PathBuf {
        let (ok, _) = self.k_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {OPERATOR_NAMESPACE}\n"),
        );
        assert!(ok, "cannot create {OPERATOR_NAMESPACE}");
        // The namespaced mode: no ClusterRole (one left by an older run is
        // removed); each test namespace gets the chart's Role (TestNamespace).
        let _ = self
            .kubectl()
            .args(["delete", "clusterrolebinding", OPERATOR_SA, "--ignore-not-found"])
            .output();
        let rendered = self.render_chart(
            &format!("{{{OPERATOR_NAMESPACE}}}"),
            &["serviceaccount", "rbac", "admission"],
        );
        let (ok, out) = self.k_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &rendered);
        assert!(ok, "cannot apply the chart's RBAC: {out}");
        let token = self.k(&[
            "create",
            "token",
            OPERATOR_SA,
            "-n",
            OPERATOR_NAMESPACE,
            "--duration",
            "6h",
        ]);
        let admin = Kubeconfig::read_from(&self.kubeconfig).expect("admin kubeconfig");
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .expect("a cluster in the kubeconfig");
        let server = cluster.server.expect("server");
        let ca = cluster.certificate_authority_data.expect("CA data");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: plane\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: reprise\n  user:\n    token: {}\ncontexts:\n- name: reprise\n  context: {{cluster: plane, user: reprise}}\ncurrent-context: reprise\n",
            token.trim()
        );
        let path = std::env::temp_dir().join(format!("reprise-operator-{}.kubeconfig", unique_suffix()));
        std::fs::write(&path, text).expect("write operator kubeconfig");
        path
    }

    /// A kube client as the cluster admin.
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    /// The API server's audit log; the local control plane always writes one.
    pub fn audit(&self) -> &Path {
        self.audit_log
            .as_deref()
            .expect("the local control plane writes an audit log")
    }
}

pub async fn client_from(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

/// A namespace for one test, deleted when the test ends.
pub struct TestNamespace {
    pub name: String,
    /// The control plane it lives in.
    pub plane: &'static Plane,
}

impl TestNamespace {
    pub fn new(prefix: &str) -> Self {
        Self::on(plane(), &format!("{prefix}-{}", unique_suffix()))
    }

    /// The namespace `name` in `plane` (e.g. the same name in both sites' planes).
    pub fn on(plane: &'static Plane, name: &str) -> Self {
        plane.k(&["create", "namespace", name]);
        plane.grant_operator(name);
        Self {
            name: name.to_string(),
            plane,
        }
    }

    /// Applies a manifest (YAML text) in this namespace; returns (ok, output).
    pub fn apply(&self, yaml: &str) -> (bool, String) {
        self.plane.k_stdin(&["apply", "-n", &self.name, "-f", "-"], yaml)
    }

    /// An object of this namespace as JSON, e.g. `database/shop-db`.
    pub fn json(&self, object: &str) -> serde_json::Value {
        serde_json::from_str(&self.k(&["get", object, "-o", "json"])).expect("kubectl get -o json")
    }

    /// Polls `object` until `f` holds; on timeout, fails showing its last status.
    pub async fn wait_for(
        &self,
        object: &str,
        what: &str,
        secs: u64,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.json(object);
            if f(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s waiting for {what}; {object} status: {}",
                v["status"]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// kubectl with `-n <this namespace>`, panicking on failure.
    pub fn k(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.plane.k(&all)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = self
            .plane
            .kubectl()
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// A short suffix unique enough within a test run.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 100_000;
    format!("{}{t}{n}", std::process::id() % 1000)
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A MaintenanceWindow far in the future that selects nothing: an object any
/// operator reconciles to `Ready=True` without touching anything else.
pub fn maintenance_window(name: &str, reason: &str) -> String {
    format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{tier: none}}}}\n  start: \"2030-01-01T00:00:00Z\"\n  end: \"2030-01-01T02:00:00Z\"\n  reason: {reason}\n"
    )
}

/// The condition `type_` of an object read as JSON: (status, reason, message).
pub fn condition(obj: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.into(),
        c["reason"].as_str()?.into(),
        c["message"].as_str()?.into(),
    ))
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports: each listener is held until all are bound (one
/// at a time, the kernel may hand the same port out twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A duration as reprise writes them (`12.345s`), in seconds.
pub fn seconds(v: &serde_json::Value) -> f64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a duration: {v}"));
    s.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a duration in seconds: {s}"))
}

/// `key` of each item of the JSON array `v`, as text (e.g. the steps of a timeline).
pub fn each(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| match &i[key] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The runtime a benchmark runs on: two workers, as on the machines it is measured on.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// What kstatus (sigs.k8s.io/cli-utils, as Flux and Argo CD use it) says of
/// each object of `kinds` (kubectl's comma list) in `ns`: `Kind/name` →
/// (status, message), computed by `hack/kstatus-check`.
pub fn kstatus(ns: &str, kinds: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let list = plane().k(&["get", kinds, "-n", ns, "-o", "json"]);
    let mut child = Command::new(repo_root().join("hack/kstatus-check"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run hack/kstatus-check");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(list.as_bytes()).expect("write to kstatus-check");
    }
    let out = child.wait_with_output().expect("kstatus-check output");
    assert!(out.status.success(), "hack/kstatus-check failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let obj = parts.next()?.to_string();
            let status = parts.next()?.to_string();
            Some((obj, (status, parts.next().unwrap_or_default().to_string())))
        })
        .collect()
}
