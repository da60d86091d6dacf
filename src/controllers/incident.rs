//! Incident reconciler. This version validates the plan reference and keeps
//! `Ready` in step with the phase; the procedure executor builds on it.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};
use kube::{ResourceExt, core::DeserializeGuard, runtime::controller::Action, runtime::reflector::ObjectRef};

use super::{
    Context, Error,
    status::{with_ready, write_status},
    validation::{Invalid, report_invalid},
};
use crate::api::{Incident, RecoveryPlan, incident::IncidentPhase};

pub fn reconcile(obj: Arc<Incident>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let ns = obj.namespace().unwrap_or_default();
        let plan = ObjectRef::<DeserializeGuard<RecoveryPlan>>::new(&obj.spec.plan_ref.name).within(&ns);
        if ctx.stores.recovery_plans.get(&plan).is_none() {
            let invalid = Invalid::external(
                "spec.planRef",
                format!(
                    "RecoveryPlan {:?} does not exist in namespace {ns:?}",
                    obj.spec.plan_ref.name
                ),
            );
            return report_invalid(&ctx, obj.as_ref(), &invalid).await;
        }
        let phase = obj.status.as_ref().map(|s| s.phase).unwrap_or_default();
        let resolved = phase == IncidentPhase::Resolved;
        let status = with_ready(
            obj.as_ref(),
            resolved,
            &format!("{phase:?}"),
            format!("incident is {phase:?}"),
        );
        write_status(&ctx, obj.as_ref(), &status).await?;
        Ok(Action::await_change())
    }
    .boxed()
}
