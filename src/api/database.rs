//! Database: PostgreSQL accounts, access, backups and verified restores.
//! The plan's "gestion des comptes", "accès et gestion des bases de données", level 1.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{Condition, Duration, Retention, SecretKeyRef, SecretRef},
    server::default_true,
};

/// A PostgreSQL database: its databases, accounts and grants, scheduled
/// backups with a manifest of what they hold, and restores verified against it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "Database",
    namespaced,
    doc = "A PostgreSQL database: accounts and grants, scheduled backups, verified restores.",
    status = "DatabaseStatus",
    shortname = "rdb",
    category = "reprise",
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine"),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.lastBackup.time"),
    printcolumn(name = "RPO(s)", type_ = "integer", json_path = ".status.rpoSeconds"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Database engine. Cannot change once set.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.engine is immutable"))]
    pub engine: Engine,
    /// Where the database server runs.
    pub instance: Instance,
    /// Databases that must exist on the instance.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub databases: Vec<DatabaseEntry>,
    /// Accounts (roles) with their grants; a connection Secret is written for each login role.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub roles: Vec<Role>,
    /// Drop roles that were removed from `roles`. Off: they are only reported.
    #[serde(default)]
    pub prune: bool,
    /// Scheduled backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<DatabaseBackupSpec>,
    /// Tables whose row counts and checksums are recorded at backup and checked after a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
}

/// Database engines.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Engine {
    #[default]
    PostgreSQL,
}

/// Where the database server runs: exactly one of the kinds of instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external)").message("spec.instance: set external (managed instances come later)"))]
pub struct Instance {
    /// A server run outside reprise, reached over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalInstance>,
}

/// A database server reached over the network.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalInstance {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Secret with keys `username` and `password` of an administrator account.
    pub admin_secret_ref: SecretRef,
    /// TLS mode, as libpq names them.
    #[serde(default)]
    pub ssl_mode: SslMode,
    /// CA bundle (PEM) for `VerifyCA` and `VerifyFull`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// How long to wait for a connection (a duration).
    #[serde(default = "default_connect_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("connectTimeout must be at least 1s"))]
    pub connect_timeout: Duration,
}

fn default_port() -> u16 {
    5432
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// TLS modes, as libpq's sslmode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCA,
    VerifyFull,
}

/// A database on the instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseEntry {
    /// Database name (not `postgres` nor `template*`: the server's own).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    #[x_kube(validation = Rule::new("self != 'postgres' && !self.startsWith('template')").message("postgres and template* are the server's own databases; reprise does not manage them"))]
    pub name: String,
    /// Role that owns it (one of `roles`, or an existing role); unset: the admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub owner: Option<String>,
}

/// An account on the instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.login || has(self.passwordSecretRef)").message("spec.roles[]: a login role needs passwordSecretRef"))]
pub struct Role {
    /// Role name: lower-case letters, digits and `_`, as PostgreSQL folds
    /// unquoted names; not `postgres` nor `pg_*` (the server's own).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    #[x_kube(validation = Rule::new("self != 'postgres' && !self.startsWith('pg_')").message("postgres and pg_* are the server's own roles; reprise does not manage them"))]
    pub name: String,
    /// Whether the role may log in.
    #[serde(default = "default_true")]
    pub login: bool,
    /// The Secret key holding the role's password; when it changes, the role's password follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// What the role may do.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub grants: Vec<Grant>,
}

/// Privileges of a role on a database, a schema, or tables of a schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tables) || self.privileges.all(p, p in ['Select', 'Insert', 'Update', 'Delete', 'All'])").message("spec.roles[].grants[].privileges: only Select, Insert, Update, Delete or All apply to tables"))]
pub struct Grant {
    /// Database the grant applies to.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub database: String,
    /// Schema inside it.
    #[serde(default = "default_schema")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub schema: String,
    /// Tables of the schema; unset: every table of the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))
    )]
    pub tables: Option<Vec<String>>,
    /// Privileges granted.
    #[schemars(length(min = 1, max = 8))]
    pub privileges: Vec<Privilege>,
}

pub(crate) fn default_schema() -> String {
    "public".into()
}

/// PostgreSQL privileges.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum Privilege {
    Connect,
    Usage,
    Select,
    Insert,
    Update,
    Delete,
    All,
}

/// Scheduled backups of a database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.store) != (has(self.stores) && size(self.stores) > 0)").message("spec.backup: set stores (or the older single store), one of the two"))]
pub struct DatabaseBackupSpec {
    /// Cron schedule (5 fields, UTC), e.g. `0 */6 * * *`.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// How many backups to keep, and for how long.
    #[serde(default)]
    pub retention: Retention,
    /// Where backups are stored: every backup, its dumps and its manifest, goes
    /// to each store, in order; a restore takes the newest backup that verifies,
    /// from the first store that holds it. Name at least one store `offsite` for
    /// backups that survive the loss of the site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub stores: Vec<NamedStore>,
    /// Continuous archiving of the instance's write-ahead log to every store,
    /// for point-in-time restores: reprise streams it with `pg_receivewal`
    /// through a replication slot of its own, and takes a base backup
    /// (`pg_basebackup`) with each scheduled backup. The admin account needs
    /// the REPLICATION attribute and a `replication` line in pg_hba.conf;
    /// the server keeps WAL for the slot while reprise is not reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalSpec>,
    /// A single store, as before `stores` existed: it is the store named
    /// `default`, neither off-site, locked nor encrypted. Prefer `stores`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<BackupStore>,
}

/// Continuous WAL archiving.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalSpec {
    /// The physical replication slot reprise streams from (created when
    /// missing); unset: `reprise_<namespace>_<name>`, shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9_]+$"))]
    pub slot: Option<String>,
    /// How often the segment being written is copied to the stores (a duration).
    #[serde(default = "default_wal_upload")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("uploadInterval must be between 1s and 1h"))]
    pub upload_interval: Duration,
}

fn default_wal_upload() -> Duration {
    Duration::from_secs(2)
}

/// Annotation naming the point a requested restore (`reprise.dev/action:
/// restore/<id>`) goes back to: an RFC 3339 time, or `latest`. With it every
/// database of the spec is restored from the base backup and archived WAL to
/// that point and replaces the live one (crash-safe: staged, verified, swapped).
pub const RESTORE_TO_ANNOTATION: &str = "reprise.dev/restore-to";

/// The name `spec.backup.store` goes by among the stores.
pub const DEFAULT_STORE: &str = "default";

impl DatabaseBackupSpec {
    /// Every store, in order, `store` as the one named `default`.
    pub fn all_stores(&self) -> Vec<NamedStore> {
        let legacy = self.store.iter().map(|s| NamedStore {
            name: DEFAULT_STORE.into(),
            offsite: false,
            local: s.local.clone(),
            s3: s.s3.clone(),
            object_lock: None,
            encryption: None,
        });
        self.stores.iter().cloned().chain(legacy).collect()
    }

    /// The field path of store `i` of [`Self::all_stores`].
    pub fn field(&self, i: usize) -> String {
        if self.stores.is_empty() {
            "spec.backup.store".into()
        } else {
            format!("spec.backup.stores[{i}]")
        }
    }
}

/// One of the stores every backup goes to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.local) != has(self.s3)").message("spec.backup.stores[]: set exactly one of local, s3"))]
#[x_kube(validation = Rule::new("!has(self.objectLock) || has(self.s3)").message("spec.backup.stores[].objectLock: only an s3 store can lock its objects"))]
pub struct NamedStore {
    /// The store's name, as status, Events and restores name it.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Whether the store is in another failure domain than the site (another
    /// building, region or provider): the RecoveryPlan counts the newest
    /// off-site copy against each level's RPO.
    #[serde(default)]
    pub offsite: bool,
    /// A directory on the operator's filesystem (a mounted volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalStore>,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Store>,
    /// Write every object with a retention the store enforces (S3 Object
    /// Lock): nobody, reprise included, can delete it before its time. The
    /// bucket must have Object Lock enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
    /// Encrypt dumps client-side (age, X25519) before they leave the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// S3 Object Lock retention for every object reprise writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLock {
    /// `Compliance`: no one can shorten or remove the retention.
    /// `Governance`: users with a special permission can.
    pub mode: LockMode,
    /// Days each object is kept from when it is written.
    #[schemars(range(min = 1, max = 36500))]
    pub days: u32,
}

/// S3 Object Lock modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LockMode {
    Compliance,
    Governance,
}

impl LockMode {
    /// The mode as S3 names it.
    pub fn as_s3(self) -> &'static str {
        match self {
            Self::Compliance => "COMPLIANCE",
            Self::Governance => "GOVERNANCE",
        }
    }
}

/// Client-side encryption of a store's dumps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// The key new backups are encrypted to: an age X25519 identity
    /// (`AGE-SECRET-KEY-1...`) under this key of the Secret. Every other key
    /// of the Secret holding an identity still decrypts older backups: rotate
    /// by adding a key and pointing here, keep the old one while its backups
    /// are kept.
    pub key_secret_ref: SecretKeyRef,
}

/// A backup store: exactly one location.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.local) != has(self.s3)").message("spec.backup.store: set exactly one of local, s3"))]
pub struct BackupStore {
    /// A directory on the operator's filesystem (a mounted volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalStore>,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Store>,
}

/// A local directory store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalStore {
    /// Absolute path of the directory, under the operator's backup directory
    /// (its `--backup-root`; the chart's `databases.backups.mountPath`).
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^/.*$"))]
    #[x_kube(validation = Rule::new("!self.split('/').exists(p, p == '.' || p == '..')").message("path must not contain . or .. segments"))]
    pub path: String,
}

/// An S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Store {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint URL for S3-compatible stores (http or https); unset: AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("endpoint must be an http or https URL with a host"))]
    pub endpoint: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret with keys `accessKeyId` and `secretAccessKey`.
    pub credentials_secret_ref: SecretRef,
}

/// Tables checked after every restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Tables whose row count and content checksum must match the backup's manifest.
    #[schemars(length(min = 1, max = 64))]
    pub tables: Vec<VerifyTable>,
}

/// A table to verify.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyTable {
    /// Database holding the table.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub database: String,
    /// Schema of the table.
    #[serde(default = "default_schema")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub schema: String,
    /// Table name, e.g. `orders`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub name: String,
}

/// Annotation asking for a backup outside the schedule: any new value
/// (e.g. a timestamp) runs one. The engine uses `reprise.dev/action: backup/<id>`.
pub const BACKUP_NOW_ANNOTATION: &str = "reprise.dev/backup-now";

/// Observed state of a Database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Reachable`, `AccountsReady`, `BackupsHealthy`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Version the server reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The health signal the recovery engine reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<DatabaseHealth>,
    /// Roles reprise created that are no longer in `spec.roles` (kept because `spec.prune` is off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphan_roles: Vec<String>,
    /// Grants waiting for their schema or table to exist, as `role: PRIVILEGES on object`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_grants: Vec<String>,
    /// The newest good backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRecord>,
    /// When the last backup was attempted, good or not (the schedule counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_attempt: Option<Time>,
    /// The last value of the `reprise.dev/backup-now` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_now: Option<String>,
    /// Seconds between the newest good backup and the last status update: the
    /// data a restore would lose. Refreshed with every status write and at
    /// least every 5 minutes; the metric `reprise_database_last_backup_timestamp_seconds`
    /// is always current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<i64>,
    /// Continuous WAL archiving: how far the stores hold the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalStatus>,
    /// Each store of `spec.backup`: its newest copy and how old it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreStatus>,
    /// The last restore, automatic or asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<RestoreRecord>,
    /// A restore under way (set before it starts, cleared when it is recorded
    /// in `lastRestore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_in_progress: Option<RestoreInProgress>,
    /// The last drill: the newest backup that verifies restored into scratch
    /// databases, verified against its manifest, then dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<RestoreRecord>,
    /// The last recovery action asked through the `reprise.dev/action` annotation:
    /// `reconnect` (probe the instance now), `backup` (back up now), `restore`
    /// (restore each database that is gone, or each verify table that is gone, from
    /// the newest backup that verifies; a database that is present is never overwritten)
    /// or `drill` (restore into scratch databases, verify, drop them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<super::common::ActionRecord>,
}

/// WAL archiving as status sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalStatus {
    /// Whether pg_receivewal streams now.
    pub streaming: bool,
    /// Why not, or the last error.
    #[serde(default)]
    pub message: String,
    /// The replication slot.
    pub slot: String,
    /// The newest WAL position every usable store holds (e.g. `0/3000148`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_lsn: Option<String>,
    /// When the server had written no further than `archivedLsn`: a restore
    /// now would lose at most what was written after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<MicroTime>,
    /// Complete WAL segments copied to the stores since the operator started.
    #[serde(default)]
    pub segments: u64,
}

/// A backup store as status sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// The store's name in `spec.backup.stores`.
    pub name: String,
    /// Whether it is off-site.
    #[serde(default)]
    pub offsite: bool,
    /// Whether its newest copy is the newest backup and its last write worked.
    pub healthy: bool,
    /// Why not, or what happened last.
    #[serde(default)]
    pub message: String,
    /// The newest backup this store holds: bytes and SHA-256 of the objects
    /// as stored (encrypted, when the store encrypts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_copy: Option<BackupRecord>,
    /// Seconds between that backup's data and the last status update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<i64>,
    /// The encryption key the newest copy is encrypted to, as
    /// `<secret key>:<age recipient>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Until when the store refuses to delete the newest copy (Object Lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<Time>,
}

/// What the recovery engine reads to know whether a database failed.
///
/// - `Healthy`: the instance answers, every database and verify table exists.
/// - `Unreachable`: the instance does not answer or refuses reprise's login
///   (`message` says why; the `Reachable` condition carries the reason).
/// - `DataMissing`: a database or a verify table is gone; a restore follows
///   when a backup holds it.
/// - `Restoring`: a restore is under way.
/// - `RestoreFailed`: no backup could be restored and verified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DatabaseHealthState {
    Healthy,
    Unreachable,
    DataMissing,
    Restoring,
    RestoreFailed,
}

impl super::contract::HealthState for DatabaseHealthState {
    fn is_failure(self) -> bool {
        !self.is_healthy()
    }
    fn is_healthy(self) -> bool {
        self == Self::Healthy
    }
}

/// The health signal, with when it last changed.
pub type DatabaseHealth = super::contract::Health<DatabaseHealthState>;

/// A backup as recorded in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Backup id in the store.
    pub id: String,
    /// When the backup started: the moment its data is from.
    pub time: Time,
    /// How long it took (a duration).
    pub duration: String,
    /// Total size in bytes.
    pub bytes: u64,
    /// One file per database.
    #[serde(default)]
    pub files: Vec<BackupFileRecord>,
}

/// One database's dump in a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFileRecord {
    /// Database dumped.
    pub database: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// How a restore (or a drill's restore into scratch copies) ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestoreOutcome {
    /// Every table of the backup is back with its row count, and every verify
    /// table matches the backup's manifest.
    Verified,
    /// Restored, but a table differs from the backup.
    VerificationFailed,
    Failed,
}

/// A restore and its verification.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRecord {
    /// `Verified` (every table of the backup is back with its row count, every
    /// verify table matches the manifest), `VerificationFailed` or `Failed`.
    pub outcome: RestoreOutcome,
    /// What was restored: `database shop` or `table shop.public.orders`, one per line.
    pub targets: Vec<String>,
    /// When the failure was first observed.
    pub failure_observed: MicroTime,
    /// When the restore started.
    pub started: MicroTime,
    /// When it finished.
    pub finished: MicroTime,
    /// How long it took (a duration).
    pub duration: String,
    /// The backup used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// When that backup's data is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_time: Option<Time>,
    /// The store it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// For a point-in-time restore: the point asked for (`latest` or a
    /// time), and the last transaction the recovery replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_to: Option<MicroTime>,
    /// Bytes of backup read into the database.
    #[serde(default)]
    pub bytes_restored: u64,
    /// Seconds of data lost: from the backup's time to the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss_window_seconds: Option<i64>,
    /// Newer backups passed over, and why (e.g. a checksum that does not match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_backups: Vec<String>,
    /// Each verify table: expected and found.
    #[serde(default)]
    pub verification: Vec<TableVerification>,
    /// Every table the backup holds, checked after the restore for presence
    /// and row count (a partly restored database never reads as verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents_checked: Option<ContentsCheck>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub message: String,
}

impl RestoreRecord {
    /// The moment the restored data is from: the last transaction a
    /// point-in-time restore replayed, else the backup's time.
    pub fn point(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.recovered_to
            .as_ref()
            .map(|t| t.0)
            .or(self.backup_time.as_ref().map(|t| t.0))
    }
}

/// The check of every table a backup holds, after a restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContentsCheck {
    /// Tables checked.
    pub tables: u32,
    /// Rows found in them, in all.
    pub rows: i64,
    /// Tables missing or with another row count than the backup's, as
    /// `database.schema.table: found N rows, backup M` (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<String>,
}

/// A restore under way, written before it starts: an operator that takes over
/// after a crash finishes, redoes or verifies it from here (and from the
/// marker on the staging database), never from scratch blindly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreInProgress {
    /// What is being restored: `database shop` or `table shop.public.orders`.
    pub targets: Vec<String>,
    /// The backup each database is restored from, as `database: backup id`.
    pub backups: Vec<String>,
    /// When the failure was first observed.
    pub failure_observed: MicroTime,
    /// When the restore started.
    pub started: MicroTime,
    /// The `reprise.dev/action` request it answers, if one asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// One verify table after a restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableVerification {
    /// `database.schema.table`.
    pub table: String,
    /// Row count in the backup's manifest.
    pub expected_rows: i64,
    /// Row count found after the restore.
    pub rows: i64,
    /// Whether the content checksum matches the manifest's.
    pub checksum_matches: bool,
}
