//! Secrets as reprise reads and writes them. One metadata-only watch of the
//! Secrets in scope tells which changed (so a rotated password reaches the
//! Databases that use it) without holding every Secret's data in memory; the
//! data of a Secret is fetched once per resourceVersion and kept. Secrets
//! reprise writes (connection Secrets) are applied only when their content or
//! their resourceVersion moved since reprise's own last write.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::reflector::ObjectRef,
};

use super::{Context, Error};

/// A Secret's data by key.
pub type Data = BTreeMap<String, Vec<u8>>;

fn current_rv(ctx: &Context, ns: &str, name: &str) -> Option<String> {
    ctx.stores
        .secrets
        .get(&ObjectRef::<PartialObjectMeta<Secret>>::new(name).within(ns))
        .and_then(|m| m.metadata.resource_version.clone())
}

/// The annotation by which a Secret's owner offers it to reprise objects:
/// a comma-separated list of `Kind/name` (or `Kind/*` for every object of
/// that kind in the namespace), e.g. `Server/hv-01, Database/*`. reprise
/// reads no Secret that does not offer itself to the object asking, so a
/// user who may create reprise objects but not read a Secret cannot make
/// reprise use it on their behalf (the admission policy in the chart does
/// the same at the API server, from the requesting user's rights).
pub const FOR_ANNOTATION: &str = "reprise.dev/for";

/// The reprise object a Secret is read for.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    pub kind: &'a str,
    pub name: &'a str,
}

/// Whether the annotation's value offers the Secret to `who`.
pub fn offered(annotation: Option<&str>, who: Requester<'_>) -> bool {
    annotation.is_some_and(|v| {
        v.split(',').map(str::trim).any(|entry| {
            entry
                .split_once('/')
                .is_some_and(|(kind, name)| kind == who.kind && (name == "*" || name == who.name))
        })
    })
}

/// Why a Secret could not be used.
pub fn refusal(ns: &str, name: &str, who: Requester<'_>, exists: bool) -> String {
    if exists {
        format!(
            "Secret {name:?} is not offered to {kind} {who_name:?}: annotate it {FOR_ANNOTATION}={kind}/{who_name} (or {kind}/*) to let reprise use it",
            kind = who.kind,
            who_name = who.name
        )
    } else {
        format!("Secret {name:?} does not exist in namespace {ns:?}")
    }
}

/// The data of Secret `ns/name` for `who`: Err with the reason when it does
/// not exist or does not offer itself to `who` (see [`FOR_ANNOTATION`]).
/// Calls the API server only when the watch saw a version not read yet.
pub async fn read(ctx: &Context, ns: &str, name: &str, who: Requester<'_>) -> Result<Result<Data, String>, Error> {
    Ok(match fetch(ctx, ns, name).await? {
        None => Err(refusal(ns, name, who, false)),
        Some((annotation, _)) if !offered(annotation.as_deref(), who) => Err(refusal(ns, name, who, true)),
        Some((_, data)) => Ok(data),
    })
}

/// The Secret's `reprise.dev/for` annotation and data, through the cache.
async fn fetch(ctx: &Context, ns: &str, name: &str) -> Result<Option<(Option<String>, Data)>, Error> {
    let key = format!("{ns}/{name}");
    let rv = current_rv(ctx, ns, name);
    if let Some(rv) = &rv
        && let Some(cached) = ctx.secret_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && cached.rv == *rv
    {
        return Ok(Some((cached.offered_to.clone(), cached.data.clone())));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let offered_to = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FOR_ANNOTATION))
        .cloned();
    let mut data: Data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, ByteString(v))| (k, v))
        .collect();
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    if let Some(rv) = secret.metadata.resource_version {
        let cached = Cached {
            rv,
            offered_to: offered_to.clone(),
            data: data.clone(),
        };
        ctx.secret_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, cached);
    }
    Ok(Some((offered_to, data)))
}

/// A Secret as last read: its version, its offer, its data.
pub struct Cached {
    rv: String,
    offered_to: Option<String>,
    data: Data,
}

/// What [`apply_owned`] did.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// Already as desired: nothing written.
    Unchanged,
    Written,
    /// Written again after someone deleted it.
    Recreated,
    /// A Secret of that name exists and is not this owner's: left alone.
    NotOurs(String),
}

/// Applies a Secret reprise owns (its controller reference names the owner)
/// unless it is already as desired: same content as reprise last wrote and
/// untouched since (its resourceVersion). A Secret of that name that exists
/// and is controlled by anything else is never written.
pub async fn apply_owned(ctx: &Context, manager: &str, secret: &Secret) -> Result<Applied, Error> {
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let fingerprint = super::apply::fingerprint(&serde_json::to_value(secret)?);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let stored = ctx
        .stores
        .secrets
        .get(&ObjectRef::<PartialObjectMeta<Secret>>::new(&name).within(&ns))
        .map(|m| m.metadata.clone());
    let existed = ctx.applied.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key);
    // Not in the store: deleted, or not seen by the watch yet. Ask.
    let live = match stored {
        Some(m) => Some(m),
        None => api.get_metadata_opt(&name).await?.map(|m| m.metadata),
    };
    if let Some(m) = &live
        && !super::apply::controlled_by(m, super::apply::controller_uid(&secret.metadata))
    {
        return Ok(Applied::NotOurs(format!(
            "Secret {name:?} exists and belongs to {}: reprise leaves it alone",
            super::apply::controller_of(m)
        )));
    }
    let live_rv = live.and_then(|m| m.resource_version);
    if let Some(rv) = &live_rv
        && let Some((applied_rv, applied)) = ctx.applied.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && applied_rv == rv
        && *applied == fingerprint
    {
        return Ok(Applied::Unchanged);
    }
    let written = api
        .patch(&name, &PatchParams::apply(manager).force(), &Patch::Apply(secret))
        .await?;
    ctx.metrics.wrote(&Secret::kind(&()), "apply");
    if let Some(rv) = written.metadata.resource_version {
        ctx.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (rv, fingerprint));
    }
    Ok(if existed && live_rv.is_none() {
        Applied::Recreated
    } else {
        Applied::Written
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_offered_by_kind_and_name_or_to_a_whole_kind() {
        let who = Requester {
            kind: "Server",
            name: "hv-01",
        };
        assert!(offered(Some("Server/hv-01"), who));
        assert!(offered(Some("Database/x, Server/*"), who));
        assert!(offered(Some(" Server/hv-01 ,"), who));
        assert!(!offered(None, who));
        assert!(!offered(Some(""), who));
        assert!(!offered(Some("Server/hv-02"), who));
        assert!(!offered(Some("Database/hv-01"), who));
        assert!(!offered(Some("server/hv-01"), who), "kinds are spelled as in the API");
        assert!(!offered(Some("*/*"), who));
        assert!(!offered(Some("Server"), who));
        let msg = refusal("ns", "bmc", who, true);
        assert!(msg.contains("reprise.dev/for=Server/hv-01"), "{msg}");
    }
}
