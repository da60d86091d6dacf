//! Accounts and access: the databases of the spec with their owners, the
//! roles with their passwords, and each role's privileges brought to exactly
//! what the spec grants (granted when missing, revoked when extra). Roles
//! reprise creates carry a comment naming the Database object, so roles that
//! leave the spec are known (reported, or dropped with `prune`).

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::{Client, error::SqlState};

pub use crate::providers::database::{DesiredRole, Outcome};

use super::{AUTHENTICATION_FAILED, Password, PgError, Sessions, Target, ident, literal, qualified, scram};
use crate::api::database::Privilege;

/// The comment that marks a role as created by reprise for one Database object.
pub fn mark(owner: &str) -> String {
    format!("managed by reprise for Database {owner}")
}

/// Creates or updates each role: LOGIN as specified, the password from its
/// Secret (sent as a SCRAM verifier, compared without logging in when the
/// admin may read `pg_authid`), then drops or reports roles that left the spec.
pub async fn ensure_roles(
    admin: &Client,
    sessions: &mut Sessions,
    owner: &str,
    roles: &[DesiredRole],
    prune: bool,
    databases: &[String],
    out: &mut Outcome,
) -> Result<(), PgError> {
    let marker = mark(owner);
    for role in roles {
        let verifier_readable = match admin
            .query_opt(
                "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1",
                &[&role.name],
            )
            .await
        {
            Ok(row) => Some(row.map(|r| (r.get::<_, bool>(0), r.get::<_, Option<String>>(1)))),
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => None,
            Err(e) => return Err(e.into()),
        };
        let existing = match verifier_readable {
            Some(row) => row.map(|(login, stored)| (login, Some(stored))),
            None => admin
                .query_opt("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", &[&role.name])
                .await?
                .map(|r| (r.get::<_, bool>(0), None)),
        };
        let login = if role.login { "LOGIN" } else { "NOLOGIN" };
        match existing {
            None => {
                let password = role
                    .password
                    .as_ref()
                    .map(|p| format!(" PASSWORD {}", literal(&scram::verifier(&p.0))))
                    .unwrap_or_default();
                admin
                    .batch_execute(&format!("CREATE ROLE {} {login}{password}", ident(&role.name)))
                    .await?;
                admin
                    .batch_execute(&format!(
                        "COMMENT ON ROLE {} IS {}",
                        ident(&role.name),
                        literal(&marker)
                    ))
                    .await?;
                out.changes.push(format!("created role {}", role.name));
            }
            Some((can_login, stored)) => {
                if can_login != role.login {
                    admin
                        .batch_execute(&format!("ALTER ROLE {} {login}", ident(&role.name)))
                        .await?;
                    out.changes.push(format!("role {} is now {login}", role.name));
                }
                if let Some(p) = &role.password {
                    let current = match stored {
                        Some(stored) => stored.as_deref().is_some_and(|s| scram::matches(s, &p.0)),
                        None => password_works(sessions.target(), &role.name, p).await,
                    };
                    if !current {
                        admin
                            .batch_execute(&format!(
                                "ALTER ROLE {} PASSWORD {}",
                                ident(&role.name),
                                literal(&scram::verifier(&p.0))
                            ))
                            .await?;
                        out.changes
                            .push(format!("set the password of role {} from its Secret", role.name));
                    }
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    let marked = admin
        .query(
            "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = $1 ORDER BY rolname",
            &[&marker],
        )
        .await?;
    for row in marked {
        let name: String = row.get(0);
        if wanted.contains(name.as_str()) {
            continue;
        }
        if !prune {
            out.orphans.push(name);
            continue;
        }
        // Objects the role owns go to the admin; its privileges go with DROP OWNED (per database).
        for db in databases {
            if database_exists(admin, db).await? {
                let c = sessions.get(db).await?;
                c.batch_execute(&format!(
                    "REASSIGN OWNED BY {r} TO CURRENT_USER; DROP OWNED BY {r}",
                    r = ident(&name)
                ))
                .await?;
            }
        }
        admin
            .batch_execute(&format!(
                "REASSIGN OWNED BY {r} TO CURRENT_USER; DROP OWNED BY {r}; DROP ROLE {r}",
                r = ident(&name)
            ))
            .await?;
        out.changes
            .push(format!("dropped role {name} (no longer in spec.roles)"));
    }
    Ok(())
}

/// Whether `role` logs in with `password` (used when `pg_authid` is not readable).
async fn password_works(target: &Target, role: &str, password: &Password) -> bool {
    let as_role = Target {
        user: role.into(),
        password: password.clone(),
        ..target.clone()
    };
    match as_role.connect("postgres").await {
        Ok(_) => true,
        // Refused after authentication (no CONNECT, pg_hba): the password is fine.
        Err(e) => e.reason != AUTHENTICATION_FAILED,
    }
}

pub async fn database_exists(admin: &Client, name: &str) -> Result<bool, PgError> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some())
}

/// Creates `name` (owned by `owner`, or the admin).
pub async fn create_database(admin: &Client, name: &str, owner: Option<&str>) -> Result<(), PgError> {
    let owner = owner.map(|o| format!(" OWNER {}", ident(o))).unwrap_or_default();
    admin
        .batch_execute(&format!("CREATE DATABASE {}{owner}", ident(name)))
        .await?;
    Ok(())
}

/// Drops `name` if it exists; `WITH (FORCE)` (PostgreSQL 13+) ends the sessions still on it.
pub async fn drop_database(admin: &Client, name: &str, version_num: i32) -> Result<(), PgError> {
    let force = if version_num >= 130000 { " WITH (FORCE)" } else { "" };
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}{force}", ident(name)))
        .await?;
    Ok(())
}

/// Renames database `from` to `to`, ending the sessions on `from` first
/// (PostgreSQL renames only a database nobody is connected to); a client that
/// connects again in between is ended again, a few times.
pub async fn rename_database(admin: &Client, from: &str, to: &str) -> Result<(), PgError> {
    let mut tries = 0;
    loop {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&from],
            )
            .await?;
        match admin
            .batch_execute(&format!("ALTER DATABASE {} RENAME TO {}", ident(from), ident(to)))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && tries < 10 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets (or, with None, removes) the comment of database `name`.
pub async fn comment_database(admin: &Client, name: &str, comment: Option<&str>) -> Result<(), PgError> {
    let value = comment.map(literal).unwrap_or_else(|| "NULL".into());
    admin
        .batch_execute(&format!("COMMENT ON DATABASE {} IS {value}", ident(name)))
        .await?;
    Ok(())
}

/// The databases whose comment starts with `prefix`, with their comments.
pub async fn databases_commented(admin: &Client, prefix: &str) -> Result<Vec<(String, String)>, PgError> {
    let rows = admin
        .query(
            "SELECT d.datname, s.description FROM pg_database d JOIN pg_shdescription s \
             ON s.objoid = d.oid AND s.classoid = 'pg_database'::regclass WHERE starts_with(s.description, $1)",
            &[&prefix],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Gives `name` to `owner` when someone else owns it. Returns whether it changed.
pub async fn ensure_owner(admin: &Client, name: &str, owner: &str) -> Result<bool, PgError> {
    let row = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await?;
    if row.get::<_, String>(0) == owner {
        return Ok(false);
    }
    admin
        .batch_execute(&format!("ALTER DATABASE {} OWNER TO {}", ident(name), ident(owner)))
        .await?;
    Ok(true)
}

/// An object privileges are granted on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Object {
    Database(String),
    Schema(String),
    Table(String, String),
    Sequence(String, String),
}

impl Object {
    fn sql(&self) -> String {
        match self {
            Object::Database(d) => format!("DATABASE {}", ident(d)),
            Object::Schema(s) => format!("SCHEMA {}", ident(s)),
            Object::Table(s, t) => format!("TABLE {}", qualified(s, t)),
            Object::Sequence(s, q) => format!("SEQUENCE {}", qualified(s, q)),
        }
    }
    fn describe(&self, db: &str) -> String {
        match self {
            Object::Database(d) => format!("database {d}"),
            Object::Schema(s) => format!("schema {db}.{s}"),
            Object::Table(s, t) => format!("table {db}.{s}.{t}"),
            Object::Sequence(s, q) => format!("sequence {db}.{s}.{q}"),
        }
    }
}

/// Privileges: object, role → privilege names as PostgreSQL spells them.
type Privileges = BTreeMap<(Object, String), BTreeSet<String>>;

const TABLE_BASE: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

fn table_all(version_num: i32) -> Vec<&'static str> {
    let mut all = vec![
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
    ];
    if version_num >= 170000 {
        all.push("MAINTAIN");
    }
    all
}

/// The objects of one database, with their owners.
#[derive(Default)]
struct Catalog {
    database_owner: String,
    schemas: BTreeMap<String, String>,
    tables: BTreeMap<(String, String), String>,
    /// Sequences owned by a table (serial and identity columns), with their owners.
    sequences: BTreeMap<(String, String), Vec<(String, String)>>,
}

/// Records a wanted privilege: object, role, privileges, the object's owner.
type Add<'a> = dyn FnMut(Object, &str, &[&str], Option<&String>) + 'a;

/// What the spec grants in `db`, with grants on missing objects set aside as pending.
fn desired(db: &str, roles: &[DesiredRole], cat: &Catalog, version_num: i32, pending: &mut Vec<String>) -> Privileges {
    let mut want: Privileges = BTreeMap::new();
    let mut add = |obj: Object, role: &str, privs: &[&str], owner: Option<&String>| {
        if owner.is_some_and(|o| o == role) {
            return; // owners hold every privilege already
        }
        want.entry((obj, role.to_string()))
            .or_default()
            .extend(privs.iter().map(|p| p.to_string()));
    };
    for role in roles {
        for g in role.grants.iter().filter(|g| g.database == db) {
            let schema_owner = cat.schemas.get(&g.schema);
            let tables: Vec<(String, Option<&String>)> = match &g.tables {
                Some(ts) => ts
                    .iter()
                    .map(|t| (t.clone(), cat.tables.get(&(g.schema.clone(), t.clone()))))
                    .collect(),
                None => cat
                    .tables
                    .iter()
                    .filter(|((s, _), _)| *s == g.schema)
                    .map(|((_, t), o)| (t.clone(), Some(o)))
                    .collect(),
            };
            let on_tables = |privs: &[&str], add: &mut Add<'_>, pending: &mut Vec<String>| {
                if schema_owner.is_none() && g.tables.is_some() {
                    pending.push(format!(
                        "{}: {} on schema {db}.{} (it does not exist yet)",
                        role.name,
                        privs.join(", "),
                        g.schema
                    ));
                    return;
                }
                for (t, owner) in &tables {
                    match owner {
                        Some(o) => {
                            add(Object::Table(g.schema.clone(), t.clone()), &role.name, privs, Some(o));
                            // Inserting into a serial or identity column takes the sequence's next value.
                            let seq_privs: &[&str] = if privs.contains(&"TRUNCATE") {
                                &["USAGE", "SELECT", "UPDATE"]
                            } else if privs.contains(&"INSERT") {
                                &["USAGE"]
                            } else {
                                &[]
                            };
                            if !seq_privs.is_empty() {
                                let owned = cat.sequences.get(&(g.schema.clone(), t.clone()));
                                for (q, q_owner) in owned.into_iter().flatten() {
                                    add(
                                        Object::Sequence(g.schema.clone(), q.clone()),
                                        &role.name,
                                        seq_privs,
                                        Some(q_owner),
                                    );
                                }
                            }
                        }
                        None => pending.push(format!(
                            "{}: {} on table {db}.{}.{t} (it does not exist yet)",
                            role.name,
                            privs.join(", "),
                            g.schema
                        )),
                    }
                }
            };
            for p in &g.privileges {
                match p {
                    Privilege::Connect => add(
                        Object::Database(db.into()),
                        &role.name,
                        &["CONNECT"],
                        Some(&cat.database_owner),
                    ),
                    Privilege::Usage => match schema_owner {
                        Some(o) => add(Object::Schema(g.schema.clone()), &role.name, &["USAGE"], Some(o)),
                        None => pending.push(format!(
                            "{}: USAGE on schema {db}.{} (it does not exist yet)",
                            role.name, g.schema
                        )),
                    },
                    Privilege::Select | Privilege::Insert | Privilege::Update | Privilege::Delete => {
                        let name = TABLE_BASE[*p as usize - Privilege::Select as usize];
                        on_tables(&[name], &mut add, pending);
                    }
                    Privilege::All => {
                        if g.tables.is_none() {
                            add(
                                Object::Database(db.into()),
                                &role.name,
                                &["CONNECT", "CREATE", "TEMPORARY"],
                                Some(&cat.database_owner),
                            );
                            if let Some(o) = schema_owner {
                                add(
                                    Object::Schema(g.schema.clone()),
                                    &role.name,
                                    &["USAGE", "CREATE"],
                                    Some(o),
                                );
                            }
                        }
                        on_tables(&table_all(version_num), &mut add, pending);
                    }
                }
            }
        }
    }
    want
}

/// Brings the privileges of `roles` in every database their grants name to
/// exactly what the grants say.
pub async fn ensure_grants(
    admin: &Client,
    sessions: &mut Sessions,
    roles: &[DesiredRole],
    version_num: i32,
    out: &mut Outcome,
) -> Result<(), PgError> {
    let names: Vec<String> = roles.iter().map(|r| r.name.clone()).collect();
    let dbs: BTreeSet<&str> = roles
        .iter()
        .flat_map(|r| r.grants.iter().map(|g| g.database.as_str()))
        .collect();
    for db in dbs {
        if !database_exists(admin, db).await? {
            out.pending
                .push(format!("grants on database {db} (it does not exist yet)"));
            continue;
        }
        let conn = sessions.get(db).await?;
        let (cat, have) = current(admin, conn, db, &names).await?;
        let want = desired(db, roles, &cat, version_num, &mut out.pending);
        let keys: BTreeSet<&(Object, String)> = want.keys().chain(have.keys()).collect();
        for key in keys {
            let (obj, role) = key;
            let empty = BTreeSet::new();
            let w = want.get(key).unwrap_or(&empty);
            let h = have.get(key).unwrap_or(&empty);
            let grant: Vec<&str> = w.difference(h).map(String::as_str).collect();
            let revoke: Vec<&str> = h.difference(w).map(String::as_str).collect();
            let run_on = if matches!(obj, Object::Database(_)) {
                admin
            } else {
                conn
            };
            if !grant.is_empty() {
                run_on
                    .batch_execute(&format!(
                        "GRANT {} ON {} TO {}",
                        grant.join(", "),
                        obj.sql(),
                        ident(role)
                    ))
                    .await?;
                out.changes.push(format!(
                    "granted {} on {} to {role}",
                    grant.join(", "),
                    obj.describe(db)
                ));
            }
            if !revoke.is_empty() {
                run_on
                    .batch_execute(&format!(
                        "REVOKE {} ON {} FROM {}",
                        revoke.join(", "),
                        obj.sql(),
                        ident(role)
                    ))
                    .await?;
                out.changes.push(format!(
                    "revoked {} on {} from {role}",
                    revoke.join(", "),
                    obj.describe(db)
                ));
            }
        }
    }
    Ok(())
}

/// The objects of `db` and the privileges `roles` hold on them (owners' own excluded).
async fn current(admin: &Client, conn: &Client, db: &str, roles: &[String]) -> Result<(Catalog, Privileges), PgError> {
    let mut cat = Catalog::default();
    let mut have: Privileges = BTreeMap::new();
    let row = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .await?;
    cat.database_owner = row.get(0);
    for r in admin
        .query(
            "SELECT g.rolname, a.privilege_type FROM pg_database d \
             CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
             JOIN pg_roles g ON g.oid = a.grantee \
             WHERE d.datname = $1 AND g.rolname = ANY($2) AND a.grantee <> d.datdba",
            &[&db, &roles],
        )
        .await?
    {
        have.entry((Object::Database(db.into()), r.get(0)))
            .or_default()
            .insert(r.get(1));
    }
    const USER_SCHEMAS: &str = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";
    for r in conn
        .query(
            &format!("SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE {USER_SCHEMAS}"),
            &[],
        )
        .await?
    {
        cat.schemas.insert(r.get(0), r.get(1));
    }
    for r in conn
        .query(
            &format!(
                "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS}"
            ),
            &[],
        )
        .await?
    {
        cat.tables.insert((r.get(0), r.get(1)), r.get(2));
    }
    for r in conn
        .query(
            &format!(
                "SELECT n.nspname, t.relname, s.relname, pg_get_userbyid(s.relowner) FROM pg_depend d \
                 JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
                 JOIN pg_class t ON t.oid = d.refobjid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
                 AND d.deptype IN ('a', 'i') AND {USER_SCHEMAS}"
            ),
            &[],
        )
        .await?
    {
        cat.sequences
            .entry((r.get(0), r.get(1)))
            .or_default()
            .push((r.get(2), r.get(3)));
    }
    for r in conn
        .query(
            &format!(
                "SELECT n.nspname, g.rolname, a.privilege_type FROM pg_namespace n \
                 CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a \
                 JOIN pg_roles g ON g.oid = a.grantee \
                 WHERE {USER_SCHEMAS} AND g.rolname = ANY($1) AND a.grantee <> n.nspowner"
            ),
            &[&roles],
        )
        .await?
    {
        have.entry((Object::Schema(r.get(0)), r.get(1)))
            .or_default()
            .insert(r.get(2));
    }
    for r in conn
        .query(
            &format!(
                "SELECT n.nspname, c.relname, g.rolname, a.privilege_type, c.relkind = 'S' FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, \
                     acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a \
                 JOIN pg_roles g ON g.oid = a.grantee \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS} \
                 AND g.rolname = ANY($1) AND a.grantee <> c.relowner"
            ),
            &[&roles],
        )
        .await?
    {
        let object = if r.get::<_, bool>(4) {
            Object::Sequence(r.get(0), r.get(1))
        } else {
            Object::Table(r.get(0), r.get(1))
        };
        have.entry((object, r.get(2))).or_default().insert(r.get(3));
    }
    Ok((cat, have))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::database::Grant;

    fn grant(json: serde_json::Value) -> Grant {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn grants_expand_to_privileges_and_missing_tables_wait() {
        let roles = vec![DesiredRole {
            name: "reporting".into(),
            login: true,
            password: None,
            grants: vec![
                grant(serde_json::json!({"database": "shop", "privileges": ["Connect"]})),
                grant(serde_json::json!({"database": "shop", "privileges": ["Usage"]})),
                grant(
                    serde_json::json!({"database": "shop", "tables": ["orders", "invoices"], "privileges": ["Select", "Delete"]}),
                ),
            ],
        }];
        let mut cat = Catalog {
            database_owner: "admin".into(),
            ..Default::default()
        };
        cat.schemas.insert("public".into(), "admin".into());
        cat.tables.insert(("public".into(), "orders".into()), "admin".into());
        let mut pending = vec![];
        let want = desired("shop", &roles, &cat, 150000, &mut pending);
        let get = |o: Object| {
            want.get(&(o, "reporting".to_string()))
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(get(Object::Database("shop".into())), ["CONNECT"]);
        assert_eq!(get(Object::Schema("public".into())), ["USAGE"]);
        assert_eq!(
            get(Object::Table("public".into(), "orders".into())),
            ["DELETE", "SELECT"]
        );
        assert_eq!(pending.len(), 2, "{pending:?}");
        assert!(pending[0].contains("shop.public.invoices"), "{pending:?}");
    }

    #[test]
    fn owners_get_no_explicit_grants() {
        let roles = vec![DesiredRole {
            name: "shop_admin".into(),
            login: true,
            password: None,
            grants: vec![grant(serde_json::json!({"database": "shop", "privileges": ["All"]}))],
        }];
        let mut cat = Catalog {
            database_owner: "shop_admin".into(),
            ..Default::default()
        };
        cat.schemas.insert("public".into(), "pg_database_owner".into());
        cat.tables
            .insert(("public".into(), "orders".into()), "shop_admin".into());
        cat.tables.insert(("public".into(), "legacy".into()), "postgres".into());
        let want = desired("shop", &roles, &cat, 150000, &mut vec![]);
        let objects: Vec<&Object> = want.keys().map(|(o, _)| o).collect();
        assert_eq!(
            objects,
            [
                &Object::Schema("public".into()),
                &Object::Table("public".into(), "legacy".into())
            ]
        );
    }
}
