//! VirtualMachine reconciler. This version validates the spec and its host
//! reference; the KubeVirt provider builds on it.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Context, Error, components,
    validation::{Invalid, check_cron, validated_only},
};
use crate::api::{VirtualMachine, common::ComponentKind};

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
        let checked = validate(&ctx, &obj);
        validated_only(
            &ctx,
            obj.as_ref(),
            checked,
            "this version of reprise does not drive KubeVirt yet",
        )
        .await
    }
    .boxed()
}
