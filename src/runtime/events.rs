//! Publishing Events (`events.k8s.io/v1`). An Event repeated within a few
//! minutes — same object, type, reason, action *and note* — becomes one
//! Event series (`series.count`, `series.lastObservedTime`) instead of a new
//! Event each time. kube-runtime's recorder keys a series without the note,
//! so "forcing the power off" after "shutting it down gracefully" read as the
//! first note counted twice; here distinct notes stay distinct Events.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Mutex,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent, events::v1::EventSeries},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType},
};

/// How long a repeated Event joins the series of the first one.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_secs(360);
/// The most series remembered (the oldest are forgotten first).
const MAX_CACHED: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
    type_: String,
    reason: String,
    action: String,
    note: u64,
}

#[derive(Clone, Debug)]
struct Series {
    name: String,
    count: i32,
    last: Timestamp,
}

/// One Event recorder per process (the reporting controller and instance).
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<HashMap<Key, Series>>,
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

fn note_hash(note: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut h);
    h.finish()
}

/// An Event's name: the object's name (shortened to fit) and a time suffix.
fn event_name(regarding: &str, now: Timestamp) -> String {
    let base: String = regarding.chars().take(200).collect();
    format!("{base}.{:x}", now.as_nanosecond())
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `ev` about `reference`: a new Event, or one more of a series.
    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let note = ev.note.clone().unwrap_or_default();
        let key = Key {
            regarding: (
                reference.kind.clone(),
                reference.namespace.clone(),
                reference.name.clone(),
                reference.uid.clone(),
            ),
            type_: type_name(ev.type_).into(),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: note_hash(&note),
        };
        let namespace = reference.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let repeat = {
            let mut cache = self.series.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, s| now.duration_since(s.last) < SERIES_WINDOW);
            cache.get_mut(&key).map(|s| {
                s.count += 1;
                s.last = now;
                s.clone()
            })
        };
        if let Some(s) = repeat {
            let patch = serde_json::json!({"series": EventSeries {
                count: s.count,
                last_observed_time: MicroTime(now),
            }});
            match api.patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                // Gone (expired, deleted): start a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let regarding_name = reference.name.clone().unwrap_or_default();
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(event_name(&regarding_name, now)),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_name(ev.type_).into()),
            reason: Some(ev.reason.clone()),
            action: Some(ev.action.clone()),
            note: Some(note),
            regarding: Some(reference.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        let mut cache = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED
            && let Some(oldest) = cache.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(
            key,
            Series {
                name: created.metadata.name.unwrap_or_default(),
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_fit_whatever_the_object_name() {
        let now = Timestamp::now();
        let n = event_name(&"s".repeat(253), now);
        assert!(n.len() <= 253, "{}", n.len());
        assert!(event_name("hv-01", now).starts_with("hv-01."));
    }

    #[test]
    fn distinct_notes_are_distinct_keys() {
        assert_ne!(
            note_hash("shutting it down gracefully"),
            note_hash("forcing the power off")
        );
    }
}
