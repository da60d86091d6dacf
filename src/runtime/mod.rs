//! The shared machinery every controller runs on: one reconciler per kind,
//! all in one process, sharing a [`Context`] and one watch per kind (shared
//! reflector stores); the one way to write status ([`report`]); validation,
//! Secrets, schedules, owned-object apply, Events, and the maintenance holds
//! a component honours ([`holds`]).

pub mod action;
pub mod apply;
pub mod error;
pub mod events;
pub mod fence;
pub mod holds;
pub mod kind;
pub mod kstatus;
pub mod line;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod secrets;
pub mod stores;
pub mod validation;
pub mod wake;

pub use action::Action;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
};
use kube::{
    Client,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::reflector::Store,
};

use crate::{
    api::{Application, Database, Incident, MaintenanceWindow, RecoveryPlan, Server, Site, VirtualMachine},
    telemetry::Metrics,
};

pub use error::Error;

/// Readers of the shared stores, one per kind. Controllers look references
/// up here instead of calling the API server.
#[derive(Clone)]
pub struct Stores {
    pub applications: Store<DeserializeGuard<Application>>,
    pub databases: Store<DeserializeGuard<Database>>,
    pub incidents: Store<DeserializeGuard<Incident>>,
    pub maintenance_windows: Store<DeserializeGuard<MaintenanceWindow>>,
    pub recovery_plans: Store<DeserializeGuard<RecoveryPlan>>,
    pub servers: Store<DeserializeGuard<Server>>,
    pub sites: Store<DeserializeGuard<Site>>,
    pub virtual_machines: Store<DeserializeGuard<VirtualMachine>>,
    /// Deployments and Services reprise owns (label `app.kubernetes.io/managed-by=reprise`).
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    /// Every Secret in scope, metadata only (see `secrets`).
    pub secrets: Store<PartialObjectMeta<Secret>>,
}

impl Stores {
    /// Once every store holds its first full list. Before that a missing
    /// object may be one not listed yet: no decision may rest on its absence.
    /// Only `Context::watch_caches` waits on it (see why there).
    async fn synced(&self) {
        let _ = futures::join!(
            self.applications.wait_until_ready(),
            self.databases.wait_until_ready(),
            self.incidents.wait_until_ready(),
            self.maintenance_windows.wait_until_ready(),
            self.recovery_plans.wait_until_ready(),
            self.servers.wait_until_ready(),
            self.sites.wait_until_ready(),
            self.virtual_machines.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }
}

/// Settings of the controllers that are not per object.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a Database's instance is probed (reachability, databases and
    /// verify tables present, accounts as specified).
    pub database_probe_interval: Duration,
    /// How often a kept connection asks each Database's instance whether it
    /// answers and holds its databases (zero: no kept connection).
    pub database_liveness_interval: Duration,
    /// Where pg_dump and pg_restore are (unset: the PATH).
    pub postgres_bin_dir: Option<std::path::PathBuf>,
    /// Reconciles of one kind at once (per namespace set), Applications aside.
    pub reconcile_concurrency: u16,
    /// Application reconciles at once.
    pub application_concurrency: u16,
    /// Whether BMCs' events are read where they send them.
    pub bmc_events: bool,
    /// Timeout of each call to a BMC.
    pub bmc_timeout: Duration,
    /// Deadline of a whole conversation with a BMC (a poll, an action).
    pub bmc_conversation_timeout: Duration,
    /// BMC conversations in flight at most.
    pub bmc_concurrency: usize,
    /// What a BMC may make reprise read (body size, collection members).
    pub bmc_limits: crate::providers::redfish::Limits,
    /// How long a VM may take to become ready before it counts as failed.
    pub vm_ready_grace: Duration,
    /// Whether KubeVirt's CRDs were there when reprise started (found, not configured).
    pub kubevirt_installed: bool,
    /// The directory local backup stores must lie under.
    pub backup_root: std::path::PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_probe_interval: Duration::from_secs(30),
            database_liveness_interval: Duration::from_secs(1),
            postgres_bin_dir: None,
            reconcile_concurrency: 16,
            application_concurrency: 64,
            bmc_events: true,
            bmc_timeout: Duration::from_secs(10),
            bmc_conversation_timeout: Duration::from_secs(30),
            bmc_concurrency: 8,
            bmc_limits: Default::default(),
            vm_ready_grace: Duration::from_secs(300),
            kubevirt_installed: false,
            backup_root: "/var/lib/reprise/backups".into(),
        }
    }
}

/// What every reconciler shares.
pub struct Context {
    /// True once every store of `stores` has listed once (see `caches_synced`).
    caches: tokio::sync::watch::Sender<bool>,
    pub client: Client,
    pub recorder: events::Recorder,
    pub metrics: Arc<Metrics>,
    /// The namespace the operator is limited to, if any.
    pub namespace: Option<String>,
    pub stores: Stores,
    /// HTTP client for what specs name on the network: artifacts (checked
    /// against their sha256) and provisioning images (checked before a BMC
    /// is asked to boot from them).
    pub http: reqwest::Client,
    /// HTTP client for webhooks (responders, a site's traffic step):
    /// bounded times, no redirect followed.
    pub webhook: reqwest::Client,
    /// Consecutive failures per object, for per-object backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The last status written per object uid, with the resourceVersion the
    /// write produced: a reconcile that runs before the watch delivers that
    /// version must not write the same status again.
    pub(crate) written: Mutex<HashMap<String, (u64, serde_json::Value)>>,
    /// Secret data by `ns/name`, with the resourceVersion it was read at.
    pub(crate) secret_cache: Mutex<HashMap<String, secrets::Cached>>,
    /// Owned Deployments and Services seen deleted lately.
    pub deletions: Arc<apply::Deletions>,
    /// Owned Secrets reprise applied, by `ns/name`: resourceVersion and content fingerprint.
    pub(crate) applied: Mutex<HashMap<String, (String, String)>>,
    /// Objects the operator cannot read, by uid: the generation whose status
    /// says so (reported once per generation, not once per watch event).
    pub(crate) malformed: Mutex<HashMap<String, i64>>,
    pub settings: Settings,
    /// Slots for BMC conversations (see `Settings::bmc_concurrency`).
    pub bmc_lanes: BmcLanes,
    /// Failures seen on the watch, until their incident is opened.
    pub seen: crate::recovery::detection::Seen,
    /// Deliveries to responders, apart from the reconciles.
    pub notifier: crate::recovery::notify::Notifier,
    /// Whether this site may act, per namespace (see `fence`).
    pub fence: Arc<fence::Fence>,
    /// Tasks kept per object apart from its reconciles (see `wake`).
    pub kept: wake::Kept,
    /// How those tasks ask for a reconcile.
    pub wakes: wake::Wakes,
}

/// Slots for BMC conversations: BMCs whose last conversation ran out of
/// time wait in a lane of their own (a quarter of the slots), so that slow
/// BMCs can never take every slot from the healthy ones.
pub struct BmcLanes {
    pub normal: tokio::sync::Semaphore,
    pub slow: tokio::sync::Semaphore,
    slow_keys: Mutex<std::collections::HashSet<String>>,
}

impl BmcLanes {
    pub fn new(concurrency: usize) -> Self {
        Self {
            normal: tokio::sync::Semaphore::new(concurrency.max(1)),
            slow: tokio::sync::Semaphore::new((concurrency / 4).max(1)),
            slow_keys: Mutex::new(Default::default()),
        }
    }

    pub fn is_slow(&self, key: &str) -> bool {
        self.slow_keys.lock().unwrap_or_else(|p| p.into_inner()).contains(key)
    }

    pub fn set_slow(&self, key: &str, slow: bool) {
        let mut keys = self.slow_keys.lock().unwrap_or_else(|p| p.into_inner());
        if slow {
            keys.insert(key.to_string());
        } else {
            keys.remove(key);
        }
    }
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        namespace: Option<String>,
        stores: Stores,
        instance: String,
        settings: Settings,
        deletions: Arc<apply::Deletions>,
    ) -> Self {
        let webhook = crate::providers::webhook::client();
        Self {
            recorder: events::Recorder::new(client.clone(), "reprise", &instance),
            client,
            metrics,
            namespace,
            stores,
            http: crate::providers::artifacts::client(Duration::from_secs(300)),
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            secret_cache: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            deletions,
            malformed: Mutex::new(HashMap::new()),
            bmc_lanes: BmcLanes::new(settings.bmc_concurrency),
            seen: crate::recovery::detection::Seen::default(),
            notifier: crate::recovery::notify::Notifier::start(webhook.clone()),
            webhook,
            fence: Default::default(),
            kept: Default::default(),
            wakes: Default::default(),
            settings,
            caches: tokio::sync::watch::channel(false).0,
        }
    }

    /// Watches the stores until each has listed once, then says so to every
    /// `caches_synced` waiter. kube-runtime's `wait_until_ready` wakes only
    /// the last task that polled it (a oneshot receiver behind a mutex), and
    /// each kind's controller polls it too, on every trigger: a task that
    /// only waits to be woken may never be (an operator of two namespaces
    /// stayed unready for a minute in a full run). So it looks again every
    /// 100 ms; a look at a store that has listed answers at once.
    pub async fn watch_caches(&self) {
        while tokio::time::timeout(Duration::from_millis(100), self.stores.synced())
            .await
            .is_err()
        {}
        self.caches.send_replace(true);
    }

    /// Once every store has listed once.
    pub async fn caches_synced(&self) {
        let mut rx = self.caches.subscribe();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Backoff for an object whose reconcile failed: 1s, 2s, 4s … up to 5 minutes.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300))
    }

    /// Forgets the failures of an object once it reconciles.
    pub fn succeeded(&self, key: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(key);
    }
}
