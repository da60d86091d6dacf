//! Database reconciler. This version validates the spec and its Secrets; the
//! PostgreSQL work (accounts, backups, restores) builds on it.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Context, Error,
    validation::{Invalid, check_cron, check_secret, validated_only},
};
use crate::api::Database;

/// Checks that need no API call.
pub fn validate_spec(db: &Database) -> Result<(), Invalid> {
    if let Some(b) = &db.spec.backup {
        check_cron("spec.backup.schedule", &b.schedule)?;
    }
    if let Some(v) = &db.spec.verify {
        for (i, t) in v.tables.iter().enumerate() {
            if !db.spec.databases.iter().any(|d| d.name == t.database) {
                return Err(Invalid::new(
                    format!("spec.verify.tables[{i}].database"),
                    format!("{:?} is not one of spec.databases", t.database),
                ));
            }
        }
    }
    Ok(())
}

/// Every check, Secrets included.
pub async fn validate(ctx: &Context, db: &Database) -> Result<Result<(), Invalid>, Error> {
    if let Err(e) = validate_spec(db) {
        return Ok(Err(e));
    }
    let ns = db.namespace().unwrap_or_default();
    if let Some(ext) = &db.spec.instance.external {
        let r = check_secret(
            ctx,
            &ns,
            "spec.instance.external.adminSecretRef",
            &ext.admin_secret_ref.name,
            &["username", "password"],
        )
        .await?;
        if r.is_err() {
            return Ok(r);
        }
    }
    for (i, role) in db.spec.roles.iter().enumerate() {
        if let Some(p) = &role.password_secret_ref {
            let field = format!("spec.roles[{i}].passwordSecretRef");
            let r = check_secret(ctx, &ns, &field, &p.name, &[p.key.as_str()]).await?;
            if r.is_err() {
                return Ok(r);
            }
        }
    }
    Ok(Ok(()))
}

pub fn reconcile(obj: Arc<Database>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let checked = validate(&ctx, &obj).await?;
        validated_only(
            &ctx,
            obj.as_ref(),
            checked,
            "this version of reprise does not connect to PostgreSQL yet",
        )
        .await
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_tables_must_be_in_declared_databases() {
        let db: Database = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Database",
            "metadata": {"name": "d"},
            "spec": {
                "instance": {"external": {"host": "db", "adminSecretRef": {"name": "a"}}},
                "databases": [{"name": "shop"}],
                "verify": {"tables": [{"database": "shop", "name": "orders"}, {"database": "crm", "name": "x"}]}
            }
        }))
        .unwrap();
        let e = validate_spec(&db).unwrap_err();
        assert_eq!(e.field, "spec.verify.tables[1].database");
    }
}
