//! From a Database's spec and its Secrets to what the PostgreSQL work needs:
//! the admin connection, the roles with their passwords, the backup store.

use std::time::Duration;

use kube::ResourceExt;

use crate::runtime::{Context, Error, secrets, validation::Invalid};
use crate::{
    api::Database,
    providers::{
        backup_store::{self, S3Credentials, Store, Stores, Unusable, crypt::Keyring},
        database::{DesiredRole, Password, Target},
    },
};

pub struct Resolved {
    pub target: Target,
    pub roles: Vec<DesiredRole>,
    /// Roles of the spec left unmanaged, and why (another Database on the
    /// same instance manages them too, or they are the admin account).
    pub conflicts: Vec<String>,
    /// Each backup store, in the spec's order, or why it cannot be used now;
    /// empty without `spec.backup`.
    pub stores: Stores,
}

/// The other Databases (in every namespace the operator watches) on the
/// same instance: the same host and port.
fn same_instance(ctx: &Context, db: &Database) -> Vec<Database> {
    let Some(ext) = &db.spec.instance.external else {
        return vec![];
    };
    let instance = |d: &Database| {
        d.spec
            .instance
            .external
            .as_ref()
            .map(|e| (e.host.to_lowercase(), e.port))
    };
    let me = (ext.host.to_lowercase(), ext.port);
    ctx.stores
        .databases
        .state()
        .into_iter()
        .filter_map(|d| d.0.as_ref().ok().cloned())
        .filter(|d| d.uid() != db.uid() && instance(d).as_ref() == Some(&me))
        .collect()
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
    let mut conflicts = vec![];
    let others = same_instance(ctx, db);
    for (i, r) in db.spec.roles.iter().enumerate() {
        if r.name == target.user {
            conflicts.push(format!(
                "spec.roles[{i}]: {:?} is the admin account reprise connects as; reprise leaves it alone",
                r.name
            ));
            continue;
        }
        if let Some(other) = others.iter().find(|o| o.spec.roles.iter().any(|x| x.name == r.name)) {
            conflicts.push(format!(
                "spec.roles[{i}]: role {:?} is also managed by Database {}/{} on the same instance; neither manages it until one lets it go",
                r.name,
                other.namespace().unwrap_or_default(),
                other.name_any()
            ));
            continue;
        }
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
    let mut stores = Stores::default();
    if let Some(b) = &db.spec.backup {
        for (i, spec) in b.all_stores().iter().enumerate() {
            let field = b.field(i);
            if let Err((field, why)) = backup_store::check_spec(spec, &field, &ctx.settings.backup_root) {
                return Ok(Err(Invalid::new(field, why)));
            }
            stores.0.push(open_store(ctx, db, spec, &field).await?);
        }
    }
    Ok(Ok(Resolved {
        target,
        roles,
        conflicts,
        stores,
    }))
}

/// One store with its credentials and keys, or which field keeps it from use.
async fn open_store(
    ctx: &Context,
    db: &Database,
    spec: &crate::api::database::NamedStore,
    field: &str,
) -> Result<Result<Store, Unusable>, Error> {
    let unusable = |field: String, why: String| Unusable {
        name: spec.name.clone(),
        offsite: spec.offsite,
        field,
        why,
    };
    let creds = match &spec.s3 {
        Some(s3) => {
            let field = format!("{field}.s3.credentialsSecretRef");
            let name = &s3.credentials_secret_ref.name;
            let id = key(ctx, db, &field, name, "accessKeyId").await?;
            let secret = key(ctx, db, &field, name, "secretAccessKey").await?;
            match (id, secret) {
                (Ok(access_key_id), Ok(secret_access_key)) => Some(S3Credentials {
                    access_key_id,
                    secret_access_key,
                }),
                (Err(e), _) | (_, Err(e)) => return Ok(Err(unusable(e.field, e.message))),
            }
        }
        None => None,
    };
    let keys = match &spec.encryption {
        Some(enc) => {
            let field = format!("{field}.encryption.keySecretRef");
            let r = &enc.key_secret_ref;
            let who = secrets::Requester {
                kind: "Database",
                name: db.metadata.name.as_deref().unwrap_or_default(),
            };
            let data = match secrets::read(ctx, &db.namespace().unwrap_or_default(), &r.name, who).await? {
                Ok(d) => d,
                Err(why) => return Ok(Err(unusable(field, why))),
            };
            match Keyring::new(&r.name, &r.key, &data) {
                Ok(k) => Some(k),
                Err(why) => return Ok(Err(unusable(field, why))),
            }
        }
        None => None,
    };
    let ns = db.namespace().unwrap_or_default();
    Ok(Store::open(spec, field, creds, keys, &ns, &db.name_any()).map_err(|why| unusable(field.to_string(), why)))
}
