//! A tenant — a ServiceAccount that may write reprise objects in its
//! namespace but may not read Secrets nor create Deployments — cannot make
//! reprise send a Secret anywhere, nor page anyone with a hand-made Incident.
//! The chart's admission policy refuses it at the API server (it asks about
//! the requesting user); where a Secret reaches the operator anyway, the
//! Secret's own `reprise.dev/for` offer decides. A listener on loopback
//! stands for the tenant's endpoint: it must receive nothing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::support::{
    TestNamespace, condition,
    operator::{Operator, Options},
    plane,
};

/// A TCP listener on loopback that counts the connections it accepts.
async fn listener() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

/// The tenant's Role names its verbs: `*` would include `open` on
/// incidents, the verb the admission policy asks for.
const TENANT_RBAC: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: tenant}\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reprise-user}\n\
rules:\n- apiGroups: [reprise.dev]\n  resources: ['*']\n  verbs: [get, list, watch, create, update, patch, delete]\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: tenant}\n\
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reprise-user}\n\
subjects: [{kind: ServiceAccount, name: tenant}]\n";

/// Applies `yaml` in `ns` as the tenant: (accepted, output).
fn as_tenant(ns: &TestNamespace, yaml: &str) -> (bool, String) {
    let user = format!("system:serviceaccount:{}:tenant", ns.name);
    plane().k_stdin(&["--as", &user, "apply", "-n", &ns.name, "-f", "-"], yaml)
}

fn server(name: &str, port: u16, secret: &str) -> String {
    format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: Server\nmetadata: {{name: {name}}}\nspec:\n  role: Hypervisor\n  bmc: {{address: \"http://127.0.0.1:{port}\", systemId: s1, credentialsSecretRef: {{name: {secret}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_make_reprise_use_secrets_it_cannot_read_nor_page_anyone() {
    let (port, connections) = listener().await;
    let ns = TestNamespace::new("tenancy");
    let (ok, out) = ns.apply(TENANT_RBAC);
    assert!(ok, "{out}");
    let _op = {
        let mut op = Operator::start(Options::namespace(&ns.name));
        op.wait_ready().await;
        op
    };
    let admin = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bmc-real, annotations: {{reprise.dev/for: \"Server/*\"}}}}\nstringData: {{username: root, password: s3cret-bmc}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: postgres, password: s3cret-pg}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: pager, annotations: {{reprise.dev/for: \"RecoveryPlan/*\"}}}}\nstringData: {{token: s3cret-token}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: plain}}\nstringData: {{username: root, password: never-offered}}\n---\n\
         {}---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: Application\nmetadata: {{name: web, labels: {{tier: web}}}}\nspec: {{type: Web, image: \"registry.example/web:{{version}}\", version: \"1.0\"}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: pra}}\nspec:\n  selector: {{matchLabels: {{tier: web}}}}\n\
         \x20 levels:\n  - {{level: 1, appliesTo: [Application], minWindow: 15m, maxWindow: 30m, responders: [{{name: it}}]}}\n\
         \x20 responders:\n  - {{name: it, type: Internal, webhook: {{url: \"http://127.0.0.1:{port}/page\", tokenSecretRef: {{name: pager, key: token}}}}}}\n",
        server("hv-01", 9, "bmc-real")
    );
    let (ok, out) = ns.apply(&admin);
    assert!(ok, "{out}");

    // Refused at the API server, naming what the tenant may not do.
    let cases = [
        ("a Server naming a Secret", server("evil", port, "bmc-real"), "bmc-real"),
        (
            "a Database naming the admin Secret",
            format!(
                "apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {{name: evil}}\nspec:\n  instance: {{external: {{host: 127.0.0.1, port: {port}, adminSecretRef: {{name: pg-admin}}, sslMode: Disable}}}}\n"
            ),
            "pg-admin",
        ),
        (
            "a RecoveryPlan sending the pager token",
            format!(
                "apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {{name: evil}}\nspec:\n  levels:\n  - {{level: 1, appliesTo: [Server], minWindow: 1m}}\n  responders:\n  - {{name: me, type: Internal, webhook: {{url: \"http://127.0.0.1:{port}/\", tokenSecretRef: {{name: pager, key: token}}}}}}\n"
            ),
            "pager",
        ),
        (
            "a hand-made Incident",
            "apiVersion: reprise.dev/v1alpha1\nkind: Incident\nmetadata: {name: forged}\nspec: {planRef: {name: pra}, component: {kind: Application, name: web}, level: 1, cause: forged}\n".to_string(),
            "open",
        ),
        (
            "an Application (a Deployment the tenant may not create)",
            "apiVersion: reprise.dev/v1alpha1\nkind: Application\nmetadata: {name: evil}\nspec: {type: Web, image: \"x/y:{version}\", version: \"1\"}\n".to_string(),
            "Deployment",
        ),
        (
            "an existing Server pointed at the tenant's listener",
            server("hv-01", port, "bmc-real"),
            "bmc-real",
        ),
    ];
    for (what, yaml, named) in cases {
        let (ok, out) = as_tenant(&ns, &yaml);
        assert!(!ok, "{what} was accepted: {out}");
        assert!(out.contains("denied request") && out.contains(named), "{what}: {out}");
    }
    // What needs no one else's rights still goes through.
    let (ok, out) = as_tenant(
        &ns,
        "apiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {name: patching}\nspec: {selector: {matchLabels: {tier: web}}, start: \"2030-01-01T00:00:00Z\", end: \"2030-01-01T02:00:00Z\", mode: Pause, reason: patching}\n",
    );
    assert!(ok, "a MaintenanceWindow needs no Secret: {out}");

    // Without the policy's help (an admin may read every Secret), the
    // Secret's own offer decides: one not offered to the Server is not read.
    let (ok, out) = ns.apply(&server("unoffered", port, "plain"));
    assert!(ok, "{out}");
    let s = ns
        .wait_for("server/unoffered", "Stalled on the Secret not offered", 60, |v| {
            condition(v, "Stalled").is_some_and(|(st, _, _)| st == "True")
        })
        .await;
    let (_, reason, message) = condition(&s, "Ready").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.bmc.credentialsSecretRef") && message.contains("reprise.dev/for=Server/unoffered"),
        "{message}"
    );

    // An Incident an admin makes by hand for a component that never failed
    // (Ready, untouched) pages nobody and does nothing.
    if plane().pods {
        ns.k(&["wait", "--for=condition=Ready", "application/web", "--timeout=60s"]);
        hand_made_incident_is_rejected(&ns).await;
    }

    // Give anything queued time to reach the listener: nothing may.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the tenant's listener was called"
    );
}

async fn hand_made_incident_is_rejected(ns: &TestNamespace) {
    let (ok, out) = ns.apply(
        "apiVersion: reprise.dev/v1alpha1\nkind: Incident\nmetadata: {name: by-hand}\nspec: {planRef: {name: pra}, component: {kind: Application, name: web}, level: 1, cause: forged}\n",
    );
    assert!(ok, "{out}");
    let inc = ns
        .wait_for("incident/by-hand", "the hand-made incident to be rejected", 60, |v| {
            v["status"]["phase"] == "Rejected"
        })
        .await;
    assert!(
        inc["status"]["resolution"]
            .as_str()
            .unwrap()
            .contains("nobody was told"),
        "{}",
        inc["status"]
    );
    assert!(
        inc["status"]["timeline"].as_array().is_none_or(|t| t.is_empty()),
        "{}",
        inc["status"]
    );
    let (st, reason, _) = condition(&inc, "Stalled").unwrap();
    assert_eq!((st.as_str(), reason.as_str()), ("True", "Rejected"));
}
