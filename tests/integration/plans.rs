//! A RecoveryPlan's coverage follows the components of its namespace,
//! deletions included.

use std::time::Duration;

use crate::support::{
    TestNamespace, eventually,
    operator::{Operator, Options},
};

fn server(name: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: reprise.dev/v1alpha1\nkind: Server\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  bmc: {{address: \"http://127.0.0.1:9\", credentialsSecretRef: {{name: bmc}}}}\n"
    )
}

#[tokio::test]
async fn coverage_follows_components_and_their_deletion() {
    let ns = TestNamespace::new("coverage");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let plan = "---\napiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {name: plan}\nspec:\n  selector: {matchLabels: {tier: metal}}\n";
    let all = format!(
        "{plan}{}{}{}",
        server("a", "tier: metal"),
        server("b", "tier: metal"),
        server("c", "tier: other")
    );
    let (ok, out) = ns.apply(&all);
    assert!(ok, "{out}");
    let counts = || async {
        let v: serde_json::Value = serde_json::from_str(&ns.k(&["get", "recoveryplan", "plan", "-o", "json"])).ok()?;
        let c = &v["status"]["coverage"];
        Some((
            c["coveredCount"].as_u64()?,
            c["uncoveredCount"].as_u64()?,
            c["uncovered"][0]["name"].as_str().map(str::to_string),
        ))
    };
    eventually("2 covered, 1 uncovered", Duration::from_secs(30), || async {
        counts()
            .await
            .filter(|c| c.0 == 2 && c.1 == 1 && c.2.as_deref() == Some("c"))
    })
    .await;
    ns.k(&["delete", "server", "b"]);
    eventually("1 covered after a deletion", Duration::from_secs(30), || async {
        counts().await.filter(|c| c.0 == 1 && c.1 == 1)
    })
    .await;
    ns.k(&["delete", "server", "c"]);
    eventually(
        "nothing uncovered after a deletion",
        Duration::from_secs(30),
        || async { counts().await.filter(|c| c.0 == 1 && c.1 == 0) },
    )
    .await;
}
