//! GitOps tools judge reprise's objects with kstatus (sigs.k8s.io/cli-utils,
//! run here as `hack/kstatus-check`): an object that cannot progress without
//! a change is `Failed` (so a sync fails fast), not `InProgress` forever; a
//! healthy one is `Current`.

use std::time::Duration;

use crate::support::{
    TestNamespace, eventually, kstatus,
    operator::{Operator, Options},
    postgres::{ADMIN, Postgres},
};

#[tokio::test(flavor = "multi_thread")]
async fn objects_that_wait_for_a_person_are_failed_for_kstatus() {
    let pg = Postgres::start();
    let ns = TestNamespace::new("kstatus");
    let mut op = Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        ..Options::namespace(&ns.name)
    });
    op.wait_ready().await;
    let db = |name: &str, secret: &str, extra: &str| {
        format!(
            "apiVersion: reprise.dev/v1alpha1\nkind: Database\nmetadata: {{name: {name}}}\nspec:\n  instance: {{external: {{host: 127.0.0.1, port: {}, adminSecretRef: {{name: {secret}}}, sslMode: Disable}}}}\n  databases: [{{name: shop}}]\n{extra}---\n",
            pg.port
        )
    };
    let server = |name: &str, secret: &str| {
        format!(
            "apiVersion: reprise.dev/v1alpha1\nkind: Server\nmetadata: {{name: {name}}}\nspec:\n  bmc: {{address: \"http://127.0.0.1:9\", systemId: s1, credentialsSecretRef: {{name: {secret}}}}}\n---\n"
        )
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-good, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: \"{}\"}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-wrong, annotations: {{reprise.dev/for: \"Database/*\"}}}}\nstringData: {{username: {ADMIN}, password: wrong-password-1}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: bmc-plain}}\nstringData: {{username: u, password: p}}\n---\n\
         {}{}{}{}{}{}{}\
         apiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: fine}}\nspec: {{selector: {{}}, start: \"2030-01-01T00:00:00Z\", end: \"2030-01-02T00:00:00Z\", reason: ok}}\n---\n\
         apiVersion: reprise.dev/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: unreadable}}\nspec: {{selector: {{}}, start: \"2030-01-01T00:00:00.1234567891Z\", end: \"2030-01-02T00:00:00Z\", reason: odd}}\n",
        pg.admin_password,
        db("healthy", "pg-good", ""),
        db("refused", "pg-wrong", ""),
        db(
            "never",
            "pg-good",
            "  backup: {schedule: \"0 0 31 2 *\", store: {local: {path: /tmp/never}}}\n"
        ),
        db(
            "outside",
            "pg-good",
            "  backup: {schedule: \"0 0 * * *\", store: {local: {path: /etc/reprise}}}\n"
        ),
        db(
            "s3-userinfo",
            "pg-good",
            "  backup: {schedule: \"0 0 * * *\", store: {s3: {bucket: bkp, endpoint: \"http://u:p@127.0.0.1:9\", credentialsSecretRef: {name: pg-good}}}}\n"
        ),
        server("secret-missing", "nowhere"),
        server("secret-not-offered", "bmc-plain"),
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    let expected = [
        ("Database/healthy", "Current"),
        ("Database/refused", "Failed"),
        ("Database/never", "Failed"),
        ("Database/outside", "Failed"),
        ("Database/s3-userinfo", "Failed"),
        ("Server/secret-missing", "Failed"),
        ("Server/secret-not-offered", "Failed"),
        ("MaintenanceWindow/fine", "Current"),
        ("MaintenanceWindow/unreadable", "Failed"),
    ];
    let got = eventually("kstatus to judge every object", Duration::from_secs(60), || {
        let ns = ns.name.clone();
        async move {
            let got = kstatus(&ns, "databases,servers,maintenancewindows");
            expected
                .iter()
                .all(|(o, s)| got.get(*o).is_some_and(|(st, _)| st == s))
                .then_some(got)
        }
    })
    .await;
    for (obj, (status, message)) in &got {
        println!("{obj}: {status} {message}");
    }
    assert!(
        got["Database/refused"].1.contains("password"),
        "{:?}",
        got["Database/refused"]
    );
    assert!(
        got["Database/never"].1.contains("never fires"),
        "{:?}",
        got["Database/never"]
    );
    let says = |o: &str, what: &str| got[o].1.contains(what);
    assert!(
        says("Database/outside", "spec.backup.store.local.path"),
        "{:?}",
        got["Database/outside"]
    );
    assert!(
        says("Database/s3-userinfo", "spec.backup.store.s3.endpoint"),
        "{:?}",
        got["Database/s3-userinfo"]
    );
    assert!(!says("Database/s3-userinfo", "u:p"), "no credential echoed");

    // All of it at once, and then, once the healthy Database settled (its
    // first probes create what it declares): the operator runs on and
    // writes nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = crate::support::audit::writes(
        crate::support::plane().audit(),
        crate::support::OPERATOR_USER,
        Some(&ns.name),
        from,
        k8s_openapi::jiff::Timestamp::now(),
    );
    assert!(writes.is_empty(), "{writes:?}");
    assert!(op.exited().is_none(), "the operator never stopped");
}
