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

/// Owned objects the owned-object watches saw deleted, by
/// `Kind/namespace/name`, for a short while. A store that lacks an owned
/// object proves only that no object *with reprise's label* has that name;
/// a deletion just seen proves the name is free, so the repair needs no
/// GET first. Each sighting is used once (taken); without one, the API
/// server is asked (the object may be our own fresh create the store has
/// not caught up with, or someone else's of the same name).
#[derive(Default)]
pub struct Deletions(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

/// How long a deletion seen stands for the name being free. Between the
/// deletion and the repair someone else could create an object of that name
/// (so could they between a GET and an apply): kept short, so that window
/// stays a reconcile's queueing time.
const DELETION_FRESH: std::time::Duration = std::time::Duration::from_secs(10);

impl Deletions {
    pub fn saw(&self, key: String) {
        let now = std::time::Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, at| now.duration_since(*at) < DELETION_FRESH);
        m.insert(key, now);
    }

    /// Whether `key` was seen deleted lately (and forgets it).
    pub fn take(&self, key: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key).is_some_and(|at| at.elapsed() < DELETION_FRESH)
    }

    /// The object is there again: a deletion seen before no longer holds.
    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key of an owned object in `Deletions`.
pub fn owned_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
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
    fn a_deletion_seen_is_used_once() {
        let d = Deletions::default();
        assert!(!d.take("Deployment/ns/a"), "never seen deleted: ask the API server");
        d.saw("Deployment/ns/a".into());
        assert!(d.take("Deployment/ns/a"));
        assert!(!d.take("Deployment/ns/a"), "used once");
        d.saw("Deployment/ns/a".into());
        d.forget("Deployment/ns/a");
        assert!(!d.take("Deployment/ns/a"), "there again");
        assert!(d.is_empty());
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
