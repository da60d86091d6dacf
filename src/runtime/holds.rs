//! Maintenance holds: whether an active MaintenanceWindow covers an object
//! now. A component's controller leaves a failure unrepaired while a window
//! holds it (planned work is not undone); detection opens no incident while
//! a `Pause` window covers the component.

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, core::SelectorExt};

use super::{Stores, stores as components};
use crate::api::{
    common::ComponentRef,
    maintenance_window::{MaintenanceMode, WindowPhase},
};

/// Where `now` falls in the window, and how long until the next boundary.
pub fn phase(start: Timestamp, end: Timestamp, now: Timestamp) -> (WindowPhase, Option<std::time::Duration>) {
    let until = |t: Timestamp| std::time::Duration::from_secs_f64(now.duration_until(t).as_secs_f64().max(0.0));
    if now < start {
        (WindowPhase::Scheduled, Some(until(start)))
    } else if now < end {
        (WindowPhase::Active, Some(until(end)))
    } else {
        (WindowPhase::Ended, None)
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
    let component = components::component(stores, ns, c)?;
    active_window(stores, ns, component.labels(), now, mode)
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
