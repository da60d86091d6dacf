//! The Database as the recovery engine sees it.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    Database,
    contract::{ActionOutcome, ActionVerb, Backups, Component, DrillAnswer, Signal},
    database::{DatabaseHealthState, RestoreOutcome},
};

impl Component for Database {
    crate::component_common!(Database);

    fn health(&self) -> Option<Signal> {
        self.status.as_ref()?.health.as_ref().map(Signal::from)
    }

    fn own_repair(&self, _now: Timestamp) -> Option<String> {
        let h = self.status.as_ref()?.health.as_ref()?;
        (h.state == DatabaseHealthState::Restoring)
            .then(|| format!("Database {} is restoring from its backup on its own", self.name_any()))
    }

    fn backups(&self) -> Backups {
        if self.spec.backup.is_none() {
            return Backups::NotApplicable;
        }
        let newest = self
            .status
            .as_ref()
            .and_then(|s| s.last_backup.as_ref())
            .map(|b| b.time.0);
        let stores = self.status.as_ref().map(|s| s.stores.as_slice()).unwrap_or_default();
        let declared = self.spec.backup.iter().flat_map(|b| b.all_stores()).any(|s| s.offsite);
        match (declared, newest) {
            (true, newest) => Backups::Offsite {
                newest,
                offsite: super::stores::offsite_newest(stores).1,
            },
            (false, Some(t)) => Backups::At(t),
            (false, None) => Backups::None,
        }
    }

    fn drill_answer(&self, id: &str) -> Option<DrillAnswer> {
        let st = self.status.as_ref()?;
        let last = st
            .last_action
            .as_ref()
            .filter(|a| a.id == id && ActionVerb::parse(&a.action) == Some(ActionVerb::Drill))?;
        let seconds = st
            .last_drill
            .as_ref()
            .map(|d| d.finished.0.duration_since(d.started.0).as_secs_f64());
        let verified = last.outcome == ActionOutcome::Done
            && st
                .last_drill
                .as_ref()
                .is_some_and(|d| d.outcome == RestoreOutcome::Verified);
        Some(DrillAnswer {
            verified,
            message: last.message.clone(),
            seconds,
        })
    }
}
