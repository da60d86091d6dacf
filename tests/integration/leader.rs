//! Leader election between real `reprise run` processes on one Lease.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::support::{
    OPERATOR_NAMESPACE, OPERATOR_SA, TestNamespace, maintenance_window,
    operator::{Operator, Options, lease_args},
    plane, unique_suffix,
};

const LEASE_S: u64 = 6;
const RENEW_S: u64 = 4;
const RETRY_S: u64 = 1;

fn start(ns: &str, lease: &str, lease_ns: &str, who: &str) -> Operator {
    Operator::start(Options {
        lease: Some(lease),
        identity: Some(who),
        extra: lease_args(lease_ns, LEASE_S, RENEW_S, RETRY_S),
        ..Options::namespace(ns)
    })
}

async fn leading(op: &mut Operator) -> bool {
    op.metric("reprise_leader", "").await == 1.0
}

async fn holder(lease_ns: &str, lease: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(plane().client().await, lease_ns);
    api.get_opt(lease).await.ok().flatten()?.spec?.holder_identity
}

#[tokio::test]
async fn one_leader_reconciles_and_a_follower_takes_over_after_sigkill() {
    let ns = TestNamespace::new("leader");
    let lease = format!("lease-{}", unique_suffix());
    let mut a = start(&ns.name, &lease, OPERATOR_NAMESPACE, &format!("a-{lease}"));
    a.wait_ready().await;
    let mut b = start(&ns.name, &lease, OPERATOR_NAMESPACE, &format!("b-{lease}"));
    b.wait_ready().await;
    assert!(leading(&mut a).await, "the first replica leads");
    assert!(!leading(&mut b).await, "the second replica follows");
    assert_eq!(
        holder(OPERATOR_NAMESPACE, &lease).await.as_deref(),
        Some(a.identity.as_str())
    );

    let (ok, out) = ns.apply(&maintenance_window("first", "leader test"));
    assert!(ok, "{out}");
    ns.k(&[
        "wait",
        "--for=condition=Ready",
        "maintenancewindow/first",
        "--timeout=30s",
    ]);
    assert!(
        a.metric("reprise_reconciles_total", "MaintenanceWindow").await >= 1.0,
        "the leader reconciles"
    );
    assert_eq!(
        b.metric("reprise_reconciles_total", "").await,
        0.0,
        "the follower reconciles nothing"
    );

    a.kill();
    let handover = b
        .wait_leading(Duration::from_secs(3 * LEASE_S))
        .await
        .expect("the follower never took over");
    println!(
        "leader handover after SIGKILL: {:.2}s (lease {LEASE_S}s, retry {RETRY_S}s)",
        handover.as_secs_f64()
    );
    assert!(
        handover <= Duration::from_secs(LEASE_S + 2 * RETRY_S + 1),
        "the follower took {handover:?}, more than the lease duration ({LEASE_S}s) and two retry periods"
    );
    assert_eq!(
        holder(OPERATOR_NAMESPACE, &lease).await.as_deref(),
        Some(b.identity.as_str())
    );
    let (ok, out) = ns.apply(&maintenance_window("second", "leader test"));
    assert!(ok, "{out}");
    ns.k(&[
        "wait",
        "--for=condition=Ready",
        "maintenancewindow/second",
        "--timeout=30s",
    ]);
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_releases_the_lease_at_once() {
    let ns = TestNamespace::new("release");
    let lease = format!("lease-{}", unique_suffix());
    let mut a = start(&ns.name, &lease, OPERATOR_NAMESPACE, &format!("a-{lease}"));
    a.wait_ready().await;
    let mut b = start(&ns.name, &lease, OPERATOR_NAMESPACE, &format!("b-{lease}"));
    b.wait_ready().await;
    assert!(leading(&mut a).await);
    let stopped = Instant::now();
    assert!(
        a.terminate().await,
        "SIGTERM ends the operator cleanly; log:\n{}",
        a.logs()
    );
    assert!(
        a.logs().contains("released the Lease"),
        "the leader releases its Lease; log:\n{}",
        a.logs()
    );
    b.wait_leading(Duration::from_secs(3 * LEASE_S))
        .await
        .expect("the follower never took over");
    let handover = stopped.elapsed();
    println!("leader handover after SIGTERM: {:.2}s", handover.as_secs_f64());
    // A released Lease has a 1 s duration: no waiting for the full lease.
    assert!(
        handover < Duration::from_secs(LEASE_S),
        "handover after a release took {handover:?}"
    );
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_its_lease_expires_and_leads_again() {
    let p = plane();
    let ns = TestNamespace::new("renew");
    let lease = "reprise-leader";
    // The Lease lives in the test namespace, through a grant the test can take away.
    let grant = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: lease}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease}}\nsubjects:\n- {{kind: ServiceAccount, name: {OPERATOR_SA}, namespace: {OPERATOR_NAMESPACE}}}\n"
    );
    let (ok, out) = ns.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: lease}}\nrules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  verbs: [get, create, update]\n---\n{grant}"
    ));
    assert!(ok, "{out}");
    let mut a = start(&ns.name, lease, &ns.name, "renew-a");
    a.wait_ready().await;
    assert!(leading(&mut a).await);
    ns.k(&["delete", "rolebinding", "lease"]);
    let deadline = Instant::now() + Duration::from_secs(3 * LEASE_S);
    while leading(&mut a).await {
        assert!(Instant::now() < deadline, "the leader kept leading without its Lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = k8s_openapi::jiff::Timestamp::now();
    assert!(
        a.exited().is_none(),
        "it stops leading, not running; log:\n{}",
        a.logs()
    );
    assert!(a.logs().contains("lost leadership"), "log:\n{}", a.logs());
    let api: Api<Lease> = Api::namespaced(p.client().await, &ns.name);
    let spec = api.get(lease).await.expect("lease").spec.expect("spec");
    let last_renew = spec.renew_time.expect("renewTime").0;
    let expiry = last_renew + k8s_openapi::jiff::SignedDuration::from_secs(LEASE_S as i64);
    println!(
        "leader stopped {:.2}s after its last renewal, {:.2}s before its lease expired",
        last_renew.duration_until(stopped).as_secs_f64(),
        stopped.duration_until(expiry).as_secs_f64()
    );
    assert!(
        stopped < expiry,
        "the leader still led when its lease expired (stopped {stopped}, expiry {expiry})"
    );
    // Nothing is reconciled while it does not lead.
    let (ok, out) = ns.apply(&maintenance_window("while-out", "leader test"));
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(2 * RETRY_S + 1)).await;
    assert!(
        ns.json("maintenancewindow/while-out")["status"].is_null(),
        "a replica that does not lead wrote a status"
    );
    // The grant back: it leads again by itself, and catches up.
    let (ok, out) = ns.apply(&grant);
    assert!(ok, "{out}");
    a.wait_leading(Duration::from_secs(3 * LEASE_S))
        .await
        .expect("it did not lead again once it could renew");
    ns.k(&[
        "wait",
        "--for=condition=Ready",
        "maintenancewindow/while-out",
        "--timeout=30s",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_ten_second_api_freeze_the_leader_resumes_within_seconds() {
    use crate::support::proxy::{Relay, server_of};
    let p = plane();
    let ns = TestNamespace::new("freeze");
    let lease = format!("lease-{}", unique_suffix());
    let relay = Relay::start(server_of(&p.operator_kubeconfig)).await;
    let kubeconfig = relay.kubeconfig(&p.operator_kubeconfig);
    let replica = |who: &str| {
        Operator::start(Options {
            lease: Some(&lease),
            identity: Some(who),
            extra: lease_args(OPERATOR_NAMESPACE, LEASE_S, RENEW_S, RETRY_S),
            kubeconfig: Some(kubeconfig.clone()),
            ..Options::namespace(&ns.name)
        })
    };
    let mut a = replica(&format!("a-{lease}"));
    a.wait_ready().await;
    let mut b = replica(&format!("b-{lease}"));
    b.wait_ready().await;
    assert!(leading(&mut a).await);
    // Both replicas lose the API server for 10 s (longer than the lease).
    relay.freeze(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, out) = ns.apply(&maintenance_window("during", "freeze test"));
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let thawed = Instant::now();
    relay.freeze(false);
    ns.k(&[
        "wait",
        "--for=condition=Ready",
        "maintenancewindow/during",
        "--timeout=60s",
    ]);
    let gap = thawed.elapsed();
    let leaders = [leading(&mut a).await, leading(&mut b).await];
    println!(
        "after a 10 s API-server freeze (lease {LEASE_S}s): first status written {:.2}s after the API answered again; a leads {}, b leads {}",
        gap.as_secs_f64(),
        leaders[0],
        leaders[1]
    );
    assert!(
        a.exited().is_none() && b.exited().is_none(),
        "both replicas keep running"
    );
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "one leader");
    assert!(
        gap < Duration::from_secs(LEASE_S),
        "resuming took {gap:?}, a whole lease or more"
    );
}
