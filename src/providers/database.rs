//! Database engines, as the Database controller sees them: an admin
//! conversation with one instance that keeps databases, roles and grants,
//! measures tables, and dumps and restores databases to and from the backup
//! store. PostgreSQL is the first engine (`postgres::Postgres`); another is
//! one more implementation and one arm where the Database controller opens
//! the conversation (`spec.engine`). The shapes both sides share (where to
//! connect, a role as the spec wants it, a table's measure, why something
//! failed) are defined here.

use std::{fmt, future::Future, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    api::database::{Grant, SslMode},
    providers::backup_store::{BaseRecord, DumpRecord, Store, Upload},
};

/// A password that never shows in logs, Debug output or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Password,
    pub ssl_mode: SslMode,
    /// PEM CA bundle for VerifyCA/VerifyFull (and Require/Prefer, which then verify the CA as libpq does).
    pub ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
}

/// Why a connection or a statement failed. `reason` is a CamelCase word for
/// conditions; `message` never holds a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub reason: &'static str,
    pub message: String,
}

impl EngineError {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A role as the spec wants it, with its password read from its Secret.
#[derive(Clone, Debug)]
pub struct DesiredRole {
    pub name: String,
    pub login: bool,
    pub password: Option<Password>,
    pub grants: Vec<Grant>,
}

/// What a pass changed, what waits, what is left over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Changes made, one sentence each (no secrets).
    pub changes: Vec<String>,
    /// Grants waiting for their database, schema or table.
    pub pending: Vec<String>,
    /// Roles reprise created that left the spec and were kept.
    pub orphans: Vec<String>,
}

/// A table's measure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TableMeasure {
    pub schema: String,
    pub name: String,
    pub rows: i64,
    /// Sum over rows of the first 64 bits of md5(row as text), in decimal.
    pub checksum: String,
    /// Indexes of the table (recorded at backup, to restore the table alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<String>,
    /// Sequences the table owns (serial and identity columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<String>,
}

/// Why a dump or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("backup store: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0}")]
    Tool(String),
    #[error("{0}")]
    Corrupt(String),
    /// The key to decrypt it is missing or wrong.
    #[error("{0}")]
    Key(String),
}

/// What to restore from a dump.
pub enum Scope<'a> {
    /// The whole database, into an empty database of that name.
    Database,
    /// These tables (with their data, constraints, indexes, sequences,
    /// triggers and privileges) into the live database, which lacks them.
    Tables(&'a [TableMeasure]),
}

/// A connection to one database of the instance, for reading its tables.
pub trait DatabaseConn: Send + Sync {
    /// Every table: (schema, name).
    fn tables(&self) -> impl Future<Output = Result<Vec<(String, String)>, EngineError>> + Send;
    /// The rows of `schema.name`.
    fn count(&self, schema: &str, name: &str) -> impl Future<Output = Result<i64, EngineError>> + Send;
    /// Rows and content checksum of `schema.name`.
    fn measure(&self, schema: &str, name: &str) -> impl Future<Output = Result<TableMeasure, EngineError>> + Send;
}

/// A kept connection to an instance, asked often and cheaply whether it
/// still answers and which databases it holds.
pub trait InstanceWatch: Send + Sync {
    /// Which of `names` exist now (sorted).
    fn present(&self, names: &[String]) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    /// Ends when the connection does (the server closed it or the network broke).
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// An admin conversation with one database instance.
pub trait DatabaseEngine: Send + Sync {
    type Conn: DatabaseConn;
    /// The engine's name, for messages (`PostgreSQL`).
    fn name(&self) -> &'static str;
    /// The server's version.
    fn version(&self) -> &str;
    /// What applications connect with, as role `user` to `database`: the
    /// keys of its connection Secret (`host`, `port`, `database`, `user`,
    /// `password`, `uri`, and the engine's own).
    fn connection_details(
        &self,
        target: &Target,
        user: &str,
        password: &str,
        database: &str,
    ) -> Vec<(&'static str, String)>;
    /// A new connection to `database` (not shared: it ends when dropped).
    fn open(&self, database: &str) -> impl Future<Output = Result<Self::Conn, EngineError>> + Send;
    /// The tables of live database `database`: (schema, name).
    fn tables(&self, database: &str) -> impl Future<Output = Result<Vec<(String, String)>, EngineError>> + Send;

    fn database_exists(&self, name: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Creates `name`, owned by `owner` (or the admin).
    fn create_database(&self, name: &str, owner: Option<&str>) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Drops `name` if it exists, ending the sessions on it.
    fn drop_database(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Renames `from` to `to`, ending the sessions on `from`.
    fn rename_database(&self, from: &str, to: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Sets (or, with None, removes) the mark of database `name`, which outlives a crash.
    fn mark_database(&self, name: &str, mark: Option<&str>) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// The databases whose mark starts with `prefix`, with their marks.
    fn databases_marked(&self, prefix: &str)
    -> impl Future<Output = Result<Vec<(String, String)>, EngineError>> + Send;
    /// Gives database `name` to `owner`; returns whether it changed.
    fn ensure_owner(&self, name: &str, owner: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Roles as `roles` says (created, login, password); roles reprise made
    /// for `owner` that left the spec dropped with `prune`, else reported.
    fn ensure_roles(
        &self,
        owner: &str,
        roles: &[DesiredRole],
        prune: bool,
        databases: &[String],
        out: &mut Outcome,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Each role's privileges brought to exactly what it is granted.
    fn ensure_grants(
        &self,
        roles: &[DesiredRole],
        out: &mut Outcome,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Dumps `database` into `out` (one file of a backup, going to each
    /// store), with the `verify` tables measured in the same snapshot.
    fn dump(
        &self,
        out: &mut Upload<'_>,
        database: &str,
        verify: &[(String, String)],
    ) -> impl Future<Output = Result<DumpRecord, DumpError>> + Send;
    /// Takes a physical base backup of the whole instance into `out` (for
    /// point-in-time recovery with the archived WAL).
    fn base_backup(&self, out: &mut Upload<'_>) -> impl Future<Output = Result<BaseRecord, DumpError>> + Send;
    /// Restores dump `rec` of backup `id` into database `into`, all or
    /// nothing; returns the bytes read.
    fn restore(
        &self,
        store: &Store,
        id: &str,
        rec: &DumpRecord,
        into: &str,
        scope: Scope<'_>,
    ) -> impl Future<Output = Result<u64, DumpError>> + Send;
}
