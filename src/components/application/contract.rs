//! The Application as the recovery engine sees it.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    Application,
    application::{AppHealth, DependencyKind},
    common::{ComponentKind, ComponentRef, find_condition, reasons},
    contract::{Component, HealthState, Signal},
};

/// How long after the controller recreated its Deployment the engine lets the pods start.
const OWN_REPAIR_GRACE: i64 = 120;

impl Component for Application {
    crate::component_common!(Application);

    fn health(&self) -> Option<Signal> {
        let st = self.status.as_ref()?;
        let state = st.health?;
        let ready = find_condition(&st.conditions, reasons::READY);
        Some(Signal {
            state: format!("{state:?}"),
            failing: state.is_failure(),
            healthy: state.is_healthy(),
            since: st
                .health_since
                .as_ref()
                .map(|t| t.0)
                .or(ready.map(|r| r.last_transition_time.0))
                .unwrap_or_else(Timestamp::now),
            message: ready.map(|r| r.message.clone()).unwrap_or_default(),
        })
    }

    fn own_repair(&self, now: Timestamp) -> Option<String> {
        let st = self.status.as_ref()?;
        let repair = st.last_repair.as_ref()?;
        let age = now.as_second() - repair.time.0.as_second();
        (repair.action == "Recreated" && age < OWN_REPAIR_GRACE && st.health != Some(AppHealth::Healthy)).then(|| {
            format!(
                "{} {} was recreated {age}s ago; its pods are starting",
                repair.object,
                self.name_any()
            )
        })
    }

    fn depends_on(&self) -> Vec<ComponentRef> {
        self.spec
            .depends_on
            .iter()
            .map(|d| ComponentRef {
                kind: match d.kind {
                    DependencyKind::Database => ComponentKind::Database,
                    DependencyKind::VirtualMachine => ComponentKind::VirtualMachine,
                },
                name: d.name.clone(),
            })
            .collect()
    }
}
