//! The Application as the recovery engine sees it.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    Application,
    application::{AppHealth, DependencyKind},
    common::{ActionRecord, ComponentKind, ComponentRef, find_condition, reasons},
    contract::{ACTION_ANNOTATION, Component, HealthState, Request, Signal},
};

/// How long after the controller recreated its Deployment the engine lets the pods start.
const OWN_REPAIR_GRACE: i64 = 120;

impl Component for Application {
    fn reference(&self) -> ComponentRef {
        ComponentRef {
            kind: ComponentKind::Application,
            name: self.name_any(),
        }
    }

    fn labels(&self) -> &BTreeMap<String, String> {
        ResourceExt::labels(self)
    }

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

    fn pending_request(&self) -> Option<Request> {
        Request::parse(self.annotations().get(ACTION_ANNOTATION)?)
    }

    fn last_action(&self) -> Option<&ActionRecord> {
        self.status.as_ref()?.last_action.as_ref()
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
