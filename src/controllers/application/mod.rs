//! Application reconciler: owns a Deployment and a Service (server-side
//! apply), repairs them when they are deleted or changed by hand, rolls new
//! versions out behind a health gate and back when they fail, checks the
//! stored artifacts, and publishes the health signal the recovery engine reads.

pub mod desired;
pub mod rollout;

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    core::{DeserializeGuard, NamespaceResourceScope},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    Context, Error, components,
    kind::Kind,
    status::{publish, write_status},
    validation::{Invalid, report_invalid},
};
use crate::{
    api::{
        Application, Database, VirtualMachine,
        application::{
            ActionRecord, AppHealth, ApplicationStatus, ArtifactStatus, DependencyKind, FailedVersion, Repair,
        },
        common::{ComponentKind, condition, find_condition, reasons, set_condition},
    },
    providers::artifacts,
};

/// Checks only the operator can make (pure: reads the shared stores).
pub fn validate(ctx: &Context, app: &Application) -> Result<(), Invalid> {
    let ns = app.namespace().unwrap_or_default();
    for (i, d) in app.spec.depends_on.iter().enumerate() {
        let kind = dependency_kind(d.kind);
        if !components::exists(&ctx.stores, kind, &ns, &d.name) {
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
                use super::kind::CommonStatus;
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
    // The store may not have our own fresh write yet: ask before calling it deleted.
    let live = match live {
        Some(l) => Some((*l).clone()),
        None => api.get_opt(&name).await?,
    };
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
            if super::apply::is_subset(&want, &have) {
                return Ok(None);
            }
            Some((
                "Reverted".to_string(),
                format!("{what} {name} was changed outside reprise; put it back"),
            ))
        }
    };
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
    let interval = app.spec.artifact_check_interval.as_std();
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

async fn delete_owned<T>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    T: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<T> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => {
            ctx.metrics.wrote("Application", "delete");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn reconcile(obj: Arc<Application>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        if let Err(invalid) = validate(&ctx, &obj) {
            return report_invalid(&ctx, obj.as_ref(), &invalid).await;
        }
        let app = obj.as_ref();
        let ns = app.namespace().unwrap_or_default();
        let name = app.name_any();
        let generation = app.meta().generation.unwrap_or(0);
        let now = Timestamp::now();
        let mut status = app.status.clone().unwrap_or_default();
        let existed_before = !status.releases.is_empty();
        let key = ObjectRef::new(&name).within(&ns);
        let mut live_deploy = ctx.stores.deployments.get(&key);
        let mut live_service = ctx.stores.services.get(&ObjectRef::new(&name).within(&ns));
        let mut restarted_at = live_deploy.as_ref().and_then(|d| {
            d.spec
                .template
                .metadata
                .as_ref()?
                .annotations
                .as_ref()?
                .get(desired::RESTARTED_ANNOTATION)
                .cloned()
        });

        // A recovery action asked through the annotation runs once per id.
        if let Some((action, id)) = super::status::requested_action(app, status.last_action.as_ref()) {
            let (outcome, message) = match action.as_str() {
                "restart" => {
                    restarted_at = Some(now.to_string());
                    ("Done", "rolling restart of the pods".to_string())
                }
                "recreate" => {
                    delete_owned::<Deployment>(&ctx, &ns, &name).await?;
                    delete_owned::<Service>(&ctx, &ns, &name).await?;
                    live_deploy = None;
                    live_service = None;
                    ("Done", "deleted and recreated the Deployment and Service".to_string())
                }
                "rollback" => {
                    // Back to the newest version that rolled out well before the current one.
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
                            ("Done", format!("rolling back from {cur} to {previous}"))
                        }
                        _ => ("Rejected", "no earlier version rolled out well".to_string()),
                    }
                }
                other => (
                    "Rejected",
                    format!("unknown action {other:?}: use restart, recreate or rollback"),
                ),
            };
            publish(
                &ctx,
                app,
                if outcome == "Done" {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                "RecoveryAction",
                &action,
                format!("{action} ({id}): {message}"),
            )
            .await;
            status.last_action = Some(ActionRecord {
                id,
                action,
                time: Time(now),
                outcome: outcome.into(),
                message,
            });
        }

        let not_ready = dependencies_not_ready(&ctx, app);
        let current_image = status.current_version.as_deref().map(|v| desired::image(app, v));
        let is_rolled_out = match (&live_deploy, &current_image) {
            (Some(d), Some(img)) => rolled_out(d, img),
            _ => false,
        };
        let why = why_not_rolled_out(
            live_deploy.as_deref(),
            status.current_version.as_deref().unwrap_or(&app.spec.version),
        );
        let decision = rollout::step(
            &mut status,
            &rollout::Inputs {
                spec_version: &app.spec.version,
                generation,
                deps_ready: not_ready.is_empty(),
                deadline: app.spec.rollout.progress_deadline.as_std(),
                history_limit: app.spec.rollout.history_limit as usize,
                now,
                rolled_out: is_rolled_out,
                not_rolled_out_why: &why,
            },
        );
        if let Some((version, why)) = &decision.rolled_back {
            let to = &decision.version;
            publish(
                &ctx,
                app,
                EventType::Warning,
                "RolledBack",
                "Rollout",
                format!("{version} rolled back to {to}: {why}"),
            )
            .await;
        }

        let deploy = desired::deployment(app, &decision.version, restarted_at.as_deref());
        let service = desired::service(app);
        let mut repairs = vec![];
        let applied = async {
            if let Some(r) = ensure(&ctx, live_deploy.clone(), &deploy, existed_before).await? {
                repairs.push(("Deployment", r));
            }
            if let Some(r) = ensure(&ctx, live_service.clone(), &service, existed_before).await? {
                repairs.push(("Service", r));
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = applied {
            // Say why in status and an Event (once: both only when the status changes), then back off.
            status.observed_generation = generation;
            let message = format!("cannot apply the Deployment or Service: {e}");
            set_condition(
                &mut status.conditions,
                condition(reasons::READY, false, "ApplyFailed", message.clone(), generation),
            );
            if write_status(&ctx, app, &status).await? {
                publish(&ctx, app, EventType::Warning, "ApplyFailed", "Apply", message).await;
            }
            return Err(e);
        }
        for (object, (action, message)) in repairs {
            ctx.metrics.repaired("Application", object, &action);
            publish(
                &ctx,
                app,
                EventType::Warning,
                &format!("{object}{action}"),
                "Repair",
                message.clone(),
            )
            .await;
            status.last_repair = Some(Repair {
                time: Time(now),
                object: object.into(),
                action,
                message,
            });
        }

        let artifacts_next = check_artifacts(&ctx, app, &mut status, now).await;
        let bad_artifacts: Vec<String> = status
            .artifacts
            .iter()
            .filter(|a| !a.ok)
            .map(|a| format!("artifact {}: {}", a.name, a.message))
            .collect();

        // Conditions and the health signal.
        let live = live_deploy.as_deref();
        let want = app.spec.replicas;
        let available = live.and_then(|d| d.status.as_ref()?.available_replicas).unwrap_or(0);
        let progressing = status
            .releases
            .first()
            .is_some_and(|r| r.outcome == rollout::PROGRESSING);
        let health = if progressing {
            AppHealth::Progressing
        } else if live.is_none() || (want > 0 && available == 0) {
            AppHealth::Failed
        } else if status.failed_version.is_some() || !bad_artifacts.is_empty() || available < want {
            AppHealth::Degraded
        } else {
            AppHealth::Healthy
        };
        status.health = Some(health);
        status.observed_generation = generation;
        let conds = &mut status.conditions;
        set_condition(
            conds,
            condition(
                "Available",
                available > 0 || want == 0,
                if available > 0 || want == 0 {
                    "MinimumReplicasAvailable"
                } else {
                    "Unavailable"
                },
                format!("{available} of {want} replicas available"),
                generation,
            ),
        );
        let release_msg = status
            .releases
            .first()
            .map(|r| format!("{} {}", r.version, r.outcome))
            .unwrap_or_default();
        set_condition(
            conds,
            condition(
                "Progressing",
                progressing,
                if progressing { "RollingOut" } else { "Complete" },
                release_msg,
                generation,
            ),
        );
        let degraded_msg: Vec<String> = status
            .failed_version
            .iter()
            .map(|f| {
                format!(
                    "version {} failed: {}; running {}",
                    f.version, f.reason, decision.version
                )
            })
            .chain(bad_artifacts.iter().cloned())
            .collect();
        let degraded_reason = if status.failed_version.is_some() {
            "RolloutFailed"
        } else if !bad_artifacts.is_empty() {
            "ArtifactMismatch"
        } else {
            "AsExpected"
        };
        set_condition(
            conds,
            condition(
                "Degraded",
                !degraded_msg.is_empty(),
                degraded_reason,
                degraded_msg.join("; "),
                generation,
            ),
        );
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
        } else if progressing {
            (false, "Progressing", format!("rolling out {}", decision.version))
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
                format!(
                    "{} runs with {available} of {want} replicas available",
                    decision.version
                ),
            )
        };
        set_condition(conds, condition(reasons::READY, ready, reason, message, generation));
        write_status(&ctx, app, &status).await?;

        let requeue = [decision.requeue, artifacts_next].into_iter().flatten().min();
        Ok(requeue
            .map(|d| Action::requeue(d + Duration::from_millis(500)))
            .unwrap_or_else(Action::await_change))
    }
    .boxed()
}
