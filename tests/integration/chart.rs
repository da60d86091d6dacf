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
            "kind: ClusterRole",
            "kind: Service",
            "kind: CustomResourceDefinition",
        ] {
            assert!(rendered.contains(kind), "the chart renders no {kind}");
        }
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
