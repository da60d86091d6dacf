//! VM drills: the newest ready snapshot restored into a scratch VM (a
//! VirtualMachineRestore whose target does not exist, which KubeVirt creates
//! from the snapshot), started and waited on until ready — what a real
//! restore must achieve — then deleted. The live VM is not touched.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use crate::{
    api::{VirtualMachine, contract::ActionOutcome, virtual_machine::VmDrill},
    providers::vm::VmEngine,
    runtime::Error,
};

/// How long a drill may take before it counts as failed (seconds).
const TIMEOUT: i64 = 600;

/// The scratch VM of `vm` for drill `id` (also the restore object's name).
pub fn scratch_name(vm: &str, id: &str) -> String {
    let base: String = vm.chars().take(40).collect();
    format!("{base}-drill-{}", crate::api::contract::drill_tag(id, 16))
}

/// Starts drill `id`; Err: why it cannot.
pub async fn start<E: VmEngine>(
    kv: &E,
    vm: &VirtualMachine,
    id: &str,
    now: Timestamp,
) -> Result<Result<VmDrill, String>, Error>
where
    Error: From<E::Error>,
{
    let Some(s) = kv.snapshots(vm).await?.into_iter().find(|s| s.ready) else {
        return Ok(Err("no snapshot is ready to drill from".into()));
    };
    let scratch = scratch_name(&vm.name_any(), id);
    kv.restore_into(vm, &s.name, &scratch, &scratch).await?;
    Ok(Ok(VmDrill {
        id: id.into(),
        message: format!("restoring snapshot {} into scratch VM {scratch}", s.name),
        snapshot: s.name,
        scratch,
        phase: "Restoring".into(),
        started: Time(now),
        finished: None,
        seconds: None,
    }))
}

/// Moves drill `d` on. Returns the action's outcome and message once it ended
/// (the scratch VM deleted by then).
pub async fn advance<E: VmEngine>(
    kv: &E,
    vm: &VirtualMachine,
    d: &mut VmDrill,
    now: Timestamp,
) -> Result<Option<(ActionOutcome, String)>, Error>
where
    Error: From<E::Error>,
{
    let elapsed = now.duration_since(d.started.0).as_secs_f64();
    match d.phase.as_str() {
        "Restoring" => match kv.restore_complete(vm, &d.scratch).await? {
            Some(true) => {
                d.phase = "Starting".into();
                d.message = format!("snapshot {} restored into {}; starting it", d.snapshot, d.scratch);
            }
            Some(false) => {}
            None => {
                d.phase = "Failed".into();
                d.message = format!("the VirtualMachineRestore {} is gone", d.scratch);
            }
        },
        "Starting" => {
            let o = kv.observe_named(vm, &d.scratch).await?;
            if o.ready {
                d.phase = "Verified".into();
                d.seconds = Some(elapsed);
                d.message = format!(
                    "snapshot {} restored into scratch VM {} and ready in {elapsed:.3}s{}; scratch VM deleted",
                    d.snapshot,
                    d.scratch,
                    o.guest.map(|g| format!(" (guest {g})")).unwrap_or_default()
                );
            }
        }
        _ => return Ok(None),
    }
    if matches!(d.phase.as_str(), "Restoring" | "Starting") && elapsed > TIMEOUT as f64 {
        d.phase = "Failed".into();
        d.message = format!("{}: not ready within {TIMEOUT}s", d.message);
    }
    if matches!(d.phase.as_str(), "Restoring" | "Starting") {
        return Ok(None);
    }
    kv.delete_scratch(vm, &d.scratch, &d.scratch).await?;
    d.finished = Some(Time(now));
    Ok(Some(if d.phase == "Verified" {
        (ActionOutcome::Done, d.message.clone())
    } else {
        (ActionOutcome::Failed, d.message.clone())
    }))
}
