//! Starts one shared watch per kind and one Controller per kind on top of them.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action as Look, Config as ControllerConfig},
        events::EventType,
        reflector::{self, ObjectRef, Store, store::Writer},
        utils::Backoff,
        watcher,
    },
};
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Action, Context, Error, Settings, Stores, kind::Kind, line::Line};
use crate::{
    api::{
        self, Application, Database, Incident, MaintenanceWindow, RecoveryPlan, Server, Site, VirtualMachine,
        contract::Component,
    },
    components,
    http::Health,
    recovery,
    telemetry::{KindLabels, Metrics},
};

/// A reconcile function of one kind.
pub type ReconcileFn<K> = fn(Arc<K>, Arc<Context>) -> BoxFuture<'static, Result<Action, Error>>;

/// Watch backoff: 200 ms doubling to 3 s, with jitter. kube-runtime's default
/// climbs to 30 s and more, which leaves the operator blind for that long
/// after an API server restart.
pub struct FastBackoff {
    next: Duration,
}

impl Default for FastBackoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(200),
        }
    }
}

impl Iterator for FastBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(3));
        Some(current + current.mul_f64(crate::leader::rand_fraction() * 0.2))
    }
}

impl Backoff for FastBackoff {
    fn reset(&mut self) {
        self.next = Duration::from_millis(200);
    }
}

/// The Api of `T` in the operator's namespace, or in all namespaces.
fn scoped_api<T>(client: &Client, namespace: Option<&str>) -> Api<T>
where
    T: Resource<Scope = kube::core::NamespaceResourceScope>,
    T::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Waits until the API server serves every reprise kind (a CRD appears in
/// discovery once established). Discovery needs no rights beyond being
/// authenticated, so a namespaced install needs no ClusterRole for it.
/// Logs what it waits for; never exits: the CRDs may come after the operator.
async fn await_crds(client: &Client, shutdown: &CancellationToken) -> bool {
    let crds = api::crds();
    let group = crds.first().map(|c| c.spec.group.clone()).unwrap_or_default();
    let plurals: Vec<&str> = crds.iter().map(|c| c.spec.names.plural.as_str()).collect();
    let mut logged = false;
    loop {
        let missing = missing(client, &group, &plurals).await;
        if missing.is_empty() {
            return true;
        }
        if !logged {
            tracing::warn!(?missing, %group, "waiting for the CRDs to be installed and established");
            logged = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// What no cache needs: an object's managedFields (about half of what a
/// cached Deployment weighs). reprise never reads them; its writes are
/// server-side applies, which the API server merges with its own copy.
fn lean<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
}

/// One shared watch: its store reader and the writer its driver feeds.
struct Shared<K: Kind> {
    reader: Store<DeserializeGuard<K>>,
    writer: Writer<DeserializeGuard<K>>,
}

impl<K: Kind> Shared<K> {
    fn new() -> Self {
        let (reader, writer) = reflector::store_shared(256);
        Self { reader, writer }
    }

    fn subscribe(&self) -> impl futures::Stream<Item = Arc<DeserializeGuard<K>>> + Send + 'static {
        self.writer.subscribe().expect("a shared store always has subscribers")
    }

    /// The task that runs the watch and feeds the store and subscribers.
    /// `deleted` hears of every deletion: shared streams carry only applied
    /// objects, and a deleted component changes what plans cover.
    fn drive(self, client: &Client, namespace: Option<&str>, deleted: Option<Deletions>) -> BoxFuture<'static, ()> {
        let stream = watcher(
            scoped_api::<DeserializeGuard<K>>(client, namespace),
            watcher::Config::default().any_semantic(),
        )
        .backoff(FastBackoff::default())
        .modify(|g: &mut DeserializeGuard<K>| {
            if let Ok(o) = &mut g.0 {
                lean(o);
            }
        })
        .inspect(move |event| {
            if let (Ok(watcher::Event::Delete(_)), Some(tx)) = (event, &deleted) {
                let _ = tx.send(());
            }
        })
        .reflect_shared(self.writer);
        stream
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch interrupted; resuming");
                }
            })
            .boxed()
    }
}

/// Remembers each failure a component's watch events show, however briefly
/// it lasts (see `recovery::detection::Seen`).
fn observe_failures<K: Kind + Component>(shared: &Shared<K>, ctx: Arc<Context>) -> BoxFuture<'static, ()> {
    shared
        .subscribe()
        .for_each(move |o| {
            if let Ok(obj) = &o.0 {
                ctx.seen.observe(&obj.namespace().unwrap_or_default(), obj);
            }
            futures::future::ready(())
        })
        .boxed()
}

/// Tells the plan and window controllers that a component was deleted.
type Deletions = tokio::sync::broadcast::Sender<()>;

/// A stream that yields once per deletion heard (or once for many, when it lagged).
/// A stream of the signals sent on `tx` (deletions, role changes).
fn on_deletion(tx: &Deletions) -> impl futures::Stream<Item = ()> + Send + 'static {
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold(tx.subscribe(), |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(RecvError::Lagged(_)) => Some(((), rx)),
            Err(RecvError::Closed) => None,
        }
    })
}

/// A watch of objects reprise owns (selected by the managed-by label): the
/// store, and the stream of changed *and deleted* objects that triggers the
/// owner's reconcile (a shared stream would not carry deletions, and a deleted
/// Deployment is exactly what must be repaired).
fn owned<T>(
    client: &Client,
    namespace: Option<&str>,
    deletions: Arc<super::apply::Deletions>,
) -> (
    Store<T>,
    impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
)
where
    T: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<T> = scoped_api(client, namespace);
    let label = format!("{}={}", super::apply::MANAGED_BY.0, super::apply::MANAGED_BY.1);
    let stream = watcher(api, watcher::Config::default().labels(&label).any_semantic())
        .backoff(FastBackoff::default())
        .modify(lean)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(o)) = event {
                let key = super::apply::owned_key(&T::kind(&()), &o.namespace().unwrap_or_default(), &o.name_any());
                deletions.saw(key);
            }
        })
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// A metadata-only watch of every Secret in scope: the store (to know each
/// Secret's resourceVersion) and the stream of changed and deleted Secrets.
fn secrets(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<PartialObjectMeta<Secret>>,
    impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let api: Api<PartialObjectMeta<Secret>> = scoped_api(client, namespace);
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .backoff(FastBackoff::default())
        .modify(lean)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// The objects of kind `K` a Secret matters to: those that name it
/// (`named`), and the owner of a Secret reprise wrote for one of them.
fn users_of<K: Kind>(
    store: Store<DeserializeGuard<K>>,
    named: fn(&K) -> Vec<String>,
) -> impl Fn(Arc<PartialObjectMeta<Secret>>) -> Vec<ObjectRef<DeserializeGuard<K>>> {
    move |s: Arc<PartialObjectMeta<Secret>>| {
        let ns = s.namespace();
        let name = s.name_any();
        let kind = K::kind(&());
        let owners: Vec<String> = s
            .owner_references()
            .iter()
            .filter(|o| o.kind == kind)
            .map(|o| o.name.clone())
            .collect();
        store
            .state()
            .iter()
            .filter(|o| o.namespace() == ns)
            .filter(|o| match &o.0 {
                Ok(obj) => owners.contains(&obj.name_any()) || named(obj).contains(&name),
                Err(_) => false,
            })
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}

type SecretChanges = tokio::sync::broadcast::Sender<Arc<PartialObjectMeta<Secret>>>;

/// Forwards the Secret watch's changes (deletions included) to every subscriber.
fn fan_out(
    stream: impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    tx: SecretChanges,
) -> BoxFuture<'static, ()> {
    stream
        .for_each(move |r| {
            if let Ok(s) = r {
                let _ = tx.send(Arc::new(s));
            }
            futures::future::ready(())
        })
        .boxed()
}

/// One subscriber's stream of Secret changes. A subscriber that falls behind
/// skips what it missed: every Secret user is polled again anyway.
fn secret_changes(tx: &SecretChanges) -> impl futures::Stream<Item = Arc<PartialObjectMeta<Secret>>> + Send + 'static {
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold(tx.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(s) => return Some((s, rx)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// Which of `plurals` the API server does not serve in `group` (any
/// version): one discovery call for them all.
async fn missing<'a>(client: &Client, group: &str, plurals: &[&'a str]) -> Vec<&'a str> {
    let served: Vec<String> = match kube::discovery::group(client, group).await {
        Ok(g) => g
            .versions()
            .flat_map(|v| g.versioned_resources(v).into_iter().map(|(r, _)| r.plural))
            .collect(),
        Err(_) => vec![],
    };
    plurals
        .iter()
        .copied()
        .filter(|p| !served.iter().any(|s| s == p))
        .collect()
}

/// Whether the API server serves `plural` in `group`.
async fn served(client: &Client, group: &str, plural: &str) -> bool {
    missing(client, group, &[plural]).await.is_empty()
}

/// The objects a kind's kept tasks ask to reconcile (see `wake`).
fn woken<K: Kind>(wake: &super::wake::Wake) -> futures::stream::BoxStream<'static, ObjectRef<DeserializeGuard<K>>> {
    match wake.take() {
        Some(mut rx) => futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
            .boxed(),
        None => futures::stream::empty().boxed(),
    }
}

/// Changes (deletions included) of KubeVirt objects reprise made, as a
/// trigger for the reprise VirtualMachine they belong to (label `reprise.dev/vm`,
/// else the same name: a VM instance carries its VM's template labels and name).
fn kubevirt_changes(
    client: &Client,
    namespace: Option<&str>,
    ar: &kube::api::ApiResource,
) -> impl futures::Stream<Item = Result<kube::api::DynamicObject, watcher::Error>> + Send + 'static {
    let api: Api<kube::api::DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    let label = format!("{}={}", super::apply::MANAGED_BY.0, super::apply::MANAGED_BY.1);
    watcher(api, watcher::Config::default().labels(&label).any_semantic())
        .backoff(FastBackoff::default())
        .touched_objects()
}

fn vm_of(o: kube::api::DynamicObject) -> Option<ObjectRef<DeserializeGuard<VirtualMachine>>> {
    let name = o
        .labels()
        .get(crate::providers::vm::kubevirt::VM_LABEL)
        .cloned()
        .unwrap_or_else(|| o.name_any());
    Some(ObjectRef::new(&name).within(&o.namespace()?))
}

/// A site Incident runs on a site that does not act: it is how a person
/// approves that site taking over.
fn site_incident<K: Kind>(o: &K) -> bool {
    (o as &dyn std::any::Any)
        .downcast_ref::<Incident>()
        .is_some_and(|i| i.spec.component.kind == crate::api::common::ComponentKind::Site)
}

/// How long a reconcile waits for the caches' first lists before it is
/// put back (so a shutdown never waits on a cache that cannot sync).
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// One of a kind's workers: takes the objects in turn from the line and
/// reconciles each as the store holds it now (gone meanwhile: nothing to do).
/// `waited` takes how long each waited (reprise_queue_wait_seconds).
async fn worker<K: Kind>(
    line: Arc<Line<ObjectRef<DeserializeGuard<K>>>>,
    store: Store<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    reconcile: ReconcileFn<K>,
    waited: Histogram,
) {
    while let Some((r, wait)) = line.next().await {
        waited.observe(wait.as_secs_f64());
        let again = match store.get(&r) {
            Some(obj) => match guarded(obj.clone(), ctx.clone(), reconcile).await {
                Ok(action) => action,
                Err(e) => error_policy::<K>(obj, &e, &ctx),
            },
            None => Action::await_change(),
        };
        line.done(&r, again.requeue_after());
    }
}

/// Wraps a kind's reconcile: the span, the metrics, and malformed objects
/// (reported, never reconciled, never fatal).
async fn guarded<K: Kind>(
    obj: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    reconcile: ReconcileFn<K>,
) -> Result<Action, Error> {
    // A reconcile decides on what the stores hold: it waits for their first
    // full list (a component not listed yet is not gone).
    if tokio::time::timeout(SYNC_WAIT, ctx.caches_synced()).await.is_err() {
        tracing::debug!(kind = %K::kind(&()), "caches not synced yet; later");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let kind = K::kind(&());
    let started = std::time::Instant::now();
    let result = match &obj.0 {
        Ok(o) => {
            let span = tracing::info_span!(
                "reconcile",
                kind = %kind,
                namespace = %o.namespace().unwrap_or_default(),
                object = %o.name_any()
            );
            let key = backoff_key::<K>(o.namespace().as_deref(), &o.name_any());
            let result = async {
                if K::FENCED
                    && !site_incident(o)
                    && let Err(why) = ctx
                        .fence
                        .permit_kind(&ctx.stores, &o.namespace().unwrap_or_default(), &kind)
                {
                    return super::fence::hold(&ctx, o, why).await;
                }
                let result = reconcile(Arc::new(o.clone()), ctx.clone()).await;
                match &result {
                    Ok(action) => tracing::debug!(?action, "reconciled"),
                    Err(e) => tracing::debug!(error = %e, "reconcile failed"),
                }
                result
            }
            .instrument(span)
            .await;
            if result.is_ok() {
                ctx.succeeded(&key);
            }
            result
        }
        Err(invalid) => {
            report_malformed::<K>(&ctx, invalid).await;
            Ok(Action::await_change())
        }
    };
    ctx.metrics.reconciled(&kind, started.elapsed());
    result
}

async fn report_malformed<K: Kind>(ctx: &Context, invalid: &kube::core::error_boundary::InvalidObject) {
    let kind = K::kind(&());
    let meta = &invalid.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let generation = meta.generation.unwrap_or(0);
    let uid = meta.uid.clone().unwrap_or_default();
    let first = ctx
        .malformed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(uid.clone(), generation)
        != Some(generation);
    if !first {
        return;
    }
    tracing::error!(%kind, %namespace, %name, error = %invalid.error, "cannot read the object; fix it and it will be reconciled");
    ctx.metrics
        .malformed_objects
        .get_or_create(&crate::telemetry::KindLabels { kind: kind.to_string() })
        .inc();
    let message = crate::runtime::report::truncate(format!("reprise cannot read this object: {}", invalid.error));
    if let Err(e) = mark_malformed::<K>(ctx, &namespace, &name, generation, &message).await {
        tracing::warn!(error = %e, "could not write the status of an object reprise cannot read");
        ctx.malformed.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
    }
    // An Event needs a typed object; build a bare one that carries the metadata.
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(kind.to_string()),
        name: Some(name),
        namespace: Some(namespace),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    };
    let event = kube::runtime::events::Event {
        type_: EventType::Warning,
        reason: crate::api::common::reasons::MALFORMED.into(),
        note: Some(message),
        action: "Read".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

/// Writes `Ready=False`/`Stalled=True` on an object the typed API cannot
/// read, through an untyped merge patch of its status, so `kubectl wait` and
/// kstatus see why instead of nothing.
async fn mark_malformed<K: Kind>(
    ctx: &Context,
    ns: &str,
    name: &str,
    generation: i64,
    message: &str,
) -> Result<(), Error> {
    use crate::api::common::{condition, reasons};
    let mut conditions = vec![condition(
        reasons::READY,
        false,
        reasons::MALFORMED,
        message,
        generation,
    )];
    super::kstatus::derive(&mut conditions, generation);
    let resource = kube::api::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
    let body = serde_json::json!({"status": {"observedGeneration": generation, "conditions": conditions}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    ctx.metrics.wrote(&K::kind(&()), "status");
    Ok(())
}

/// The key of an object's backoff: its kind too, so that a Database and an
/// Application of the same name do not share one counter.
fn backoff_key<K: Kind>(ns: Option<&str>, name: &str) -> String {
    format!("{}/{}/{name}", K::kind(&()), ns.unwrap_or_default())
}

fn error_policy<K: Kind>(obj: Arc<DeserializeGuard<K>>, err: &Error, ctx: &Context) -> Action {
    let kind = K::kind(&());
    ctx.metrics.failed(&kind, err.category());
    let key = match &obj.0 {
        Ok(o) => backoff_key::<K>(o.namespace().as_deref(), &o.name_any()),
        Err(i) => backoff_key::<K>(
            i.metadata.namespace.as_deref(),
            i.metadata.name.as_deref().unwrap_or_default(),
        ),
    };
    let wait = ctx.backoff(&key);
    tracing::warn!(%kind, object = %key, error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Maps any object to the objects of kind `K` in its namespace (used where a
/// change of one kind can change the status of all objects of another).
fn all_in_namespace<K: Kind, O: Resource>(
    store: Store<DeserializeGuard<K>>,
) -> impl Fn(Arc<O>) -> Vec<ObjectRef<DeserializeGuard<K>>> {
    move |o: Arc<O>| {
        let ns = o.namespace();
        store
            .state()
            .iter()
            .filter(|k| k.namespace() == ns)
            .map(|k| ObjectRef::from_obj(k.as_ref()))
            .collect()
    }
}

/// Reconciles of kind `K` at once. An Application's reconcile is a few
/// calls to the API server and no peer: a burst of repairs is bound by round
/// trips, not CPU, and more at once finish it sooner (1,000 Deployments
/// deleted at once: recreated in 12.0 s at 64, 18.0 s at 16). The other kinds
/// talk to peers (BMCs, PostgreSQL, KubeVirt) and keep the general bound.
fn concurrency<K: Kind>(s: &Settings) -> u16 {
    if std::any::TypeId::of::<K>() == std::any::TypeId::of::<Application>() {
        s.application_concurrency
    } else {
        s.reconcile_concurrency
    }
}

fn controller<K: Kind>(
    shared: &Shared<K>,
    ctx: Arc<Context>,
    reconcile: ReconcileFn<K>,
    shutdown: &CancellationToken,
    extra: impl FnOnce(Controller<DeserializeGuard<K>>) -> Controller<DeserializeGuard<K>>,
) -> BoxFuture<'static, ()> {
    let kind = KindLabels {
        kind: K::kind(&()).to_string(),
    };
    let line = Arc::new(Line::new(
        shutdown.clone(),
        ctx.metrics.queue_depth.get_or_create(&kind).clone(),
    ));
    let waited = ctx.metrics.queue_wait.get_or_create(&kind).clone();
    // A JoinSet: when the term's future is dropped (leadership lost), its
    // workers are aborted with it, mid-reconcile included, as kube-runtime
    // aborted its reconciles: no write after the loss.
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency::<K>(&ctx.settings) {
        workers.spawn(worker(
            line.clone(),
            shared.reader.clone(),
            ctx.clone(),
            reconcile,
            waited.clone(),
        ));
    }
    let c = Controller::for_shared_stream(shared.subscribe(), shared.reader.clone())
        // No debounce: the first event of an object is acted on at once.
        // kube-runtime only says which object to look at; it joins the line
        // (`line.rs`), where what arrives while it waits or runs is merged
        // into one more reconcile after it; a status reprise wrote itself
        // comes back as one quiet reconcile (`Context::written`), never as a
        // loop.
        .with_config(ControllerConfig::default())
        .trigger_backoff(FastBackoff::default())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    // Fenced kinds look at every object again when the site's role changes.
    let c = if K::FENCED {
        c.reconcile_all_on(on_deletion(&ctx.fence.changed))
    } else {
        c
    };
    let feed = {
        let line = line.clone();
        extra(c)
            .run(
                move |o, _| {
                    line.add(ObjectRef::from_obj(&*o));
                    futures::future::ready(Ok::<_, Error>(Look::await_change()))
                },
                |_, _, _| Look::await_change(),
                ctx,
            )
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "controller event");
                }
            })
    };
    async move {
        let ended = async {
            while let Some(r) = workers.join_next().await {
                // A reconcile that panicked takes the operator down, as it did
                // inside kube-runtime's runner: a worker never vanishes quietly.
                if let Err(e) = r
                    && e.is_panic()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        };
        futures::join!(feed, line.timers(), ended);
    }
    .boxed()
}

/// The shared watch of every kind reprise owns: the registry the runner
/// wires controllers, stores and drivers from. A new component kind is one
/// field here, one line in each method below, and one `controller` call.
struct Kinds {
    apps: Shared<Application>,
    dbs: Shared<Database>,
    servers: Shared<Server>,
    sites: Shared<Site>,
    vms: Shared<VirtualMachine>,
    incidents: Shared<Incident>,
    windows: Shared<MaintenanceWindow>,
    plans: Shared<RecoveryPlan>,
    deleted: Deletions,
}

impl Kinds {
    fn new() -> Self {
        Self {
            apps: Shared::new(),
            dbs: Shared::new(),
            servers: Shared::new(),
            sites: Shared::new(),
            vms: Shared::new(),
            incidents: Shared::new(),
            windows: Shared::new(),
            plans: Shared::new(),
            deleted: tokio::sync::broadcast::channel(64).0,
        }
    }

    fn stores(
        &self,
        secrets: Store<PartialObjectMeta<Secret>>,
        deployments: Store<Deployment>,
        services: Store<Service>,
    ) -> Stores {
        Stores {
            secrets,
            deployments,
            services,
            applications: self.apps.reader.clone(),
            databases: self.dbs.reader.clone(),
            incidents: self.incidents.reader.clone(),
            maintenance_windows: self.windows.reader.clone(),
            recovery_plans: self.plans.reader.clone(),
            servers: self.servers.reader.clone(),
            sites: self.sites.reader.clone(),
            virtual_machines: self.vms.reader.clone(),
        }
    }

    /// Each component kind's failures, remembered however briefly they show.
    fn observers(&self, ctx: &Arc<Context>) -> Vec<BoxFuture<'static, ()>> {
        vec![
            observe_failures(&self.apps, ctx.clone()),
            observe_failures(&self.dbs, ctx.clone()),
            observe_failures(&self.vms, ctx.clone()),
            observe_failures(&self.servers, ctx.clone()),
            // A failover may end before a plan looks: its Incident still opens.
            observe_failures(&self.sites, ctx.clone()),
        ]
    }

    /// A change of any component reconciles the objects of `store` in its namespace.
    fn on_components<K: Kind>(
        &self,
        c: Controller<DeserializeGuard<K>>,
        store: &Store<DeserializeGuard<K>>,
    ) -> Controller<DeserializeGuard<K>> {
        c.watches_shared_stream(self.apps.subscribe(), all_in_namespace(store.clone()))
            .watches_shared_stream(self.dbs.subscribe(), all_in_namespace(store.clone()))
            .watches_shared_stream(self.vms.subscribe(), all_in_namespace(store.clone()))
            .watches_shared_stream(self.servers.subscribe(), all_in_namespace(store.clone()))
            .watches_shared_stream(self.sites.subscribe(), all_in_namespace(store.clone()))
    }

    /// The watches, until `stop` (nothing reads them after the controllers stop).
    fn drive(
        self,
        client: &Client,
        ns: Option<&str>,
        secrets: BoxFuture<'static, ()>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        let d = || Some(self.deleted.clone());
        let drivers = futures::future::join_all(vec![
            secrets,
            self.apps.drive(client, ns, d()),
            self.dbs.drive(client, ns, d()),
            self.incidents.drive(client, ns, d()),
            self.windows.drive(client, ns, None),
            self.plans.drive(client, ns, d()),
            self.servers.drive(client, ns, d()),
            self.sites.drive(client, ns, None),
            self.vms.drive(client, ns, d()),
        ]);
        async move {
            tokio::select! {
                _ = drivers => tracing::error!("a watch ended"),
                _ = stop.cancelled() => {}
            }
        }
        .boxed()
    }
}

/// Tells `health` once every cache has synced.
async fn synced(all: Vec<Arc<Context>>, health: Arc<Health>) {
    futures::future::join_all(all.iter().map(|c| c.caches_synced())).await;
    health.set_caches_synced(true);
    tracing::info!("caches synced; controllers running");
}

/// The recovery engine's controllers: incidents, maintenance windows, plans.
fn engine_controllers(k: &Kinds, ctx: &Arc<Context>, shutdown: &CancellationToken) -> Vec<BoxFuture<'static, ()>> {
    let stores = &ctx.stores;
    vec![
        controller(
            &k.incidents,
            ctx.clone(),
            recovery::incident::reconcile,
            shutdown,
            |c| {
                // An incident resolves when its component's health signal is good
                // again; its deliveries end apart from its reconciles.
                let delivered = match ctx.notifier.completions() {
                    Some(mut rx) => futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
                        .map(|i: ObjectRef<Incident>| {
                            ObjectRef::<DeserializeGuard<Incident>>::new(&i.name)
                                .within(i.namespace.as_deref().unwrap_or_default())
                        })
                        .boxed(),
                    None => futures::stream::empty().boxed(),
                };
                let c = c
                    .reconcile_on(delivered)
                    .watches_shared_stream(k.plans.subscribe(), all_in_namespace(stores.incidents.clone()));
                k.on_components(c, &stores.incidents)
            },
        ),
        controller(
            &k.windows,
            ctx.clone(),
            recovery::maintenance::reconcile,
            shutdown,
            |c| k.on_components(c, &stores.maintenance_windows),
        ),
        controller(&k.sites, ctx.clone(), recovery::sites::reconcile, shutdown, |c| {
            // Sites of a namespace read each other: the local one looks again
            // when a peer is added or removed.
            c.watches_shared_stream(k.sites.subscribe(), all_in_namespace(stores.sites.clone()))
        }),
        controller(&k.plans, ctx.clone(), recovery::plan::reconcile, shutdown, |c| {
            let c = c
                .reconcile_all_on(on_deletion(&k.deleted))
                .watches_shared_stream(k.incidents.subscribe(), all_in_namespace(stores.recovery_plans.clone()))
                // A window that ends lets a held failure open its incident.
                .watches_shared_stream(k.windows.subscribe(), all_in_namespace(stores.recovery_plans.clone()))
                // Another plan's selector decides overlaps: each plan looks again.
                .watches_shared_stream(k.plans.subscribe(), all_in_namespace(stores.recovery_plans.clone()));
            k.on_components(c, &stores.recovery_plans)
        }),
    ]
}

/// What the component controllers watch besides their own kind.
struct Related<'a> {
    deployments: BoxedChanges<Deployment>,
    services: BoxedChanges<Service>,
    secrets: &'a SecretChanges,
    client: &'a Client,
    ns: Option<&'a str>,
}

type BoxedChanges<T> = futures::stream::BoxStream<'static, Result<T, watcher::Error>>;

/// The component controllers: applications, databases, servers, virtual machines.
fn component_controllers(
    k: &Kinds,
    ctx: &Arc<Context>,
    shutdown: &CancellationToken,
    related: Related<'_>,
) -> Vec<BoxFuture<'static, ()>> {
    let stores = &ctx.stores;
    let Related {
        deployments,
        services,
        secrets,
        client,
        ns,
    } = related;
    let kubevirt = ctx.settings.kubevirt_installed;
    vec![
        controller(
            &k.apps,
            ctx.clone(),
            components::application::reconcile,
            shutdown,
            |c| {
                c.owns_stream(deployments)
                    .owns_stream(services)
                    .watches_shared_stream(k.dbs.subscribe(), all_in_namespace(stores.applications.clone()))
                    .watches_shared_stream(k.vms.subscribe(), all_in_namespace(stores.applications.clone()))
            },
        ),
        controller(&k.dbs, ctx.clone(), components::database::reconcile, shutdown, |c| {
            c.reconcile_on(woken::<Database>(&ctx.wakes.databases))
                .watches_shared_stream(
                    secret_changes(secrets),
                    users_of(stores.databases.clone(), components::database::secrets_named),
                )
        }),
        controller(&k.servers, ctx.clone(), components::server::reconcile, shutdown, |c| {
            c.reconcile_on(woken::<Server>(&ctx.wakes.servers))
                .watches_shared_stream(
                    secret_changes(secrets),
                    users_of(stores.servers.clone(), components::server::secrets_named),
                )
        }),
        controller(
            &k.vms,
            ctx.clone(),
            components::virtual_machine::reconcile,
            shutdown,
            |c| {
                let c =
                    c.watches_shared_stream(k.servers.subscribe(), all_in_namespace(stores.virtual_machines.clone()));
                if !kubevirt {
                    return c;
                }
                use crate::providers::vm::kubevirt::{restore_resource, snapshot_resource, vm_resource, vmi_resource};
                [vm_resource(), vmi_resource(), snapshot_resource(), restore_resource()]
                    .into_iter()
                    .fold(c, |c, ar| {
                        c.watches_stream_with(kubevirt_changes(client, ns, &ar), vm_of, ar)
                    })
            },
        ),
    ]
}

/// Runs every controller until `shutdown` (in-flight reconciles finish first).
/// `health` is told when the caches are synced.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    namespaces: Vec<String>,
    instance: String,
    mut settings: Settings,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    if !await_crds(&client, &shutdown).await {
        return;
    }
    settings.kubevirt_installed = served(&client, "kubevirt.io", "virtualmachines").await
        && served(&client, "snapshot.kubevirt.io", "virtualmachinesnapshots").await;
    if !settings.kubevirt_installed {
        tracing::warn!(
            "KubeVirt's CRDs are not installed: VirtualMachines will wait (restart reprise after installing KubeVirt)"
        );
    }
    // One set of watches and controllers per namespace (all: one set for the
    // cluster). Objects refer only within their namespace, so the sets share
    // nothing but the client, the metrics and the health.
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut tasks = vec![];
    let mut contexts = vec![];
    for ns in scopes {
        let (t, ctx) = scope(&client, &metrics, ns, &instance, settings.clone(), &shutdown);
        tasks.extend(t);
        contexts.push(ctx);
    }
    tasks.push(synced(contexts, health).boxed());
    futures::future::join_all(tasks).await;
}

/// The watches and controllers of one namespace (None: every namespace).
fn scope(
    client: &Client,
    metrics: &Arc<Metrics>,
    namespace: Option<String>,
    instance: &str,
    settings: Settings,
    shutdown: &CancellationToken,
) -> (Vec<BoxFuture<'static, ()>>, Arc<Context>) {
    let ns = namespace.as_deref();
    let kinds = Kinds::new();
    let deletions = Arc::new(super::apply::Deletions::default());
    let (deployments, deployment_changes) = owned::<Deployment>(client, ns, deletions.clone());
    let (services, service_changes) = owned::<Service>(client, ns, deletions.clone());
    let (secret_meta, secret_stream) = secrets(client, ns);
    let (secrets_tx, _) = tokio::sync::broadcast::channel(256);
    let stores = kinds.stores(secret_meta, deployments, services);
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        namespace.clone(),
        stores.clone(),
        instance.to_string(),
        settings,
        deletions,
    ));
    let mut tasks = kinds.observers(&ctx);
    tasks.extend(engine_controllers(&kinds, &ctx, shutdown));
    let related = Related {
        deployments: deployment_changes.boxed(),
        services: service_changes.boxed(),
        secrets: &secrets_tx,
        client,
        ns,
    };
    tasks.extend(component_controllers(&kinds, &ctx, shutdown, related));
    let secrets_fan_out = fan_out(secret_stream, secrets_tx.clone());
    tasks.push(kinds.drive(client, ns, secrets_fan_out, shutdown.clone()));
    let watching = ctx.clone();
    tasks.push(async move { watching.watch_caches().await }.boxed());
    (tasks, ctx)
}
