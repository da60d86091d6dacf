//! Drift between what reprise applied and what the API server holds:
//! compared on the fields reprise sets only, and fingerprints of specs. Pure
//! functions on JSON, used by the runtime and by providers that apply objects
//! (the KubeVirt one).

use serde_json::Value;

/// Whether every field set in `desired` has the same value in `live`.
/// Objects compare key by key; lists compare item by item and must have the
/// same length. Fields the API server or other controllers add are ignored.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            // An empty value we set may be dropped by the API server.
            None => {
                matches!(dv, Value::Null)
                    || dv.as_array().is_some_and(Vec::is_empty)
                    || dv.as_object().is_some_and(|o| o.is_empty())
            }
        }),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv)),
        (Value::Null, _) => true,
        (d, l) => d == l,
    }
}

/// A short hash of a JSON value, to tell "the spec changed" from "someone changed the object".
pub fn fingerprint(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_added_by_the_server_are_not_drift() {
        let desired =
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
        let live = json!({"spec": {"replicas": 2, "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent"}], "dnsPolicy": "ClusterFirst"}}}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_or_missing_field_is_drift() {
        let desired =
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
        let scaled =
            json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
        let reimaged =
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}}});
        let extra = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "sidecar"}]}}}});
        assert!(!is_subset(&desired, &scaled));
        assert!(!is_subset(&desired, &reimaged));
        assert!(!is_subset(&desired, &extra));
    }
}
