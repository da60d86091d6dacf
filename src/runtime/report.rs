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
    use super::kind::CommonStatus;
    let mut status = status.clone();
    let generation = obj.meta().generation.unwrap_or(0);
    super::kstatus::derive(status.conditions_mut(), generation);
    let status = &status;
    // What the API server holds: our own last write while the watch has not
    // brought it back yet, else the store's copy. Compared with the store's
    // copy alone, a status going back to what the store still shows was
    // never written (seen: a fenced Application kept its previous message
    // until its next recheck, 5 s later).
    let pending = pending(ctx, obj);
    if pending.is_none() && obj.status() == Some(status) {
        return Ok(false);
    }
    let value = serde_json::to_value(status)?;
    let current = match pending {
        Some(written) => Some(written),
        None => obj.status().map(serde_json::to_value).transpose()?,
    };
    // Equal as written (times go out to the second or microsecond): nothing to write.
    if current.as_ref() == Some(&value) {
        return Ok(false);
    }
    let uid = obj.uid().unwrap_or_default();
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

/// The status this operator last wrote for `obj`, when the store has not
/// caught up with that write yet: a reconcile builds on what it did (steps
/// started, notifications sent), not on the older copy the watch still holds.
fn fresher_than_store<K: Kind>(ctx: &Context, obj: &K) -> Option<K::Status> {
    serde_json::from_value(pending(ctx, obj)?).ok()
}

/// The status this operator wrote for `obj` that the watch has not brought
/// back yet. Once it has, the record is dropped (the store holds it).
fn pending<K: Kind>(ctx: &Context, obj: &K) -> Option<serde_json::Value> {
    let uid = obj.uid()?;
    let mut written = ctx.written.lock().unwrap_or_else(|p| p.into_inner());
    match written.get(&uid) {
        Some((written_rv, value)) if *written_rv > rv(obj) => Some(value.clone()),
        Some(_) => {
            written.remove(&uid);
            None
        }
        None => None,
    }
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
) -> Option<crate::api::contract::Request> {
    let v = obj.annotations().get(crate::api::contract::ACTION_ANNOTATION)?;
    let r = crate::api::contract::Request::parse(v)?;
    last.is_none_or(|a| a.id != r.id).then_some(r)
}

/// The answer to a request that names no action of this kind.
pub fn unknown_action(verb: &str, kind: crate::api::common::ComponentKind) -> String {
    let known: Vec<&str> = crate::api::contract::actions(kind).iter().map(|v| v.as_str()).collect();
    format!("unknown action {verb:?}: use {}", known.join(", "))
}

/// One reconcile's report: the status being built from the object's current
/// one, and the Events to publish once the status is written.
pub struct Report<'a, K: Kind> {
    pub ctx: &'a Context,
    pub obj: &'a K,
    pub status: K::Status,
    pub generation: i64,
    pub now: k8s_openapi::jiff::Timestamp,
    events: Vec<Said>,
}

impl<'a, K: Kind> Report<'a, K> {
    /// Whether the object's site still acts, asked at the moment of an
    /// action with effects (see `fence::Fence::still`).
    pub fn still_active(&self) -> Result<(), Error> {
        if K::FENCED {
            let ns = self.obj.namespace().unwrap_or_default();
            self.ctx.fence.still(&self.ctx.stores, &ns, &K::kind(&()))?;
        }
        Ok(())
    }

    pub fn new(ctx: &'a Context, obj: &'a K) -> Self {
        use super::kind::CommonStatus;
        let generation = obj.meta().generation.unwrap_or(0);
        let mut status = fresher_than_store(ctx, obj)
            .or_else(|| obj.status().cloned())
            .unwrap_or_default();
        status.set_observed_generation(generation);
        Self {
            ctx,
            obj,
            status,
            generation,
            now: k8s_openapi::jiff::Timestamp::now(),
            events: vec![],
        }
    }

    /// Sets condition `type_`. Its transition time is the object's own when
    /// the status ends where the object had it, however often one reconcile
    /// sets it on the way (True, then False again: no transition).
    pub fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        use super::kind::CommonStatus;
        use crate::api::common::{condition, find_condition, set_condition};
        let mut cond = condition(type_, ok, reason, message, self.generation);
        if let Some(was) = self.obj.status().and_then(|s| find_condition(s.conditions(), type_))
            && was.status == cond.status
        {
            cond.last_transition_time = was.last_transition_time.clone();
        }
        set_condition(self.status.conditions_mut(), cond);
    }

    /// Whether condition `type_` is True in the status being built.
    pub fn is(&self, type_: &str) -> bool {
        use super::kind::CommonStatus;
        crate::api::common::find_condition(self.status.conditions(), type_)
            .is_some_and(|c| c.status == crate::api::common::ConditionStatus::True)
    }

    /// Whether condition `type_` was True before this reconcile (None: not set).
    pub fn was(&self, type_: &str) -> Option<bool> {
        use super::kind::CommonStatus;
        self.obj
            .status()
            .and_then(|s| crate::api::common::find_condition(s.conditions(), type_).cloned())
            .map(|c| c.status == crate::api::common::ConditionStatus::True)
    }

    /// Sets condition `type_` False and, when its message is new to the
    /// object, tells it in a Warning Event (not once per reconcile).
    pub fn fail_and_tell(&mut self, type_: &str, reason: &'static str, action: &'static str, message: String) {
        use super::kind::CommonStatus;
        let said = self
            .obj
            .status()
            .and_then(|s| crate::api::common::find_condition(s.conditions(), type_))
            .is_some_and(|c| c.message == message);
        if !said {
            self.event(EventType::Warning, reason, action, message.clone());
        }
        self.set(type_, false, reason, message);
    }

    pub fn event(&mut self, type_: EventType, reason: &'static str, action: &'static str, note: impl Into<String>) {
        self.events.push((type_, reason, action, note.into()));
    }

    /// Writes the status now, before a long step, so watchers see it.
    pub async fn checkpoint(&mut self) -> Result<(), Error> {
        write_status(self.ctx, self.obj, &self.status).await?;
        Ok(())
    }

    /// Writes the status now and publishes the Events so far: an outcome
    /// said as soon as it is known, with its Events, before the rest of a
    /// long pass.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let events = std::mem::take(&mut self.events);
        say(self.ctx, self.obj, &self.status, events).await
    }

    /// Writes the status (if it changed) and publishes the Events.
    pub async fn write(self) -> Result<(), Error> {
        say(self.ctx, self.obj, &self.status, self.events).await
    }
}

type Said = (EventType, &'static str, &'static str, String);

/// The status write and the Events at once: an Event is a separate
/// object that waits on nothing the status holds, so a reconcile waits for
/// one round trip, not two (a burst of repairs is bound by round trips). An
/// Event that could not be published is logged (as ever); a failed status
/// write fails the reconcile, which says it again.
async fn say<K: Kind>(ctx: &Context, obj: &K, status: &K::Status, events: Vec<Said>) -> Result<(), Error> {
    let publish_all = async {
        for (type_, reason, action, note) in events {
            publish(ctx, obj, type_, reason, action, truncate(note)).await;
        }
    };
    let (written, ()) = futures::join!(write_status(ctx, obj, status), publish_all);
    written.map(|_| ())
}

/// Event notes are limited to 1 KiB by the API server.
pub fn truncate(mut s: String) -> String {
    if s.len() > 1000 {
        let mut cut = 990;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …");
    }
    s
}

/// An action record for a recovery action asked through the annotation, and its Event.
pub fn action_record(
    now: k8s_openapi::jiff::Timestamp,
    action: String,
    id: String,
    outcome: crate::api::contract::ActionOutcome,
    message: String,
) -> (crate::api::common::ActionRecord, EventType, String) {
    use crate::api::contract::ActionOutcome;
    let type_ = if matches!(outcome, ActionOutcome::Done | ActionOutcome::Accepted) {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let note = format!("{action} ({id}): {message}");
    (
        crate::api::common::ActionRecord {
            id,
            action,
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
            outcome,
            message,
        },
        type_,
        note,
    )
}
