//! Writing status: only when it changed, with server-side apply under the
//! kind's field manager.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};

use super::{Context, Error, kind::Kind};

/// Writes `status` if it differs from what the object has. Returns whether it wrote.
pub async fn write_status<K: Kind>(ctx: &Context, obj: &K, status: &K::Status) -> Result<bool, Error> {
    if obj.status() == Some(status) {
        return Ok(false);
    }
    let uid = obj.uid().unwrap_or_default();
    let value = serde_json::to_value(status)?;
    let seen = rv(obj);
    if let Some((written_rv, written)) = ctx.written.lock().unwrap_or_else(|p| p.into_inner()).get(&uid)
        && *written == value
        && seen < *written_rv
    {
        // Our own write has not come back through the watch yet.
        return Ok(false);
    }
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": value,
    });
    let updated = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(K::MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    ctx.metrics.wrote(&K::kind(&()), "status");
    ctx.written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(uid, (rv(&updated), value));
    Ok(true)
}

/// The resourceVersion as a number (etcd's revision), 0 when it is not one.
fn rv<K: Kind>(obj: &K) -> u64 {
    obj.resource_version().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Publishes an Event about `obj`. A failure to publish is logged, never fatal.
pub async fn publish<K: Kind>(ctx: &Context, obj: &K, type_: EventType, reason: &str, action: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        Ok(()) => ctx.metrics.wrote(&K::kind(&()), "event"),
        Err(e) => tracing::warn!(error = %e, reason, "could not publish an Event"),
    }
}

/// The object's status with `Ready` set and `observedGeneration` moved to the
/// current generation; everything else as it was.
pub fn with_ready<K: Kind>(obj: &K, ok: bool, reason: &str, message: impl Into<String>) -> K::Status {
    use super::kind::CommonStatus;
    use crate::api::common::{condition, reasons, set_condition};
    let generation = obj.meta().generation.unwrap_or(0);
    let mut status = obj.status().cloned().unwrap_or_default();
    status.set_observed_generation(generation);
    set_condition(
        status.conditions_mut(),
        condition(reasons::READY, ok, reason, message, generation),
    );
    status
}

/// The recovery action asked through the `reprise.dev/action` annotation
/// (`<action>/<id>`) and not yet carried out (`last` has another id).
pub fn requested_action<K: kube::Resource>(
    obj: &K,
    last: Option<&crate::api::common::ActionRecord>,
) -> Option<(String, String)> {
    let v = obj.annotations().get(crate::api::common::ACTION_ANNOTATION)?;
    let (action, id) = v.split_once('/')?;
    let (action, id) = (action.trim().to_lowercase(), id.trim().to_string());
    last.is_none_or(|a| a.id != id).then_some((action, id))
}
