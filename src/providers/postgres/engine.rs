//! PostgreSQL as a `DatabaseEngine`: the admin session, the sessions to each
//! database kept for the rest of a reconcile, and the work of the other
//! modules (accounts, tables, dumps) behind the trait.

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{
    PgError, Sessions, Target, accounts,
    dump::{self, Tools},
    server_version, tables,
};
use crate::{
    api::database::SslMode,
    providers::{
        backup_store::{BaseRecord, DumpRecord, Store, Upload},
        database::{DatabaseConn, DatabaseEngine, DesiredRole, DumpError, Outcome, Scope, TableMeasure},
    },
};

/// An admin conversation with one PostgreSQL instance.
pub struct Postgres {
    tools: Tools,
    target: Target,
    admin: Client,
    version: String,
    version_num: i32,
    sessions: Mutex<Sessions>,
}

impl Postgres {
    /// Connects as the admin to the `postgres` database and reads the version.
    pub async fn connect(target: Target, tools: Tools) -> Result<Self, PgError> {
        let admin = target.connect("postgres").await?;
        let (version, version_num) = server_version(&admin).await?;
        Ok(Self {
            tools,
            sessions: Mutex::new(Sessions::new(target.clone())),
            target,
            admin,
            version,
            version_num,
        })
    }
}

impl DatabaseConn for Client {
    async fn tables(&self) -> Result<Vec<(String, String)>, PgError> {
        tables::list(self).await
    }

    async fn count(&self, schema: &str, name: &str) -> Result<i64, PgError> {
        tables::count(self, schema, name).await
    }

    async fn measure(&self, schema: &str, name: &str) -> Result<TableMeasure, PgError> {
        tables::measure(self, schema, name).await
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// libpq's name of an `sslMode`.
pub fn ssl_mode(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCA => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

impl DatabaseEngine for Postgres {
    type Conn = Client;

    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn connection_details(
        &self,
        target: &Target,
        user: &str,
        password: &str,
        database: &str,
    ) -> Vec<(&'static str, String)> {
        let host = if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        let mode = ssl_mode(target.ssl_mode);
        let uri = format!(
            "postgresql://{}:{}@{host}:{}/{}?sslmode={mode}",
            percent(user),
            percent(password),
            target.port,
            percent(database),
        );
        vec![
            ("host", target.host.clone()),
            ("port", target.port.to_string()),
            ("database", database.to_string()),
            ("user", user.to_string()),
            ("password", password.to_string()),
            ("sslmode", mode.to_string()),
            ("uri", uri),
        ]
    }

    async fn open(&self, database: &str) -> Result<Client, PgError> {
        self.target.connect(database).await
    }

    async fn tables(&self, database: &str) -> Result<Vec<(String, String)>, PgError> {
        let mut sessions = self.sessions.lock().await;
        tables::list(sessions.get(database).await?).await
    }

    async fn database_exists(&self, name: &str) -> Result<bool, PgError> {
        accounts::database_exists(&self.admin, name).await
    }

    async fn create_database(&self, name: &str, owner: Option<&str>) -> Result<(), PgError> {
        accounts::create_database(&self.admin, name, owner).await
    }

    async fn drop_database(&self, name: &str) -> Result<(), PgError> {
        accounts::drop_database(&self.admin, name, self.version_num).await
    }

    async fn rename_database(&self, from: &str, to: &str) -> Result<(), PgError> {
        accounts::rename_database(&self.admin, from, to).await
    }

    async fn mark_database(&self, name: &str, mark: Option<&str>) -> Result<(), PgError> {
        accounts::comment_database(&self.admin, name, mark).await
    }

    async fn databases_marked(&self, prefix: &str) -> Result<Vec<(String, String)>, PgError> {
        accounts::databases_commented(&self.admin, prefix).await
    }

    async fn ensure_owner(&self, name: &str, owner: &str) -> Result<bool, PgError> {
        accounts::ensure_owner(&self.admin, name, owner).await
    }

    async fn ensure_roles(
        &self,
        owner: &str,
        roles: &[DesiredRole],
        prune: bool,
        databases: &[String],
        out: &mut Outcome,
    ) -> Result<(), PgError> {
        let mut sessions = self.sessions.lock().await;
        accounts::ensure_roles(&self.admin, &mut sessions, owner, roles, prune, databases, out).await
    }

    async fn ensure_grants(&self, roles: &[DesiredRole], out: &mut Outcome) -> Result<(), PgError> {
        let mut sessions = self.sessions.lock().await;
        accounts::ensure_grants(&self.admin, &mut sessions, roles, self.version_num, out).await
    }

    async fn dump(
        &self,
        out: &mut Upload<'_>,
        database: &str,
        verify: &[(String, String)],
    ) -> Result<DumpRecord, DumpError> {
        dump::dump(&self.tools, &self.target, out, database, verify).await
    }

    async fn base_backup(&self, out: &mut Upload<'_>) -> Result<BaseRecord, DumpError> {
        super::wal::base_backup(&self.tools, &self.target, out, self.version_num).await
    }

    async fn restore(
        &self,
        store: &Store,
        id: &str,
        rec: &DumpRecord,
        into: &str,
        scope: Scope<'_>,
    ) -> Result<u64, DumpError> {
        dump::restore(&self.tools, &self.target, store, id, rec, into, scope).await
    }
}
