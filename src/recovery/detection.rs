//! Detection: which covered components have failed, read from their health
//! signals (the contract's [`Component::health`]). A failure is what the
//! signal calls one — not an invalid spec, not an update or a restore reprise
//! itself runs.

use k8s_openapi::jiff::Timestamp;

use crate::{
    api::{common::ComponentRef, contract::Component},
    runtime::{Stores, stores},
};

/// A component's failure: since when, and what its signal says.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub since: Timestamp,
    pub cause: String,
}

/// The failure a component's health signal reports, if any.
pub fn failure_of(c: &dyn Component) -> Option<Failure> {
    let h = c.health()?;
    let r = c.reference();
    h.failing.then(|| Failure {
        since: h.since,
        cause: format!("{} {} {}: {}", r.kind, r.name, h.state, h.message),
    })
}

/// The failure the component's health signal reports, if any. None also when
/// the component does not exist (a deletion is not a failure of it).
pub fn failure(s: &Stores, ns: &str, c: &ComponentRef) -> Option<Failure> {
    failure_of(stores::component(s, ns, c)?.as_ref())
}

/// Whether the component's health signal says it serves as its spec says.
pub fn healthy(s: &Stores, ns: &str, c: &ComponentRef) -> bool {
    stores::component(s, ns, c)
        .and_then(|c| c.health())
        .is_some_and(|h| h.healthy)
}

/// Failures seen on the watch, by namespace and component, until a plan
/// opens their incident: a component its own controller repairs within a
/// second is healthy again before the plan looks, and its failure must still
/// be recorded. In memory: after a restart, current failures are read again
/// from the stores.
#[derive(Default)]
pub struct Seen(
    std::sync::Mutex<std::collections::BTreeMap<(String, ComponentRef), Failure>>,
    std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
);

impl Seen {
    /// Remembers the component's failure, if its signal reports one (the first sighting of each).
    pub fn observe(&self, ns: &str, c: &dyn Component) {
        let Some(failure) = failure_of(c) else { return };
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.entry((ns.to_string(), c.reference())).or_insert(failure);
    }

    /// The failure seen for the component in the last 15 minutes, if any
    /// (older ones belong to components no plan covered then).
    pub fn get(&self, ns: &str, c: &ComponentRef) -> Option<Failure> {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let f = seen.get(&(ns.to_string(), c.clone()))?;
        (Timestamp::now().as_second() - f.since.as_second() < 900).then(|| f.clone())
    }

    /// Forgets it: its incident exists.
    pub fn forget(&self, ns: &str, c: &ComponentRef) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(&(ns.to_string(), c.clone()));
    }

    /// Remembers that this process opened the Incident `ns/name`.
    pub fn opened(&self, ns: &str, incident: &str) {
        let mut opened = self.1.lock().unwrap_or_else(|p| p.into_inner());
        opened.insert((ns.to_string(), incident.to_string()));
    }

    /// Whether this process opened the Incident `ns/name` (and forgets it:
    /// asked once, on the incident's first look).
    pub fn take_opened(&self, ns: &str, incident: &str) -> bool {
        let mut opened = self.1.lock().unwrap_or_else(|p| p.into_inner());
        opened.remove(&(ns.to_string(), incident.to_string()))
    }

    /// Drops what is older than 15 minutes (nobody will ask for it).
    pub fn prune(&self) {
        let cutoff = Timestamp::now().as_second() - 900;
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, f| f.since.as_second() >= cutoff);
    }
}
