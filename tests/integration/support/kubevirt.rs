//! A stand-in for KubeVirt's virt-controller, for tests only: no virt-
//! controller runs on the test control plane (it needs real nodes and a
//! hypervisor). It does, every 250 ms in one namespace, what virt-controller
//! would do to the objects reprise makes, through the real API server and
//! KubeVirt's real CRDs (generated from its Go module):
//! - a VirtualMachine with `runStrategy: Always` and no instance gets a
//!   VirtualMachineInstance (its template's labels, annotations and spec),
//!   marked Running and Ready on a node, with an IP and guest-agent info;
//! - `runStrategy: Halted` removes the instance;
//! - VirtualMachineSnapshots become `readyToUse`; a VirtualMachineRestore
//!   completes once its VM has no instance (KubeVirt restores stopped VMs);
//!   one whose target does not exist creates it from the snapshot's VM (its
//!   spec and labels), with the restore's JSON patches applied.
//!
//! It never restarts a failed instance by itself, so tests can see failures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

pub fn ar(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

pub fn vms() -> ApiResource {
    ar("kubevirt.io", "v1", "VirtualMachine")
}
pub fn vmis() -> ApiResource {
    ar("kubevirt.io", "v1", "VirtualMachineInstance")
}
pub fn snapshots() -> ApiResource {
    ar("snapshot.kubevirt.io", "v1beta1", "VirtualMachineSnapshot")
}
pub fn restores() -> ApiResource {
    ar("snapshot.kubevirt.io", "v1beta1", "VirtualMachineRestore")
}

pub struct StandIn {
    task: tokio::task::JoinHandle<()>,
    paused: Arc<AtomicBool>,
    /// VM instances started, per VM.
    started: Started,
}

type Started = Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>;

impl StandIn {
    pub fn start(client: Client, ns: &str) -> Self {
        let ns = ns.to_string();
        let paused = Arc::new(AtomicBool::new(false));
        let started: Started = Arc::default();
        let (p, s) = (paused.clone(), started.clone());
        let task = tokio::spawn(async move {
            loop {
                if !p.load(Ordering::SeqCst)
                    && let Err(e) = pass(&client, &ns, &s).await
                {
                    eprintln!("kubevirt stand-in: {e}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        StandIn { task, paused, started }
    }

    /// Stops doing anything (as a virt-controller that hangs), or starts again.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// How many instances of `vm` it started.
    pub fn started(&self, vm: &str) -> usize {
        self.started.lock().unwrap().get(vm).copied().unwrap_or(0)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn set_status(api: &Api<DynamicObject>, name: &str, status: serde_json::Value) -> Result<(), kube::Error> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status})))
        .await
        .map(|_| ())
}

async fn pass(client: &Client, ns: &str, started: &Started) -> Result<(), kube::Error> {
    let vm_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vms());
    let vmi_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vmis());
    for vm in vm_api.list(&ListParams::default()).await? {
        let name = vm.name_any();
        let running = vm.data["spec"]["runStrategy"] == "Always";
        let vmi = vmi_api.get_opt(&name).await?;
        match (running, vmi) {
            (true, None) => {
                let t = &vm.data["spec"]["template"];
                let mut obj = DynamicObject::new(&name, &vmis()).within(ns);
                obj.metadata.labels = serde_json::from_value(t["metadata"]["labels"].clone()).ok();
                obj.metadata.annotations = serde_json::from_value(t["metadata"]["annotations"].clone()).ok();
                obj.metadata.owner_references =
                    Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "kubevirt.io/v1".into(),
                        kind: "VirtualMachine".into(),
                        name: name.clone(),
                        uid: vm.uid().unwrap_or_default(),
                        controller: Some(true),
                        ..Default::default()
                    }]);
                obj.data = json!({"spec": t["spec"]});
                vmi_api.create(&PostParams::default(), &obj).await?;
                *started.lock().unwrap().entry(name.clone()).or_default() += 1;
                set_status(
                    &vmi_api,
                    &name,
                    json!({
                        "phase": "Running",
                        "nodeName": "kwok-node-0",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "interfaces": [{"name": "default", "ipAddress": "10.244.200.7"}],
                        "guestOSInfo": {"name": "Debian GNU/Linux", "version": "12", "kernelRelease": "6.1.0-28-amd64"},
                    }),
                )
                .await?;
                set_status(
                    &vm_api,
                    &name,
                    json!({"created": true, "ready": true, "printableStatus": "Running"}),
                )
                .await?;
            }
            (false, Some(_)) => {
                vmi_api.delete(&name, &Default::default()).await?;
                set_status(
                    &vm_api,
                    &name,
                    json!({"created": true, "ready": false, "printableStatus": "Stopped"}),
                )
                .await?;
            }
            _ => {}
        }
    }
    let snap_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &snapshots());
    for s in snap_api.list(&ListParams::default()).await? {
        if s.data["status"]["readyToUse"] != true {
            set_status(
                &snap_api,
                &s.name_any(),
                json!({"readyToUse": true, "phase": "Succeeded", "creationTime": now()}),
            )
            .await?;
        }
    }
    let restore_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &restores());
    for r in restore_api.list(&ListParams::default()).await? {
        let target = r.data["spec"]["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if r.data["status"]["complete"] == true {
            continue;
        }
        // A target that does not exist is created from the snapshot's VM, patched.
        if vm_api.get_opt(&target).await?.is_none() {
            let snapshot = r.data["spec"]["virtualMachineSnapshotName"]
                .as_str()
                .unwrap_or_default();
            let Some(s) = snap_api.get_opt(snapshot).await? else {
                continue;
            };
            let source = s.data["spec"]["source"]["name"].as_str().unwrap_or_default();
            let Some(src) = vm_api.get_opt(source).await? else {
                continue;
            };
            let mut manifest = json!({
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": target, "labels": src.metadata.labels},
                "spec": src.data["spec"],
            });
            for p in r.data["spec"]["patches"].as_array().into_iter().flatten() {
                let p: serde_json::Value = serde_json::from_str(p.as_str().unwrap_or("{}")).unwrap_or_default();
                let path: Vec<String> = p["path"]
                    .as_str()
                    .unwrap_or_default()
                    .split('/')
                    .skip(1)
                    .map(|k| k.replace("~1", "/").replace("~0", "~"))
                    .collect();
                if let Some((last, parents)) = path.split_last() {
                    let mut at = &mut manifest;
                    for k in parents {
                        at = &mut at[k.as_str()];
                    }
                    at[last.as_str()] = p["value"].clone();
                }
            }
            let obj: DynamicObject = serde_json::from_value(manifest).expect("a VM manifest");
            vm_api.create(&PostParams::default(), &obj).await?;
        } else if vmi_api.get_opt(&target).await?.is_some() {
            continue;
        }
        set_status(
            &restore_api,
            &r.name_any(),
            json!({"complete": true, "restoreTime": now()}),
        )
        .await?;
    }
    Ok(())
}

/// Marks a VM instance Failed, as virt-handler would when the guest dies.
pub async fn fail_instance(client: &Client, ns: &str, name: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vmis());
    set_status(
        &api,
        name,
        json!({"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}),
    )
    .await
    .expect("mark the instance Failed");
}
