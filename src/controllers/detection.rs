//! Detection: which covered components have failed, read from their health
//! signals in the shared stores. A failure is what the signal calls one —
//! not an invalid spec, not an update or a restore reprise itself runs.

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, core::SelectorExt};

use super::{
    Stores,
    components::{self, get},
};
use crate::{
    api::{
        Application, Database, Server, VirtualMachine,
        application::AppHealth,
        common::{ComponentKind, ComponentRef, find_condition, reasons},
        database::DatabaseHealthState,
        maintenance_window::{MaintenanceMode, WindowPhase},
        server::ServerHealthState,
        virtual_machine::VmHealthState,
    },
    controllers::maintenance_window::phase,
};

/// A component's failure: since when, and what its signal says.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub since: Timestamp,
    pub cause: String,
}

/// The failure the component's health signal reports, if any. None also when
/// the component does not exist (a deletion is not a failure of it).
pub fn failure(stores: &Stores, ns: &str, c: &ComponentRef) -> Option<Failure> {
    match c.kind {
        ComponentKind::Application => application(&get(&stores.applications, ns, &c.name)?),
        ComponentKind::Database => database(&get(&stores.databases, ns, &c.name)?),
        ComponentKind::VirtualMachine => virtual_machine(&get(&stores.virtual_machines, ns, &c.name)?),
        ComponentKind::Server => server(&get(&stores.servers, ns, &c.name)?),
    }
}

pub fn application(app: &Application) -> Option<Failure> {
    let st = app.status.as_ref()?;
    (st.health == Some(AppHealth::Failed)).then(|| {
        let ready = find_condition(&st.conditions, reasons::READY);
        Failure {
            since: ready.map(|r| r.last_transition_time.0).unwrap_or_else(Timestamp::now),
            cause: format!(
                "Application {} failed: {}",
                app.name_any(),
                ready.map(|r| r.message.as_str()).unwrap_or("no replica serves")
            ),
        }
    })
}

pub fn database(db: &Database) -> Option<Failure> {
    let h = db.status.as_ref()?.health.as_ref()?;
    use DatabaseHealthState::*;
    matches!(h.state, Unreachable | DataMissing | Restoring | RestoreFailed).then(|| Failure {
        since: h.since.0,
        cause: format!("Database {} {:?}: {}", db.name_any(), h.state, h.message),
    })
}

pub fn virtual_machine(vm: &VirtualMachine) -> Option<Failure> {
    let h = vm.status.as_ref()?.health.as_ref()?;
    use VmHealthState::*;
    matches!(h.state, Failed | NotReady | Missing).then(|| Failure {
        since: h.since.0,
        cause: format!("VirtualMachine {} {:?}: {}", vm.name_any(), h.state, h.message),
    })
}

pub fn server(s: &Server) -> Option<Failure> {
    let h = s.status.as_ref()?.health.as_ref()?;
    use ServerHealthState::*;
    matches!(h.state, Unreachable | PowerLost | Critical).then(|| Failure {
        since: h.since.0,
        cause: format!("Server {} {:?}: {}", s.name_any(), h.state, h.message),
    })
}

/// Failures seen on the watch, by namespace and component, until a plan
/// opens their incident: a component its own controller repairs within a
/// second is healthy again before the plan looks, and its failure must still
/// be recorded. In memory: after a restart, current failures are read again
/// from the stores.
#[derive(Default)]
pub struct Seen(std::sync::Mutex<std::collections::BTreeMap<(String, ComponentRef), Failure>>);

impl Seen {
    /// Remembers `obj`'s failure, if its signal reports one (the first sighting of each).
    pub fn observe<K: ResourceExt>(&self, kind: ComponentKind, obj: &K, f: impl Fn(&K) -> Option<Failure>) {
        let Some(failure) = f(obj) else { return };
        let key = (
            obj.namespace().unwrap_or_default(),
            ComponentRef {
                kind,
                name: obj.name_any(),
            },
        );
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.entry(key).or_insert(failure);
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
}

/// The active MaintenanceWindow (`Pause` first, else `NotifyOnly`) covering `obj` now,
/// if any: its controller then leaves a failure unrepaired for people to
/// handle (what someone asks for still runs).
pub fn held_by<K: ResourceExt>(stores: &Stores, obj: &K) -> Option<String> {
    let ns = obj.namespace().unwrap_or_default();
    let labels = obj.labels();
    let now = Timestamp::now();
    active_window(stores, &ns, labels, now, MaintenanceMode::Pause)
        .or_else(|| active_window(stores, &ns, labels, now, MaintenanceMode::NotifyOnly))
}

/// The active `Pause` MaintenanceWindow covering the component, if any.
pub fn paused_by(stores: &Stores, ns: &str, c: &ComponentRef, now: Timestamp) -> Option<String> {
    window_over(stores, ns, c, now, MaintenanceMode::Pause)
}

/// The active MaintenanceWindow of `mode` covering the component, if any.
pub fn window_over(
    stores: &Stores,
    ns: &str,
    c: &ComponentRef,
    now: Timestamp,
    mode: MaintenanceMode,
) -> Option<String> {
    let labels = components::labels(stores, c.kind, ns, &c.name)?;
    active_window(stores, ns, &labels, now, mode)
}

/// The active MaintenanceWindow of `mode` in `ns` whose selector matches `labels`.
fn active_window(
    stores: &Stores,
    ns: &str,
    labels: &std::collections::BTreeMap<String, String>,
    now: Timestamp,
    mode: MaintenanceMode,
) -> Option<String> {
    stores
        .maintenance_windows
        .state()
        .iter()
        .filter_map(|w| w.0.as_ref().ok())
        .filter(|w| w.namespace().as_deref() == Some(ns) && w.spec.mode == mode)
        .filter(|w| phase(w.spec.start.0, w.spec.end.0, now).0 == WindowPhase::Active)
        .find(|w| components::selector("spec.selector", &w.spec.selector).is_ok_and(|s| s.matches(labels)))
        .map(|w| w.name_any())
}
