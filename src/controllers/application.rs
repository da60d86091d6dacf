//! Application reconciler. This version validates the spec and its
//! dependencies; the Deployment, Service and release work builds on it.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Context, Error, components,
    status::{with_ready, write_status},
    validation::{Invalid, report_invalid},
};
use crate::api::{
    Application,
    application::DependencyKind,
    common::{ComponentKind, reasons},
};

/// Checks only the operator can make (pure: reads the shared stores).
pub fn validate(ctx: &Context, app: &Application) -> Result<(), Invalid> {
    let ns = app.namespace().unwrap_or_default();
    for (i, d) in app.spec.depends_on.iter().enumerate() {
        let kind = match d.kind {
            DependencyKind::Database => ComponentKind::Database,
            DependencyKind::VirtualMachine => ComponentKind::VirtualMachine,
        };
        if !components::exists(&ctx.stores, kind, &ns, &d.name) {
            return Err(Invalid::external(
                format!("spec.dependsOn[{i}]"),
                format!("{kind} {:?} does not exist in namespace {ns:?}", d.name),
            ));
        }
    }
    Ok(())
}

pub fn reconcile(obj: Arc<Application>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        if let Err(invalid) = validate(&ctx, &obj) {
            return report_invalid(&ctx, obj.as_ref(), &invalid).await;
        }
        let status = with_ready(
            obj.as_ref(),
            false,
            reasons::PENDING,
            "spec is valid; this version of reprise does not deploy applications yet",
        );
        write_status(&ctx, obj.as_ref(), &status).await?;
        Ok(Action::await_change())
    }
    .boxed()
}
