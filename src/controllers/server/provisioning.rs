//! (Re)provisioning a server from `spec.provisioning.image`: the image goes
//! into the virtual CD drive, the next boot is set to it once, the server is
//! reset; once it is on again it has booted from the image, and after
//! `ejectAfter` (the installer's time with the media) the media is ejected.
//! Each step is recorded with its duration.

use std::future::Future;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    api::server::{BootMode, ProvisioningSpec, ProvisioningStatus, ProvisioningStep},
    providers::redfish::{Bmc, RedfishError, model::ComputerSystem},
};

pub const IN_PROGRESS: &str = "InProgress";

fn took(from: Timestamp, to: Timestamp) -> String {
    format!("{:.3}s", to.duration_since(from).as_secs_f64())
}

/// Runs `f` as step `name`; records it; returns whether it succeeded.
async fn step<F>(p: &mut ProvisioningStatus, name: &str, f: F) -> bool
where
    F: Future<Output = Result<String, RedfishError>>,
{
    let started = Timestamp::now();
    let result = f.await;
    let finished = Timestamp::now();
    let (outcome, message) = match &result {
        Ok(m) => ("Succeeded", m.clone()),
        Err(e) => ("Failed", e.to_string()),
    };
    p.steps.push(ProvisioningStep {
        step: name.into(),
        started: Time(started),
        finished: Time(finished),
        duration: took(started, finished),
        outcome: outcome.into(),
        message,
    });
    if result.is_err() {
        p.phase = "Failed".into();
    }
    result.is_ok()
}

/// Starts a provisioning: media in, boot once from it, reset.
pub async fn start(
    bmc: &Bmc,
    system_id: Option<&str>,
    sys: &ComputerSystem,
    spec: &ProvisioningSpec,
    id: &str,
) -> ProvisioningStatus {
    let mut p = ProvisioningStatus {
        id: id.into(),
        image: spec.image.clone(),
        phase: IN_PROGRESS.into(),
        steps: vec![],
    };
    let ok = step(&mut p, "InsertMedia", async {
        let (path, vm) = bmc.virtual_cd(sys).await?;
        if vm.inserted == Some(true) {
            bmc.eject_media(&path, &vm).await?;
        }
        bmc.insert_media(&path, &vm, &spec.image).await?;
        Ok(format!("{} inserted in {path}", spec.image))
    })
    .await;
    if !ok {
        return p;
    }
    let mode = match spec.boot_mode {
        BootMode::UEFI => "UEFI",
        BootMode::Legacy => "Legacy",
    };
    let ok = step(&mut p, "SetBootOverride", async {
        // Read again: the ETag must be the current one.
        let (path, _, etag) = bmc.system(system_id).await?;
        bmc.boot_once_from_cd(&path, etag.as_deref(), mode).await?;
        Ok(format!("next boot once from Cd ({mode})"))
    })
    .await;
    if !ok {
        return p;
    }
    step(&mut p, "Reset", async {
        let (path, sys, _) = bmc.system(system_id).await?;
        let reset = if sys.power_state.as_deref() == Some("On") {
            "ForceRestart"
        } else {
            "On"
        };
        bmc.reset(&path, &sys, reset).await?;
        Ok(format!("reset ({reset})"))
    })
    .await;
    p
}

/// Moves a provisioning on: notes the boot, ejects the media after `ejectAfter`.
/// Returns when to look again, if the provisioning is still in progress.
pub async fn advance(
    bmc: &Bmc,
    sys: &ComputerSystem,
    spec: &ProvisioningSpec,
    p: &mut ProvisioningStatus,
) -> Option<std::time::Duration> {
    let now = Timestamp::now();
    let last = p.steps.last()?.clone();
    match last.step.as_str() {
        "Reset" if sys.power_state.as_deref() == Some("On") => {
            p.steps.push(ProvisioningStep {
                step: "Booted".into(),
                started: last.finished.clone(),
                finished: Time(now),
                duration: took(last.finished.0, now),
                outcome: "Succeeded".into(),
                message: "the server is on again, booting from the image".into(),
            });
            Some(spec.eject_after.as_std())
        }
        "Reset" => Some(std::time::Duration::from_secs(2)),
        "Booted" => {
            let due = last.finished.0.as_second() + spec.eject_after.as_std().as_secs() as i64;
            if now.as_second() < due {
                return Some(std::time::Duration::from_secs((due - now.as_second()).max(1) as u64));
            }
            if step(p, "EjectMedia", async {
                let (path, vm) = bmc.virtual_cd(sys).await?;
                bmc.eject_media(&path, &vm).await?;
                Ok(format!("ejected from {path}"))
            })
            .await
            {
                p.phase = "Succeeded".into();
            }
            None
        }
        _ => None,
    }
}
