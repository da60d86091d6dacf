//! VirtualMachine reconciler: owns the engine's VM (KubeVirt's, applied only
//! when it differs), reports the VM and its instance in status, takes
//! scheduled and asked-for snapshots with retention, runs the engine's
//! `restart`, `recreate`, `restoreSnapshot` and `move` actions, and publishes
//! the health signal. An action is recorded (`Accepted`) before its effect is
//! asked for, so an operator that takes over never asks twice; after a
//! restart, recreate or move the VM is healthy only once a new instance runs
//! and is ready.

pub mod contract;
pub mod scratch;
pub mod snapshots;

use crate::runtime::Action;
use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use crate::runtime::{
    Context, Error,
    report::{Report, action_record, requested_action, unknown_action},
    stores,
    validation::{Invalid, check_cron, report_invalid},
};
use crate::{
    api::{
        VirtualMachine,
        common::{ComponentKind, ComponentRef, reasons},
        contract::{ActionOutcome, ActionVerb, Health, Request},
        virtual_machine::{
            MOVE_TO_ANNOTATION, MovedTo, RunState, VmActionProgress, VmActionStep, VmHealthState, VmProvider,
        },
    },
    crash,
    providers::vm::{Observed, VmEngine, kubevirt::KubeVirt},
};

pub const PROVISIONED: &str = "Provisioned";
pub const RUNNING: &str = "Running";

/// Whether a quantity's text is a number above zero (its unit aside).
fn positive_quantity(q: &str) -> bool {
    let digits: String = q
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    !q.trim_start().starts_with(['-', '+']) && digits.parse::<f64>().is_ok_and(|v| v > 0.0)
}

/// Checks only the operator can make (pure: reads the shared stores).
pub fn validate(ctx: &Context, vm: &VirtualMachine) -> Result<(), Invalid> {
    let ns = vm.namespace().unwrap_or_default();
    if let Some(b) = &vm.spec.backup {
        check_cron("spec.backup.schedule", &b.schedule)?;
    }
    for (i, d) in vm.spec.disks.iter().enumerate() {
        if let Some(dv) = &d.data_volume
            && !positive_quantity(&dv.size.0)
        {
            return Err(Invalid::new(
                format!("spec.disks[{i}].dataVolume.size"),
                format!("{:?} is not a positive quantity (e.g. 20Gi)", dv.size.0),
            ));
        }
    }
    if let Some(host) = &vm.spec.host_ref {
        let server = ComponentRef {
            kind: ComponentKind::Server,
            name: host.name.clone(),
        };
        if !stores::exists(&ctx.stores, &ns, &server) {
            return Err(Invalid::external(
                "spec.hostRef",
                format!("Server {:?} does not exist in namespace {ns:?}", host.name),
            ));
        }
    }
    Ok(())
}

/// Whether the spec asks the VM to run.
pub fn wants_running(vm: &VirtualMachine) -> bool {
    vm.spec.run_state == RunState::Running
}

fn set_health(r: &mut Report<'_, VirtualMachine>, state: VmHealthState, message: impl Into<String>) {
    r.status.health = Some(Health::observe(r.status.health.as_ref(), state, message, r.now));
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
        // The engine named in the spec; another engine is one more arm here.
        let again = match vm.spec.provider {
            VmProvider::KubeVirt if ctx.settings.kubevirt_installed => {
                let engine = KubeVirt {
                    client: ctx.client.clone(),
                };
                drive(&mut r, &ctx, &engine, vm).await?
            }
            VmProvider::KubeVirt => {
                r.set(
                    reasons::READY,
                    false,
                    "ProviderNotInstalled",
                    "spec.provider: KubeVirt's CRDs (kubevirt.io, snapshot.kubevirt.io) were not installed when reprise started; install KubeVirt and restart reprise",
                );
                None
            }
        };
        r.write().await?;
        Ok(match again {
            Some(d) => Action::requeue(d),
            None => Action::await_change(),
        })
    }
    .boxed()
}

/// Why the provider's VM of this name is not this VirtualMachine's to touch:
/// it exists and something else controls it.
fn foreign(observed: &Observed, vm: &VirtualMachine) -> Option<String> {
    use kube::Resource;
    let live: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(observed.object.as_ref()?.get("metadata")?.clone()).ok()?;
    (!crate::runtime::apply::controlled_by(&live, vm.meta().uid.as_deref())).then(|| {
        format!(
            "the KubeVirt VirtualMachine {} exists and belongs to {}: reprise leaves it alone; rename this VirtualMachine or remove that one",
            vm.name_any(),
            crate::runtime::apply::controller_of(&live)
        )
    })
}

/// When to look again: the soonest of what each part asked for.
#[derive(Default)]
struct Again(Option<Duration>);

impl Again {
    fn soon(&mut self, d: Duration) {
        self.0 = Some(self.0.map_or(d, |a| a.min(d)));
    }
}

fn in_progress(p: &Option<VmActionProgress>) -> bool {
    p.as_ref()
        .is_some_and(|p| ["Stopping", "Restoring", "Starting"].contains(&p.phase.as_str()))
}

/// One pass; returns when to look again (None: on the next change).
async fn drive<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    ctx: &Context,
    engine: &E,
    vm: &VirtualMachine,
) -> Result<Option<Duration>, Error>
where
    Error: From<E::Error>,
{
    let mut again = Again::default();
    let mut progress = r.status.action_progress.clone();
    let before = engine.observe(vm).await?;
    if let Some(why) = foreign(&before, vm) {
        // Never restart, apply over or delete what another owner controls.
        r.fail_and_tell(reasons::READY, reasons::CONFLICT, "Apply", why);
        return Ok(Some(crate::runtime::validation::RECHECK_MISSING));
    }
    finish_accepted(r, engine, vm, &before).await?;
    let recreate = act(r, ctx, engine, vm, &before, &mut progress).await?;
    let (mut observed, held) = ensure(r, ctx, engine, vm, &progress, recreate, &mut again).await?;
    if progress_restore(r, engine, vm, &mut progress, &mut observed).await? {
        again.soon(Duration::from_secs(2));
    }
    let restoring = in_progress(&progress);
    r.status.action_progress = progress;
    if drill_moves_on(r, engine, vm).await? {
        again.soon(Duration::from_secs(2));
    }
    if let Some(d) = snapshots::reconcile(r, engine, vm).await? {
        again.soon(d);
    }
    report(r, ctx, vm, &observed, held, restoring, &mut again);
    Ok(again.0)
}

/// Records a request as taken on before its effect is asked for.
async fn accept(r: &mut Report<'_, VirtualMachine>, req: &Request, message: &str) -> Result<(), Error> {
    let (record, _, _) = action_record(
        r.now,
        req.verb.clone(),
        req.id.clone(),
        ActionOutcome::Accepted,
        message.into(),
    );
    r.status.last_action = Some(record);
    r.checkpoint().await
}

/// A request the operator before this one took on and never answered: its
/// effect is asked for now if it did not happen (the instance it was to
/// replace still runs), never a second time.
async fn finish_accepted<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    engine: &E,
    vm: &VirtualMachine,
    observed: &Observed,
) -> Result<(), Error>
where
    Error: From<E::Error>,
{
    let Some(last) = r
        .status
        .last_action
        .clone()
        .filter(|a| a.outcome == ActionOutcome::Accepted)
    else {
        return Ok(());
    };
    let verb = ActionVerb::parse(&last.action);
    let still_there = r.status.replaced_instance.is_some() && observed.instance_uid == r.status.replaced_instance;
    let message = match verb {
        Some(ActionVerb::Recreate) if still_there => {
            engine.delete(vm).await?;
            "deleted the VM (after a restart of the operator); created again from the spec"
        }
        Some(_) if still_there => {
            engine.restart(vm).await?;
            "deleted the VM instance (after a restart of the operator); a new one starts"
        }
        _ => "carried out before a restart of the operator",
    };
    let (record, type_, note) = action_record(r.now, last.action, last.id, ActionOutcome::Done, message.into());
    r.event(type_, "RecoveryAction", "Recover", note);
    r.status.last_action = Some(record);
    Ok(())
}

/// Runs the action asked through the annotation. Returns whether the VM was
/// deleted to be recreated.
async fn act<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    ctx: &Context,
    engine: &E,
    vm: &VirtualMachine,
    before: &Observed,
    progress: &mut Option<VmActionProgress>,
) -> Result<bool, Error>
where
    Error: From<E::Error>,
{
    let Some(req) = requested_action(vm, r.status.last_action.as_ref()) else {
        return Ok(false);
    };
    if req.action() == Some(ActionVerb::Drill) {
        // A drill is recorded as an action when it ends.
        if r.status.last_drill.as_ref().is_none_or(|d| d.id != req.id) {
            start_drill(r, engine, vm, &req).await?;
        }
        return Ok(false);
    }
    let mut recreate = false;
    let (outcome, message) = match req.action() {
        Some(v @ (ActionVerb::Restart | ActionVerb::Recreate)) => {
            r.status.replaced_instance = before.instance_uid.clone();
            accept(r, &req, "under way").await?;
            crash::point("vm:accepted");
            if v == ActionVerb::Restart {
                engine.restart(vm).await?;
                (
                    ActionOutcome::Done,
                    "deleted the VM instance; a new one starts".to_string(),
                )
            } else {
                engine.delete(vm).await?;
                recreate = true;
                (
                    ActionOutcome::Done,
                    "deleted the VM; created again from the spec".to_string(),
                )
            }
        }
        Some(ActionVerb::Move) => move_to(r, ctx, engine, vm, before, &req).await?,
        Some(ActionVerb::RestoreSnapshot) if in_progress(progress) => {
            (ActionOutcome::Rejected, "a restore is already under way".to_string())
        }
        Some(ActionVerb::RestoreSnapshot) => match engine.snapshots(vm).await?.into_iter().find(|s| s.ready) {
            None => (
                ActionOutcome::Rejected,
                "no snapshot is ready to restore from".to_string(),
            ),
            Some(s) => {
                *progress = Some(VmActionProgress {
                    id: req.id.clone(),
                    action: ActionVerb::RestoreSnapshot.as_str().into(),
                    snapshot: Some(s.name.clone()),
                    phase: "Stopping".into(),
                    steps: vec![],
                });
                (
                    ActionOutcome::Done,
                    format!("restoring snapshot {}: stop, restore, start", s.name),
                )
            }
        },
        _ => (
            ActionOutcome::Rejected,
            unknown_action(&req.verb, ComponentKind::VirtualMachine),
        ),
    };
    crash::point("vm:restarted");
    let (record, type_, note) = action_record(r.now, req.verb, req.id, outcome, message);
    r.event(type_, "RecoveryAction", "Recover", note);
    r.status.last_action = Some(record);
    Ok(recreate)
}

/// `move`: placed on the Server named by the annotation, instance restarted there.
async fn move_to<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    ctx: &Context,
    engine: &E,
    vm: &VirtualMachine,
    before: &Observed,
    req: &Request,
) -> Result<(ActionOutcome, String), Error>
where
    Error: From<E::Error>,
{
    let Some(target) = vm.annotations().get(MOVE_TO_ANNOTATION) else {
        return Ok((
            ActionOutcome::Rejected,
            format!("set the {MOVE_TO_ANNOTATION} annotation to the target Server"),
        ));
    };
    let server = ComponentRef {
        kind: ComponentKind::Server,
        name: target.clone(),
    };
    if !stores::exists(&ctx.stores, &vm.namespace().unwrap_or_default(), &server) {
        return Ok((ActionOutcome::Rejected, format!("Server {target:?} does not exist")));
    }
    r.status.moved_to = Some(MovedTo {
        server: target.clone(),
        generation: r.generation,
    });
    r.status.replaced_instance = before.instance_uid.clone();
    accept(r, req, "under way").await?;
    let mut moved = vm.clone();
    moved.status = Some(r.status.clone());
    r.still_active()?;
    engine.apply(&moved, wants_running(vm)).await?;
    engine.restart(vm).await?;
    Ok((
        ActionOutcome::Done,
        format!("placed on Server {target}; instance restarted there"),
    ))
}

/// The engine's VM: created, or put back, or updated when it differs.
/// Returns what the engine reports after, and the maintenance window holding
/// a repair, if one does.
async fn ensure<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    ctx: &Context,
    engine: &E,
    vm: &VirtualMachine,
    progress: &Option<VmActionProgress>,
    recreate: bool,
    again: &mut Again,
) -> Result<(Observed, Option<String>), Error>
where
    Error: From<E::Error>,
{
    let mut observed = engine.observe(vm).await?;
    let stopped_for_restore = progress
        .as_ref()
        .is_some_and(|p| ["Stopping", "Restoring"].contains(&p.phase.as_str()));
    let running = wants_running(vm) && !stopped_for_restore;
    let was_provisioned = r.was(PROVISIONED) == Some(true);
    let held = (!observed.exists && was_provisioned && !recreate)
        .then(|| crate::runtime::holds::held_by(&ctx.stores, vm))
        .flatten();
    if held.is_some() {
        // The window's end is noticed at the next look.
        again.soon(Duration::from_secs(30));
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
    if !engine.matches(&observed, &current, running) && held.is_none() {
        r.still_active()?;
        let revision = engine.apply(&current, running).await?;
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
        observed = engine.observe(vm).await?;
    } else if let Some(rev) = &observed.software_revision {
        r.status.software_revision = Some(rev.clone());
    }
    Ok((observed, held))
}

/// A snapshot restore in progress moves on (stop, restore, start). Returns
/// whether one was under way.
async fn progress_restore<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    engine: &E,
    vm: &VirtualMachine,
    progress: &mut Option<VmActionProgress>,
    observed: &mut Observed,
) -> Result<bool, Error>
where
    Error: From<E::Error>,
{
    let Some(p) = progress
        .as_mut()
        .filter(|p| ["Stopping", "Restoring", "Starting"].contains(&p.phase.as_str()))
    else {
        return Ok(false);
    };
    let snapshot = p.snapshot.clone().unwrap_or_default();
    let restore = format!("{}-{}", vm.name_any(), p.id);
    match p.phase.as_str() {
        "Stopping" if !observed.instance => {
            step(p, "Stopped", r.now, "the VM instance is gone".into());
            engine.restore(vm, &snapshot, &restore).await?;
            p.phase = "Restoring".into();
        }
        "Restoring" => match engine.restore_complete(vm, &restore).await? {
            Some(true) => {
                step(
                    p,
                    "Restored",
                    r.now,
                    format!("VirtualMachineRestore {restore} complete"),
                );
                p.phase = "Starting".into();
                let mut current = vm.clone();
                current.status = Some(r.status.clone());
                r.still_active()?;
                engine.apply(&current, wants_running(vm)).await?;
                *observed = engine.observe(vm).await?;
            }
            Some(false) => {}
            None => engine.restore(vm, &snapshot, &restore).await?,
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
    Ok(true)
}

/// Starts a drill: the newest ready snapshot restored into a scratch VM.
async fn start_drill<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    engine: &E,
    vm: &VirtualMachine,
    req: &Request,
) -> Result<(), Error>
where
    Error: From<E::Error>,
{
    match scratch::start(engine, vm, &req.id, r.now).await? {
        Ok(d) => {
            r.event(EventType::Normal, "DrillStarted", "Drill", d.message.clone());
            r.status.last_drill = Some(d);
        }
        Err(why) => {
            let (record, type_, note) =
                action_record(r.now, req.verb.clone(), req.id.clone(), ActionOutcome::Rejected, why);
            r.event(type_, "DrillFailed", "Drill", note);
            r.status.last_action = Some(record);
        }
    }
    Ok(())
}

/// A drill under way moves on. Returns whether it is still under way.
async fn drill_moves_on<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    engine: &E,
    vm: &VirtualMachine,
) -> Result<bool, Error>
where
    Error: From<E::Error>,
{
    let Some(mut d) = r.status.last_drill.clone().filter(|d| d.finished.is_none()) else {
        return Ok(false);
    };
    let ended = scratch::advance(engine, vm, &mut d, r.now).await?;
    let id = d.id.clone();
    r.status.last_drill = Some(d);
    let Some((outcome, message)) = ended else {
        return Ok(true);
    };
    let verified = outcome == ActionOutcome::Done;
    let (record, type_, _) = action_record(r.now, ActionVerb::Drill.as_str().into(), id, outcome, message.clone());
    r.event(
        type_,
        if verified { "DrillVerified" } else { "DrillFailed" },
        "Drill",
        message,
    );
    r.status.last_action = Some(record);
    Ok(false)
}

/// Status, conditions and the health signal from what the engine reports.
fn report(
    r: &mut Report<'_, VirtualMachine>,
    ctx: &Context,
    vm: &VirtualMachine,
    observed: &Observed,
    held: Option<String>,
    restoring: bool,
    again: &mut Again,
) {
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
    // A restart, recreate or move counts only once another instance is ready.
    if observed.ready && observed.instance_uid.is_some() && observed.instance_uid != r.status.replaced_instance {
        r.status.replaced_instance = None;
    }
    let (state, message) = health(r, ctx, vm, observed, held, restoring, again);
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
}

/// The health state and why.
fn health(
    r: &Report<'_, VirtualMachine>,
    ctx: &Context,
    vm: &VirtualMachine,
    observed: &Observed,
    held: Option<String>,
    restoring: bool,
    again: &mut Again,
) -> (VmHealthState, String) {
    let phase = observed.phase.clone().unwrap_or_else(|| "none".into());
    let grace = ctx.settings.vm_ready_grace;
    let age = |t: Timestamp| Duration::from_secs((r.now.as_second() - t.as_second()).max(0) as u64);
    let since_start = observed.instance_created.map(age).unwrap_or_default();
    // Not serving since: for how long the VM has been waited on.
    let waited = r
        .status
        .health
        .as_ref()
        .filter(|h| h.state != VmHealthState::Healthy)
        .map(|h: &Health<VmHealthState>| age(h.since.0))
        .unwrap_or_default();
    if restoring {
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
    } else if phase == "Failed" && r.status.replaced_instance.is_none() {
        (VmHealthState::Failed, "the VM instance failed".to_string())
    } else if !wants_running(vm) {
        (VmHealthState::Healthy, "stopped, as asked".to_string())
    } else if observed.ready && r.status.replaced_instance.is_none() {
        (
            VmHealthState::Healthy,
            format!("running on {}", observed.node.as_deref().unwrap_or("?")),
        )
    } else if waited >= grace && !(observed.instance && since_start < grace) {
        (
            VmHealthState::NotReady,
            format!("instance phase {phase}, not ready after {}s", grace.as_secs()),
        )
    } else if r.status.replaced_instance.is_some() {
        again.soon(Duration::from_secs(2));
        (
            VmHealthState::Starting,
            format!("waiting for a new instance to run and be ready (instance phase {phase})"),
        )
    } else if observed.instance {
        again.soon(grace.saturating_sub(since_start).max(Duration::from_secs(1)));
        (
            VmHealthState::Starting,
            format!("instance phase {phase}, not ready yet"),
        )
    } else {
        again.soon(grace.saturating_sub(waited).max(Duration::from_secs(1)));
        (
            VmHealthState::Starting,
            "waiting for KubeVirt to start an instance".to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes_are_positive_quantities() {
        for ok in ["20Gi", "1", "0.5Ti", "100M"] {
            assert!(positive_quantity(ok), "{ok}");
        }
        for bad in ["-5Gi", "0", "0Gi", "", "lots", "+1Gi", "Gi"] {
            assert!(!positive_quantity(bad), "{bad}");
        }
    }
}
