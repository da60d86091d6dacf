//! VirtualMachine reconciler. This version validates the spec and its host
//! reference; the KubeVirt provider builds on it.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Context, Error, components,
    status::{with_ready, write_status},
    validation::{Invalid, check_cron, report_invalid},
};
use crate::api::{
    VirtualMachine,
    common::{ComponentKind, reasons},
};

/// Checks only the operator can make (pure: reads the shared stores).
pub fn validate(ctx: &Context, vm: &VirtualMachine) -> Result<(), Invalid> {
    let ns = vm.namespace().unwrap_or_default();
    if let Some(b) = &vm.spec.backup {
        check_cron("spec.backup.schedule", &b.schedule)?;
    }
    if let Some(host) = &vm.spec.host_ref
        && !components::exists(&ctx.stores, ComponentKind::Server, &ns, &host.name)
    {
        return Err(Invalid::external(
            "spec.hostRef",
            format!("Server {:?} does not exist in namespace {ns:?}", host.name),
        ));
    }
    Ok(())
}

pub fn reconcile(obj: Arc<VirtualMachine>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        if let Err(invalid) = validate(&ctx, &obj) {
            return report_invalid(&ctx, obj.as_ref(), &invalid).await;
        }
        let status = with_ready(
            obj.as_ref(),
            false,
            reasons::PENDING,
            "spec is valid; this version of reprise does not drive KubeVirt yet",
        );
        write_status(&ctx, obj.as_ref(), &status).await?;
        Ok(Action::await_change())
    }
    .boxed()
}
