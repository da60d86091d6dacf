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
        ComponentKind::Application => {
            let app: Application = get(&stores.applications, ns, &c.name)?;
            let st = app.status?;
            (st.health == Some(AppHealth::Failed)).then(|| {
                let ready = find_condition(&st.conditions, reasons::READY);
                Failure {
                    since: ready.map(|r| r.last_transition_time.0).unwrap_or_else(Timestamp::now),
                    cause: format!(
                        "Application {} failed: {}",
                        c.name,
                        ready.map(|r| r.message.as_str()).unwrap_or("no replica serves")
                    ),
                }
            })
        }
        ComponentKind::Database => {
            let db: Database = get(&stores.databases, ns, &c.name)?;
            let h = db.status?.health?;
            use DatabaseHealthState::*;
            matches!(h.state, Unreachable | DataMissing | Restoring | RestoreFailed).then(|| Failure {
                since: h.since.0,
                cause: format!("Database {} {:?}: {}", c.name, h.state, h.message),
            })
        }
        ComponentKind::VirtualMachine => {
            let vm: VirtualMachine = get(&stores.virtual_machines, ns, &c.name)?;
            let h = vm.status?.health?;
            use VmHealthState::*;
            matches!(h.state, Failed | NotReady | Missing).then(|| Failure {
                since: h.since.0,
                cause: format!("VirtualMachine {} {:?}: {}", c.name, h.state, h.message),
            })
        }
        ComponentKind::Server => {
            let s: Server = get(&stores.servers, ns, &c.name)?;
            let h = s.status?.health?;
            use ServerHealthState::*;
            matches!(h.state, Unreachable | PowerLost | Critical).then(|| Failure {
                since: h.since.0,
                cause: format!("Server {} {:?}: {}", c.name, h.state, h.message),
            })
        }
    }
}

/// The active MaintenanceWindow (`Pause` or `NotifyOnly`) covering `obj` now,
/// if any: its controller then leaves a failure unrepaired for people to
/// handle (what someone asks for still runs).
pub fn held_by<K: ResourceExt>(stores: &Stores, kind: ComponentKind, obj: &K) -> Option<String> {
    let c = ComponentRef {
        kind,
        name: obj.name_any(),
    };
    let ns = obj.namespace().unwrap_or_default();
    let now = Timestamp::now();
    paused_by(stores, &ns, &c, now).or_else(|| window_over(stores, &ns, &c, now, MaintenanceMode::NotifyOnly))
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
    let labels = components::in_namespace(stores, ns)
        .into_iter()
        .find(|x| &x.reference == c)?
        .labels;
    stores
        .maintenance_windows
        .state()
        .iter()
        .filter_map(|w| w.0.as_ref().ok())
        .filter(|w| w.namespace().as_deref() == Some(ns) && w.spec.mode == mode)
        .filter(|w| phase(w.spec.start.0, w.spec.end.0, now).0 == WindowPhase::Active)
        .find(|w| components::selector("spec.selector", &w.spec.selector).is_ok_and(|s| s.matches(&labels)))
        .map(|w| w.name_any())
}
