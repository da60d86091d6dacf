//! The Helm chart lints, renders, and its manifests are accepted by the API server.

use crate::support::{OPERATOR_NAMESPACE, plane, repo_root, run};

#[test]
fn chart_lints_renders_and_passes_server_side_dry_run() {
    let p = plane();
    let chart = repo_root().join("charts/reprise");
    let chart = chart.to_str().expect("utf-8 path");
    let lint = run(p.helm().args(["lint", "--strict", chart]));
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    for values in [
        vec![],
        vec![
            "--set",
            "replicaCount=2",
            "--set",
            "metrics.serviceMonitor.enabled=false",
            "--set",
            "watchReleaseNamespaceOnly=true",
        ],
    ] {
        let mut args = vec![
            "template",
            "reprise",
            chart,
            "--namespace",
            OPERATOR_NAMESPACE,
            "--include-crds",
        ];
        args.extend(values.iter().copied());
        let rendered = run(p.helm().args(&args));
        for kind in [
            "kind: Deployment",
            "kind: ServiceAccount",
            "kind: Service",
            "kind: CustomResourceDefinition",
            "kind: ValidatingAdmissionPolicy\n",
            "kind: ValidatingAdmissionPolicyBinding",
        ] {
            assert!(rendered.contains(kind), "the chart renders no {kind}");
        }
        // Cluster-wide: a ClusterRole with the operator's rules; limited to
        // namespaces: Roles, and no cluster-wide rule over any object (the
        // metrics' auth delegation and reader roles read none).
        let cluster_wide_objects = rendered
            .split("\n---")
            .filter(|d| d.contains("kind: ClusterRole\n"))
            .any(|d| d.contains("apiGroups"));
        assert_eq!(
            cluster_wide_objects,
            values.is_empty(),
            "cluster-wide rules only when watching the whole cluster"
        );
        let le = if values.is_empty() {
            "--leader-election=false"
        } else {
            "--leader-election=true"
        };
        assert!(rendered.contains(le), "leader election follows replicaCount ({le})");
        let (ok, out) = p.k_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered);
        assert!(ok, "the API server rejects the rendered chart:\n{out}");
        assert!(
            out.contains("deployment.apps/reprise") && out.contains("(server dry run)"),
            "{out}"
        );
    }
}

#[test]
fn chart_crds_are_the_generated_ones() {
    for crd in reprise::api::crds() {
        let name = reprise::api::crd_file_name(&crd);
        let expected = reprise::api::crd_yaml(&crd).expect("yaml");
        let in_chart =
            std::fs::read_to_string(repo_root().join("charts/reprise/crds").join(&name)).unwrap_or_else(|e| {
                panic!("charts/reprise/crds/{name}: {e}; run `cargo run -- crds --out-dir charts/reprise/crds`")
            });
        assert!(
            in_chart == expected,
            "charts/reprise/crds/{name} differs from the code; run `cargo run -- crds --out-dir charts/reprise/crds`"
        );
    }
}

/// The operator's rights under the chart's namespaced rules: everything it
/// needs in its namespaces, nothing elsewhere; and one operator serves
/// several namespaces.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_acts_in_its_namespaces_only() {
    use crate::support::{
        OPERATOR_USER, TestNamespace, maintenance_window,
        operator::{Operator, Options},
    };
    let a = TestNamespace::new("rights-a");
    let b = TestNamespace::new("rights-b");
    let can = |verb: &str, what: &str, ns: &str| {
        let out = plane()
            .kubectl()
            .args(["auth", "can-i", verb, what, "-n", ns, "--as", OPERATOR_USER])
            .output()
            .expect("kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can("get", "secrets", "kube-system"), "no");
    assert_eq!(can("list", "secrets", "default"), "no");
    assert_eq!(can("delete", "deployments", "kube-system"), "no");
    assert_eq!(can("get", "secrets", &a.name), "yes");
    assert_eq!(can("delete", "deployments", &a.name), "yes");
    assert_eq!(
        can("get", "customresourcedefinitions", ""),
        "no",
        "discovery, not CRDs, tells what is served"
    );

    let mut op = Operator::start(Options::namespace(&format!("{},{}", a.name, b.name)));
    op.wait_ready().await;
    for ns in [&a, &b] {
        let (ok, out) = ns.apply(&maintenance_window("w", "two namespaces"));
        assert!(ok, "{out}");
        ns.k(&["wait", "--for=condition=Ready", "maintenancewindow/w", "--timeout=30s"]);
    }
    assert!(op.exited().is_none());
}

/// With alerts and the dashboard on: the PrometheusRule carries the rules
/// file's groups (the runbook links on the base given), the ConfigMap the
/// dashboard as it is, labelled for Grafana's sidecar.
#[test]
fn the_chart_carries_the_alert_rules_and_the_dashboard() {
    let p = plane();
    let chart = repo_root().join("charts/reprise");
    let rendered = run(p.helm().args([
        "template",
        "reprise",
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--set",
        "metrics.alerts.enabled=true",
        "--set",
        "metrics.dashboard.enabled=true",
        "--set",
        "metrics.alerts.runbookBaseUrl=https://docs.example/reprise/README.md",
    ]));
    let docs: Vec<serde_json::Value> = rendered
        .split("\n---")
        .filter_map(|d| serde_yaml_ng::from_str(d).ok())
        .collect();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let rule = of("PrometheusRule");
    let file: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart.join("alerts/reprise.rules.yaml"))
            .unwrap()
            .replace("README.md#", "https://docs.example/reprise/README.md#"),
    )
    .unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard's ConfigMap");
    let json = std::fs::read_to_string(chart.join("dashboards/reprise.json")).unwrap();
    assert_eq!(dashboard["data"]["reprise.json"].as_str().unwrap().trim(), json.trim());
    let yaml = serde_yaml_ng::to_string(dashboard).unwrap();
    let (ok, out) = p.k_stdin(&["apply", "--dry-run=server", "-f", "-"], &yaml);
    assert!(ok, "{out}");
}
