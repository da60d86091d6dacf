//! reprise never writes over what it does not control: a Deployment, a
//! connection Secret, a role another Database manages. Each is a `Conflict`
//! on the reprise object (and kstatus `Stalled`), with the other owner named;
//! the other object is left exactly as it was.

use std::time::Duration;

use crate::support::{
    TestNamespace, condition,
    operator::{Operator, Options},
    plane,
    postgres::{ADMIN, Postgres},
};

fn conflict(v: &serde_json::Value, type_: &str) -> Option<String> {
    condition(v, type_)
        .filter(|(s, r, _)| s == "False" && r == "Conflict")
        .map(|(_, _, m)| m)
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_reprise_does_not_control_are_left_alone_and_named() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("ownership");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let db = |name: &str, role: &str| {
        format!(
            "apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {{name: {name}}}\nspec:\n  instance: {{external: {{host: 127.0.0.1, port: {}, adminSecretRef: {{name: pg-admin}}, sslMode: Disable}}}}\n  databases: [{{name: {}}}]\n  roles:\n  - {{name: {role}, passwordSecretRef: {{name: accounts, key: {name}}}}}\n---\n",
            pg.port,
            name.replace('-', "_")
        )
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: \"{}\"}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: accounts, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{bmc: pw-bmc-1, first: pw-first-1, second: pw-second-1}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: bmc-hv-01}}\nstringData: {{password: unrelated-keep-me}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: theirs}}}}\n  template:\n    metadata: {{labels: {{app: theirs}}}}\n    spec: {{containers: [{{name: c, image: theirs:1}}]}}\n---\n\
         {}{}{}\
         apiVersion: reprise.dev/v1alpha1\nkind: Application\nmetadata: {{name: web}}\nspec: {{type: Web, version: \"2.0\", image: \"registry.example/web:{{version}}\"}}\n",
        pg.admin_password,
        // Its connection Secret for role hv_01 would be bmc-hv-01.
        db("bmc", "hv_01"),
        db("first", "shared"),
        db("second", "shared"),
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");

    let app = ns
        .wait_for("application/web", "a Conflict on the Application", 60, |v| {
            conflict(v, "Ready").is_some()
        })
        .await;
    let why = conflict(&app, "Ready").unwrap();
    assert!(why.contains("Deployment web exists"), "{why}");
    let theirs = ns.json("deployment/web");
    assert_eq!(theirs["spec"]["template"]["spec"]["containers"][0]["image"], "theirs:1");
    assert!(
        theirs["metadata"]["ownerReferences"].is_null(),
        "{}",
        theirs["metadata"]
    );

    let bmc = ns
        .wait_for("database/bmc", "a Conflict on the connection Secret", 60, |v| {
            conflict(v, "AccountsReady").is_some()
        })
        .await;
    let why = conflict(&bmc, "AccountsReady").unwrap();
    assert!(why.contains("\"bmc-hv-01\" exists"), "{why}");
    let secret = ns.json("secret/bmc-hv-01");
    assert!(
        secret["metadata"]["ownerReferences"].is_null(),
        "{}",
        secret["metadata"]
    );
    assert_eq!(
        secret["data"].as_object().unwrap().len(),
        1,
        "its data untouched: {}",
        secret["data"]
    );

    for (me, other) in [("first", "second"), ("second", "first")] {
        let v = ns
            .wait_for(&format!("database/{me}"), "a Conflict on the shared role", 60, |v| {
                conflict(v, "AccountsReady").is_some()
            })
            .await;
        let why = conflict(&v, "AccountsReady").unwrap();
        assert!(
            why.contains("role \"shared\"") && why.contains(&format!("/{other}")),
            "{why}"
        );
        assert_eq!(condition(&v, "Stalled").unwrap().0, "True");
    }
    // The first to look may have created it before the second existed; from
    // then on neither sets its password (each would set its own).
    let password = || {
        pg.sql(
            "postgres",
            "SELECT coalesce(rolpassword, '-') FROM pg_authid WHERE rolname = 'shared'",
        )
    };
    let before = password();

    // Quiet while the conflicts stand: nothing written for 10 s.
    let from = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(password(), before, "the shared role's password was not fought over");
    let writes = crate::support::audit::writes(
        plane().audit(),
        crate::support::OPERATOR_USER,
        Some(&ns.name),
        from,
        k8s_openapi::jiff::Timestamp::now(),
    );
    assert!(writes.is_empty(), "{writes:?}");
}
