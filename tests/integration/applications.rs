//! Applications on the real control plane (kube-controller-manager, scheduler
//! and kwok make the pods): deploy, self-heal, health-gated releases with
//! rollback, artifacts, dependencies, and a quiet steady state.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service, events::v1::Event};
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::Value;

use crate::support::{
    OPERATOR_USER, TestNamespace, audit, condition, eventually,
    operator::{Operator, Options},
    plane,
};

fn app_yaml(name: &str, version: &str, extra: &str) -> String {
    format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: Application\nmetadata: {{name: {name}}}\nspec:\n  type: Web\n  version: \"{version}\"\n  image: \"registry.example/{name}:{{version}}\"\n  replicas: 2\n  port: 8080\n{extra}"
    )
}

fn get(ns: &TestNamespace, what: &str) -> Value {
    serde_json::from_str(&ns.k(&["get", what, "-o", "json"])).expect("json")
}

async fn events_with_reason(ns: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(plane().client().await, ns);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

async fn deployment(ns: &str, name: &str) -> Option<Deployment> {
    let api: Api<Deployment> = Api::namespaced(plane().client().await, ns);
    api.get_opt(name).await.expect("get deployment")
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

async fn wait_ready(ns: &TestNamespace, what: &str) {
    let out = ns.k(&["wait", "--for=condition=Ready", what, "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
}

#[tokio::test]
async fn deploys_and_repairs_what_is_deleted_or_changed_by_hand() {
    let ns = TestNamespace::new("app-heal");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let (ok, out) = ns.apply(&app_yaml("shop", "1.0.0", ""));
    assert!(ok, "{out}");
    wait_ready(&ns, "application/shop").await;
    let d = deployment(&ns.name, "shop").await.expect("the Deployment exists");
    assert_eq!(image_of(&d), "registry.example/shop:1.0.0");
    assert_eq!(
        d.status.as_ref().and_then(|s| s.available_replicas),
        Some(2),
        "pods run on kwok nodes"
    );
    assert_eq!(d.owner_references()[0].kind, "Application");
    let svc: Api<Service> = Api::namespaced(plane().client().await, &ns.name);
    assert!(svc.get_opt("shop").await.expect("get").is_some(), "the Service exists");
    let app = get(&ns, "application/shop");
    assert_eq!(app["status"]["health"], "Healthy");
    assert_eq!(app["status"]["lastGoodVersion"], "1.0.0");

    // Deleted: recreated.
    let old_uid = d.uid().expect("uid");
    ns.k(&["delete", "deployment", "shop", "--wait=false"]);
    let recreated = eventually("the Deployment to be recreated", Duration::from_secs(30), || async {
        deployment(&ns.name, "shop")
            .await
            .filter(|d| d.uid().as_deref() != Some(old_uid.as_str()) && d.metadata.deletion_timestamp.is_none())
    })
    .await;
    assert_eq!(image_of(&recreated), "registry.example/shop:1.0.0");
    eventually("a DeploymentRecreated Event", Duration::from_secs(20), || async {
        (!events_with_reason(&ns.name, "DeploymentRecreated").await.is_empty()).then_some(())
    })
    .await;
    wait_ready(&ns, "application/shop").await;

    // Scaled by hand: scaled back.
    ns.k(&["scale", "deployment", "shop", "--replicas=5"]);
    eventually(
        "the Deployment to be scaled back to 2",
        Duration::from_secs(30),
        || async {
            deployment(&ns.name, "shop")
                .await
                .filter(|d| d.spec.replicas == Some(2))
                .map(|_| ())
        },
    )
    .await;
    eventually("a DeploymentReverted Event", Duration::from_secs(20), || async {
        (!events_with_reason(&ns.name, "DeploymentReverted").await.is_empty()).then_some(())
    })
    .await;
    // The image changed by hand: put back too.
    ns.k(&["set", "image", "deployment/shop", "app=registry.example/shop:9.9.9"]);
    eventually("the image to be put back", Duration::from_secs(30), || async {
        deployment(&ns.name, "shop")
            .await
            .filter(|d| image_of(d) == "registry.example/shop:1.0.0")
            .map(|_| ())
    })
    .await;
    let app = get(&ns, "application/shop");
    assert_eq!(app["status"]["lastRepair"]["object"], "Deployment");
    assert_eq!(app["status"]["lastRepair"]["action"], "Reverted");
    assert!(op.metric("reprise_repairs_total", "action=\"Recreated\"").await >= 1.0);
    assert!(op.metric("reprise_repairs_total", "action=\"Reverted\"").await >= 2.0);

    // A recovery action through the annotation: a rolling restart.
    ns.k(&["annotate", "application", "shop", "reprise.dev/action=restart/test-1"]);
    eventually("the pods to be restarted", Duration::from_secs(30), || async {
        let d = deployment(&ns.name, "shop").await?;
        d.spec
            .template
            .metadata?
            .annotations?
            .get("reprise.dev/restarted-at")
            .map(|_| ())
    })
    .await;
    let app = get(&ns, "application/shop");
    assert_eq!(app["status"]["lastAction"]["id"], "test-1");
    assert_eq!(app["status"]["lastAction"]["outcome"], "Done");
}

#[tokio::test]
async fn a_failing_version_rolls_back_to_the_last_good_one() {
    let ns = TestNamespace::new("app-rollback");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let rollout = "  rollout: {progressDeadline: 15s}\n";
    let (ok, out) = ns.apply(&app_yaml("shop", "1.0.0", rollout));
    assert!(ok, "{out}");
    wait_ready(&ns, "application/shop").await;
    // kwok's reprise-pod-crashloop stage keeps pods of a "crashloop" tag from ever being ready.
    let (ok, out) = ns.apply(&app_yaml("shop", "2.0.0-crashloop", rollout));
    assert!(ok, "{out}");
    let app = eventually("the rollback", Duration::from_secs(90), || async {
        let app = get(&ns, "application/shop");
        (app["status"]["releases"].as_array().map(Vec::len) >= Some(3)
            && app["status"]["releases"][0]["outcome"] == "Succeeded")
            .then_some(app)
    })
    .await;
    let releases = app["status"]["releases"].as_array().expect("releases");
    assert_eq!(releases[0]["version"], "1.0.0", "back on the last good version");
    assert_eq!(releases[0]["message"], "rollback from 2.0.0-crashloop");
    assert_eq!(releases[1]["version"], "2.0.0-crashloop");
    assert_eq!(releases[1]["outcome"], "RolledBack");
    assert!(
        releases[1]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("replicas of 2.0.0-crashloop available"),
        "{}",
        releases[1]
    );
    assert_eq!(releases[2]["version"], "1.0.0");
    assert_eq!(releases[2]["outcome"], "Succeeded");
    for r in releases {
        assert!(
            r["duration"].is_string() && r["started"].is_string() && r["finished"].is_string(),
            "every finished release is measured: {r}"
        );
    }
    let (status, reason, message) = condition(&app, "Degraded").expect("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "RolloutFailed"));
    assert!(message.contains("2.0.0-crashloop"), "{message}");
    let (ready, reason, _) = condition(&app, "Ready").expect("Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "RolloutFailed"));
    // Waiting for a new version: kstatus' Failed, not InProgress forever.
    let (stalled, reason, _) = condition(&app, "Stalled").expect("Stalled");
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "RolloutFailed"));
    let judged = crate::support::kstatus(&ns.name, "applications");
    assert_eq!(judged["Application/shop"].0, "Failed", "{judged:?}");
    assert_eq!(app["status"]["health"], "Degraded");
    assert_eq!(app["status"]["currentVersion"], "1.0.0");
    assert!(
        !events_with_reason(&ns.name, "RolledBack").await.is_empty(),
        "a RolledBack Event"
    );
    ns.k(&["wait", "--for=condition=Available", "deployment/shop", "--timeout=60s"]);
    let d = deployment(&ns.name, "shop").await.expect("deployment");
    assert_eq!(image_of(&d), "registry.example/shop:1.0.0");

    // The failed version is not tried again while the spec stays the same.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let app = get(&ns, "application/shop");
    assert_eq!(
        app["status"]["releases"].as_array().map(Vec::len),
        Some(3),
        "no new attempt: {}",
        app["status"]["releases"]
    );
    // A new spec is tried.
    let (ok, out) = ns.apply(&app_yaml("shop", "2.0.1", rollout));
    assert!(ok, "{out}");
    wait_ready(&ns, "application/shop").await;
    let app = get(&ns, "application/shop");
    assert_eq!(app["status"]["lastGoodVersion"], "2.0.1");
    assert_eq!(condition(&app, "Degraded").expect("Degraded").0, "False");
}

/// A file server on 127.0.0.1 whose content the test can change.
async fn artifact_server(content: Arc<Mutex<Vec<u8>>>) -> String {
    use axum::{Router, routing::get};
    let app = Router::new().route(
        "/app.apk",
        get(move || {
            let c = content.clone();
            async move { c.lock().expect("lock").clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}/app.apk")
}

// Multi-threaded: the artifact server must answer while the test blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_checked_against_their_sha256() {
    use sha2::{Digest, Sha256};
    let ns = TestNamespace::new("app-artifact");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sha: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    let content = Arc::new(Mutex::new(body));
    let url = artifact_server(content.clone()).await;
    let extra = format!(
        "  artifactCheckInterval: 3s\n  artifacts:\n  - {{name: android-apk, url: \"{url}\", sha256: {sha}}}\n"
    );
    let (ok, out) = ns.apply(&app_yaml("mobile", "1.0.0", &extra));
    assert!(ok, "{out}");
    wait_ready(&ns, "application/mobile").await;
    let app = get(&ns, "application/mobile");
    let a = &app["status"]["artifacts"][0];
    assert_eq!(a["name"], "android-apk");
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["sizeBytes"], 3_000_000);
    assert!(a["duration"].is_string() && a["checked"].is_string(), "{a}");

    content.lock().expect("lock")[1000] ^= 0xff;
    let app = eventually("the altered artifact to be found", Duration::from_secs(30), || async {
        let app = get(&ns, "application/mobile");
        (condition(&app, "Degraded").map(|c| c.0) == Some("True".into())).then_some(app)
    })
    .await;
    let (_, reason, message) = condition(&app, "Degraded").expect("Degraded");
    assert_eq!(reason, "ArtifactMismatch");
    assert!(
        message.contains("artifact android-apk") && message.contains("expected"),
        "{message}"
    );
    assert_eq!(app["status"]["health"], "Degraded");
    assert_eq!(condition(&app, "Ready").expect("Ready").0, "False");
}

#[tokio::test]
async fn a_dependency_that_is_not_ready_holds_new_versions() {
    let ns = TestNamespace::new("app-deps");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let (ok, out) = ns.apply(&app_yaml("shop", "1.0.0", ""));
    assert!(ok, "{out}");
    wait_ready(&ns, "application/shop").await;
    // A Database reprise does not report Ready (its admin Secret is missing).
    let db = "apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {name: shop-db}\nspec:\n  instance: {external: {host: db.example, adminSecretRef: {name: nowhere}}}\n";
    let (ok, out) = ns.apply(db);
    assert!(ok, "{out}");
    let (ok, out) = ns.apply(&app_yaml(
        "shop",
        "1.1.0",
        "  dependsOn: [{kind: Database, name: shop-db}]\n",
    ));
    assert!(ok, "{out}");
    let app = eventually("DependencyNotReady", Duration::from_secs(30), || async {
        let app = get(&ns, "application/shop");
        (condition(&app, "Ready").map(|c| c.1) == Some("DependencyNotReady".into())).then_some(app)
    })
    .await;
    assert!(
        condition(&app, "Ready").expect("Ready").2.contains("Database shop-db"),
        "the message names the dependency"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = deployment(&ns.name, "shop").await.expect("deployment");
    assert_eq!(
        image_of(&d),
        "registry.example/shop:1.0.0",
        "1.1.0 waits for the database"
    );
    assert_eq!(get(&ns, "application/shop")["status"]["currentVersion"], "1.0.0");
}

#[tokio::test]
async fn steady_state_writes_nothing_for_a_minute() {
    let p = plane();
    let audit_log = p.audit();
    let ns = TestNamespace::new("app-quiet");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let (ok, out) = ns.apply(&app_yaml("shop", "1.0.0", ""));
    assert!(ok, "{out}");
    wait_ready(&ns, "application/shop").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let app_rv = rv(&get(&ns, "application/shop"));
    let deploy_rv = rv(&get(&ns, "deployment/shop"));
    let from = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let to = k8s_openapi::jiff::Timestamp::now();
    let writes = audit::writes(audit_log, OPERATOR_USER, Some(&ns.name), from, to);
    assert!(
        writes.is_empty(),
        "the operator wrote in steady state:\n{}",
        writes.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        rv(&get(&ns, "application/shop")),
        app_rv,
        "the Application did not change"
    );
    assert_eq!(
        rv(&get(&ns, "deployment/shop")),
        deploy_rv,
        "the Deployment did not change"
    );
    println!("steady state: 0 writes in 60s for the Application and its Deployment");
    assert!(op.exited().is_none());
}

#[tokio::test]
async fn recovery_actions_roll_back_and_recreate_on_request() {
    let ns = TestNamespace::new("app-actions");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    for v in ["1.0.0", "1.1.0"] {
        let (ok, out) = ns.apply(&app_yaml("shop", v, ""));
        assert!(ok, "{out}");
        eventually(&format!("{v} to roll out"), Duration::from_secs(60), || async {
            (get(&ns, "application/shop")["status"]["lastGoodVersion"] == v).then_some(())
        })
        .await;
    }
    ns.k(&["annotate", "application", "shop", "reprise.dev/action=rollback/r1"]);
    let app = eventually("the rollback to 1.0.0", Duration::from_secs(60), || async {
        let app = get(&ns, "application/shop");
        (app["status"]["releases"][0]["version"] == "1.0.0" && app["status"]["releases"][0]["outcome"] == "Succeeded")
            .then_some(app)
    })
    .await;
    assert_eq!(app["status"]["releases"][0]["message"], "rollback from 1.1.0");
    assert_eq!(app["status"]["lastAction"]["outcome"], "Done");
    assert_eq!(
        image_of(&deployment(&ns.name, "shop").await.expect("deployment")),
        "registry.example/shop:1.0.0"
    );

    let uid = deployment(&ns.name, "shop")
        .await
        .expect("deployment")
        .uid()
        .expect("uid");
    ns.k(&[
        "annotate",
        "--overwrite",
        "application",
        "shop",
        "reprise.dev/action=recreate/r2",
    ]);
    eventually("a new Deployment", Duration::from_secs(60), || async {
        deployment(&ns.name, "shop")
            .await
            .filter(|d| d.uid() != Some(uid.clone()) && d.metadata.deletion_timestamp.is_none())
            .map(|_| ())
    })
    .await;
    let app = get(&ns, "application/shop");
    assert_eq!(app["status"]["lastAction"]["id"], "r2");
    assert_eq!(app["status"]["lastAction"]["action"], "recreate");
    ns.k(&[
        "annotate",
        "--overwrite",
        "application",
        "shop",
        "reprise.dev/action=explode/r3",
    ]);
    let app = eventually("the unknown action to be rejected", Duration::from_secs(30), || async {
        let app = get(&ns, "application/shop");
        (app["status"]["lastAction"]["id"] == "r3").then_some(app)
    })
    .await;
    assert_eq!(app["status"]["lastAction"]["outcome"], "Rejected");
}
