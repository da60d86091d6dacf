//! VirtualMachines on the real control plane with KubeVirt's real CRDs
//! (generated from the kubevirt.io/api Go module) and a test stand-in for
//! virt-controller (support/kubevirt.rs): the KubeVirt VM built from the spec,
//! Ready once running, a failed instance in the health signal and `restart`,
//! software revisions, a VM deleted by hand recreated, scheduled snapshots with
//! retention, `restoreSnapshot`, and a quiet steady state.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api,
    api::{DynamicObject, ListParams},
};
use serde_json::Value;

use crate::support::{
    OPERATOR_USER, TestNamespace, audit, eventually,
    kubevirt::{StandIn, fail_instance, restores, snapshots, vmis, vms},
    operator::{Operator, Options},
    plane,
};

fn vm_yaml(version: &str, backup: &str) -> String {
    format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {{name: vm-web}}\nspec:\n  cpu: 2\n  memory: 1Gi\n  disks: [{{name: root, containerDisk: {{image: \"registry.example/vm/debian:12\"}}}}]\n  software:\n    - {{name: nginx, version: \"{version}\"}}\n    - {{name: certbot}}\n{backup}"
    )
}

fn get(ns: &TestNamespace) -> Value {
    ns.json("virtualmachines.reprise.dev/vm-web")
}

async fn wait_for(ns: &TestNamespace, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    ns.wait_for("virtualmachines.reprise.dev/vm-web", what, secs, f).await
}

fn ready(v: &Value) -> bool {
    crate::support::condition(v, "Ready").is_some_and(|(s, _, _)| s == "True")
}

async fn kv(ns: &str, ar: kube::api::ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(plane().client().await, ns, &ar)
}

fn operator(ns: &TestNamespace) -> Operator {
    Operator::start(Options {
        extra: vec!["--vm-ready-grace-seconds".into(), "5".into()],
        ..Options::namespace(&ns.name)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_runs_fails_restarts_follows_its_software_and_comes_back() {
    let ns = TestNamespace::new("vm-life");
    let _standin = StandIn::start(plane().client().await, &ns.name);
    let mut op = operator(&ns);
    op.wait_ready().await;
    // Two hosts (their BMC address is a closed loopback port: polled in vain, never needed here).
    let servers = ["hv-01", "hv-02"]
        .map(|s| {
            format!(
                "apiVersion: reprise.dev/v1alpha1\nkind: Server\nmetadata: {{name: {s}}}\nspec:\n  bmc: {{address: \"http://127.0.0.1:9\", credentialsSecretRef: {{name: bmc}}}}\n---\n"
            )
        })
        .concat();
    let (ok, out) = ns.apply(&servers);
    assert!(ok, "{out}");
    let (ok, out) = ns.apply(&vm_yaml("1.22.1-9", "  hostRef: {name: hv-01}\n"));
    assert!(ok, "{out}");
    let out = ns.k(&[
        "wait",
        "--for=condition=Ready",
        "virtualmachines.reprise.dev/vm-web",
        "--timeout=60s",
    ]);
    assert!(out.contains("condition met"), "{out}");

    // The KubeVirt VM carries the spec and the cloud-init that installs the software.
    let vm_api = kv(&ns.name, vms()).await;
    let kvm = vm_api.get("vm-web").await.unwrap();
    let spec = &kvm.data["spec"];
    assert_eq!(spec["runStrategy"], "Always");
    assert_eq!(spec["template"]["spec"]["domain"]["cpu"]["cores"], 2);
    assert_eq!(spec["template"]["spec"]["domain"]["memory"]["guest"], "1Gi");
    assert_eq!(
        spec["template"]["spec"]["nodeSelector"]["reprise.dev/server"],
        "hv-01",
        "{}",
        get(&ns)["spec"]
    );
    let user_data = spec["template"]["spec"]["volumes"][1]["cloudInitNoCloud"]["userData"]
        .as_str()
        .unwrap();
    assert!(
        user_data.contains("[nginx, \"1.22.1-9\"]") && user_data.contains("- certbot"),
        "{user_data}"
    );
    assert_eq!(
        kvm.metadata.owner_references.as_ref().unwrap()[0].kind,
        "VirtualMachine"
    );
    let v = get(&ns);
    assert_eq!(v["status"]["phase"], "Running");
    assert_eq!(v["status"]["node"], "kwok-node-0");
    assert_eq!(v["status"]["ipAddresses"][0], "10.244.200.7");
    assert!(v["status"]["guest"].as_str().unwrap().contains("Debian"));
    assert_eq!(v["status"]["health"]["state"], "Healthy");
    let revision = v["status"]["softwareRevision"].as_str().unwrap().to_string();

    // The instance fails: the health signal says so; `restart` makes a new one.
    let vmi_api = kv(&ns.name, vmis()).await;
    let first_uid = vmi_api.get("vm-web").await.unwrap().metadata.uid;
    fail_instance(&plane().client().await, &ns.name, "vm-web").await;
    wait_for(&ns, "the health signal to say Failed", 30, |v| {
        v["status"]["health"]["state"] == "Failed"
    })
    .await;
    ns.k(&[
        "annotate",
        "virtualmachines.reprise.dev",
        "vm-web",
        "reprise.dev/action=restart/r1",
    ]);
    wait_for(&ns, "a healthy VM after restart", 30, |v| {
        v["status"]["health"]["state"] == "Healthy" && ready(v)
    })
    .await;
    assert_ne!(
        vmi_api.get("vm-web").await.unwrap().metadata.uid,
        first_uid,
        "a new instance"
    );
    assert_eq!(get(&ns)["status"]["lastAction"]["outcome"], "Done");

    // `move` to hv-02: placed there, a new instance.
    let before = vmi_api.get("vm-web").await.unwrap().metadata.uid;
    ns.k(&[
        "annotate",
        "virtualmachines.reprise.dev",
        "vm-web",
        "reprise.dev/move-to=hv-02",
        "reprise.dev/action=move/m1",
        "--overwrite",
    ]);
    wait_for(&ns, "the move to be done", 30, |v| {
        v["status"]["lastAction"]["id"] == "m1" && ready(v)
    })
    .await;
    assert_eq!(get(&ns)["status"]["lastAction"]["outcome"], "Done");
    let kvm = vm_api.get("vm-web").await.unwrap();
    assert_eq!(
        kvm.data["spec"]["template"]["spec"]["nodeSelector"]["reprise.dev/server"],
        "hv-02"
    );
    eventually("a new instance after the move", Duration::from_secs(30), || {
        let vmi_api = vmi_api.clone();
        let before = before.clone();
        async move {
            vmi_api
                .get_opt("vm-web")
                .await
                .ok()?
                .filter(|o| o.metadata.uid != before)
                .map(|_| ())
        }
    })
    .await;

    // New software: a new revision, in status and on the KubeVirt VM.
    let (ok, out) = ns.apply(&vm_yaml("1.22.1-10", "  hostRef: {name: hv-01}\n"));
    assert!(ok, "{out}");
    let v = wait_for(&ns, "a new software revision", 30, |v| {
        v["status"]["softwareRevision"].as_str().is_some_and(|r| r != revision)
    })
    .await;
    let new_rev = v["status"]["softwareRevision"].as_str().unwrap().to_string();
    let kvm = vm_api.get("vm-web").await.unwrap();
    assert_eq!(
        kvm.data["spec"]["template"]["metadata"]["annotations"]["reprise.dev/software-revision"],
        new_rev.as_str()
    );

    // The KubeVirt VM deleted by hand comes back.
    let uid = kvm.metadata.uid.clone();
    ns.k(&["delete", "virtualmachines.kubevirt.io", "vm-web", "--wait=false"]);
    eventually("the KubeVirt VM to be recreated", Duration::from_secs(30), || {
        let vm_api = vm_api.clone();
        let uid = uid.clone();
        async move {
            let o = vm_api.get_opt("vm-web").await.ok()??;
            (o.metadata.uid != uid && o.metadata.deletion_timestamp.is_none()).then_some(())
        }
    })
    .await;
    wait_for(&ns, "Ready again", 30, ready).await;
    let reasons = ns.k(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    assert!(reasons.contains("Recreated"), "{reasons}");

    // Steady state: nothing written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes: Vec<_> = audit::writes(plane().audit(), OPERATOR_USER, Some(&ns.name), from, Timestamp::now());
    assert!(writes.is_empty(), "steady state wrote: {writes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_are_scheduled_pruned_and_restored() {
    let ns = TestNamespace::new("vm-snap");
    let _standin = StandIn::start(plane().client().await, &ns.name);
    let mut op = operator(&ns);
    op.wait_ready().await;
    let backup = "  backup: {schedule: \"* * * * *\", retention: {count: 2}}\n";
    let (ok, out) = ns.apply(&vm_yaml("1.22.1-9", backup));
    assert!(ok, "{out}");
    wait_for(&ns, "Ready", 60, ready).await;
    // The schedule (every minute) takes the first one.
    let v = wait_for(&ns, "a scheduled snapshot, ready", 90, |v| {
        v["status"]["lastBackup"]["ready"] == true
    })
    .await;
    let first = v["status"]["lastBackup"]["name"].as_str().unwrap().to_string();
    // Two more on demand: retention keeps the newest two.
    let snap_api = kv(&ns.name, snapshots()).await;
    for token in ["1", "2"] {
        let before = get(&ns)["status"]["lastBackup"]["name"].clone();
        tokio::time::sleep(Duration::from_millis(1100)).await; // snapshot names carry the second
        ns.k(&[
            "annotate",
            "--overwrite",
            "virtualmachines.reprise.dev",
            "vm-web",
            &format!("reprise.dev/backup-now={token}"),
        ]);
        wait_for(&ns, "a new ready snapshot", 30, |v| {
            v["status"]["lastBackup"]["name"] != before && v["status"]["lastBackup"]["ready"] == true
        })
        .await;
    }
    let names = eventually("retention to keep two", Duration::from_secs(30), || {
        let snap_api = snap_api.clone();
        async move {
            let l = snap_api.list(&ListParams::default()).await.ok()?;
            let names: Vec<String> = l
                .items
                .iter()
                .filter(|s| s.metadata.deletion_timestamp.is_none())
                .filter_map(|s| s.metadata.name.clone())
                .collect();
            (names.len() == 2).then_some(names)
        }
    })
    .await;
    assert!(!names.contains(&first), "the oldest went: {names:?}");
    let newest = get(&ns)["status"]["lastBackup"]["name"].as_str().unwrap().to_string();

    // restoreSnapshot: stop, restore the newest ready snapshot, start.
    ns.k(&[
        "annotate",
        "virtualmachines.reprise.dev",
        "vm-web",
        "reprise.dev/action=restoreSnapshot/rs1",
    ]);
    let v = wait_for(&ns, "the restore to finish", 60, |v| {
        v["status"]["actionProgress"]["phase"] == "Succeeded" && ready(v)
    })
    .await;
    let p = &v["status"]["actionProgress"];
    assert_eq!(p["snapshot"], newest.as_str());
    let steps = crate::support::each(&p["steps"], "step");
    assert_eq!(steps, ["Stopped", "Restored", "Started"]);
    let restore = kv(&ns.name, restores()).await.get("vm-web-rs1").await.unwrap();
    assert_eq!(restore.data["spec"]["virtualMachineSnapshotName"], newest.as_str());
    assert_eq!(restore.data["spec"]["target"]["name"], "vm-web");
    assert_eq!(v["status"]["health"]["state"], "Healthy");
}
