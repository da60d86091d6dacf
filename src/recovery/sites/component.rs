//! The local Site as the recovery engine sees it: a component whose failure
//! is a failover under way, repaired by the Site's own controller (the site
//! Incident waits for it, as for a database restoring itself).

use k8s_openapi::jiff::Timestamp;

use crate::api::{
    Site,
    contract::{Component, Signal},
    site::SiteHealthState,
};

impl Component for Site {
    crate::component_common!(Site);

    fn health(&self) -> Option<Signal> {
        self.status.as_ref()?.health.as_ref().map(Signal::from)
    }

    fn own_repair(&self, _now: Timestamp) -> Option<String> {
        let st = self.status.as_ref()?;
        if st.health.as_ref()?.state != SiteHealthState::FailingOver {
            return None;
        }
        Some(
            st.failover
                .as_ref()
                .map(progress)
                .unwrap_or_else(|| "taking over".into()),
        )
    }

    /// A failover rebuilds every component and restores every database:
    /// it may take as long as the site level's window (4 h by default).
    fn own_repair_cap(&self) -> Option<i64> {
        Some(4 * 3600)
    }
}

/// Where a failover stands, in words: the wave under way and what it waits for.
pub fn progress(f: &crate::api::site::FailoverRecord) -> String {
    let from = f.from.as_deref().unwrap_or("the lost site");
    match f.waves.iter().find(|w| w.finished.is_none()) {
        Some(w) => format!(
            "taking over from {from} at epoch {}: wave {} ({}): {}",
            f.epoch,
            w.kind,
            w.objects.join(", "),
            w.message
        ),
        None => format!("taking over from {from} at epoch {}", f.epoch),
    }
}
