//! From a Database's spec and its Secrets to what the PostgreSQL work needs:
//! the admin connection, the roles with their passwords, the backup store.

use std::time::Duration;

use kube::ResourceExt;

use crate::runtime::{Context, Error, secrets, validation::Invalid};
use crate::{
    api::Database,
    providers::{
        backup_store::{self, S3Credentials, Store},
        database::{DesiredRole, Password, Target},
    },
};

pub struct Resolved {
    pub target: Target,
    pub roles: Vec<DesiredRole>,
    /// The backup store, or why it cannot be opened; None without `spec.backup`.
    pub store: Option<Result<Store, String>>,
}

/// One key of a Secret, as text.
async fn key(
    ctx: &Context,
    db: &Database,
    field: &str,
    name: &str,
    key: &str,
) -> Result<Result<String, Invalid>, Error> {
    let ns = db.namespace().unwrap_or_default();
    let who = secrets::Requester {
        kind: "Database",
        name: db.metadata.name.as_deref().unwrap_or_default(),
    };
    let data = match secrets::read(ctx, &ns, name, who).await? {
        Ok(data) => data,
        Err(why) => return Ok(Err(Invalid::external(field, why))),
    };
    Ok(match data.get(key) {
        None => Err(Invalid::external(
            field,
            format!("Secret {name:?} lacks the key {key:?}"),
        )),
        Some(v) => String::from_utf8(v.clone())
            .map_err(|_| Invalid::external(field, format!("key {key:?} of Secret {name:?} is not UTF-8 text"))),
    })
}

macro_rules! tri {
    ($e:expr) => {
        match $e.await? {
            Ok(v) => v,
            Err(invalid) => return Ok(Err(invalid)),
        }
    };
}

pub async fn resolve(ctx: &Context, db: &Database) -> Result<Result<Resolved, Invalid>, Error> {
    let ns = db.namespace().unwrap_or_default();
    let Some(ext) = &db.spec.instance.external else {
        return Ok(Err(Invalid::new("spec.instance", "set external")));
    };
    let admin = &ext.admin_secret_ref.name;
    let field = "spec.instance.external.adminSecretRef";
    let user = tri!(key(ctx, db, field, admin, "username"));
    let password = tri!(key(ctx, db, field, admin, "password"));
    let ca_pem = match &ext.ca_bundle_secret_ref {
        Some(r) => Some(
            tri!(key(
                ctx,
                db,
                "spec.instance.external.caBundleSecretRef",
                &r.name,
                &r.key
            ))
            .into_bytes(),
        ),
        None => None,
    };
    let target = Target {
        host: ext.host.clone(),
        port: ext.port,
        user,
        password: Password(password),
        ssl_mode: ext.ssl_mode,
        ca_pem,
        connect_timeout: ext.connect_timeout.as_std().max(Duration::from_secs(1)),
    };
    let mut roles = vec![];
    for (i, r) in db.spec.roles.iter().enumerate() {
        let password = match &r.password_secret_ref {
            Some(p) => Some(Password(tri!(key(
                ctx,
                db,
                &format!("spec.roles[{i}].passwordSecretRef"),
                &p.name,
                &p.key
            )))),
            None => None,
        };
        roles.push(DesiredRole {
            name: r.name.clone(),
            login: r.login,
            password,
            grants: r.grants.clone(),
        });
    }
    let store = match &db.spec.backup {
        None => None,
        Some(b) => {
            if let Err((field, why)) = backup_store::check_spec(&b.store, &ctx.settings.backup_root) {
                return Ok(Err(Invalid::new(field, why)));
            }
            let creds = match &b.store.s3 {
                Some(s3) => {
                    let field = "spec.backup.store.s3.credentialsSecretRef";
                    let name = &s3.credentials_secret_ref.name;
                    Some(S3Credentials {
                        access_key_id: tri!(key(ctx, db, field, name, "accessKeyId")),
                        secret_access_key: tri!(key(ctx, db, field, name, "secretAccessKey")),
                    })
                }
                None => None,
            };
            Some(Store::open(&b.store, creds, &ns, &db.name_any()))
        }
    };
    Ok(Ok(Resolved { target, roles, store }))
}
