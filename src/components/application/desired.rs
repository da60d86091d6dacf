//! The Deployment and Service an Application owns, built from its spec (pure).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
            ServiceSpec,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};

use crate::api::Application;

pub use crate::runtime::apply::MANAGED_BY;
/// Label tying pods and owned objects to their Application.
pub const APP_LABEL: &str = "reprise.dev/application";
/// Annotation with the fingerprint of what reprise applied: when the live
/// object still carries it but differs, someone else changed it.
pub const APPLIED_ANNOTATION: &str = "reprise.dev/applied";
/// Pod template annotation with the version the pods run.
pub const VERSION_ANNOTATION: &str = "reprise.dev/version";
/// Pod template annotation a rolling restart changes (to the request's id).
pub const RESTARTED_ANNOTATION: &str = "reprise.dev/restarted-at";
/// Annotation on a Deployment recreated for a `recreate` request: its id.
pub const RECREATED_FOR_ANNOTATION: &str = "reprise.dev/recreated-for";
/// The container's name and port name.
pub const CONTAINER: &str = "app";
const PORT_NAME: &str = "http";

/// The image of `version`.
pub fn image(app: &Application, version: &str) -> String {
    app.spec.image.replace("{version}", version)
}

fn labels(app: &Application) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (APP_LABEL.to_string(), app.name_any()),
        ("app.kubernetes.io/name".to_string(), app.name_any()),
    ])
}

fn meta(app: &Application) -> ObjectMeta {
    ObjectMeta {
        name: Some(app.name_any()),
        namespace: app.namespace(),
        labels: Some(labels(app)),
        owner_references: app.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Stamps the fingerprint of `obj`'s content into its annotations.
fn stamp<T: serde::Serialize + Resource>(mut obj: T) -> T {
    let print = crate::runtime::apply::fingerprint(&serde_json::to_value(&obj).unwrap_or_default());
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_ANNOTATION.into(), print);
    obj
}

/// The Deployment running `version`. `restarted_at` keeps (or sets) the restart annotation.
pub fn deployment(app: &Application, version: &str, restarted_at: Option<&str>) -> Deployment {
    let spec = &app.spec;
    let selector = BTreeMap::from([(APP_LABEL.to_string(), app.name_any())]);
    let mut pod_annotations = BTreeMap::from([(VERSION_ANNOTATION.to_string(), version.to_string())]);
    if let Some(t) = restarted_at {
        pod_annotations.insert(RESTARTED_ANNOTATION.into(), t.into());
    }
    let probe = spec.health_check.as_ref().map(|h| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(h.path.clone()),
            port: IntOrString::String(PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(h.period_seconds),
        failure_threshold: Some(h.failure_threshold),
        ..Default::default()
    });
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image(app, version)),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: (!spec.env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|e| EnvVar {
                    name: e.name.clone(),
                    value: Some(e.value.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        resources: spec.resources.clone(),
        readiness_probe: probe,
        ..Default::default()
    };
    stamp(Deployment {
        metadata: meta(app),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            progress_deadline_seconds: Some(spec.rollout.progress_deadline.as_std().as_secs().max(1) as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(app)),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The Service in front of the pods.
pub fn service(app: &Application) -> Service {
    stamp(Service {
        metadata: meta(app),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(APP_LABEL.to_string(), app.name_any())])),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: app.spec.port,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Application {
        let mut a: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "shop", "namespace": "pp", "uid": "u-1"},
            "spec": {"type": "Web", "version": "1.2.0", "image": "reg/shop:{version}", "replicas": 3,
                     "env": [{"name": "A", "value": "b"}], "healthCheck": {}}
        }))
        .unwrap();
        a.metadata.uid = Some("u-1".into());
        a
    }

    #[test]
    fn the_deployment_runs_the_version_owned_by_the_application() {
        let d = deployment(&app(), "1.2.0", None);
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(3));
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("reg/shop:1.2.0"));
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("Application", "shop", Some(true))
        );
        assert!(
            d.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(APPLIED_ANNOTATION)
        );
    }

    #[test]
    fn the_fingerprint_follows_the_spec() {
        let a = deployment(&app(), "1.2.0", None);
        let b = deployment(&app(), "1.3.0", None);
        let fp = |d: &Deployment| d.metadata.annotations.as_ref().unwrap()[APPLIED_ANNOTATION].clone();
        assert_ne!(fp(&a), fp(&b));
        assert_eq!(fp(&a), fp(&deployment(&app(), "1.2.0", None)));
    }
}
