//! Specs the API server accepts but the operator finds wrong (cron syntax,
//! missing Secrets and keys, dangling references): each ends Ready=False with
//! reason InvalidSpec and the field named, after exactly one status write and
//! with a Warning Event.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};

use crate::support::{
    OPERATOR_USER, TestNamespace, audit, condition, eventually,
    operator::{Operator, Options},
    plane,
};

/// (resource, name, field the message must name)
const CASES: &[(&str, &str, &str)] = &[
    ("databases", "bad-cron", "spec.backup.schedule"),
    ("databases", "no-admin-secret", "spec.instance.external.adminSecretRef"),
    ("databases", "role-key-missing", "spec.roles[0].passwordSecretRef"),
    ("databases", "verify-undeclared", "spec.verify.tables[0].database"),
    ("servers", "no-bmc-secret", "spec.bmc.credentialsSecretRef"),
    ("servers", "ca-key-missing", "spec.bmc.caBundleSecretRef"),
    ("virtualmachines.reprise.dev", "six-field-cron", "spec.backup.schedule"),
    ("virtualmachines.reprise.dev", "no-host", "spec.hostRef"),
    ("applications", "no-dependency", "spec.dependsOn[0]"),
    ("recoveryplans", "bad-drill", "spec.drills.schedule"),
    ("recoveryplans", "bad-contract", "spec.responders[0].contract.until"),
    (
        "recoveryplans",
        "reprovision-without-image",
        "spec.procedures[0].steps[0]",
    ),
    ("incidents", "no-plan", "spec.planRef"),
    ("maintenancewindows", "bad-selector", "spec.selector"),
];

/// Applied first, so that the plan that covers it sees it from its first reconcile.
const FIRST: &str = r#"
apiVersion: reprise.dev/v1alpha1
kind: Server
metadata: {name: bare, labels: {tier: metal}}
spec:
  bmc: {address: "http://127.0.0.1:9", credentialsSecretRef: {name: bmc}}
"#;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: admin, annotations: {reprise.dev/for: "Database/*"}}
stringData: {username: postgres, password: pw}
---
apiVersion: v1
kind: Secret
metadata: {name: accounts, annotations: {reprise.dev/for: "Database/*"}}
stringData: {other: x}
---
apiVersion: v1
kind: Secret
metadata: {name: bmc, annotations: {reprise.dev/for: "Server/*"}}
stringData: {username: u, password: p}
---
apiVersion: v1
kind: Secret
metadata: {name: ca, annotations: {reprise.dev/for: "Server/*, Database/*"}}
stringData: {wrong.crt: x}
---
apiVersion: reprise.dev/v1alpha1
kind: Database
metadata: {name: bad-cron}
spec:
  instance: {external: {host: db, adminSecretRef: {name: admin}}}
  backup: {schedule: every night, store: {local: {path: /b}}}
---
apiVersion: reprise.dev/v1alpha1
kind: Database
metadata: {name: no-admin-secret}
spec:
  instance: {external: {host: db, adminSecretRef: {name: missing}}}
---
apiVersion: reprise.dev/v1alpha1
kind: Database
metadata: {name: role-key-missing}
spec:
  instance: {external: {host: db, adminSecretRef: {name: admin}}}
  roles: [{name: app, passwordSecretRef: {name: accounts, key: app}}]
---
apiVersion: reprise.dev/v1alpha1
kind: Database
metadata: {name: verify-undeclared}
spec:
  instance: {external: {host: db, adminSecretRef: {name: admin}}}
  databases: [{name: shop}]
  verify: {tables: [{database: crm, name: orders}]}
---
apiVersion: reprise.dev/v1alpha1
kind: Server
metadata: {name: no-bmc-secret}
spec:
  bmc: {address: "http://127.0.0.1:9", credentialsSecretRef: {name: missing}}
---
apiVersion: reprise.dev/v1alpha1
kind: Server
metadata: {name: ca-key-missing}
spec:
  bmc: {address: "http://127.0.0.1:9", credentialsSecretRef: {name: bmc}, caBundleSecretRef: {name: ca, key: ca.crt}}
---
apiVersion: reprise.dev/v1alpha1
kind: VirtualMachine
metadata: {name: six-field-cron}
spec:
  cpu: 1
  memory: 1Gi
  disks: [{name: root, containerDisk: {image: debian}}]
  backup: {schedule: "0 0 2 * * *"}
---
apiVersion: reprise.dev/v1alpha1
kind: VirtualMachine
metadata: {name: no-host}
spec:
  hostRef: {name: hv-99}
  cpu: 1
  memory: 1Gi
  disks: [{name: root, containerDisk: {image: debian}}]
---
apiVersion: reprise.dev/v1alpha1
kind: Application
metadata: {name: no-dependency}
spec:
  type: Web
  version: "1.0"
  image: "shop:{version}"
  dependsOn: [{kind: Database, name: missing-db}]
---
apiVersion: reprise.dev/v1alpha1
kind: RecoveryPlan
metadata: {name: bad-drill}
spec:
  selector: {matchLabels: {none: none}}
  drills: {schedule: "61 * * * *"}
---
apiVersion: reprise.dev/v1alpha1
kind: RecoveryPlan
metadata: {name: bad-contract}
spec:
  selector: {matchLabels: {none: none}}
  responders: [{name: vendor, type: Vendor, phone: "+33 1", contract: {until: "2027-02-30"}}]
---
apiVersion: reprise.dev/v1alpha1
kind: RecoveryPlan
metadata: {name: reprovision-without-image}
spec:
  selector: {matchLabels: {tier: metal}}
  procedures: [{kind: Server, steps: [{name: reinstall, action: Reprovision}]}]
---
apiVersion: reprise.dev/v1alpha1
kind: Incident
metadata: {name: no-plan}
spec:
  planRef: {name: missing-plan}
  component: {kind: Application, name: shop}
  level: 1
  cause: test
---
apiVersion: reprise.dev/v1alpha1
kind: MaintenanceWindow
metadata: {name: bad-selector}
spec:
  selector: {matchExpressions: [{key: tier, operator: Sometimes, values: [a]}]}
  start: "2030-01-01T00:00:00Z"
  end: "2030-01-01T01:00:00Z"
  reason: test
"#;

#[tokio::test]
async fn specs_only_the_operator_can_judge_end_in_invalid_spec() {
    let p = plane();
    let audit_log = p.audit();
    let ns = TestNamespace::new("opval");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let (ok, out) = ns.apply(FIRST);
    assert!(ok, "{out}");
    ns.k(&[
        "wait",
        "--for=jsonpath={.status.observedGeneration}=1",
        "server/bare",
        "--timeout=30s",
    ]);
    let from = k8s_openapi::jiff::Timestamp::now();
    let (ok, out) = ns.apply(MANIFESTS);
    assert!(ok, "the API server accepts every manifest: {out}");

    for (resource, name, field) in CASES {
        let (status, reason, message) = eventually(
            &format!("{resource}/{name} to be judged"),
            Duration::from_secs(30),
            || async {
                let json = ns.k(&["get", resource, name, "-o", "json"]);
                condition(&serde_json::from_str(&json).ok()?, "Ready")
            },
        )
        .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidSpec"),
            "{resource}/{name}: {message}"
        );
        assert!(
            message.starts_with(field),
            "{resource}/{name}: the message names {field}: {message}"
        );
    }
    // Anything written twice would show up in this time.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let to = k8s_openapi::jiff::Timestamp::now();
    let writes = audit::writes(audit_log, OPERATOR_USER, Some(&ns.name), from, to);
    let events: Api<Event> = Api::namespaced(p.client().await, &ns.name);
    let events = events.list(&ListParams::default()).await.expect("events").items;
    for (resource, name, field) in CASES {
        let status_writes: Vec<_> = writes
            .iter()
            .filter(|w| {
                Some(w.object.resource.as_str()) == resource.split('.').next() && w.object.name.as_deref() == Some(name)
            })
            .filter(|w| w.object.subresource.as_deref() == Some("status"))
            .collect();
        assert_eq!(
            status_writes.len(),
            1,
            "{resource}/{name}: exactly one status write, saw {status_writes:?}"
        );
        let warned = events.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("InvalidSpec")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.note.as_deref().is_some_and(|n| n.contains(field))
        });
        assert!(warned, "{resource}/{name}: a Warning Event InvalidSpec naming {field}");
    }
    println!(
        "{} invalid specs: Ready=False/InvalidSpec, one status write and one Warning Event each",
        CASES.len()
    );
}

#[tokio::test]
async fn kubectl_wait_for_ready_returns_once_the_controller_sets_it() {
    let ns = TestNamespace::new("wait");
    let mut op = Operator::start(Options::namespace(&ns.name));
    op.wait_ready().await;
    let (ok, out) = ns.apply(
        "apiVersion: reprise.dev/v1alpha1\nkind: RecoveryPlan\nmetadata: {name: plan}\nspec:\n  responders: [{name: it, type: Internal, phone: \"+33 1 23\"}]\n  levels: [{level: 1, appliesTo: [Application], minWindow: 15m, maxWindow: 30m, responders: [{name: it}]}]\n---\napiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {name: mw}\nspec:\n  selector: {}\n  start: \"2030-01-01T00:00:00Z\"\n  end: \"2030-01-01T01:00:00Z\"\n  reason: test\n\
         ---\napiVersion: reprise.dev/v1alpha1\nkind: Application\nmetadata: {name: web}\nspec: {type: Web, version: \"1\", image: \"registry.example/web:{version}\"}\n",
    );
    assert!(ok, "{out}");
    let out = ns.k(&[
        "wait",
        "--for=condition=Ready",
        "recoveryplan/plan",
        "maintenancewindow/mw",
        "--timeout=30s",
    ]);
    assert!(out.contains("recoveryplan.reprise.dev/plan condition met"), "{out}");
    assert!(out.contains("maintenancewindow.reprise.dev/mw condition met"), "{out}");
}

#[test]
fn kubectl_explain_describes_every_kind() {
    let p = plane();
    for kind in [
        "server",
        "virtualmachine",
        "database",
        "application",
        "recoveryplan",
        "incident",
        "maintenancewindow",
    ] {
        // The group is named: with KubeVirt installed, `virtualmachine` alone is KubeVirt's.
        let out = p.k(&["explain", &format!("{kind}.spec"), "--api-version=reprise.dev/v1alpha1"]);
        assert!(out.contains("DESCRIPTION:") && out.contains("FIELDS:"), "{kind}: {out}");
        // Every field listed has a description line under it.
        let fields: Vec<&str> = out.split("FIELDS:").nth(1).unwrap_or_default().lines().collect();
        let mut undocumented = vec![];
        let mut seen = 0;
        for (i, line) in fields.iter().enumerate() {
            let is_field = line.starts_with("  ") && !line.starts_with("    ") && line.contains('<');
            seen += usize::from(is_field);
            if is_field && fields.get(i + 1).is_none_or(|next| next.trim().is_empty()) {
                undocumented.push(line.trim().to_string());
            }
        }
        assert!(seen >= 3, "{kind}.spec lists {seen} fields:\n{out}");
        assert!(
            undocumented.is_empty(),
            "{kind}.spec fields without a description: {undocumented:?}"
        );
    }
    let levels = p.k(&["explain", "recoveryplan.spec.levels.maxWindow"]);
    assert!(levels.contains("deadline"), "{levels}");
}
