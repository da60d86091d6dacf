//! The test control plane itself is real and complete enough for the operator.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};

use crate::support::{TestNamespace, eventually, plane};

#[test]
fn api_server_is_ready_and_reports_its_version() {
    let p = plane();
    assert_eq!(p.k(&["get", "--raw", "/readyz"]).trim(), "ok");
    let version: serde_json::Value = serde_json::from_str(&p.k(&["version", "-o", "json"])).expect("version JSON");
    let server = version["serverVersion"]["gitVersion"].as_str().expect("server version");
    let client = version["clientVersion"]["gitVersion"].as_str().expect("client version");
    println!("kube-apiserver {server}, kubectl {client}");
    assert!(
        server.starts_with("v1.37."),
        "the API server runs {server}, expected the version k8s-openapi's v1_37 feature targets"
    );
    assert_eq!(
        server, client,
        "kubectl is built from the same release as the API server"
    );
}

#[tokio::test]
async fn a_deployment_becomes_available_with_running_fake_pods() {
    let p = plane();
    assert!(
        p.pods,
        "this control plane has no controller-manager, scheduler or kwok; Deployments never get pods"
    );
    let ns = TestNamespace::new("deploy");
    let (ok, out) = ns.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "registry.example/web:1.0"}]
"#,
    );
    assert!(ok, "{out}");
    ns.k(&["wait", "--for=condition=Available", "deployment/web", "--timeout=90s"]);
    let client = p.client().await;
    let d: Deployment = Api::namespaced(client.clone(), &ns.name)
        .get("web")
        .await
        .expect("deployment");
    assert_eq!(d.status.and_then(|s| s.available_replicas), Some(3));
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let running = eventually("3 Running pods on kwok nodes", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
            let running: Vec<_> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some_and(|n| n.starts_with("kwok-node-"))
                })
                .collect();
            (running.len() == 3).then_some(running.len())
        }
    })
    .await;
    assert_eq!(running, 3);
}
