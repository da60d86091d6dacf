//! VirtualMachine reconciler: owns a KubeVirt VirtualMachine built from the
//! spec (server-side apply, applied only when it differs), reports the VM and
//! its instance in status, takes scheduled and asked-for snapshots with
//! retention, runs the engine's `restart`, `recreate` and `restoreSnapshot`
//! actions, and publishes the health signal.

pub mod drill;
pub mod snapshots;

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Context, Error, components,
    status::{Report, action_record, requested_action},
    validation::{Invalid, check_cron, report_invalid},
};
use crate::{
    api::{
        VirtualMachine,
        common::{ComponentKind, reasons},
        virtual_machine::{MOVE_TO_ANNOTATION, MovedTo, VmActionProgress, VmActionStep, VmHealth, VmHealthState},
    },
    providers::vm::{
        Observed, VmProvider,
        kubevirt::{KubeVirt, wants_running},
    },
};

pub const PROVISIONED: &str = "Provisioned";
pub const RUNNING: &str = "Running";

/// Checks only the operator can make (pure: reads the shared stores).
pub fn validate(ctx: &Context, vm: &VirtualMachine) -> Result<(), Invalid> {
    let ns = vm.namespace().unwrap_or_default();
    if let Some(b) = &vm.spec.backup {
        check_cron("spec.backup.schedule", &b.schedule)?;
    }
    if let Some(host) = &vm.spec.host_ref
        && !components::exists(&ctx.stores, ComponentKind::Server, &ns, &host.name)
    {
        return Err(Invalid::external(
            "spec.hostRef",
            format!("Server {:?} does not exist in namespace {ns:?}", host.name),
        ));
    }
    Ok(())
}

fn set_health(r: &mut Report<'_, VirtualMachine>, state: VmHealthState, message: impl Into<String>) {
    let since = match &r.status.health {
        Some(h) if h.state == state => h.since.clone(),
        _ => Time(r.now),
    };
    r.status.health = Some(VmHealth {
        state,
        since,
        message: message.into(),
    });
}

fn step(p: &mut VmActionProgress, step: &str, now: Timestamp, message: String) {
    p.steps.push(VmActionStep {
        step: step.into(),
        time: Time(now),
        message,
    });
}

pub fn reconcile(obj: Arc<VirtualMachine>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let vm = obj.as_ref();
        if let Err(invalid) = validate(&ctx, vm) {
            return report_invalid(&ctx, vm, &invalid).await;
        }
        let mut r = Report::new(&ctx, vm);
        if !ctx.settings.kubevirt_installed {
            r.set(
                reasons::READY,
                false,
                "ProviderNotInstalled",
                "KubeVirt's CRDs (kubevirt.io, snapshot.kubevirt.io) were not installed when reprise started; install KubeVirt and restart reprise",
            );
            r.write().await?;
            return Ok(Action::await_change());
        }
        let kv = KubeVirt {
            client: ctx.client.clone(),
        };
        let again = drive(&mut r, &ctx, &kv, vm).await?;
        r.write().await?;
        Ok(match again {
            Some(d) => Action::requeue(d),
            None => Action::await_change(),
        })
    }
    .boxed()
}

/// One pass; returns when to look again (None: on the next change).
async fn drive(
    r: &mut Report<'_, VirtualMachine>,
    ctx: &Context,
    kv: &KubeVirt,
    vm: &VirtualMachine,
) -> Result<Option<Duration>, Error> {
    let mut again: Option<Duration> = None;
    let soon = |d: Duration, again: &mut Option<Duration>| *again = Some(again.map_or(d, |a| a.min(d)));
    let mut progress = r.status.action_progress.clone();
    let in_progress = |p: &Option<VmActionProgress>| {
        p.as_ref()
            .is_some_and(|p| ["Stopping", "Restoring", "Starting"].contains(&p.phase.as_str()))
    };

    // Actions the engine asks. A drill is recorded as an action when it ends.
    let mut recreate = false;
    let mut asked = requested_action(vm, r.status.last_action.as_ref());
    if let Some((action, id)) = asked.take_if(|(a, _)| a == "drill")
        && r.status.last_drill.as_ref().is_none_or(|d| d.id != id)
    {
        match drill::start(kv, vm, &id, r.now).await? {
            Ok(d) => {
                r.event(EventType::Normal, "DrillStarted", "Drill", d.message.clone());
                r.status.last_drill = Some(d);
            }
            Err(why) => {
                let (record, type_, note) = action_record(r.now, action, id, "Rejected", why);
                r.event(type_, "DrillFailed", "Drill", note);
                r.status.last_action = Some(record);
            }
        }
    }
    if let Some((action, id)) = asked {
        let (outcome, message) = match action.as_str() {
            "restart" => {
                kv.restart(vm).await?;
                ("Done", "deleted the VM instance; KubeVirt starts a new one".to_string())
            }
            "recreate" => {
                kv.delete(vm).await?;
                recreate = true;
                (
                    "Done",
                    "deleted the KubeVirt VirtualMachine; created again from the spec".to_string(),
                )
            }
            "move" => match vm.annotations().get(MOVE_TO_ANNOTATION) {
                None => (
                    "Rejected",
                    format!("set the {MOVE_TO_ANNOTATION} annotation to the target Server"),
                ),
                Some(target)
                    if !components::exists(
                        &ctx.stores,
                        ComponentKind::Server,
                        &vm.namespace().unwrap_or_default(),
                        target,
                    ) =>
                {
                    ("Rejected", format!("Server {target:?} does not exist"))
                }
                Some(target) => {
                    r.status.moved_to = Some(MovedTo {
                        server: target.clone(),
                        generation: r.generation,
                    });
                    let mut moved = vm.clone();
                    moved.status = Some(r.status.clone());
                    kv.apply(&moved, wants_running(vm)).await?;
                    kv.restart(vm).await?;
                    ("Done", format!("placed on Server {target}; instance restarted there"))
                }
            },
            "restoresnapshot" if in_progress(&progress) => ("Rejected", "a restore is already under way".to_string()),
            "restoresnapshot" => match kv.snapshots(vm).await?.into_iter().find(|s| s.ready) {
                None => ("Rejected", "no snapshot is ready to restore from".to_string()),
                Some(s) => {
                    progress = Some(VmActionProgress {
                        id: id.clone(),
                        action: "restoreSnapshot".into(),
                        snapshot: Some(s.name.clone()),
                        phase: "Stopping".into(),
                        steps: vec![],
                    });
                    ("Done", format!("restoring snapshot {}: stop, restore, start", s.name))
                }
            },
            other => (
                "Rejected",
                format!("unknown action {other:?}: use restart, recreate, restoreSnapshot, move or drill"),
            ),
        };
        let (record, type_, note) = action_record(r.now, action, id, outcome, message);
        r.event(type_, "RecoveryAction", "Recover", note);
        r.status.last_action = Some(record);
    }

    // The KubeVirt VM: created, or put back, or updated when it differs.
    let mut observed = kv.observe(vm).await?;
    let stopped_for_restore = progress
        .as_ref()
        .is_some_and(|p| ["Stopping", "Restoring"].contains(&p.phase.as_str()));
    let running = wants_running(vm) && !stopped_for_restore;
    let was_provisioned = r.was(PROVISIONED) == Some(true);
    let held = (!observed.exists && was_provisioned && !recreate)
        .then(|| super::detection::held_by(&ctx.stores, vm))
        .flatten();
    if held.is_some() {
        // The window's end is noticed at the next look.
        soon(Duration::from_secs(30), &mut again);
    } else if !observed.exists && was_provisioned && !recreate {
        ctx.metrics.repaired("VirtualMachine", "VirtualMachine", "Recreated");
        r.event(
            EventType::Warning,
            "Recreated",
            "Repair",
            "the KubeVirt VirtualMachine was deleted; recreated it from the spec",
        );
        set_health(r, VmHealthState::Missing, "the KubeVirt VirtualMachine was gone");
    }
    // What is applied follows the status being built (a move changes the placement).
    let mut current = vm.clone();
    current.status = Some(r.status.clone());
    let live_matches = kv_matches(&observed, &current, running);
    if !live_matches && held.is_none() {
        let revision = kv.apply(&current, running).await?;
        ctx.metrics.wrote("VirtualMachine", "VirtualMachine");
        if r.status.software_revision.as_ref() != Some(&revision) {
            r.event(
                EventType::Normal,
                "SoftwareRevision",
                "Apply",
                format!("cloud-init software revision {revision} applied"),
            );
        }
        r.status.software_revision = Some(revision);
        observed = kv.observe(vm).await?;
    } else if let Some(rev) = &observed.software_revision {
        r.status.software_revision = Some(rev.clone());
    }

    // A restore in progress moves on.
    if let Some(p) = progress
        .as_mut()
        .filter(|p| ["Stopping", "Restoring", "Starting"].contains(&p.phase.as_str()))
    {
        let snapshot = p.snapshot.clone().unwrap_or_default();
        let restore = format!("{}-{}", vm.name_any(), p.id);
        match p.phase.as_str() {
            "Stopping" if !observed.instance => {
                step(p, "Stopped", r.now, "the VM instance is gone".into());
                kv.restore(vm, &snapshot, &restore).await?;
                p.phase = "Restoring".into();
            }
            "Restoring" => match kv.restore_complete(vm, &restore).await? {
                Some(true) => {
                    step(
                        p,
                        "Restored",
                        r.now,
                        format!("VirtualMachineRestore {restore} complete"),
                    );
                    p.phase = "Starting".into();
                    kv.apply(&current, wants_running(vm)).await?;
                    observed = kv.observe(vm).await?;
                }
                Some(false) => {}
                None => kv.restore(vm, &snapshot, &restore).await?,
            },
            "Starting" if observed.ready || !wants_running(vm) => {
                step(p, "Started", r.now, "running and ready again".into());
                p.phase = "Succeeded".into();
                r.event(
                    EventType::Normal,
                    "Restored",
                    "RestoreSnapshot",
                    format!("restored from snapshot {snapshot} and running again"),
                );
            }
            _ => {}
        }
        soon(Duration::from_secs(2), &mut again);
    }
    let restoring = in_progress(&progress);
    r.status.action_progress = progress;

    // A drill under way moves on.
    if let Some(mut d) = r.status.last_drill.clone().filter(|d| d.finished.is_none()) {
        match drill::advance(kv, vm, &mut d, r.now).await? {
            Some((outcome, message)) => {
                let verified = outcome == "Done";
                let (record, type_, _) = action_record(r.now, "drill".into(), d.id.clone(), outcome, message.clone());
                r.event(
                    type_,
                    if verified { "DrillVerified" } else { "DrillFailed" },
                    "Drill",
                    message,
                );
                r.status.last_action = Some(record);
            }
            None => soon(Duration::from_secs(2), &mut again),
        }
        r.status.last_drill = Some(d);
    }

    // Snapshots: on schedule, on request; retention.
    if let Some(d) = snapshots::reconcile(r, kv, vm).await? {
        soon(d, &mut again);
    }

    // Status and the health signal.
    r.status.phase = observed.phase.clone();
    r.status.node = observed.node.clone();
    r.status.ip_addresses = observed.ip_addresses.clone();
    r.status.guest = observed.guest.clone();
    r.set(
        PROVISIONED,
        observed.exists,
        if observed.exists { "Created" } else { "Missing" },
        if observed.exists {
            "the KubeVirt VirtualMachine exists".to_string()
        } else {
            "the KubeVirt VirtualMachine does not exist".to_string()
        },
    );
    let phase = observed.phase.clone().unwrap_or_else(|| "none".into());
    r.set(
        RUNNING,
        phase == "Running",
        if phase == "Running" { "Running" } else { "NotRunning" },
        format!("VM instance phase {phase}"),
    );
    let grace = ctx.settings.vm_ready_grace;
    let since_start = observed
        .instance_created
        .map(|c| Duration::from_secs((r.now.as_second() - c.as_second()).max(0) as u64))
        .unwrap_or_default();
    let (state, message) = if restoring {
        (VmHealthState::Restoring, "restoring a snapshot".to_string())
    } else if !observed.exists {
        (
            VmHealthState::Missing,
            match &held {
                Some(w) => format!(
                    "the KubeVirt VirtualMachine is gone; not recreated while MaintenanceWindow {w} holds recovery"
                ),
                None => "the KubeVirt VirtualMachine is gone".to_string(),
            },
        )
    } else if phase == "Failed" {
        (VmHealthState::Failed, "the VM instance failed".to_string())
    } else if !wants_running(vm) {
        (VmHealthState::Healthy, "stopped, as asked".to_string())
    } else if observed.ready {
        (
            VmHealthState::Healthy,
            format!("running on {}", observed.node.as_deref().unwrap_or("?")),
        )
    } else if since_start < grace && observed.instance {
        soon(grace - since_start, &mut again);
        (
            VmHealthState::Starting,
            format!("instance phase {phase}, not ready yet"),
        )
    } else if !observed.instance {
        soon(grace, &mut again);
        (
            VmHealthState::Starting,
            "waiting for KubeVirt to start an instance".to_string(),
        )
    } else {
        (
            VmHealthState::NotReady,
            format!("instance phase {phase}, not ready after {}s", grace.as_secs()),
        )
    };
    // A failure observed stays the failure until the VM is healthy again.
    set_health(r, state, message);
    let ready = state == VmHealthState::Healthy;
    let health_message = r.status.health.as_ref().map(|h| h.message.clone()).unwrap_or_default();
    r.set(
        reasons::READY,
        ready,
        if ready { reasons::RECONCILED } else { "NotHealthy" },
        health_message,
    );
    Ok(again)
}

/// Whether the KubeVirt VM as observed already holds what reprise would apply.
fn kv_matches(observed: &Observed, vm: &VirtualMachine, running: bool) -> bool {
    let Some(have) = &observed.object else {
        return false;
    };
    let want = crate::providers::vm::kubevirt::desired(vm, running);
    super::apply::is_subset(&want["spec"], &have["spec"])
        && super::apply::is_subset(&want["metadata"]["labels"], &have["metadata"]["labels"])
        && super::apply::is_subset(&want["metadata"]["annotations"], &have["metadata"]["annotations"])
}
