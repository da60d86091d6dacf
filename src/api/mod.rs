//! The reprise API (group `reprise.dev`, version `v1alpha1`): one file per kind,
//! shared types in `common`. The CRDs in `crds/` are generated from these types.

// kube-derive's repeated `printcolumn(...)` arguments trip clippy's
// duplicated_attributes lint; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

pub mod application;
pub mod common;
pub mod contract;
pub mod database;
pub mod incident;
pub mod maintenance_window;
pub mod recovery_plan;
pub mod server;
pub mod site;
pub mod virtual_machine;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use application::Application;
pub use database::Database;
pub use incident::Incident;
pub use maintenance_window::MaintenanceWindow;
pub use recovery_plan::RecoveryPlan;
pub use server::Server;
pub use site::Site;
pub use virtual_machine::VirtualMachine;

/// The API group of every reprise kind.
pub const GROUP: &str = "reprise.dev";

/// Every CRD reprise defines, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Application::crd(),
        Database::crd(),
        Incident::crd(),
        MaintenanceWindow::crd(),
        RecoveryPlan::crd(),
        Server::crd(),
        Site::crd(),
        VirtualMachine::crd(),
    ]
    .into_iter()
    .map(normalize_formats)
    .collect()
}

/// schemars names Rust's unsigned integers as formats (`uint8`, `uint64`, …)
/// that the API server does not know and warns about on every apply; map them
/// to the OpenAPI formats Kubernetes understands.
fn normalize_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let format = map.get("format").and_then(|f| f.as_str()).map(str::to_owned);
                match format.as_deref() {
                    Some("uint8" | "int8" | "uint16" | "int16" | "uint32") => {
                        map.insert("format".into(), "int32".into());
                    }
                    Some("uint64" | "uint" | "int") => {
                        map.insert("format".into(), "int64".into());
                    }
                    _ => {}
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD with normalized formats deserializes")
}

/// The file name a CRD is written to under `crds/`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// A CRD as YAML, the way `reprise crds` prints it and `crds/` stores it.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of every spec and status has a description: it is what
    /// `kubectl explain` prints.
    #[test]
    fn every_field_is_documented() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>, seen: &mut usize) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, prop) in props {
                    *seen += 1;
                    let here = format!("{path}.{name}");
                    let described = prop
                        .get("description")
                        .and_then(|d| d.as_str())
                        .is_some_and(|d| !d.trim().is_empty());
                    if !described {
                        missing.push(here.clone());
                    }
                    walk(&here, prop, missing, seen);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing, seen);
            }
        }
        let mut missing = vec![];
        let mut seen = 0;
        for crd in crds() {
            let kind = crd.spec.names.kind.clone();
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
            let root = &schema["openAPIV3Schema"]["properties"];
            for part in ["spec", "status"] {
                walk(&format!("{kind}.{part}"), &root[part], &mut missing, &mut seen);
            }
        }
        assert!(seen > 200, "only {seen} fields visited");
        assert!(
            missing.is_empty(),
            "fields without a description:\n{}",
            missing.join("\n")
        );
    }
}
