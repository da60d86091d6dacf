//! `reprise run`: the operator process — health endpoints, leader election,
//! controllers, clean shutdown.

use std::{net::SocketAddr, pin::pin, sync::Arc, time::Duration};

use anyhow::Context as _;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::{
    http::{self, Health, Leadership},
    leader::{Ended, LeaderElector, LeaseConfig},
    runtime::runner,
    telemetry::Metrics,
};

/// Options of `reprise run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// Watch only these namespaces (repeat the flag, or separate with
    /// commas; default: all namespaces). Each gets its own watches, so the
    /// operator needs rights in those namespaces only (the chart's
    /// `watchNamespaces`: Roles, no ClusterRole).
    #[arg(long = "namespace", env = "REPRISE_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Who may read /metrics: `none` (anyone who reaches the port) or
    /// `kubernetes` (a bearer token the API server authenticates and allows
    /// `get` on the non-resource URL /metrics; the chart's default).
    #[arg(long, env = "REPRISE_METRICS_AUTH", value_enum, default_value = "none")]
    pub metrics_auth: crate::metrics_auth::Mode,
    /// Address of the /healthz, /readyz and /metrics listener.
    #[arg(long, env = "REPRISE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Serve incident and drill reports (HTML) under /reports on the same
    /// listener, to whoever may `get` the Incident or RecoveryPlan (with
    /// `--metrics-auth kubernetes`; anyone who reaches the port otherwise).
    #[arg(long, env = "REPRISE_REPORTS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub reports: bool,
    /// Elect a leader among replicas with a Lease; only the leader reconciles.
    #[arg(long, env = "REPRISE_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "REPRISE_LEASE_NAME", default_value = "reprise-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else --namespace, else `default`).
    #[arg(long, env = "REPRISE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity in the Lease (default: the pod name, else host name and pid).
    #[arg(long, env = "REPRISE_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps trying to renew before it gives leadership up.
    #[arg(long, default_value_t = 10)]
    pub renew_deadline_seconds: u64,
    /// Seconds between renewals and between a follower's attempts.
    #[arg(long, default_value_t = 2)]
    pub retry_period_seconds: u64,
    /// Seconds between probes of each Database's instance (reachability, data present, accounts).
    #[arg(long, env = "REPRISE_DATABASE_PROBE_SECONDS", default_value_t = 30)]
    pub database_probe_seconds: u64,
    /// Seconds between the cheap looks of a kept connection at each
    /// Database's instance (answers, holds its databases); 0 turns it off.
    #[arg(long, env = "REPRISE_DATABASE_LIVENESS_SECONDS", default_value_t = 1)]
    pub database_liveness_seconds: u64,
    /// Reconciles of one kind in flight at once (Applications aside): those
    /// of Databases, Servers and VMs talk to their peers.
    #[arg(long, env = "REPRISE_RECONCILE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub reconcile_concurrency: u16,
    /// Application reconciles in flight at once. They wait on the API server,
    /// not on CPU: a burst of repairs is done sooner with more.
    #[arg(long, env = "REPRISE_APPLICATION_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub application_concurrency: u16,
    /// Read the events of BMCs that send them (Redfish Server-Sent Events):
    /// a Server's power loss is seen at once, not at its next poll.
    #[arg(long, env = "REPRISE_BMC_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub bmc_events: bool,
    /// Seconds each call to a BMC may take.
    #[arg(long, env = "REPRISE_BMC_TIMEOUT_SECONDS", default_value_t = 10)]
    pub bmc_timeout_seconds: u64,
    /// Seconds a whole conversation with a BMC (a poll, an action) may take;
    /// 0: three times --bmc-timeout-seconds.
    #[arg(long, env = "REPRISE_BMC_CONVERSATION_SECONDS", default_value_t = 0)]
    pub bmc_conversation_seconds: u64,
    /// BMC conversations in flight at most.
    #[arg(long, env = "REPRISE_BMC_CONCURRENCY", default_value_t = 8)]
    pub bmc_concurrency: usize,
    /// The largest response a BMC may send, in bytes (a larger one is not read).
    #[arg(long, env = "REPRISE_BMC_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub bmc_max_body_bytes: usize,
    /// The most members read from one collection of a BMC (NICs, adapters, systems).
    #[arg(long, env = "REPRISE_BMC_MAX_MEMBERS", default_value_t = 64)]
    pub bmc_max_members: usize,
    /// Seconds a VM may take to become ready before the health signal says NotReady.
    #[arg(long, env = "REPRISE_VM_READY_GRACE_SECONDS", default_value_t = 300)]
    pub vm_ready_grace_seconds: u64,
    /// The directory local backup stores must lie under: a Database naming a
    /// path elsewhere is refused (InvalidSpec).
    #[arg(long, env = "REPRISE_BACKUP_ROOT", default_value = "/var/lib/reprise/backups")]
    pub backup_root: std::path::PathBuf,
    /// Directory of pg_dump and pg_restore (default: found on the PATH).
    #[arg(long, env = "REPRISE_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<std::path::PathBuf>,
}

impl RunOptions {
    fn identity(&self) -> String {
        if let Some(i) = &self.identity {
            return i.clone();
        }
        if let Ok(pod) = std::env::var("POD_NAME") {
            return pod;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "reprise".into());
        format!("{}-{}", host.trim(), std::process::id())
    }

    fn lease_config(&self) -> anyhow::Result<LeaseConfig> {
        let ns = self
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| self.namespaces.first().cloned())
            .unwrap_or_else(|| "default".into());
        let mut cfg = LeaseConfig::new(&self.lease_name, &ns, &self.identity());
        cfg.lease_duration = Duration::from_secs(self.lease_duration_seconds);
        cfg.renew_deadline = Duration::from_secs(self.renew_deadline_seconds);
        cfg.retry_period = Duration::from_secs(self.retry_period_seconds);
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
    Ok(())
}

/// Runs the operator until a signal. With leader election, a replica that
/// loses its Lease (no renewal within the renew deadline, or another replica
/// took it) stops every controller at once — nothing more is written — and
/// campaigns again: if nobody took the Lease meanwhile, it leads again as soon
/// as it can renew, instead of leaving the cluster without a leader for a
/// whole lease duration.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone())?;
    let gate = Arc::new(crate::metrics_auth::Gate::new(opts.metrics_auth, client.clone()));
    let reports = opts.reports.then(|| client.clone());
    let (addr, server) = http::serve(
        opts.http_addr,
        health.clone(),
        metrics.clone(),
        gate,
        reports,
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {}", opts.http_addr))?;
    tracing::info!(%addr, namespaces = ?opts.namespaces, "health and metrics endpoints listening");

    let identity = opts.identity();
    let controllers = |term: CancellationToken| {
        runner::run(
            client.clone(),
            metrics.clone(),
            opts.namespaces.clone(),
            identity.clone(),
            settings(&opts),
            health.clone(),
            term,
        )
    };
    if !opts.leader_election {
        health.set_leadership(Leadership::Leader);
        metrics.leader.set(1);
        controllers(shutdown.clone()).await;
    } else {
        let cfg = opts.lease_config()?;
        tracing::info!(lease = %cfg.name, namespace = %cfg.namespace, %identity, "leader election on");
        let mut el = LeaderElector::new(client.clone(), cfg);
        while lead(&mut el, &health, &metrics, &shutdown, &controllers).await {}
        el.release().await;
    }
    shutdown.cancel();
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// One term: waits to lead, runs the controllers while leading. Returns
/// whether to campaign again (leadership was lost, not the process stopped).
async fn lead<F, Fut>(
    el: &mut LeaderElector,
    health: &Health,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    controllers: &F,
) -> bool
where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut announced = false;
    let won = el
        .acquire(shutdown, || {
            health.set_leadership(Leadership::Follower);
            if !announced {
                tracing::info!("another replica leads; waiting");
                announced = true;
            }
        })
        .await;
    if !won {
        return false;
    }
    tracing::info!("leading");
    health.set_leadership(Leadership::Leader);
    metrics.leader.set(1);
    let term = shutdown.child_token();
    let mut running = pin!(controllers(term.clone()));
    let again = tokio::select! {
        _ = &mut running => false,
        ended = el.hold(shutdown) => match ended {
            Ended::Shutdown => {
                // In-flight reconciles finish before the Lease is let go.
                running.await;
                false
            }
            Ended::Lost(why) => {
                tracing::warn!(%why, "lost leadership: every controller stopped at once; campaigning again");
                true
            }
        },
    };
    // Dropped here when leadership was lost: no reconcile writes after this point.
    term.cancel();
    metrics.leader.set(0);
    health.set_caches_synced(false);
    health.set_leadership(Leadership::Follower);
    again
}

fn settings(opts: &RunOptions) -> crate::runtime::Settings {
    crate::runtime::Settings {
        database_probe_interval: std::time::Duration::from_secs(opts.database_probe_seconds.max(1)),
        database_liveness_interval: std::time::Duration::from_secs(opts.database_liveness_seconds),
        bmc_events: opts.bmc_events,
        reconcile_concurrency: opts.reconcile_concurrency,
        application_concurrency: opts.application_concurrency,
        postgres_bin_dir: opts.postgres_bin_dir.clone(),
        bmc_timeout: std::time::Duration::from_secs(opts.bmc_timeout_seconds.max(1)),
        bmc_conversation_timeout: std::time::Duration::from_secs(match opts.bmc_conversation_seconds {
            0 => 3 * opts.bmc_timeout_seconds.max(1),
            s => s,
        }),
        bmc_concurrency: opts.bmc_concurrency,
        bmc_limits: crate::providers::redfish::Limits {
            max_body_bytes: opts.bmc_max_body_bytes.max(64 << 10),
            max_members: opts.bmc_max_members.clamp(1, 10_000),
        },
        vm_ready_grace: std::time::Duration::from_secs(opts.vm_ready_grace_seconds),
        kubevirt_installed: false,
        backup_root: opts.backup_root.clone(),
    }
}
