//! Logging (tracing) and the Prometheus metrics every controller shares.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing_subscriber::{EnvFilter, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber. Level from `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            let ansi = std::io::stdout().is_terminal();
            registry
                .with(tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi))
                .init()
        }
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .init(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: String,
    pub what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    pub kind: String,
    pub object: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    pub level: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabels {
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabels {
    pub namespace: String,
    pub plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLevelLabels {
    pub namespace: String,
    pub plan: String,
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub namespace: String,
    pub name: String,
    pub store: String,
    pub offsite: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabels {
    pub site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub site: String,
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteRoleLabels {
    pub site: String,
    pub role: String,
}

/// The operator's metrics, registered once and shared by every controller.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    /// Objects waiting for their reconcile, by kind.
    pub queue_depth: Family<KindLabels, Gauge>,
    /// How long an object waited in line for its reconcile, by kind.
    pub queue_wait: Family<KindLabels, Histogram>,
    pub malformed_objects: Family<KindLabels, Counter>,
    /// Writes the operator made to the API server, by kind and what was written.
    pub writes: Family<WriteLabels, Counter>,
    /// Owned objects put back after a deletion or a change by hand.
    pub repairs: Family<RepairLabels, Counter>,
    pub leader: Gauge,
    /// Unix time of each Database's newest good backup (`time() - x` is the RPO now).
    pub database_last_backup: Family<ObjectLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Backups run, by outcome (`Succeeded`, `Failed`).
    pub database_backups: Family<OutcomeLabels, Counter>,
    /// Restores run, by outcome (`Verified`, `VerificationFailed`, `Failed`).
    pub database_restores: Family<OutcomeLabels, Counter>,
    /// Bytes written to backup stores.
    pub database_backup_bytes: Counter,
    /// Incidents ended, by level, component kind and outcome (`Resolved`, `Breached`).
    pub incidents: Family<IncidentLabels, Counter>,
    /// Time from detection to resolution, by level.
    pub recovery_duration: Family<LevelLabels, Histogram>,
    /// Incidents whose deadline passed before resolution, by level.
    pub deadline_breaches: Family<LevelLabels, Counter>,
    /// Incidents open now, by level.
    pub open_incidents: Family<LevelLabels, Gauge>,
    /// 1 for the local site's role now (`Active`, `Standby`, `Demoted`, `Fenced`), 0 for the others.
    pub site_role: Family<SiteRoleLabels, Gauge>,
    /// Seconds since the lease holder last renewed it, by holder (at the last reading).
    pub site_lease_age: Family<SiteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The newest epoch the local site saw in the witness.
    pub site_epoch: Family<SiteLabels, Gauge>,
    pub site_replicated_rpo: Family<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Open incidents past their deadline, by level.
    pub open_incidents_breached: Family<LevelLabels, Gauge>,
    /// Each plan level's maximum window (none for an open-ended level).
    pub level_window: Family<PlanLevelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while a plan's level can meet its objectives, 0 otherwise.
    pub level_ready: Family<PlanLevelLabels, Gauge>,
    /// The RPO a covered Database's level sets, in seconds.
    pub database_rpo_target: Family<ObjectLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Unix time of the newest copy each backup store of a Database holds.
    pub store_last_copy: Family<StoreLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Unix time the plan's last drill started; its end (0 while it runs).
    pub drill_started: Family<PlanLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub drill_finished: Family<PlanLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 when the plan's last finished drill met the window of every level it drilled, 0 otherwise.
    pub drill_verified: Family<PlanLabels, Gauge>,
    /// Unix time the plan's next scheduled drill is due.
    pub drill_next_due: Family<PlanLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The last drill's measured recovery time per level, in seconds.
    pub drill_level_seconds: Family<PlanLevelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The plans whose series are published, with their levels (to remove them when a plan goes).
    pub plans_published: std::sync::Mutex<std::collections::HashMap<(String, String), Vec<u8>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("reprise");
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
        });
        let queue_depth = Family::<KindLabels, Gauge>::default();
        let queue_wait = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.01, 0.1, 1.0, 5.0, 30.0, 120.0, 600.0])
        });
        registry.register(
            "queue_depth",
            "Objects waiting in line for their reconcile, by kind",
            queue_depth.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time an object waited in line before its reconcile started, by kind",
            queue_wait.clone(),
        );
        let malformed_objects = Family::<KindLabels, Counter>::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::default();
        let repairs = Family::<RepairLabels, Counter>::default();
        registry.register(
            "repairs",
            "Owned objects recreated or reverted, by owner kind, object kind and action",
            repairs.clone(),
        );
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, by kind",
            reconcile_duration.clone(),
        );
        registry.register(
            "malformed_objects",
            "Objects that could not be read into their kind's type",
            malformed_objects.clone(),
        );
        registry.register(
            "api_writes",
            "Writes made to the API server, by kind and target",
            writes.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        let database_last_backup = Family::default();
        registry.register(
            "database_last_backup_timestamp_seconds",
            "Unix time of each Database's newest good backup",
            database_last_backup.clone(),
        );
        let database_backups = Family::default();
        registry.register(
            "database_backups",
            "Database backups run, by outcome",
            database_backups.clone(),
        );
        let database_restores = Family::default();
        registry.register(
            "database_restores",
            "Database restores run, by outcome",
            database_restores.clone(),
        );
        let database_backup_bytes = Counter::default();
        registry.register(
            "database_backup_bytes",
            "Bytes written to backup stores",
            database_backup_bytes.clone(),
        );
        let incidents = Family::default();
        registry.register(
            "incidents",
            "Incidents ended, by level, kind and outcome",
            incidents.clone(),
        );
        let recovery_duration = Family::<LevelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 2700.0, 3600.0, 7200.0])
        });
        registry.register(
            "recovery_duration_seconds",
            "Time from detection to resolution, by level",
            recovery_duration.clone(),
        );
        let deadline_breaches = Family::default();
        registry.register(
            "deadline_breaches",
            "Incidents not resolved by their deadline, by level",
            deadline_breaches.clone(),
        );
        let open_incidents = Family::default();
        registry.register("open_incidents", "Incidents open now, by level", open_incidents.clone());
        let site_role = Family::default();
        registry.register(
            "site_role",
            "1 for the local site's role now, by site and role",
            site_role.clone(),
        );
        let site_lease_age = Family::default();
        registry.register(
            "site_lease_age_seconds",
            "Seconds since the lease holder last renewed the lease, at the last reading",
            site_lease_age.clone(),
        );
        let site_epoch = Family::default();
        registry.register(
            "site_epoch",
            "The newest epoch the local site saw in the witness",
            site_epoch.clone(),
        );
        let site_replicated_rpo = Family::default();
        registry.register(
            "site_replicated_rpo_seconds",
            "On a standby: seconds between its last measure and the newest point of a component's data it can read off site (newest backup or archived WAL)",
            site_replicated_rpo.clone(),
        );
        let open_incidents_breached = Family::<LevelLabels, Gauge>::default();
        registry.register(
            "open_incidents_breached",
            "Open incidents past their deadline, by level",
            open_incidents_breached.clone(),
        );
        let level_window = Family::default();
        registry.register(
            "plan_level_window_seconds",
            "A plan level's maximum intervention window (the incident deadline), in seconds",
            level_window.clone(),
        );
        let level_ready = Family::<PlanLevelLabels, Gauge>::default();
        registry.register(
            "plan_level_ready",
            "1 while a plan's level can meet its objectives now (status.readiness), 0 otherwise",
            level_ready.clone(),
        );
        let database_rpo_target = Family::default();
        registry.register(
            "database_rpo_target_seconds",
            "The RPO the covering plan's level sets for a Database, in seconds",
            database_rpo_target.clone(),
        );
        let store_last_copy = Family::default();
        registry.register(
            "backup_store_last_copy_timestamp_seconds",
            "Unix time of the data of the newest copy each backup store of a Database holds",
            store_last_copy.clone(),
        );
        let drill_started = Family::default();
        registry.register(
            "drill_last_started_timestamp_seconds",
            "Unix time the plan's last drill started",
            drill_started.clone(),
        );
        let drill_finished = Family::default();
        registry.register(
            "drill_last_finished_timestamp_seconds",
            "Unix time the plan's last drill ended (0 while it runs)",
            drill_finished.clone(),
        );
        let drill_verified = Family::<PlanLabels, Gauge>::default();
        registry.register(
            "drill_last_verified",
            "1 when the plan's last finished drill met the window of every level it drilled, 0 otherwise",
            drill_verified.clone(),
        );
        let drill_next_due = Family::default();
        registry.register(
            "drill_next_due_timestamp_seconds",
            "Unix time the plan's next scheduled drill is due",
            drill_next_due.clone(),
        );
        let drill_level_seconds = Family::default();
        registry.register(
            "drill_level_measured_seconds",
            "The plan's last drill: measured recovery time per level, in seconds",
            drill_level_seconds.clone(),
        );
        Self {
            plans_published: Default::default(),
            open_incidents_breached,
            level_window,
            level_ready,
            database_rpo_target,
            store_last_copy,
            drill_started,
            drill_finished,
            drill_verified,
            drill_next_due,
            drill_level_seconds,
            site_role,
            site_lease_age,
            site_epoch,
            site_replicated_rpo,
            incidents,
            recovery_duration,
            deadline_breaches,
            open_incidents,
            database_last_backup,
            database_backups,
            database_restores,
            database_backup_bytes,
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            queue_depth,
            queue_wait,
            malformed_objects,
            writes,
            repairs,
            leader,
        }
    }
}

/// A time as a gauge holds it: Unix seconds, to the millisecond.
pub fn unix_seconds(t: k8s_openapi::jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl Metrics {
    pub fn reconciled(&self, kind: &str, took: Duration) {
        let labels = KindLabels { kind: kind.to_string() };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &str, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                error: error.into(),
            })
            .inc();
    }

    pub fn wrote(&self, kind: &str, what: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                what: what.into(),
            })
            .inc();
    }

    pub fn repaired(&self, kind: &str, object: &str, action: &str) {
        self.repairs
            .get_or_create(&RepairLabels {
                kind: kind.into(),
                object: object.into(),
                action: action.into(),
            })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
