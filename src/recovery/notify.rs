//! Telling responders about an incident — the level's first when it opens,
//! the next ones on escalation, any in a `Notify` step: a JSON message to
//! each one's webhook (the vendor only while its contract runs, with the
//! modes the level gives it; for a server, what a technician needs to come
//! prepared), each delivery in the incident's timeline.
//!
//! Deliveries run apart from the reconciles, in a queue with its own workers
//! and timeouts ([`Notifier`]): a recovery step never waits for a responder's
//! webhook, and a webhook that hangs delays only its own deliveries. A
//! delivery's timeline entry is written `Running` before it is queued and
//! finished when it is done; after a restart a `Running` delivery is queued
//! again (at least once: the body carries a `deliveryId` for the receiver to
//! tell a repeat).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use serde_json::{Value, json};

use crate::{
    api::{
        Incident,
        contract::StepOutcome,
        incident::{IncidentStatus, TimelineEntry},
        recovery_plan::{InterventionMode, RecoveryPlan, ResponderType},
    },
    providers::webhook,
    runtime::{Context, Error, secrets},
};

/// How many deliveries run at once.
const WORKERS: usize = 8;
/// How many attempts one delivery makes.
const ATTEMPTS: u32 = 3;

/// Step name of the opening notification to `responder`.
pub fn step_name(responder: &str) -> String {
    format!("notify-{responder}")
}

/// Step name of the escalation to `responder`.
pub fn escalation_name(responder: &str) -> String {
    format!("escalate-{responder}")
}

/// One delivery: an incident's timeline entry (step, attempt) to one responder.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub incident: String,
    pub step: String,
    pub attempt: u32,
    pub responder: String,
}

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered {
    pub outcome: StepOutcome,
    pub message: String,
}

struct Job {
    key: Key,
    incident: ObjectRef<Incident>,
    url: String,
    token: Option<String>,
    body: Value,
}

#[derive(Default)]
struct State {
    in_flight: HashSet<Key>,
    done: BTreeMap<Key, Delivered>,
}

/// The delivery queue and its workers; they stop when it is dropped.
pub struct Notifier {
    jobs: tokio::sync::mpsc::Sender<Job>,
    state: Arc<Mutex<State>>,
    completions: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef<Incident>>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Notifier {
    pub fn start(http: reqwest::Client) -> Self {
        let (jobs, rx) = tokio::sync::mpsc::channel::<Job>(1024);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(State::default()));
        let workers = (0..WORKERS)
            .map(|_| {
                let (rx, state, http, done_tx) = (rx.clone(), state.clone(), http.clone(), done_tx.clone());
                tokio::spawn(async move {
                    loop {
                        let Some(job) = rx.lock().await.recv().await else {
                            return;
                        };
                        let d = webhook::post(&http, &job.url, job.token.as_deref(), &job.body, ATTEMPTS).await;
                        let delivered = Delivered {
                            outcome: if d.ok {
                                StepOutcome::Succeeded
                            } else {
                                StepOutcome::Failed
                            },
                            message: d.message,
                        };
                        {
                            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                            s.in_flight.remove(&job.key);
                            s.done.insert(job.key, delivered);
                        }
                        let _ = done_tx.send(job.incident);
                    }
                })
            })
            .collect();
        Self {
            jobs,
            state,
            completions: Mutex::new(Some(done_rx)),
            workers,
        }
    }

    /// The incidents whose deliveries ended, to reconcile them (taken once, by the runner).
    pub fn completions(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef<Incident>>> {
        self.completions.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the delivery is queued or under way.
    fn in_flight(&self, key: &Key) -> bool {
        self.state().in_flight.contains(key)
    }

    /// The delivery's end, once it ended (forgotten once read into the timeline).
    fn take(&self, key: &Key) -> Option<Delivered> {
        self.state().done.remove(key)
    }

    /// An end known without sending anything (the responder cannot be called).
    fn settle(&self, key: Key, d: Delivered) {
        self.state().done.insert(key, d);
    }

    fn queue(&self, job: Job) {
        let key = job.key.clone();
        let mut s = self.state();
        if s.in_flight.contains(&key) || s.done.contains_key(&key) {
            return;
        }
        if self.jobs.try_send(job).is_ok() {
            s.in_flight.insert(key);
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

/// Who an entry tells, with the modes the level gives each: `who`, or every
/// responder of the level.
pub fn recipients(plan: &RecoveryPlan, level: u8, who: Option<&str>) -> Vec<(String, Vec<InterventionMode>)> {
    let level = plan.spec.levels.iter().find(|l| l.level == level);
    if let Some(name) = who {
        let modes = level
            .and_then(|l| l.responders.iter().find(|r| r.name == name))
            .map(|r| r.modes.clone())
            .unwrap_or_default();
        return vec![(name.to_string(), modes)];
    }
    level
        .map(|l| l.responders.iter().map(|r| (r.name.clone(), r.modes.clone())).collect())
        .unwrap_or_default()
}

/// Why a responder cannot be called now (a vendor whose contract ended, no
/// webhook), if so.
pub fn uncallable(plan: &RecoveryPlan, name: &str, today: k8s_openapi::jiff::civil::Date) -> Option<String> {
    let Some(responder) = plan.spec.responders.iter().find(|x| x.name == name) else {
        return Some(format!("no responder {name} in the plan"));
    };
    let contract_ended = responder.type_ == ResponderType::Vendor
        && responder
            .contract
            .as_ref()
            .and_then(|c| c.until.parse::<k8s_openapi::jiff::civil::Date>().ok())
            .is_some_and(|until| until < today);
    if contract_ended {
        return Some(format!("the contract of {} has ended", responder.name));
    }
    if responder.webhook.is_none() {
        return Some(format!(
            "{} has no webhook; call {}",
            responder.name,
            responder.phone.as_deref().unwrap_or("them")
        ));
    }
    None
}

/// The JSON message a responder receives.
fn message(
    inc: &Incident,
    plan: &RecoveryPlan,
    status: &IncidentStatus,
    modes: &[InterventionMode],
    responder: &str,
    details: Value,
    delivery: &Key,
) -> Value {
    let ns = inc.namespace().unwrap_or_default();
    let level = plan.spec.levels.iter().find(|l| l.level == inc.spec.level);
    let contract = plan
        .spec
        .responders
        .iter()
        .find(|r| r.name == responder)
        .and_then(|r| r.contract.as_ref())
        .and_then(|c| c.reference.clone());
    let mut body = json!({
        "incident": inc.name_any(),
        "namespace": ns,
        "component": {"kind": inc.spec.component.kind.as_str(), "name": inc.spec.component.name},
        "level": inc.spec.level,
        "levelName": level.and_then(|l| l.name.clone()),
        "phase": format!("{:?}", status.phase),
        "cause": inc.spec.cause,
        "detectedAt": status.detected_at,
        "deadline": status.deadline,
        "modes": modes,
        "contract": contract,
        "timeline": format!("kubectl -n {ns} get incident {} -o yaml", inc.name_any()),
        "deliveryId": format!("{}/{}/{}/{}", delivery.incident, delivery.step, delivery.attempt, delivery.responder),
    });
    if !details.is_null() {
        body["server"] = details;
    }
    body
}

/// Queues the deliveries of a `Running` entry that are neither under way nor
/// done (a new entry, or one a restart interrupted). `details`: what a
/// responder needs to know of the component.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    ctx: &Context,
    inc: &Incident,
    plan: &RecoveryPlan,
    status: &IncidentStatus,
    entry: &TimelineEntry,
    who: Option<&str>,
    details: &Value,
) -> Result<(), Error> {
    let ns = inc.namespace().unwrap_or_default();
    let today = Timestamp::now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    for (name, modes) in recipients(plan, inc.spec.level, who) {
        let key = Key {
            incident: inc.uid().unwrap_or_default(),
            step: entry.step.clone(),
            attempt: entry.attempt,
            responder: name.clone(),
        };
        if ctx.notifier.in_flight(&key) || ctx.notifier.state().done.contains_key(&key) {
            continue;
        }
        if let Some(why) = uncallable(plan, &name, today) {
            ctx.notifier.settle(
                key,
                Delivered {
                    outcome: StepOutcome::Skipped,
                    message: why,
                },
            );
            continue;
        }
        let Some(hook) = plan
            .spec
            .responders
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.webhook.clone())
        else {
            continue;
        };
        let who = secrets::Requester {
            kind: "RecoveryPlan",
            name: plan.metadata.name.as_deref().unwrap_or_default(),
        };
        let token = match &hook.token_secret_ref {
            Some(t) => match secrets::read(ctx, &ns, &t.name, who).await? {
                Ok(d) => d.get(&t.key).map(|b| String::from_utf8_lossy(b).into_owned()),
                Err(why) => {
                    // Never call it without the token it should carry.
                    let message = format!("not called: {why}");
                    ctx.notifier.settle(
                        key,
                        Delivered {
                            outcome: StepOutcome::Failed,
                            message,
                        },
                    );
                    continue;
                }
            },
            None => None,
        };
        let body = message(inc, plan, status, &modes, &name, details.clone(), &key);
        ctx.notifier.queue(Job {
            key,
            incident: ObjectRef::from_obj(inc),
            url: hook.url,
            token,
            body,
        });
    }
    Ok(())
}

/// The end of a `Running` delivery entry, once every responder it tells was
/// told (or could not be): `Succeeded` if one was reached, `Skipped` if none
/// could be called, else `Failed`.
pub fn collect(
    ctx: &Context,
    inc: &Incident,
    plan: &RecoveryPlan,
    entry: &TimelineEntry,
    who: Option<&str>,
) -> Option<(StepOutcome, String)> {
    let uid = inc.uid().unwrap_or_default();
    let names = recipients(plan, inc.spec.level, who);
    let keys: Vec<Key> = names
        .iter()
        .map(|(n, _)| Key {
            incident: uid.clone(),
            step: entry.step.clone(),
            attempt: entry.attempt,
            responder: n.clone(),
        })
        .collect();
    let state = ctx.notifier.state();
    if keys.iter().any(|k| !state.done.contains_key(k)) {
        return None;
    }
    drop(state);
    let ends: Vec<(String, Delivered)> = keys
        .iter()
        .filter_map(|k| Some((k.responder.clone(), ctx.notifier.take(k)?)))
        .collect();
    let outcome = if ends.iter().any(|(_, d)| d.outcome == StepOutcome::Succeeded) {
        StepOutcome::Succeeded
    } else if !ends.is_empty() && ends.iter().all(|(_, d)| d.outcome == StepOutcome::Skipped) {
        StepOutcome::Skipped
    } else {
        StepOutcome::Failed
    };
    let message = ends
        .iter()
        .map(|(n, d)| format!("{n}: {:?} ({})", d.outcome, d.message))
        .collect::<Vec<_>>()
        .join("; ");
    Some((outcome, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RecoveryPlan {
        serde_json::from_value(json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "RecoveryPlan", "metadata": {"name": "p"},
            "spec": {
                "levels": [{"level": 2, "appliesTo": ["VirtualMachine"], "minWindow": "30m", "maxWindow": "45m",
                            "responders": [{"name": "it"}, {"name": "vendor", "modes": ["Phone"]}, {"name": "old"}]}],
                "responders": [
                    {"name": "it", "type": "Internal", "webhook": {"url": "http://127.0.0.1:1/it"}},
                    {"name": "vendor", "type": "Vendor", "phone": "+33 1", "contract": {"until": "2030-01-01"}},
                    {"name": "old", "type": "Vendor", "webhook": {"url": "http://127.0.0.1:1/old"}, "contract": {"until": "2020-01-01"}}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn each_entry_tells_its_responders_and_some_cannot_be_called() {
        let p = plan();
        let names = |who: Option<&str>| -> Vec<String> { recipients(&p, 2, who).into_iter().map(|(n, _)| n).collect() };
        assert_eq!(names(Some("it")), ["it"]);
        assert_eq!(names(None), ["it", "vendor", "old"]);
        assert_eq!(recipients(&p, 2, Some("vendor"))[0].1, [InterventionMode::Phone]);
        let today = "2026-11-30".parse().unwrap();
        assert_eq!(uncallable(&p, "it", today), None);
        assert!(uncallable(&p, "vendor", today).unwrap().contains("call +33 1"));
        assert!(
            uncallable(&p, "old", today)
                .unwrap()
                .contains("contract of old has ended")
        );
        assert!(uncallable(&p, "ghost", today).is_some());
    }
}
