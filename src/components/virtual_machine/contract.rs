//! The VirtualMachine as the recovery engine sees it.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    VirtualMachine,
    contract::{ActionOutcome, ActionVerb, Backups, Component, DrillAnswer, Signal},
    virtual_machine::VmHealthState,
};

impl Component for VirtualMachine {
    crate::component_common!(VirtualMachine);

    fn health(&self) -> Option<Signal> {
        self.status.as_ref()?.health.as_ref().map(Signal::from)
    }

    fn own_repair(&self, _now: Timestamp) -> Option<String> {
        let h = self.status.as_ref()?.health.as_ref()?;
        (h.state == VmHealthState::Restoring)
            .then(|| format!("VirtualMachine {} is restoring a snapshot", self.name_any()))
    }

    fn backups(&self) -> Backups {
        if self.spec.backup.is_none() {
            return Backups::NotApplicable;
        }
        match self
            .status
            .as_ref()
            .and_then(|s| s.last_backup.as_ref())
            .filter(|b| b.ready)
        {
            Some(b) => Backups::At(b.time.0),
            None => Backups::None,
        }
    }

    fn drill_answer(&self, id: &str) -> Option<DrillAnswer> {
        let st = self.status.as_ref()?;
        let last = st
            .last_action
            .as_ref()
            .filter(|a| a.id == id && ActionVerb::parse(&a.action) == Some(ActionVerb::Drill))?;
        let seconds = st.last_drill.as_ref().filter(|d| d.id == id).and_then(|d| d.seconds);
        Some(DrillAnswer {
            verified: last.outcome == ActionOutcome::Done,
            message: last.message.clone(),
            seconds,
        })
    }
}
