//! The operator process: health endpoints, metrics, clean shutdown, malformed
//! objects, a quiet steady state, and watches that survive an API server restart.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};

use crate::support::{
    OPERATOR_USER, Plane, TestNamespace, audit, condition, eventually, maintenance_window,
    operator::{Operator, Options},
    plane,
};

#[tokio::test]
async fn serves_health_readiness_and_metrics_and_stops_cleanly() {
    let ns = TestNamespace::new("runtime");
    let mut op = Operator::start(Options::namespace(&ns.name));
    assert_eq!(op.get("/healthz").await, (200, "ok".to_string()));
    op.wait_ready().await;
    let (ok, out) = ns.apply(&maintenance_window("w", "runtime test"));
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "maintenancewindow/w", "--timeout=30s"]);
    let (code, metrics) = op.get("/metrics").await;
    assert_eq!(code, 200);
    for series in [
        "reprise_reconciles_total{kind=\"MaintenanceWindow\"}",
        "reprise_reconcile_duration_seconds_bucket",
        "reprise_leader",
    ] {
        assert!(metrics.contains(series), "/metrics lacks {series}:\n{metrics}");
    }
    assert!(op.metric("reprise_reconciles_total", "MaintenanceWindow").await >= 1.0);
    assert!(
        op.terminate().await,
        "SIGTERM ends the operator with status 0; log:\n{}",
        op.logs()
    );
    let log = op.logs();
    let in_span = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            v["message"] == "reconciled"
                && v["span"]["name"] == "reconcile"
                && v["span"]["kind"] == "MaintenanceWindow"
                && v["span"]["namespace"] == ns.name.as_str()
                && v["span"]["object"] == "w"
        });
    assert!(
        in_span,
        "each reconcile logs in a span carrying kind, namespace and name:\n{log}"
    );
}

#[tokio::test]
async fn a_malformed_object_is_reported_and_the_watch_goes_on() {
    let p = plane();
    let ns = TestNamespace::new("malformed");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    // The API server's date-time takes ten digits of a second; Kubernetes'
    // Time type (and reprise) at most nine.
    let (ok, out) = ns.apply(
        "apiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {name: broken}\nspec: {selector: {}, start: \"2030-01-01T00:00:00.1234567891Z\", end: \"2030-01-02T00:00:00Z\", reason: odd}\n",
    );
    assert!(ok, "{out}");
    let events: Api<Event> = Api::namespaced(p.client().await, &ns.name);
    let note = eventually("a MalformedObject Warning Event", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("MalformedObject"))
                .and_then(|e| e.note)
        }
    })
    .await;
    assert!(
        note.contains("reprise cannot read this object"),
        "the Event says what is wrong: {note}"
    );
    // And the object says so itself, for kubectl wait and kstatus: Stalled.
    let broken = ns
        .wait_for(
            "maintenancewindow/broken",
            "a status on the malformed object",
            30,
            |v| condition(v, "Stalled").is_some_and(|(s, _, _)| s == "True"),
        )
        .await;
    let (status, reason, _) = condition(&broken, "Ready").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "MalformedObject"));
    let (ok, out) = ns.apply(&maintenance_window("after", "runtime test"));
    assert!(ok, "{out}");
    ns.k(&[
        "wait",
        "--for=condition=Ready",
        "maintenancewindow/after",
        "--timeout=30s",
    ]);
    assert_eq!(
        op.metric("reprise_malformed_objects_total", "MaintenanceWindow").await,
        1.0,
        "reported once, not once per watch event (its own status write is one)"
    );
    assert!(op.exited().is_none(), "the operator is still running");
}

#[tokio::test]
async fn steady_state_writes_nothing() {
    let p = plane();
    let audit_log = p.audit();
    let ns = TestNamespace::new("quiet");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let (ok, out) = ns.apply(&format!(
        "{}---\napiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: plan}}\nspec: {{}}\n",
        maintenance_window("w", "runtime test")
    ));
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Ready", "maintenancewindow/w", "--timeout=30s"]);
    ns.k(&[
        "wait",
        "--for=jsonpath={.status.observedGeneration}=1",
        "recoveryplan/plan",
        "--timeout=30s",
    ]);
    let reconciles_before = op.metric("reprise_reconciles_total", "").await;
    // Let in-flight writes land, then watch a quiet period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let to = k8s_openapi::jiff::Timestamp::now();
    let writes = audit::writes(audit_log, OPERATOR_USER, Some(&ns.name), from, to);
    let all_before = audit::writes(
        audit_log,
        OPERATOR_USER,
        Some(&ns.name),
        from - k8s_openapi::jiff::SignedDuration::from_secs(60),
        from,
    );
    assert!(
        !all_before.is_empty(),
        "the audit log shows the operator's first writes (status), so the helper sees its writes"
    );
    assert!(
        writes.is_empty(),
        "the operator wrote in steady state:\n{}",
        writes.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("\n")
    );
    println!(
        "steady state: 0 writes in 20s ({} writes before, {} reconciles before, {} after)",
        all_before.len(),
        reconciles_before,
        op.metric("reprise_reconciles_total", "").await
    );
}

#[tokio::test]
async fn watches_resume_within_seconds_after_an_api_server_restart() {
    // A private control plane: restarting the shared one would disturb the other tests.
    let dir = std::env::temp_dir().join(format!("reprise-restart-plane-{}", std::process::id()));
    let private = Plane::up(Some(&dir));
    struct Down<'a>(&'a Plane);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            self.0.script("down");
        }
    }
    let _down = Down(&private);
    let ns = "restart";
    private.k(&["create", "namespace", ns]);
    private.grant_operator(ns);
    let mut op = Operator::start(Options {
        plane: Some(&private),
        ..Options::namespace(ns)
    });
    op.wait_ready().await;
    let apply = |name: &str| {
        let (ok, out) = private.k_stdin(
            &["apply", "-n", ns, "-f", "-"],
            &maintenance_window(name, "runtime test"),
        );
        assert!(ok, "{out}");
    };
    apply("before");
    private.k(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        "maintenancewindow/before",
        "--timeout=30s",
    ]);
    private.script("restart-apiserver");
    let back = std::time::Instant::now();
    apply("after");
    // kube-runtime's default backoff can leave a watch down for 30 s or more;
    // reprise's is capped at 3 s.
    private.k(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        "maintenancewindow/after",
        "--timeout=15s",
    ]);
    println!(
        "reconciled {:.2}s after the API server came back",
        back.elapsed().as_secs_f64()
    );
    assert!(
        op.exited().is_none(),
        "the operator rode out the restart; log:\n{}",
        op.logs()
    );
}

/// With `--metrics-auth kubernetes`, /metrics answers only a token the API
/// server authenticates and allows `get` on /metrics; health stays open.
#[tokio::test]
async fn metrics_need_a_token_allowed_to_read_them() {
    let ns = TestNamespace::new("metrics-auth");
    let p = plane();
    for sa in ["scraper", "nobody"] {
        ns.k(&["create", "serviceaccount", sa]);
    }
    let binding = format!("metrics-reader-{}", ns.name);
    p.k(&[
        "create",
        "clusterrolebinding",
        &binding,
        "--clusterrole=reprise-metrics-reader",
        &format!("--serviceaccount={}:scraper", ns.name),
    ]);
    let token = |sa: &str| ns.k(&["create", "token", sa, "--duration", "10m"]).trim().to_string();
    let mut op = Operator::start(Options {
        extra: vec!["--metrics-auth".into(), "kubernetes".into()],
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    let addr = op.addr().await;
    reprise::install_crypto_provider();
    let http = reqwest::Client::new();
    let status = |auth: Option<String>| {
        let mut req = http.get(format!("http://{addr}/metrics"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        async move { req.send().await.expect("GET /metrics").status().as_u16() }
    };
    assert_eq!(status(None).await, 401, "no token");
    assert_eq!(
        status(Some("Bearer not-a-token".into())).await,
        401,
        "a token nobody issued"
    );
    assert_eq!(
        status(Some(format!("Bearer {}", token("nobody")))).await,
        403,
        "a token without the right"
    );
    assert_eq!(
        status(Some(format!("Bearer {}", token("scraper")))).await,
        200,
        "the reader's token"
    );
    assert_eq!(op.get("/healthz").await.0, 200, "health needs no token");
    let _ = p.kubectl().args(["delete", "clusterrolebinding", &binding]).output();
}
