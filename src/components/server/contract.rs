//! The Server as the recovery engine sees it.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use super::power;
use crate::api::{
    Server,
    contract::{Component, Signal},
};

impl Component for Server {
    crate::component_common!(Server);

    fn health(&self) -> Option<Signal> {
        self.status.as_ref()?.health.as_ref().map(Signal::from)
    }

    fn own_repair(&self, now: Timestamp) -> Option<String> {
        let p = self.status.as_ref()?.power_request.as_ref()?;
        power::ours_pending(Some(p), now).then(|| {
            format!(
                "Server {}'s controller asked its BMC for {} {}s ago",
                self.name_any(),
                p.reset_type,
                now.as_second() - p.time.0.as_second()
            )
        })
    }

    fn unable(&self, verb: crate::api::contract::ActionVerb) -> Option<String> {
        (verb == crate::api::contract::ActionVerb::Reprovision && self.spec.provisioning.is_none()).then(|| {
            format!(
                "Server {:?} has no spec.provisioning.image to reprovision from",
                self.name_any()
            )
        })
    }

    /// What a technician needs: model, serial, BMC health, the failed parts.
    fn responder_details(&self) -> serde_json::Value {
        let Some(st) = &self.status else {
            return serde_json::Value::Null;
        };
        let inv = st.inventory.clone().unwrap_or_default();
        let failed: Vec<String> = inv
            .network_adapters
            .iter()
            .filter(|a| a.health.as_deref().is_some_and(|h| h != "OK"))
            .map(|a| format!("network adapter {} ({})", a.id, a.health.as_deref().unwrap_or_default()))
            .chain(
                inv.nics
                    .iter()
                    .filter(|n| n.link_status.as_deref() == Some("LinkDown"))
                    .map(|n| format!("NIC {} link down", n.name)),
            )
            .collect();
        json!({
            "manufacturer": inv.manufacturer,
            "model": inv.model,
            "serialNumber": inv.serial,
            "bmcHealth": st.bmc_health,
            "powerState": st.power_state,
            "failedParts": failed,
        })
    }
}
