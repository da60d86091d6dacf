//! The KubeVirt provider: one `kubevirt.io/v1` VirtualMachine per reprise
//! VirtualMachine (server-side apply, owner reference), snapshots and restores
//! through `snapshot.kubevirt.io/v1beta1`.

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Observed, Snapshot, VmEngine};
use crate::api::{VirtualMachine, virtual_machine::Disk};

pub const MANAGER: &str = "reprise/virtualmachine";
/// Label on everything reprise creates for a VM, naming the reprise VirtualMachine.
pub const VM_LABEL: &str = "reprise.dev/vm";
pub const REVISION_ANNOTATION: &str = "reprise.dev/software-revision";
/// Label on a drill's scratch VM.
pub const DRILL_LABEL: &str = "reprise.dev/drill";
/// Nodes carrying this label with a Server's name run that Server's VMs (`spec.hostRef`).
pub const SERVER_NODE_LABEL: &str = "reprise.dev/server";

pub fn vm_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"))
}
pub fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"))
}
pub fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshot",
    ))
}
pub fn restore_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineRestore",
    ))
}

pub struct KubeVirt {
    pub client: Client,
}

/// The cloud-init user data that installs the software list, and its revision.
pub fn cloud_init(vm: &VirtualMachine) -> (String, String) {
    let mut packages = String::new();
    for p in &vm.spec.software {
        match &p.version {
            Some(v) => packages.push_str(&format!("  - [{}, \"{}\"]\n", p.name, v)),
            None => packages.push_str(&format!("  - {}\n", p.name)),
        }
    }
    let body = if packages.is_empty() {
        String::new()
    } else {
        format!("package_update: true\npackages:\n{packages}")
    };
    let revision: String = Sha256::digest(body.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        format!("#cloud-config\n# reprise software revision {revision}\n{body}"),
        revision,
    )
}

fn volume(vm: &VirtualMachine, d: &Disk) -> Value {
    if let Some(c) = &d.container_disk {
        json!({"name": d.name, "containerDisk": {"image": c.image}})
    } else if let Some(p) = &d.persistent_volume_claim {
        json!({"name": d.name, "persistentVolumeClaim": {"claimName": p.name}})
    } else {
        json!({"name": d.name, "dataVolume": {"name": format!("{}-{}", vm.name_any(), d.name)}})
    }
}

/// The Server the VM is placed on: where the engine moved it for this
/// generation of the spec, else `spec.hostRef`.
pub fn host(vm: &VirtualMachine) -> Option<String> {
    let generation = vm.metadata.generation.unwrap_or(0);
    vm.status
        .as_ref()
        .and_then(|s| s.moved_to.as_ref())
        .filter(|m| m.generation == generation)
        .map(|m| m.server.clone())
        .or_else(|| vm.spec.host_ref.as_ref().map(|h| h.name.clone()))
}

/// The KubeVirt VirtualMachine for `vm`.
pub fn desired(vm: &VirtualMachine, running: bool) -> Value {
    let name = vm.name_any();
    let (user_data, revision) = cloud_init(vm);
    let mut disks: Vec<Value> = vm
        .spec
        .disks
        .iter()
        .map(|d| json!({"name": d.name, "disk": {"bus": "virtio"}}))
        .collect();
    disks.push(json!({"name": "cloudinit", "disk": {"bus": "virtio"}}));
    let mut volumes: Vec<Value> = vm.spec.disks.iter().map(|d| volume(vm, d)).collect();
    volumes.push(json!({"name": "cloudinit", "cloudInitNoCloud": {"userData": user_data}}));
    let data_volumes: Vec<Value> = vm
        .spec
        .disks
        .iter()
        .filter_map(|d| {
            let dv = d.data_volume.as_ref()?;
            let mut storage = json!({"resources": {"requests": {"storage": dv.size}}});
            if let Some(sc) = &dv.storage_class_name {
                storage["storageClassName"] = json!(sc);
            }
            Some(json!({
                "metadata": {"name": format!("{name}-{}", d.name)},
                "spec": {"source": {"http": {"url": dv.image_url}}, "storage": storage},
            }))
        })
        .collect();
    let labels = json!({
        "app.kubernetes.io/managed-by": "reprise",
        VM_LABEL: name,
    });
    let mut template_spec = json!({
        "domain": {
            "cpu": {"cores": vm.spec.cpu},
            "memory": {"guest": vm.spec.memory},
            "resources": {"requests": {"memory": vm.spec.memory}},
            "devices": {
                "disks": disks,
                "interfaces": [{"name": "default", "masquerade": {}}],
            },
        },
        "networks": [{"name": "default", "pod": {}}],
        "volumes": volumes,
    });
    if let Some(host) = host(vm) {
        template_spec["nodeSelector"] = json!({SERVER_NODE_LABEL: host});
    }
    let mut spec = json!({
        "runStrategy": if running { "Always" } else { "Halted" },
        "template": {
            "metadata": {"labels": labels, "annotations": {REVISION_ANNOTATION: revision}},
            "spec": template_spec,
        },
    });
    if !data_volumes.is_empty() {
        spec["dataVolumeTemplates"] = json!(data_volumes);
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": vm.namespace(),
            "labels": labels,
            "annotations": {REVISION_ANNOTATION: revision},
            "ownerReferences": [vm.controller_owner_ref(&())],
        },
        "spec": spec,
    })
}

fn created(o: &DynamicObject) -> Timestamp {
    o.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now)
}

impl KubeVirt {
    /// A VirtualMachineRestore `name` of `snapshot` into VM `target`, owned by the VM.
    async fn create_restore(
        &self,
        vm: &VirtualMachine,
        snapshot: &str,
        name: &str,
        target: &str,
        patches: Vec<String>,
    ) -> Result<(), kube::Error> {
        let mut obj = DynamicObject::new(name, &restore_resource()).within(&vm.namespace().unwrap_or_default());
        obj.metadata.labels = Some(
            [
                ("app.kubernetes.io/managed-by".to_string(), "reprise".to_string()),
                (VM_LABEL.to_string(), vm.name_any()),
            ]
            .into(),
        );
        obj.metadata.owner_references = vm.controller_owner_ref(&()).map(|o| vec![o]);
        let mut spec = json!({
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
            "virtualMachineSnapshotName": snapshot,
        });
        if !patches.is_empty() {
            spec["patches"] = json!(patches);
        }
        obj.data = json!({ "spec": spec });
        match self
            .api(vm, &restore_resource())
            .create(&PostParams::default(), &obj)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn api(&self, vm: &VirtualMachine, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &vm.namespace().unwrap_or_default(), ar)
    }
}

impl VmEngine for KubeVirt {
    type Error = kube::Error;

    fn matches(&self, observed: &Observed, vm: &VirtualMachine, running: bool) -> bool {
        let Some(have) = &observed.object else {
            return false;
        };
        let want = desired(vm, running);
        use crate::drift::is_subset;
        is_subset(&want["spec"], &have["spec"])
            && is_subset(&want["metadata"]["labels"], &have["metadata"]["labels"])
            && is_subset(&want["metadata"]["annotations"], &have["metadata"]["annotations"])
    }

    async fn apply(&self, vm: &VirtualMachine, running: bool) -> Result<String, kube::Error> {
        let body = desired(vm, running);
        let revision = cloud_init(vm).1;
        self.api(vm, &vm_resource())
            .patch(
                &vm.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(revision)
    }

    async fn observe(&self, vm: &VirtualMachine) -> Result<Observed, kube::Error> {
        self.observe_named(vm, &vm.name_any()).await
    }

    async fn observe_named(&self, vm: &VirtualMachine, name: &str) -> Result<Observed, kube::Error> {
        let Some(kv) = self.api(vm, &vm_resource()).get_opt(name).await? else {
            return Ok(Observed::default());
        };
        let mut o = Observed {
            exists: true,
            object: serde_json::to_value(&kv).ok(),
            software_revision: kv.annotations().get(REVISION_ANNOTATION).cloned(),
            ..Default::default()
        };
        if let Some(vmi) = self.api(vm, &vmi_resource()).get_opt(name).await? {
            let st = &vmi.data["status"];
            o.instance = true;
            o.instance_uid = vmi.uid();
            o.instance_created = Some(created(&vmi));
            o.phase = st["phase"].as_str().map(str::to_string);
            o.node = st["nodeName"].as_str().map(str::to_string);
            o.ready = st["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            o.ip_addresses = st["interfaces"]
                .as_array()
                .map(|is| {
                    is.iter()
                        .filter_map(|i| i["ipAddress"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let g = &st["guestOSInfo"];
            if g.is_object() && g["name"].is_string() {
                o.guest = Some(format!(
                    "{} {} (kernel {})",
                    g["name"].as_str().unwrap_or_default(),
                    g["version"].as_str().unwrap_or_default(),
                    g["kernelRelease"].as_str().unwrap_or_default()
                ));
            }
        }
        Ok(o)
    }

    async fn restart(&self, vm: &VirtualMachine) -> Result<(), kube::Error> {
        match self
            .api(vm, &vmi_resource())
            .delete(&vm.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, vm: &VirtualMachine) -> Result<(), kube::Error> {
        match self
            .api(vm, &vm_resource())
            .delete(&vm.name_any(), &DeleteParams::foreground())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn snapshot(&self, vm: &VirtualMachine, name: &str) -> Result<(), kube::Error> {
        let mut obj = DynamicObject::new(name, &snapshot_resource()).within(&vm.namespace().unwrap_or_default());
        obj.metadata.labels = Some(
            [
                ("app.kubernetes.io/managed-by".to_string(), "reprise".to_string()),
                (VM_LABEL.to_string(), vm.name_any()),
            ]
            .into(),
        );
        obj.metadata.owner_references = vm.controller_owner_ref(&()).map(|o| vec![o]);
        obj.data =
            json!({"spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm.name_any()}}});
        self.api(vm, &snapshot_resource())
            .create(&PostParams::default(), &obj)
            .await?;
        Ok(())
    }

    async fn snapshots(&self, vm: &VirtualMachine) -> Result<Vec<Snapshot>, kube::Error> {
        let list = self
            .api(vm, &snapshot_resource())
            .list(&ListParams::default().labels(&format!("{VM_LABEL}={}", vm.name_any())))
            .await?;
        let mut out: Vec<Snapshot> = list
            .items
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| {
                let st = &s.data["status"];
                Snapshot {
                    name: s.name_any(),
                    created: created(s),
                    ready: st["readyToUse"].as_bool().unwrap_or(false),
                    ready_at: st["creationTime"].as_str().and_then(|t| t.parse().ok()),
                    size_bytes: None,
                }
            })
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
        Ok(out)
    }

    async fn delete_snapshot(&self, vm: &VirtualMachine, name: &str) -> Result<(), kube::Error> {
        match self
            .api(vm, &snapshot_resource())
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn restore(&self, vm: &VirtualMachine, snapshot: &str, name: &str) -> Result<(), kube::Error> {
        self.create_restore(vm, snapshot, name, &vm.name_any(), vec![]).await
    }

    async fn restore_into(
        &self,
        vm: &VirtualMachine,
        snapshot: &str,
        name: &str,
        scratch: &str,
    ) -> Result<(), kube::Error> {
        // A target that does not exist is created from the snapshot, patched:
        // marked as a drill's scratch copy.
        let mark = json!({"op": "add", "path": format!("/metadata/labels/{}", DRILL_LABEL.replace('/', "~1")), "value": "true"});
        self.create_restore(vm, snapshot, name, scratch, vec![mark.to_string()])
            .await
    }

    async fn delete_scratch(&self, vm: &VirtualMachine, scratch: &str, restore: &str) -> Result<(), kube::Error> {
        for (ar, name, dp) in [
            (vm_resource(), scratch, DeleteParams::foreground()),
            (restore_resource(), restore, DeleteParams::default()),
        ] {
            match self.api(vm, &ar).delete(name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn restore_complete(&self, vm: &VirtualMachine, name: &str) -> Result<Option<bool>, kube::Error> {
        Ok(self
            .api(vm, &restore_resource())
            .get_opt(name)
            .await?
            .map(|r| r.data["status"]["complete"].as_bool().unwrap_or(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(software: Value) -> VirtualMachine {
        serde_json::from_value(json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "vm-web", "namespace": "p", "uid": "u1"},
            "spec": {"cpu": 4, "memory": "8Gi", "hostRef": {"name": "hv-01"},
                     "disks": [{"name": "root", "containerDisk": {"image": "debian:12"}}],
                     "software": software}
        }))
        .unwrap()
    }

    #[test]
    fn the_kubevirt_vm_carries_the_spec_and_the_software() {
        let v = vm(json!([{"name": "nginx", "version": "1.22.1-9"}, {"name": "certbot"}]));
        let d = desired(&v, true);
        assert_eq!(d["spec"]["runStrategy"], "Always");
        let t = &d["spec"]["template"]["spec"];
        assert_eq!(t["domain"]["cpu"]["cores"], 4);
        assert_eq!(t["domain"]["memory"]["guest"], "8Gi");
        assert_eq!(t["nodeSelector"][SERVER_NODE_LABEL], "hv-01");
        assert_eq!(t["volumes"][0]["containerDisk"]["image"], "debian:12");
        let ud = t["volumes"][1]["cloudInitNoCloud"]["userData"].as_str().unwrap();
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        assert!(ud.contains("  - [nginx, \"1.22.1-9\"]\n  - certbot\n"), "{ud}");
        assert_eq!(desired(&v, false)["spec"]["runStrategy"], "Halted");
        let other = vm(json!([{"name": "nginx", "version": "1.22.1-10"}]));
        assert_ne!(cloud_init(&v).1, cloud_init(&other).1, "new software, new revision");
    }
}
