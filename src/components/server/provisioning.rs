//! (Re)provisioning a server from `spec.provisioning.image`: the image's URL
//! is checked (HEAD), the image goes into the virtual CD drive, the next boot
//! is set to it once, the server is reset; once the BMC shows it rebooted
//! (the power seen off, a new `LastResetTime` or `BootProgress`) and it is on
//! again, it has booted from the image — without such evidence within
//! `bootTimeout` the provisioning ends `TimedOut` — and after `ejectAfter`
//! (the installer's time with the media) the media is ejected. Each step is
//! recorded with its duration.

use std::{future::Future, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    api::server::{BootMode, ProvisioningSpec, ProvisioningStatus, ProvisioningStep},
    providers::bmc::{BmcError, Board, SystemView},
};

pub const IN_PROGRESS: &str = "InProgress";
pub const TIMED_OUT: &str = "TimedOut";

fn took(from: Timestamp, to: Timestamp) -> String {
    format!("{:.3}s", to.duration_since(from).as_secs_f64())
}

/// Runs `f` as step `name`; records it; returns whether it succeeded.
async fn step<F>(p: &mut ProvisioningStatus, name: &str, f: F) -> bool
where
    F: Future<Output = Result<String, String>>,
{
    let started = Timestamp::now();
    let result = f.await;
    let finished = Timestamp::now();
    let (outcome, message) = match &result {
        Ok(m) => ("Succeeded", m.clone()),
        Err(e) => ("Failed", e.clone()),
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

fn redfish(e: BmcError) -> String {
    e.to_string()
}

/// Evidence that the system rebooted since `baseline` (its boot marks before the reset).
pub fn reboot_evidence(baseline: &str, sys: &impl SystemView) -> Option<String> {
    let power = sys.power_state().unwrap_or("unknown");
    if power != "On" && power != "unknown" {
        return Some(format!("the BMC reported the power {power} after the reset"));
    }
    let now = sys.boot_marks();
    let changed = |label: &str| {
        let part = |s: &str| s.split(", ").find(|p| p.starts_with(label)).map(str::to_string);
        let (before, after) = (part(baseline), part(&now));
        (before != after && after.as_deref().is_some_and(|a| !a.ends_with("not reported"))).then_some(after)
    };
    changed("last reset")
        .or_else(|| changed("boot progress"))
        .flatten()
        .map(|a| format!("the BMC reports a new {a}"))
}

/// Whether the image can be fetched (HEAD, or a GET that is not read for
/// servers that refuse HEAD). `nfs://` images are not checked.
async fn image_reachable(http: &reqwest::Client, image: &str) -> Result<(), String> {
    if !image.starts_with("http://") && !image.starts_with("https://") {
        return Ok(());
    }
    let answer = |r: reqwest::Response| {
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("the image {image} answers HTTP {}", r.status().as_u16()))
        }
    };
    match http.head(image).timeout(Duration::from_secs(10)).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED => {
            match http.get(image).timeout(Duration::from_secs(10)).send().await {
                Ok(r) => answer(r),
                Err(e) => Err(format!(
                    "the image {image} is not reachable: {}",
                    crate::providers::artifacts::error_chain(&e)
                )),
            }
        }
        Ok(r) => answer(r),
        Err(e) => Err(format!(
            "the image {image} is not reachable: {}",
            crate::providers::artifacts::error_chain(&e)
        )),
    }
}

/// Starts a provisioning: image checked, media in, boot once from it, reset.
pub async fn start<B: Board>(
    bmc: &B,
    http: &reqwest::Client,
    system_id: Option<&str>,
    sys: &B::System,
    spec: &ProvisioningSpec,
    id: &str,
) -> ProvisioningStatus {
    let mut p = ProvisioningStatus {
        id: id.into(),
        image: spec.image.clone(),
        phase: IN_PROGRESS.into(),
        steps: vec![],
        baseline: None,
        reboot_evidence: None,
    };
    let ok = step(&mut p, "InsertMedia", async {
        image_reachable(http, &spec.image).await?;
        let path = bmc.insert_media(sys, &spec.image).await.map_err(redfish)?;
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
        let sys = bmc.system(system_id).await.map_err(redfish)?;
        bmc.boot_once_from_media(&sys, mode).await.map_err(redfish)?;
        Ok(format!("next boot once from Cd ({mode})"))
    })
    .await;
    if !ok {
        return p;
    }
    let mut baseline = None;
    let mut evidence = None;
    step(&mut p, "Reset", async {
        let sys = bmc.system(system_id).await.map_err(redfish)?;
        let before = sys.boot_marks();
        let reset = if sys.power_state() == Some("On") {
            "ForceRestart"
        } else {
            "On"
        };
        bmc.reset(&sys, reset).await.map_err(redfish)?;
        // A restart can be short: look at once for the power going off.
        if let Ok(after) = bmc.system(system_id).await {
            evidence = reboot_evidence(&before, &after);
        }
        if reset == "On" {
            evidence = Some("the server was off; it was powered on".into());
        }
        baseline = Some(before);
        Ok(format!("reset ({reset})"))
    })
    .await;
    p.baseline = baseline;
    p.reboot_evidence = evidence;
    p
}

/// Moves a provisioning on: notes the boot once the BMC shows a reboot and
/// the power on (or times out), ejects the media after `ejectAfter`.
/// Returns when to look again, if the provisioning is still in progress.
pub async fn advance<B: Board>(
    bmc: &B,
    sys: &B::System,
    spec: &ProvisioningSpec,
    p: &mut ProvisioningStatus,
) -> Option<Duration> {
    let now = Timestamp::now();
    let last = p.steps.last()?.clone();
    match last.step.as_str() {
        "Reset" => {
            if p.reboot_evidence.is_none() {
                p.reboot_evidence = reboot_evidence(p.baseline.as_deref().unwrap_or_default(), sys);
            }
            let on = sys.power_state() == Some("On");
            let waited = now.duration_since(last.finished.0);
            let (outcome, message) = match &p.reboot_evidence {
                Some(e) if on => (
                    "Succeeded",
                    format!("the server is on again, booting from the image ({e})"),
                ),
                _ if waited.as_secs() as u64 >= spec.boot_timeout.as_std().as_secs() => (
                    TIMED_OUT,
                    format!(
                        "no evidence of a reboot within {} of the reset: the BMC reports {}",
                        spec.boot_timeout.as_str(),
                        sys.boot_marks()
                    ),
                ),
                _ => return Some(Duration::from_secs(1)),
            };
            p.steps.push(ProvisioningStep {
                step: "Booted".into(),
                started: last.finished.clone(),
                finished: Time(now),
                duration: took(last.finished.0, now),
                outcome: outcome.into(),
                message,
            });
            if outcome == TIMED_OUT {
                p.phase = TIMED_OUT.into();
                return None;
            }
            Some(spec.eject_after.as_std())
        }
        "Booted" => {
            let due = last.finished.0.as_second() + spec.eject_after.as_std().as_secs() as i64;
            if now.as_second() < due {
                return Some(Duration::from_secs((due - now.as_second()).max(1) as u64));
            }
            if step(p, "EjectMedia", async {
                let path = bmc.eject_media(sys).await.map_err(redfish)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::redfish::{RedfishSystem, model::ComputerSystem};

    fn sys(power: &str, last_reset: Option<&str>) -> RedfishSystem {
        RedfishSystem {
            path: "/redfish/v1/Systems/1".into(),
            etag: None,
            sys: ComputerSystem {
                power_state: Some(power.into()),
                last_reset_time: last_reset.map(str::to_string),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_reboot_needs_evidence() {
        let before = sys("On", None).boot_marks();
        assert_eq!(reboot_evidence(&before, &sys("On", None)), None, "power stayed On");
        assert!(reboot_evidence(&before, &sys("Off", None)).unwrap().contains("Off"));
        let before = sys("On", Some("2026-11-30T10:00:00Z")).boot_marks();
        assert_eq!(reboot_evidence(&before, &sys("On", Some("2026-11-30T10:00:00Z"))), None);
        let e = reboot_evidence(&before, &sys("On", Some("2026-11-30T10:05:00Z"))).unwrap();
        assert!(e.contains("10:05"), "{e}");
    }
}
