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

/// The data of Secret `ns/name`, or None when it does not exist. Calls the
/// API server only when the watch saw a version not read yet.
pub async fn data(ctx: &Context, ns: &str, name: &str) -> Result<Option<Data>, Error> {
    let key = format!("{ns}/{name}");
    let rv = current_rv(ctx, ns, name);
    if let Some(rv) = &rv
        && let Some((cached_rv, data)) = ctx.secret_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && cached_rv == rv
    {
        return Ok(Some(data.clone()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(None);
    };
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
        ctx.secret_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (rv, data.clone()));
    }
    Ok(Some(data))
}

/// Applies a Secret reprise owns unless it is already as desired: same
/// content as reprise last wrote and untouched since (its resourceVersion).
/// Returns whether it wrote, and whether the Secret had been deleted.
pub async fn apply_owned(ctx: &Context, manager: &str, secret: &Secret) -> Result<Option<bool>, Error> {
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let fingerprint = super::apply::fingerprint(&serde_json::to_value(secret)?);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut live_rv = current_rv(ctx, &ns, &name);
    let existed = ctx.applied.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key);
    if live_rv.is_none() && existed {
        // Deleted, or our own write not yet seen by the watch: ask.
        live_rv = api
            .get_metadata_opt(&name)
            .await?
            .and_then(|m| m.metadata.resource_version);
    }
    if let Some(rv) = &live_rv
        && let Some((applied_rv, applied)) = ctx.applied.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && applied_rv == rv
        && *applied == fingerprint
    {
        return Ok(None);
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
    Ok(Some(existed && live_rv.is_none()))
}
