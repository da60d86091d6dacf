//! Application reconciler: owns a Deployment and a Service (server-side
//! apply), repairs them when they are deleted or changed by hand, rolls new
//! versions out behind a health gate and back when they fail, checks the
//! stored artifacts, and publishes the health signal the recovery engine reads.

pub mod contract;
pub mod desired;
pub mod rollout;

use crate::runtime::Action;
use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    core::{DeserializeGuard, NamespaceResourceScope},
    runtime::{events::EventType, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::runtime::{
    Context, Error,
    kind::Kind,
    report::{Report, action_record, requested_action, unknown_action},
    stores,
    validation::{Invalid, report_invalid},
};
use crate::{
    api::{
        Application, Database, VirtualMachine,
        application::{AppHealth, ApplicationStatus, ArtifactStatus, DependencyKind, FailedVersion, Repair},
        common::{ComponentKind, ComponentRef, find_condition, reasons},
        contract::{ActionOutcome, ActionVerb, HealthState, Request},
    },
    crash,
    providers::artifacts,
};

/// Checks only the operator can make (pure: reads the shared stores).
pub fn validate(ctx: &Context, app: &Application) -> Result<(), Invalid> {
    let ns = app.namespace().unwrap_or_default();
    for (i, d) in app.spec.depends_on.iter().enumerate() {
        let kind = dependency_kind(d.kind);
        let dep = ComponentRef {
            kind,
            name: d.name.clone(),
        };
        if !stores::exists(&ctx.stores, &ns, &dep) {
            return Err(Invalid::external(
                format!("spec.dependsOn[{i}]"),
                format!("{kind} {:?} does not exist in namespace {ns:?}", d.name),
            ));
        }
    }
    Ok(())
}

fn dependency_kind(k: DependencyKind) -> ComponentKind {
    match k {
        DependencyKind::Database => ComponentKind::Database,
        DependencyKind::VirtualMachine => ComponentKind::VirtualMachine,
    }
}

/// The dependencies that are not Ready, as "Kind name".
fn dependencies_not_ready(ctx: &Context, app: &Application) -> Vec<String> {
    fn ready<K: Kind>(store: &kube::runtime::reflector::Store<DeserializeGuard<K>>, ns: &str, name: &str) -> bool {
        store
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|o| o.0.as_ref().ok().and_then(|o| o.status().cloned()))
            .is_some_and(|s| {
                use crate::runtime::kind::CommonStatus;
                find_condition(s.conditions(), reasons::READY)
                    .is_some_and(|c| c.status == crate::api::common::ConditionStatus::True)
            })
    }
    let ns = app.namespace().unwrap_or_default();
    app.spec
        .depends_on
        .iter()
        .filter(|d| match d.kind {
            DependencyKind::Database => !ready::<Database>(&ctx.stores.databases, &ns, &d.name),
            DependencyKind::VirtualMachine => !ready::<VirtualMachine>(&ctx.stores.virtual_machines, &ns, &d.name),
        })
        .map(|d| format!("{} {}", dependency_kind(d.kind), d.name))
        .collect()
}

/// Whether the Deployment runs `image` with every replica updated and available.
fn rolled_out(d: &Deployment, image: &str) -> bool {
    let spec = &d.spec;
    let want = spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let live_image = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.as_deref());
    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && live_image == Some(image)
        && st.updated_replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
}

fn why_not_rolled_out(d: Option<&Deployment>, version: &str) -> String {
    let Some(d) = d else {
        return "the Deployment does not exist".into();
    };
    let want = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let mut why = format!(
        "{} of {want} replicas of {version} available ({} updated)",
        st.available_replicas.unwrap_or(0),
        st.updated_replicas.unwrap_or(0)
    );
    if let Some(c) = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Progressing") && c.status.as_deref() == Some("False"))
    {
        why.push_str(&format!("; {}", c.message.unwrap_or_default()));
    }
    why
}

/// The fields whose change by someone else counts as drift. Defaults and
/// normalizations the API server adds (quantities, probe defaults) are left
/// out, so they can never make reprise re-apply in a loop.
fn drift_view(v: &Value) -> Value {
    let spec = &v["spec"];
    let containers: Vec<Value> = spec["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| json!({"name": c["name"], "image": c["image"], "env": c["env"], "ports": c["ports"].as_array().map(|ps| ps.iter().map(|p| json!({"name": p["name"], "containerPort": p["containerPort"]})).collect::<Vec<_>>())}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "labels": v["metadata"]["labels"],
        "replicas": spec["replicas"],
        "selector": spec["selector"],
        "podLabels": spec["template"]["metadata"]["labels"],
        "containers": containers,
        "serviceSelector": spec["selector"],
        "ports": spec["ports"].as_array().map(|ps| ps.iter().map(|p| json!({"name": p["name"], "port": p["port"], "targetPort": p["targetPort"]})).collect::<Vec<_>>()),
    })
}

/// Applies `desired` when it is missing, when the spec changed, or when
/// someone changed what reprise set. Returns the repair made, if any.
async fn ensure<T>(
    ctx: &Context,
    live: Option<Arc<T>>,
    desired: &T,
    existed_before: bool,
) -> Result<Option<(String, String)>, Error>
where
    T: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let what = T::kind(&()).to_string();
    let ns = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api: Api<T> = Api::namespaced(ctx.client.clone(), &ns);
    let key = crate::runtime::apply::owned_key(&what, &ns, &name);
    // A store that lacks the object proves only that none with reprise's
    // label has its name: a deletion just seen on the watch proves the name
    // free; else the API server is asked (it may be our own fresh create,
    // or someone else's object).
    let live = match live {
        Some(l) => {
            ctx.deletions.forget(&key);
            Some((*l).clone())
        }
        None if ctx.deletions.take(&key) => None,
        None => api.get_opt(&name).await?,
    };
    if let Some(l) = &live
        && !crate::runtime::apply::controlled_by(l.meta(), crate::runtime::apply::controller_uid(desired.meta()))
    {
        return Err(Error::NotOurs(format!(
            "{what} {name} exists and belongs to {}: reprise leaves it alone; rename the Application or remove the {what}",
            crate::runtime::apply::controller_of(l.meta())
        )));
    }
    let applied = |o: &T| o.annotations().get(desired::APPLIED_ANNOTATION).cloned();
    let repair = match &live {
        None if existed_before => Some((
            "Recreated".to_string(),
            format!("{what} {name} was deleted; recreated it"),
        )),
        None => None,
        Some(l) if applied(l) != applied(desired) => None,
        Some(l) => {
            let want = drift_view(&serde_json::to_value(desired)?);
            let have = drift_view(&serde_json::to_value(l)?);
            if crate::runtime::apply::is_subset(&want, &have) {
                return Ok(None);
            }
            Some((
                "Reverted".to_string(),
                format!("{what} {name} was changed outside reprise; put it back"),
            ))
        }
    };
    ctx.fence.still(
        &ctx.stores,
        desired.namespace().as_deref().unwrap_or_default(),
        "Application",
    )?;
    api.patch(
        &name,
        &PatchParams::apply(Application::MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    ctx.metrics.wrote("Application", &what);
    Ok(repair)
}

/// Checks the artifacts that are due; returns when the next one is.
async fn check_artifacts(
    ctx: &Context,
    app: &Application,
    status: &mut ApplicationStatus,
    now: Timestamp,
) -> Option<Duration> {
    let interval = app
        .spec
        .artifact_check_interval
        .as_std()
        .max(std::time::Duration::from_secs(1));
    let mut next: Option<Duration> = None;
    let mut kept = vec![];
    for a in &app.spec.artifacts {
        let spec_key = format!("{} {}", a.url, a.sha256);
        let previous = status.artifacts.iter().find(|s| s.name == a.name).cloned();
        let due = match &previous {
            Some(p) if p.checked_spec == spec_key => {
                let age = Duration::from_secs_f64(p.checked.0.duration_until(now).as_secs_f64().max(0.0));
                interval.checked_sub(age)
            }
            _ => None,
        };
        let entry = match (due, previous) {
            (Some(wait), Some(p)) if !wait.is_zero() => {
                next = Some(next.map_or(wait, |n| n.min(wait)));
                p
            }
            _ => {
                let r = artifacts::check(&ctx.http, &a.url, &a.sha256).await;
                next = Some(next.map_or(interval, |n| n.min(interval)));
                ArtifactStatus {
                    name: a.name.clone(),
                    ok: r.ok,
                    checked: Time(now),
                    size_bytes: r.size_bytes,
                    duration: Some(rollout::human(r.took)),
                    message: r.message,
                    checked_spec: spec_key,
                }
            }
        };
        kept.push(entry);
    }
    status.artifacts = kept;
    next
}

/// Deletes the application's `T` of that name, only if the Application
/// controls it, and only that very object (a uid precondition): one of the
/// same name that another owner controls is never deleted.
async fn delete_owned<T>(ctx: &Context, app: &Application) -> Result<(), Error>
where
    T: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let api: Api<T> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(live) = api.get_opt(&name).await? else {
        return Ok(());
    };
    if !crate::runtime::apply::controlled_by(live.meta(), app.meta().uid.as_deref()) {
        return Err(Error::NotOurs(format!(
            "{} {name} belongs to {}: reprise does not delete it",
            T::kind(&()),
            crate::runtime::apply::controller_of(live.meta())
        )));
    }
    let mut dp = DeleteParams::foreground();
    dp.preconditions = Some(kube::api::Preconditions {
        uid: live.meta().uid.clone(),
        resource_version: None,
    });
    match api.delete(&name, &dp).await {
        Ok(_) => {
            ctx.metrics.wrote("Application", "delete");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Said in status and an Event, once (only when the status changes). A name
/// taken by an object reprise does not control waits for a person (Stalled,
/// looked at again in a minute); anything else backs off as an error.
async fn apply_failed(mut r: Report<'_, Application>, e: Error) -> Result<Action, Error> {
    let (reason, message) = match &e {
        Error::NotOurs(why) => (reasons::CONFLICT, why.clone()),
        e => ("ApplyFailed", format!("cannot apply the Deployment or Service: {e}")),
    };
    r.fail_and_tell(reasons::READY, reason, "Apply", message);
    r.write().await?;
    match e {
        Error::NotOurs(_) => Ok(Action::requeue(crate::runtime::validation::RECHECK_MISSING)),
        e => Err(e),
    }
}

pub fn reconcile(obj: Arc<Application>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        if let Err(invalid) = validate(&ctx, &obj) {
            return report_invalid(&ctx, obj.as_ref(), &invalid).await;
        }
        let app = obj.as_ref();
        let mut r = Report::new(&ctx, app);
        let mut live = Live::read(&ctx, app);
        finish_accepted(&mut r, &ctx, app, &mut live).await?;
        let acted = act(&mut r, &ctx, app, &mut live).await?;
        let decision = release(&mut r, &ctx, app, &live).await;
        if let Err(e) = apply(&mut r, &ctx, app, &live, &decision).await {
            return apply_failed(r, e).await;
        }
        if acted {
            crash::point("application:applied");
        }
        let artifacts_next = check_artifacts(&ctx, app, &mut r.status, r.now).await;
        conditions(&mut r, &ctx, app, &live, &decision.version);
        r.write().await?;
        let requeue = [decision.requeue, artifacts_next].into_iter().flatten().min();
        Ok(requeue
            .map(|d| Action::requeue(d + Duration::from_millis(500)))
            .unwrap_or_else(Action::await_change))
    }
    .boxed()
}

/// The Deployment and Service as the stores hold them, and the restart marker.
struct Live {
    deployment: Option<Arc<Deployment>>,
    service: Option<Arc<Service>>,
    restarted_at: Option<String>,
}

impl Live {
    fn read(ctx: &Context, app: &Application) -> Self {
        let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
        let deployment = ctx.stores.deployments.get(&ObjectRef::new(&name).within(&ns));
        let service = ctx.stores.services.get(&ObjectRef::new(&name).within(&ns));
        let restarted_at = deployment.as_ref().and_then(|d| {
            d.spec
                .template
                .metadata
                .as_ref()?
                .annotations
                .as_ref()?
                .get(desired::RESTARTED_ANNOTATION)
                .cloned()
        });
        Self {
            deployment,
            service,
            restarted_at,
        }
    }

    /// The request id the live Deployment was (re)created or restarted for, if any.
    fn marked_for(&self) -> Option<String> {
        let d = self.deployment.as_ref()?;
        d.annotations()
            .get(desired::RECREATED_FOR_ANNOTATION)
            .cloned()
            .or_else(|| self.restarted_at.clone())
    }
}

/// Records a request as taken on (`Accepted`) before its effect: an operator
/// that takes over finishes it without asking twice.
async fn accept(r: &mut Report<'_, Application>, req: &Request) -> Result<(), Error> {
    let (record, _, _) = action_record(
        r.now,
        req.verb.clone(),
        req.id.clone(),
        ActionOutcome::Accepted,
        "under way".into(),
    );
    r.status.last_action = Some(record);
    r.checkpoint().await
}

/// A request the operator before this one took on and never answered:
/// carried out now if its mark is not on the Deployment, never a second time.
async fn finish_accepted(
    r: &mut Report<'_, Application>,
    ctx: &Context,
    app: &Application,
    live: &mut Live,
) -> Result<(), Error> {
    let Some(last) = r
        .status
        .last_action
        .clone()
        .filter(|a| a.outcome == ActionOutcome::Accepted)
    else {
        return Ok(());
    };
    let done = live.marked_for().as_deref() == Some(last.id.as_str());
    let req = Request {
        verb: last.action.clone(),
        id: last.id.clone(),
    };
    let message = if done {
        "carried out before a restart of the operator".to_string()
    } else {
        effect(r, ctx, app, live, &req).await?.1
    };
    let (record, type_, note) = action_record(r.now, last.action, last.id, ActionOutcome::Done, message);
    r.event(type_, "RecoveryAction", "Recover", note);
    r.status.last_action = Some(record);
    Ok(())
}

/// A recovery action asked through the annotation runs once per id.
/// Returns whether one ran.
async fn act(
    r: &mut Report<'_, Application>,
    ctx: &Context,
    app: &Application,
    live: &mut Live,
) -> Result<bool, Error> {
    let Some(req) = requested_action(app, r.status.last_action.as_ref()) else {
        return Ok(false);
    };
    if matches!(req.action(), Some(ActionVerb::Restart | ActionVerb::Recreate)) {
        accept(r, &req).await?;
        crash::point("application:accepted");
    }
    let (outcome, message) = effect(r, ctx, app, live, &req).await?;
    let (record, type_, note) = action_record(r.now, req.verb, req.id, outcome, message);
    r.event(type_, "RecoveryAction", "Recover", note);
    r.status.last_action = Some(record);
    Ok(true)
}

/// What an action does. The restart marker and the recreated Deployment
/// carry the request id: doing it again for the same id changes nothing.
async fn effect(
    r: &mut Report<'_, Application>,
    ctx: &Context,
    app: &Application,
    live: &mut Live,
    req: &Request,
) -> Result<(ActionOutcome, String), Error> {
    Ok(match req.action() {
        Some(ActionVerb::Restart) => {
            live.restarted_at = Some(req.id.clone());
            (ActionOutcome::Done, "rolling restart of the pods".to_string())
        }
        Some(ActionVerb::Recreate) => {
            let deleted = match delete_owned::<Deployment>(ctx, app).await {
                Ok(()) => delete_owned::<Service>(ctx, app).await,
                e => e,
            };
            match deleted {
                Err(Error::NotOurs(why)) => return Ok((ActionOutcome::Rejected, why)),
                e => e?,
            }
            live.deployment = None;
            live.service = None;
            live.restarted_at = Some(req.id.clone());
            (
                ActionOutcome::Done,
                "deleted and recreated the Deployment and Service".to_string(),
            )
        }
        Some(ActionVerb::Rollback) => rollback(&mut r.status, r.generation, &req.id),
        _ => (
            ActionOutcome::Rejected,
            unknown_action(&req.verb, ComponentKind::Application),
        ),
    })
}

/// Back to the newest version that rolled out well before the current one.
fn rollback(status: &mut ApplicationStatus, generation: i64, id: &str) -> (ActionOutcome, String) {
    let current = status.current_version.clone();
    let previous = status
        .releases
        .iter()
        .find(|r| r.outcome == rollout::SUCCEEDED && Some(&r.version) != current.as_ref())
        .map(|r| r.version.clone());
    match (previous, current) {
        (Some(previous), Some(cur)) => {
            status.last_good_version = Some(previous.clone());
            status.failed_version = Some(FailedVersion {
                version: cur.clone(),
                generation,
                reason: format!("rollback requested ({id})"),
            });
            (ActionOutcome::Done, format!("rolling back from {cur} to {previous}"))
        }
        _ => (
            ActionOutcome::Rejected,
            "no earlier version rolled out well".to_string(),
        ),
    }
}

/// The release step: which version runs (a failed one rolled back).
async fn release(r: &mut Report<'_, Application>, ctx: &Context, app: &Application, live: &Live) -> rollout::Decision {
    let not_ready = dependencies_not_ready(ctx, app);
    let current_image = r.status.current_version.as_deref().map(|v| desired::image(app, v));
    let is_rolled_out = match (&live.deployment, &current_image) {
        (Some(d), Some(img)) => rolled_out(d, img),
        _ => false,
    };
    let why = why_not_rolled_out(
        live.deployment.as_deref(),
        r.status.current_version.as_deref().unwrap_or(&app.spec.version),
    );
    let decision = rollout::step(
        &mut r.status,
        &rollout::Inputs {
            spec_version: &app.spec.version,
            generation: r.generation,
            deps_ready: not_ready.is_empty(),
            deadline: app.spec.rollout.progress_deadline.as_std(),
            history_limit: app.spec.rollout.history_limit as usize,
            now: r.now,
            rolled_out: is_rolled_out,
            not_rolled_out_why: &why,
        },
    );
    if let Some((version, why)) = &decision.rolled_back {
        let to = &decision.version;
        r.event(
            EventType::Warning,
            "RolledBack",
            "Rollout",
            format!("{version} rolled back to {to}: {why}"),
        );
    }
    decision
}

/// The Deployment and Service applied; a repair of either recorded.
async fn apply(
    r: &mut Report<'_, Application>,
    ctx: &Context,
    app: &Application,
    live: &Live,
    decision: &rollout::Decision,
) -> Result<(), Error> {
    let existed_before = !r.status.releases.is_empty() && r.obj.status.as_ref().is_some_and(|s| !s.releases.is_empty());
    let mut deploy = desired::deployment(app, &decision.version, live.restarted_at.as_deref());
    if let Some(Request { id, .. }) = r
        .status
        .last_action
        .as_ref()
        .filter(|a| ActionVerb::parse(&a.action) == Some(ActionVerb::Recreate))
        .map(|a| Request {
            verb: a.action.clone(),
            id: a.id.clone(),
        })
        && live.deployment.is_none()
    {
        deploy
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(desired::RECREATED_FOR_ANNOTATION.into(), id);
    }
    let service = desired::service(app);
    let mut repairs = vec![];
    if let Some(rep) = ensure(ctx, live.deployment.clone(), &deploy, existed_before).await? {
        repairs.push(("Deployment", rep));
    }
    if let Some(rep) = ensure(ctx, live.service.clone(), &service, existed_before).await? {
        repairs.push(("Service", rep));
    }
    for (object, (action, message)) in repairs {
        ctx.metrics.repaired("Application", object, &action);
        r.event(
            EventType::Warning,
            repair_reason(object, &action),
            "Repair",
            message.clone(),
        );
        r.status.last_repair = Some(Repair {
            time: Time(r.now),
            object: object.into(),
            action,
            message,
        });
    }
    Ok(())
}

/// The Event reason of a repair (one per kind of repair: Events keep their words).
fn repair_reason(object: &str, action: &str) -> &'static str {
    match (object, action) {
        ("Deployment", "Recreated") => "DeploymentRecreated",
        ("Deployment", _) => "DeploymentReverted",
        (_, "Recreated") => "ServiceRecreated",
        _ => "ServiceReverted",
    }
}

/// Conditions and the health signal.
fn conditions(r: &mut Report<'_, Application>, ctx: &Context, app: &Application, live: &Live, version: &str) {
    let bad_artifacts: Vec<String> = r
        .status
        .artifacts
        .iter()
        .filter(|a| !a.ok)
        .map(|a| format!("artifact {}: {}", a.name, a.message))
        .collect();
    let deployment = live.deployment.as_deref();
    let want = app.spec.replicas;
    let available = deployment
        .and_then(|d| d.status.as_ref()?.available_replicas)
        .unwrap_or(0);
    let releasing = r
        .status
        .releases
        .first()
        .is_some_and(|rel| rel.outcome == rollout::PROGRESSING);
    // A restart or a change rolls out: not healthy until every replica is the new one.
    let updating = deployment.is_some_and(|d| !settled(d));
    let health = if releasing || (updating && available > 0) {
        AppHealth::Progressing
    } else if deployment.is_none() || (want > 0 && available == 0) {
        AppHealth::Failed
    } else if r.status.failed_version.is_some() || !bad_artifacts.is_empty() || available < want {
        AppHealth::Degraded
    } else {
        AppHealth::Healthy
    };
    let was_healthy = r.status.health.map(|h| h.is_healthy());
    if was_healthy != Some(health.is_healthy()) || r.status.health_since.is_none() {
        r.status.health_since = Some(MicroTime(r.now));
    }
    r.status.health = Some(health);
    r.set(
        "Available",
        available > 0 || want == 0,
        if available > 0 || want == 0 {
            "MinimumReplicasAvailable"
        } else {
            "Unavailable"
        },
        format!("{available} of {want} replicas available"),
    );
    let release_msg = r
        .status
        .releases
        .first()
        .map(|rel| format!("{} {}", rel.version, rel.outcome))
        .unwrap_or_default();
    r.set(
        "Progressing",
        releasing,
        if releasing { "RollingOut" } else { "Complete" },
        release_msg,
    );
    let degraded_msg: Vec<String> = r
        .status
        .failed_version
        .iter()
        .map(|f| format!("version {} failed: {}; running {version}", f.version, f.reason))
        .chain(bad_artifacts.iter().cloned())
        .collect();
    let degraded_reason = if r.status.failed_version.is_some() {
        "RolloutFailed"
    } else if !bad_artifacts.is_empty() {
        "ArtifactMismatch"
    } else {
        "AsExpected"
    };
    r.set(
        "Degraded",
        !degraded_msg.is_empty(),
        degraded_reason,
        degraded_msg.join("; "),
    );
    let not_ready = dependencies_not_ready(ctx, app);
    let (ready, reason, message) = if !not_ready.is_empty() {
        (
            false,
            reasons::DEPENDENCY_NOT_READY,
            format!(
                "waiting for {} to be Ready; no new version rolls out meanwhile",
                not_ready.join(", ")
            ),
        )
    } else if !degraded_msg.is_empty() {
        (false, degraded_reason, degraded_msg.join("; "))
    } else if health == AppHealth::Progressing {
        (false, "Progressing", format!("rolling out {version}"))
    } else if health != AppHealth::Healthy {
        (
            false,
            "Unavailable",
            format!("{available} of {want} replicas available"),
        )
    } else {
        (
            true,
            reasons::RECONCILED,
            format!("{version} runs with {available} of {want} replicas available"),
        )
    };
    r.set(reasons::READY, ready, reason, message);
}

/// Whether the Deployment's controller has rolled out its current generation
/// to every replica.
fn settled(d: &Deployment) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && st.updated_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) == want
}
