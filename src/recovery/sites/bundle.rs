//! The plan bundle: what a standby needs to rebuild the plan without the
//! lost site's etcd. The active site publishes every reprise object of the
//! namespace (specs and labels, never status, never Secrets) next to the
//! lease, signed with an HMAC-SHA256 key from a Secret both sites hold; a
//! standby reads it, checks the signature, and applies what it lacks when
//! it takes over, kind by kind in the wave order.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The kinds a bundle carries, in the order a failover applies them
/// (servers, then what runs on them, then what serves).
pub const WAVES: [&str; 6] = [
    "Server",
    "VirtualMachine",
    "Database",
    "Application",
    "MaintenanceWindow",
    "RecoveryPlan",
];

/// A bundle's content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// The site that published it, at which epoch.
    pub site: String,
    pub epoch: u64,
    /// When (RFC 3339).
    pub published: String,
    /// The objects: apiVersion, kind, metadata.name and labels, spec.
    pub objects: Vec<serde_json::Value>,
}

/// What is stored: the payload as text and its signature.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Signed {
    pub payload: String,
    /// HMAC-SHA256 of `payload`, hex.
    pub hmac: String,
}

/// The largest bundle read (a plan of thousands of objects stays far below).
pub const MAX_BUNDLE_BYTES: u64 = 16 << 20;

/// An object as the bundle carries it: no status, no server-set metadata,
/// no annotations (actions and requests are not replayed on the other site).
pub fn portable(obj: &serde_json::Value) -> Option<serde_json::Value> {
    let kind = obj.get("kind")?.as_str()?;
    if !WAVES.contains(&kind) {
        return None;
    }
    let meta = obj.get("metadata")?;
    Some(serde_json::json!({
        "apiVersion": obj.get("apiVersion")?,
        "kind": kind,
        "metadata": {
            "name": meta.get("name")?,
            "labels": meta.get("labels").cloned().unwrap_or(serde_json::json!({})),
        },
        "spec": obj.get("spec")?,
    }))
}

/// The fingerprint of a set of objects (sorted by kind and name): what
/// decides whether to publish again.
pub fn fingerprint(objects: &[serde_json::Value]) -> String {
    let mut h = Sha256::new();
    for o in objects {
        h.update(o.to_string().as_bytes());
        h.update(b"\n");
    }
    crate::providers::artifacts::hex(&h.finalize())
}

/// Sorts objects into wave order, then by name.
pub fn sort(objects: &mut [serde_json::Value]) {
    let rank = |o: &serde_json::Value| {
        let kind = o["kind"].as_str().unwrap_or_default();
        WAVES.iter().position(|k| *k == kind).unwrap_or(WAVES.len())
    };
    objects.sort_by(|a, b| (rank(a), a["metadata"]["name"].as_str()).cmp(&(rank(b), b["metadata"]["name"].as_str())));
}

/// RFC 7386 JSON merge patch: `patch` merged into `target`.
pub fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::json!({});
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
        }
    }
}

fn mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(payload.as_bytes());
    m
}

pub fn sign(key: &[u8], payload: &Payload) -> Signed {
    let text = serde_json::to_string(payload).expect("a payload serializes");
    let hmac = crate::providers::artifacts::hex(&mac(key, &text).finalize().into_bytes());
    Signed { payload: text, hmac }
}

/// The payload, if the signature is the key's.
pub fn open(key: &[u8], bytes: &[u8]) -> Result<Payload, String> {
    let signed: Signed = serde_json::from_slice(bytes).map_err(|e| format!("not a bundle: {e}"))?;
    let given = hex_decode(&signed.hmac).ok_or("the signature is not hex")?;
    mac(key, &signed.payload)
        .verify_slice(&given)
        .map_err(|_| "the signature does not match the bundle key: not applied".to_string())?;
    serde_json::from_str(&signed.payload).map_err(|e| format!("the signed payload is not a bundle: {e}"))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        let app = serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Application",
            "metadata": {"name": "shop", "uid": "u1", "resourceVersion": "9", "labels": {"tier": "web"},
                         "annotations": {"reprise.dev/action": "restart/r1"}, "managedFields": []},
            "spec": {"type": "Web"}, "status": {"health": {}}
        });
        let server = serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Server",
            "metadata": {"name": "hv-01"}, "spec": {"bmc": {}}
        });
        let incident = serde_json::json!({"apiVersion": "reprise.dev/v1alpha1", "kind": "Incident", "metadata": {"name": "i"}, "spec": {}});
        let mut objects: Vec<_> = [app, server, incident].iter().filter_map(portable).collect();
        sort(&mut objects);
        Payload {
            site: "paris".into(),
            epoch: 3,
            published: "2026-12-01T00:00:00Z".into(),
            objects,
        }
    }

    #[test]
    fn a_bundle_carries_specs_and_labels_in_wave_order_and_nothing_else() {
        let p = payload();
        let kinds: Vec<&str> = p.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Server", "Application"], "no Incident, servers first");
        let app = &p.objects[1];
        assert_eq!(
            app["metadata"],
            serde_json::json!({"name": "shop", "labels": {"tier": "web"}})
        );
        assert!(app.get("status").is_none());
        assert_eq!(fingerprint(&p.objects), fingerprint(&payload().objects));
    }

    #[test]
    fn an_override_is_a_json_merge_patch() {
        let mut spec = serde_json::json!({"instance": {"external": {"host": "pg.paris", "port": 5432}}, "prune": true});
        merge(
            &mut spec,
            &serde_json::json!({"instance": {"external": {"host": "pg.lyon"}}, "prune": null}),
        );
        assert_eq!(
            spec,
            serde_json::json!({"instance": {"external": {"host": "pg.lyon", "port": 5432}}})
        );
    }

    #[test]
    fn only_the_right_key_opens_a_bundle_and_a_changed_byte_is_refused() {
        let signed = sign(b"k1", &payload());
        let bytes = serde_json::to_vec(&signed).unwrap();
        assert_eq!(open(b"k1", &bytes).unwrap(), payload());
        let e = open(b"k2", &bytes).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let tampered = Signed {
            payload: signed.payload.replace("paris", "lyon!"),
            ..signed
        };
        assert!(open(b"k1", &serde_json::to_vec(&tampered).unwrap()).is_err());
        assert!(open(b"k1", b"{}").is_err());
    }
}
