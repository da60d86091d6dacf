//! `kubectl reprise`, as a user runs it: found by a real kubectl as a
//! plugin, reading the real control plane with the user's kubeconfig.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;

use crate::support::{
    TestNamespace, eventually, kubevirt,
    operator::{Operator, Options},
    plane,
};

/// The plugin binary cargo built beside the tests.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kubectl-reprise"))
}

/// Runs `kubectl reprise ARGS` in `ns` (through kubectl, as a user would):
/// (success, stdout, stderr).
pub fn reprise(ns: &str, args: &[&str]) -> (bool, String, String) {
    let p = plane();
    let dir = binary().parent().expect("a directory");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(&p.kubectl)
        .arg("reprise")
        .args(["-n", ns])
        .args(args)
        .env("KUBECONFIG", &p.kubeconfig)
        .env("PATH", path)
        .output()
        .expect("kubectl reprise");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl reprise ARGS -o json`, parsed; panics on failure.
pub fn json(ns: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (ok, out, err) = reprise(ns, &all);
    assert!(ok, "kubectl reprise {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Checks an incident's HTML report: one bar per step of its timeline, a
/// deadline marker where the level's window ends, nothing external.
pub fn check_report(html: &str, inc: &Value) {
    let steps = inc["status"]["timeline"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(html.matches("<rect class=\"step").count(), steps, "one bar per step");
    for e in inc["status"]["timeline"].as_array().into_iter().flatten() {
        let step = e["step"].as_str().unwrap();
        assert!(html.contains(&format!("data-step=\"{step}")), "step {step} drawn");
    }
    let cause = inc["spec"]["cause"].as_str().unwrap();
    let escaped = cause
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    assert!(html.contains(&escaped), "the cause: {cause}");
    // Nothing fetched: the only address is the SVG namespace's name.
    assert_eq!(
        html.matches("http://").count(),
        html.matches("<svg xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    for external in ["https://", "<script", "<link", "src=", "url("] {
        assert!(!html.contains(external), "{external} in the report");
    }
    if inc["status"]["deadline"].is_string() {
        assert!(html.contains("data-marker=\"deadline\""), "the deadline marked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_finds_the_plugin() {
    let p = plane();
    let dir = binary().parent().expect("a directory");
    let out = Command::new(&p.kubectl)
        .args(["plugin", "list", "--name-only"])
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .output()
        .expect("kubectl plugin list");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l.trim() == "kubectl-reprise"), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incident_is_shown_approved_acknowledged_and_reported() {
    let ns = TestNamespace::new("plugin");
    let _standin = kubevirt::StandIn::start(plane().client().await, &ns.name);
    let mut op = Operator::start(Options {
        extra: [
            "--vm-ready-grace-seconds",
            "5",
            "--reports",
            "--metrics-auth",
            "kubernetes",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    let yaml = "apiVersion: reprise.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {name: vm-db, labels: {tier: vm}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: [{name: root, containerDisk: {image: \"registry.example/vm/debian:12\"}}]\n---\n\
        apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {name: pra}\nspec:\n  selector: {matchLabels: {tier: vm}}\n  levels:\n  - {level: 2, name: virtual-machine, appliesTo: [VirtualMachine], minWindow: 30m, maxWindow: 45m}\n  procedures:\n  - kind: VirtualMachine\n    steps:\n    - {name: approve, action: WaitForApproval, timeout: 5m}\n    - {name: restart, action: Restart, timeout: 60s}\n";
    let (ok, out) = ns.apply(yaml);
    assert!(ok, "{out}");
    ns.wait_for("virtualmachines.reprise.dev/vm-db", "the VM to be Ready", 60, |v| {
        crate::support::condition(v, "Ready").is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    // Nothing failed yet: the plan is listed with its level and window, no incident.
    let status = eventually(
        "the plan in kubectl reprise status",
        Duration::from_secs(30),
        || async {
            let s = json(&ns.name, &["status"]);
            (s["plans"][0]["levels"][0]["window"] == "30m to 45m").then_some(s)
        },
    )
    .await;
    assert_eq!(status["plans"][0]["name"], "pra");
    assert_eq!(status["plans"][0]["openIncidents"], serde_json::json!([]));

    kubevirt::fail_instance(&plane().client().await, &ns.name, "vm-db").await;
    let name = eventually("an incident awaiting approval", Duration::from_secs(60), || async {
        let s = json(&ns.name, &["status"]);
        let open = s["plans"][0]["openIncidents"].as_array()?.first()?.clone();
        (open["phase"] == "AwaitingApproval").then(|| open["name"].as_str().unwrap().to_string())
    })
    .await;
    let (ok, text, err) = reprise(&ns.name, &["status"]);
    assert!(ok, "{err}");
    assert!(text.contains(&name) && text.contains("AwaitingApproval"), "{text}");
    assert!(!text.contains('\x1b'), "no colour off a terminal: {text:?}");

    // The incident, as text: its window, its step waiting, against a time bar.
    let (ok, text, err) = reprise(&ns.name, &["incident", &name]);
    assert!(ok, "{err}");
    assert!(text.contains("level 2 virtual-machine"), "{text}");
    assert!(text.contains("of window 30m to 45m"), "{text}");
    assert!(
        text.contains("approve") && text.contains('[') && text.contains('|'),
        "{text}"
    );

    // Approved by the user the API server knows (the test's admin), then resolved.
    let (ok, said, err) = reprise(&ns.name, &["approve", &name]);
    assert!(ok, "{err}");
    assert!(said.contains("approved as"), "{said}");
    let (ok, said, err) = reprise(&ns.name, &["ack", &name]);
    assert!(ok, "{err}");
    assert!(said.contains("acknowledged as"), "{said}");
    let again = json(&ns.name, &["ack", &name]);
    assert_eq!(again["done"], "already acknowledged", "{again}");
    let view = eventually("the incident resolved", Duration::from_secs(90), || async {
        let v = json(&ns.name, &["incident", &name]);
        (v["phase"] == "Resolved").then_some(v)
    })
    .await;
    let steps: Vec<(&str, &str)> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("approve", "Succeeded"), ("restart", "Succeeded")]);
    let who = view["approvedBy"].as_str().unwrap();
    assert!(!who.is_empty() && who != "true", "the approver by name: {view}");
    assert_eq!(view["acknowledgedBy"].as_str(), Some(who));
    assert_eq!(view["window"], "30m to 45m");
    assert!(view["windowSeconds"].as_f64().unwrap() > 2699.0, "{view}");
    assert!(view["measures"]["timeToRecover"].as_str().is_some(), "{view}");
    // Opened at a time finer than the API server's whole second (almost surely).
    let opened = view["detectedAt"].as_str().unwrap();
    assert!(opened.contains('.'), "detectedAt to the microsecond: {opened}");

    // The report, as a file an auditor keeps.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incident.html");
    let (ok, _, err) = reprise(
        &ns.name,
        &[
            "report",
            "incident",
            &name,
            "-o",
            "html",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(&file).unwrap();
    let inc: Value = serde_json::from_str(&ns.k(&["get", "incident", &name, "-o", "json"])).unwrap();
    check_report(&html, &inc);
    assert!(html.contains("approved by"), "the approval in the report");
    in_a_browser(&file, &view);

    served_to_whoever_may_read_the_incident(&ns, &mut op, &name, &inc).await;

    // Nothing waits for an approval any more: said, not written.
    let (ok, _, err) = reprise(&ns.name, &["approve", &name]);
    assert!(!ok && err.contains("nothing waits for an approval"), "{err}");
    // A name that does not exist: a clear error, exit code 1.
    let (ok, _, err) = reprise(&ns.name, &["incident", "no-such"]);
    assert!(!ok && err.contains("no-such"), "{err}");
    assert!(op.exited().is_none());
}

/// What `kubectl reprise` says of the PlastProd world once one failure of
/// each level was recovered (`incidents`, as kubectl returns them).
pub fn check_world(ns: &str, incidents: &[&Value]) {
    let status = json(ns, &["status"]);
    let plan = &status["plans"][0];
    assert_eq!(plan["name"], "pra-plastprod", "{status}");
    let windows: Vec<(u64, &str)> = plan["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["level"].as_u64().unwrap(), l["window"].as_str().unwrap()))
        .collect();
    assert_eq!(
        windows,
        [(1, "15m to 30m"), (2, "30m to 45m"), (3, "from 45m, open-ended")],
        "{status}"
    );
    assert_eq!(plan["openIncidents"], serde_json::json!([]), "all resolved: {status}");
    let backup = &plan["backups"][0];
    assert_eq!(backup["database"], "shop-db", "{status}");
    assert_eq!(backup["rpo"], "6h");
    assert_eq!(backup["withinRpo"], true, "{status}");
    let (ok, text, err) = reprise(ns, &["status"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("Plan") && text.contains("pra-plastprod") && text.contains("within RPO"),
        "{text}"
    );
    // A drill, started and followed to its end as a user would.
    let (ok, text, err) = reprise(ns, &["drill", "pra-plastprod", "--timeout", "300"]);
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("Drill") && text.contains("Verified") && text.contains("Database shop-db"),
        "{text}"
    );
    let (ok, html, err) = reprise(ns, &["report", "drill", "pra-plastprod", "-o", "html"]);
    assert!(ok, "{err}");
    assert!(
        html.contains("Database shop-db") && html.contains("data-marker=\"deadline\""),
        "{html}"
    );
    for inc in incidents {
        let name = inc["metadata"]["name"].as_str().unwrap();
        let view = json(ns, &["incident", name]);
        assert_eq!(view["phase"], "Resolved");
        let steps: Vec<&Value> = view["steps"].as_array().unwrap().iter().map(|s| &s["step"]).collect();
        let timeline: Vec<&Value> = inc["status"]["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["step"])
            .collect();
        assert_eq!(steps, timeline, "{view}");
        assert!(view["measures"]["timeToRecover"].is_string(), "{view}");
        let (ok, html, err) = reprise(ns, &["report", "incident", name, "-o", "html"]);
        assert!(ok, "{err}");
        check_report(&html, inc);
        let level = inc["spec"]["level"].as_u64().unwrap();
        let title = format!("(level {level})");
        assert!(html.contains(&title), "{title} in the report");
    }
}

/// The operator's copy of the report (`--reports`): for a token allowed to
/// `get` the Incident, no one else; names only, nothing else taken from the path.
async fn served_to_whoever_may_read_the_incident(ns: &TestNamespace, op: &mut Operator, name: &str, inc: &Value) {
    for sa in ["auditor", "stranger"] {
        ns.k(&["create", "serviceaccount", sa]);
    }
    ns.k(&[
        "create",
        "role",
        "incident-reader",
        "--verb=get",
        "--resource=incidents.reprise.dev",
    ]);
    ns.k(&[
        "create",
        "rolebinding",
        "auditor-reads",
        "--role=incident-reader",
        &format!("--serviceaccount={}:auditor", ns.name),
    ]);
    let token = |sa: &str| format!("Bearer {}", ns.k(&["create", "token", sa, "--duration", "10m"]).trim());
    let addr = op.addr().await;
    reprise::install_crypto_provider();
    let http = reqwest::Client::new();
    let get = |path: String, auth: Option<String>| {
        let mut req = http.get(format!("http://{addr}{path}"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        async move {
            let r = req.send().await.expect("GET a report");
            let status = r.status().as_u16();
            let csp = r
                .headers()
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            (status, csp, r.text().await.unwrap_or_default())
        }
    };
    let path = format!("/reports/{}/incident/{name}", ns.name);
    assert_eq!(get(path.clone(), None).await.0, 401, "no token");
    assert_eq!(
        get(path.clone(), Some(token("stranger"))).await.0,
        403,
        "a token without get on it"
    );
    let (status, csp, html) = get(path, Some(token("auditor"))).await;
    assert_eq!(status, 200, "{html}");
    assert!(csp.is_some_and(|c| c.starts_with("default-src 'none'")));
    check_report(&html, inc);
    // The plan's drill report is another object: the auditor may not get it.
    let drill = format!("/reports/{}/drill/pra", ns.name);
    assert_eq!(get(drill, Some(token("auditor"))).await.0, 403);
    for bad in [
        "/reports/x/incident/..%2F..%2Fsecrets",
        "/reports/X/incident/a",
        "/reports/x/secret/a",
    ] {
        let status = get(bad.to_string(), Some(token("auditor"))).await.0;
        assert!(status == 400 || status == 404, "{bad}: {status}");
    }
}

/// Chromium's command line for one look at a local file: headless, nothing
/// in the background, and no name resolves (a report fetches nothing).
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1000,1200",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The value of attribute `name` in the first tag of `dom` that holds `marker`.
fn attribute(dom: &str, marker: &str, name: &str) -> f64 {
    let at = dom.find(marker).unwrap_or_else(|| panic!("{marker} not in the page"));
    let start = dom[..at].rfind('<').unwrap();
    let tag = &dom[start..start + dom[start..].find('>').unwrap()];
    let key = format!(" {name}=\"");
    let from = tag.find(&key).unwrap_or_else(|| panic!("no {name} in {tag}")) + key.len();
    let value = &tag[from..from + tag[from..].find('"').unwrap()];
    value.parse().unwrap_or_else(|e| panic!("{name}={value}: {e}"))
}

/// The report as Chromium builds it: one bar per step, the deadline where
/// the level's window ends, nothing logged (no console error, no request
/// refused), and a screenshot kept under the target directory for CI.
fn in_a_browser(file: &Path, view: &Value) {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path())
        .arg("--dump-dom")
        .arg(file)
        .output()
        .expect("chromium");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let steps = view["steps"].as_array().unwrap().len();
    assert_eq!(
        dom.matches("<rect class=\"step").count(),
        steps,
        "one bar per step in the DOM"
    );
    // The deadline is 45 minutes after the opening, drawn where that falls.
    let t = |k: &str| {
        view[k]
            .as_str()
            .unwrap()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
    };
    let origin = t("failureObservedAt").min(t("detectedAt"));
    let expected = 2700.0 + origin.duration_until(t("detectedAt")).as_secs_f64();
    let seconds = attribute(&dom, "data-marker=\"deadline\"", "data-seconds");
    assert!(
        (seconds - expected).abs() < 0.002,
        "deadline at {seconds}s, window ends at {expected}s"
    );
    let (left, right) = (
        attribute(&dom, "class=\"timeline\"", "data-left"),
        attribute(&dom, "class=\"timeline\"", "data-right"),
    );
    let span = attribute(&dom, "class=\"timeline\"", "data-span-seconds");
    let x = attribute(&dom, "data-marker=\"deadline\"", "x1");
    assert!(
        (x - (left + seconds / span * (right - left))).abs() < 0.1,
        "deadline drawn at x={x}"
    );
    for bad in ["CONSOLE", "Refused to", "net::ERR_", "Uncaught"] {
        assert!(!log.contains(bad), "the browser logged {bad}: {log}");
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("incident-report.png");
    let out = chromium(profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg(file)
        .output()
        .expect("chromium");
    assert!(
        out.status.success() && shot.exists(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("incident report screenshot: {}", shot.display());
}

/// Every metric the alert rules and the dashboard query is one the running
/// operator exports (its `# TYPE` lines, which list a family before it has
/// any series).
pub async fn queries_name_exported_metrics(op: &mut Operator) {
    let (code, text) = op.get("/metrics").await;
    assert_eq!(code, 200, "{text}");
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let root = crate::support::repo_root();
    let dashboard = crate::support::run(
        Command::new(root.join("hack/dashcheck")).arg(root.join("charts/reprise/dashboards/reprise.json")),
    );
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("charts/reprise/alerts/reprise.rules.yaml")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard.lines().map(str::to_string).collect();
    for g in rules["groups"].as_array().unwrap() {
        exprs.extend(
            g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["expr"].as_str().unwrap().to_string()),
        );
    }
    // A failed reconcile is the one thing this world does not produce (and a
    // family shows only once it has a series): that one is checked where it
    // is registered.
    let telemetry = std::fs::read_to_string(root.join("src/telemetry.rs")).unwrap();
    let registered = |base: &str| {
        base.strip_prefix("reprise_")
            .is_some_and(|n| n == "reconcile_errors" && telemetry.contains(&format!("\"{n}\",")))
    };
    let mut named = 0;
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("reprise_") {
                continue;
            }
            named += 1;
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s).filter(|b| exported.contains(b)))
                .unwrap_or(word);
            assert!(
                exported.contains(&base) || registered(base.strip_suffix("_total").unwrap_or(base)),
                "{word} (in `{expr}`) is not exported; exported: {exported:?}"
            );
        }
    }
    assert!(named >= 20, "the queries name reprise's metrics: {exprs:?}");
}
