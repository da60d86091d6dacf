//! Server reconciler. This version validates the spec and its Secrets; the
//! Redfish work (inventory, power, cabling, reprovisioning) builds on it.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Context, Error,
    validation::{Invalid, check_secret, validated_only},
};
use crate::api::Server;

/// Checks only the operator can make.
pub async fn validate(ctx: &Context, s: &Server) -> Result<Result<(), Invalid>, Error> {
    let ns = s.namespace().unwrap_or_default();
    let bmc = &s.spec.bmc;
    let creds = check_secret(
        ctx,
        &ns,
        "spec.bmc.credentialsSecretRef",
        &bmc.credentials_secret_ref.name,
        &["username", "password"],
    )
    .await?;
    if creds.is_err() {
        return Ok(creds);
    }
    if let Some(ca) = &bmc.ca_bundle_secret_ref {
        return check_secret(ctx, &ns, "spec.bmc.caBundleSecretRef", &ca.name, &[ca.key.as_str()]).await;
    }
    Ok(Ok(()))
}

pub fn reconcile(obj: Arc<Server>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let checked = validate(&ctx, &obj).await?;
        validated_only(
            &ctx,
            obj.as_ref(),
            checked,
            "this version of reprise does not poll BMCs yet",
        )
        .await
    }
    .boxed()
}
