//! Owned Kubernetes objects: the label that marks them, and drift detection
//! (`crate::drift`) that compares only the fields reprise sets. The objects
//! themselves are applied server-side, under the owning kind's field manager,
//! by their component: Deployments and Services, connection Secrets,
//! KubeVirt VMs.

/// Label on every object reprise owns (the owned-object watches select on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "reprise");

pub use crate::drift::{fingerprint, is_subset};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The uid of the object's controller (its owner reference marked `controller`).
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether the live object is controlled by the object of uid `owner`: one
/// of the same name that anything else controls is never written.
pub fn controlled_by(live: &ObjectMeta, owner: Option<&str>) -> bool {
    owner.is_some() && owner == controller_uid(live)
}

/// Who controls a live object, for a message: `Kind/name`, or that nothing reprise manages does.
pub fn controller_of(meta: &ObjectMeta) -> String {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
        .unwrap_or_else(|| "nothing reprise manages".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(uid: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "reprise.dev/v1alpha1".into(),
                kind: "Database".into(),
                name: "a".into(),
                uid: uid.into(),
                controller: Some(controller),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_same_controller_may_write() {
        assert!(controlled_by(&owned_by("u1", true), Some("u1")));
        assert!(!controlled_by(&owned_by("u2", true), Some("u1")));
        assert!(
            !controlled_by(&owned_by("u1", false), Some("u1")),
            "an owner, not the controller"
        );
        assert!(!controlled_by(&ObjectMeta::default(), Some("u1")));
        assert!(!controlled_by(&ObjectMeta::default(), None), "nothing to match");
        assert_eq!(controller_uid(&owned_by("u1", true)), Some("u1"));
        assert_eq!(controller_of(&owned_by("u2", true)), "Database/a");
        assert_eq!(controller_of(&ObjectMeta::default()), "nothing reprise manages");
    }
}
