//! Server reconciler: polls the BMC over Redfish (per-server interval with
//! jitter, a bound on concurrent BMC conversations, a timeout on every call,
//! so a dead BMC delays only its own server), keeps the inventory and the
//! cabling check in status, enforces the desired power, runs the engine's
//! `powerCycle` and `reprovision` actions, and publishes the health signal.

pub mod cabling;
pub mod provisioning;

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Context, Error, secrets,
    status::{Report, action_record, requested_action},
    validation::{Invalid, check_secret, report_invalid},
};
use crate::{
    api::{
        Server,
        common::reasons,
        server::{PowerRequest, ServerHealth, ServerHealthState},
    },
    providers::{
        postgres::Password,
        redfish::{self, Bmc, Trust},
    },
};

pub const REACHABLE: &str = "Reachable";
pub const POWERED_AS_DESIRED: &str = "PoweredAsDesired";
pub const INVENTORY_MATCHES: &str = "InventoryMatches";
pub const HEALTHY: &str = "Healthy";

/// Checks only the operator can make.
pub async fn validate(ctx: &Context, s: &Server) -> Result<Result<(), Invalid>, Error> {
    let ns = s.namespace().unwrap_or_default();
    let bmc = &s.spec.bmc;
    let creds = check_secret(
        ctx,
        &ns,
        "spec.bmc.credentialsSecretRef",
        &bmc.credentials_secret_ref.name,
        &["username", "password"],
    )
    .await?;
    if creds.is_err() {
        return Ok(creds);
    }
    if let Some(ca) = &bmc.ca_bundle_secret_ref {
        return check_secret(ctx, &ns, "spec.bmc.caBundleSecretRef", &ca.name, &[ca.key.as_str()]).await;
    }
    Ok(Ok(()))
}

/// The Secrets a Server reads.
pub fn secrets_named(s: &Server) -> Vec<String> {
    let mut names = vec![s.spec.bmc.credentials_secret_ref.name.clone()];
    names.extend(s.spec.bmc.ca_bundle_secret_ref.iter().map(|r| r.name.clone()));
    names
}

/// The poll interval plus up to 10% of jitter, so servers created together
/// do not poll their BMCs in step.
fn jittered(base: Duration, key: &str) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    let frac = (h.finish() % 1000) as f64 / 10_000.0;
    base + base.mul_f64(frac)
}

fn text(data: &secrets::Data, key: &str) -> String {
    String::from_utf8_lossy(data.get(key).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

fn set_health(r: &mut Report<'_, Server>, state: ServerHealthState, message: impl Into<String>) {
    let since = match &r.status.health {
        Some(h) if h.state == state => h.since.clone(),
        _ => Time(r.now),
    };
    r.status.health = Some(ServerHealth {
        state,
        since,
        message: message.into(),
    });
}

pub fn reconcile(obj: Arc<Server>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let s = obj.as_ref();
        if let Err(invalid) = validate(&ctx, s).await? {
            return report_invalid(&ctx, s, &invalid).await;
        }
        let ns = s.namespace().unwrap_or_default();
        let creds = secrets::data(&ctx, &ns, &s.spec.bmc.credentials_secret_ref.name)
            .await?
            .unwrap_or_default();
        let trust = match &s.spec.bmc.ca_bundle_secret_ref {
            Some(r) => Trust::Ca(
                secrets::data(&ctx, &ns, &r.name)
                    .await?
                    .and_then(|d| d.get(&r.key).cloned())
                    .unwrap_or_default(),
            ),
            None if s.spec.bmc.insecure_skip_verify => Trust::Insecure,
            None => Trust::System,
        };
        let key = format!("{ns}/{}", s.name_any());
        let http = match redfish::http_client(&trust, ctx.settings.bmc_timeout) {
            Ok(h) => h,
            Err(e) => return report_invalid(&ctx, s, &Invalid::external("spec.bmc.caBundleSecretRef", e)).await,
        };
        // A bound on BMC conversations in flight; each call has its own timeout.
        let _slot = ctx.bmc_slots.acquire().await.expect("the semaphore is never closed");
        let mut r = Report::new(&ctx, s);
        let again = poll(
            &mut r,
            &ctx,
            s,
            http,
            text(&creds, "username"),
            Password(text(&creds, "password")),
        )
        .await;
        let ready_parts = [REACHABLE, POWERED_AS_DESIRED, INVENTORY_MATCHES, HEALTHY];
        let failing: Vec<&str> = ready_parts.iter().copied().filter(|c| !r.is(c)).collect();
        let message = match failing.first() {
            None => "the BMC answers; power, inventory and health as expected".to_string(),
            Some(c) => {
                use crate::api::common::find_condition;
                let msg = find_condition(&r.status.conditions, c)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                format!("{c}: {msg}")
            }
        };
        let reason = failing
            .first()
            .map(|c| format!("Not{c}"))
            .unwrap_or_else(|| reasons::RECONCILED.into());
        r.set(reasons::READY, failing.is_empty(), &reason, message);
        r.write().await?;
        Ok(Action::requeue(
            again.unwrap_or_else(|| jittered(s.spec.poll_interval.as_std(), &key)),
        ))
    }
    .boxed()
}

/// One conversation with the BMC. Returns a shorter requeue when something is under way.
async fn poll(
    r: &mut Report<'_, Server>,
    ctx: &Context,
    s: &Server,
    http: reqwest::Client,
    user: String,
    password: Password,
) -> Option<Duration> {
    let system_id = s.spec.bmc.system_id.as_deref();
    let opened = match Bmc::open(&s.spec.bmc.address, &user, password, http).await {
        Ok(bmc) => match bmc.system(system_id).await {
            Ok(found) => Ok((bmc, found)),
            Err(e) => {
                bmc.close().await;
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
    let (bmc, (path, sys, _)) = match opened {
        Ok(x) => x,
        Err(e) => {
            unreachable(r, &e);
            return None;
        }
    };
    let inventory = match bmc.inventory(&sys).await {
        Ok(i) => i,
        Err(e) => {
            bmc.close().await;
            unreachable(r, &e);
            return None;
        }
    };
    let version = bmc.root().redfish_version.clone().unwrap_or_default();
    r.set(
        REACHABLE,
        true,
        "Connected",
        format!("Redfish {version} at {}, system {path}", s.spec.bmc.address),
    );
    if r.was(REACHABLE) == Some(false) {
        r.event(
            EventType::Normal,
            "Reachable",
            "Poll",
            format!("the BMC answers again ({path})"),
        );
    }

    // Inventory and cabling.
    let drift = cabling::compare(
        s.spec
            .network
            .as_ref()
            .map(|n| n.interfaces.as_slice())
            .unwrap_or_default(),
        &inventory.nics,
    );
    r.status.inventory = Some(inventory);
    if drift.is_empty() {
        r.set(
            INVENTORY_MATCHES,
            true,
            "AsDeclared",
            "every declared interface is present as declared",
        );
    } else {
        let summary: Vec<String> = drift
            .iter()
            .map(|d| {
                format!(
                    "{} {}: expected {}, found {}",
                    d.interface, d.kind, d.expected, d.observed
                )
            })
            .collect();
        r.set(INVENTORY_MATCHES, false, "CablingDrift", summary.join("; "));
        if r.status.cabling_drift != drift {
            r.event(EventType::Warning, "CablingDrift", "Poll", summary.join("; "));
        }
    }
    r.status.cabling_drift = drift;

    // Health the BMC reports.
    let bmc_health = sys
        .status
        .as_ref()
        .and_then(|st| st.health_rollup.clone().or(st.health.clone()));
    let critical = bmc_health.as_deref() == Some("Critical");
    r.set(
        HEALTHY,
        !critical,
        bmc_health.clone().unwrap_or_else(|| "Unknown".into()).as_str(),
        format!("the BMC reports health {}", bmc_health.as_deref().unwrap_or("nothing")),
    );
    r.status.bmc_health = bmc_health;
    let power = sys.power_state.clone().unwrap_or_else(|| "Unknown".into());
    r.status.power_state = Some(power.clone());
    let mut again: Option<Duration> = None;

    // Actions the engine asks.
    if let Some((action, id)) = requested_action(s, r.status.last_action.as_ref()) {
        let (outcome, message) = match action.as_str() {
            "powercycle" => {
                let reset = if power == "On" { "ForceRestart" } else { "On" };
                match bmc.reset(&path, &sys, reset).await {
                    Ok(()) => {
                        r.status.power_request = Some(PowerRequest {
                            reset_type: reset.into(),
                            time: Time(r.now),
                        });
                        again = Some(Duration::from_secs(2));
                        ("Done", format!("reset ({reset}) asked of the BMC"))
                    }
                    Err(e) => ("Failed", e.to_string()),
                }
            }
            "reprovision" => match &s.spec.provisioning {
                None => ("Rejected", "spec.provisioning.image is not set".to_string()),
                Some(p) => {
                    let started = provisioning::start(&bmc, system_id, &sys, p, &id).await;
                    let failed = started.phase == "Failed";
                    let last = started.steps.last().map(|s| s.message.clone()).unwrap_or_default();
                    step_events(r, &started.steps);
                    r.status.provisioning = Some(started);
                    again = Some(Duration::from_secs(2));
                    if failed {
                        ("Failed", last)
                    } else {
                        (
                            "Done",
                            format!("installing {} (media in, boot once from it, reset)", p.image),
                        )
                    }
                }
            },
            other => (
                "Rejected",
                format!("unknown action {other:?}: use powerCycle or reprovision"),
            ),
        };
        let (record, type_, note) = action_record(r.now, action, id, outcome, message);
        r.event(type_, "RecoveryAction", "Recover", note);
        r.status.last_action = Some(record);
    } else if let (Some(p), Some(spec)) = (r.status.provisioning.clone(), &s.spec.provisioning)
        && p.phase == provisioning::IN_PROGRESS
    {
        let mut p = p;
        let before = p.steps.len();
        again = provisioning::advance(&bmc, &sys, spec, &mut p).await;
        step_events(r, &p.steps[before..]);
        r.status.provisioning = Some(p);
    }
    let provisioning = r
        .status
        .provisioning
        .as_ref()
        .is_some_and(|p| p.phase == provisioning::IN_PROGRESS);

    // Power as desired. Resets reprise asked for are waited on (BMCs apply them with a delay).
    let pending = r.status.power_request.clone();
    let age = |p: &PowerRequest| (r.now.as_second() - p.time.0.as_second()).max(0) as u64;
    let mut power_lost = false;
    let mut held: Option<String> = None;
    let as_desired = match (s.spec.online, power.as_str()) {
        (true, "On") | (false, "Off") => {
            r.status.power_request = None;
            true
        }
        _ if provisioning => true,
        (true, _) => {
            let ours = pending
                .as_ref()
                .is_some_and(|p| ["On", "ForceRestart"].contains(&p.reset_type.as_str()) && age(p) < 120);
            power_lost = !ours;
            held = (!ours).then(|| super::detection::held_by(&ctx.stores, s)).flatten();
            if !ours && held.is_none() {
                match bmc.reset(&path, &sys, "On").await {
                    Ok(()) => {
                        r.status.power_request = Some(PowerRequest {
                            reset_type: "On".into(),
                            time: Time(r.now),
                        });
                        ctx.metrics.repaired("Server", "Power", "PoweredOn");
                        r.event(
                            EventType::Warning,
                            "PoweredOn",
                            "Power",
                            format!("the server was {power} while it should be on; powering it on"),
                        );
                    }
                    Err(e) => r.event(EventType::Warning, "PowerFailed", "Power", e.to_string()),
                }
            }
            // Held by a window: the usual poll notices when it ends.
            if held.is_none() {
                again = Some(Duration::from_secs(2));
            }
            false
        }
        (false, _) => {
            let timeout = s.spec.shutdown_timeout.as_std().as_secs();
            let reset = match &pending {
                Some(p) if p.reset_type == "GracefulShutdown" && age(p) < timeout => None,
                Some(p) if p.reset_type == "GracefulShutdown" => Some("ForceOff"),
                Some(p) if p.reset_type == "ForceOff" && age(p) < 120 => None,
                _ => Some("GracefulShutdown"),
            };
            if let Some(reset) = reset {
                match bmc.reset(&path, &sys, reset).await {
                    Ok(()) => {
                        r.status.power_request = Some(PowerRequest {
                            reset_type: reset.into(),
                            time: Time(r.now),
                        });
                        let why = if reset == "ForceOff" {
                            format!("the graceful shutdown did not finish within {timeout}s; forcing the power off")
                        } else {
                            "the server should be off; shutting it down gracefully".to_string()
                        };
                        r.event(EventType::Normal, "PoweringOff", "Power", why);
                    }
                    Err(e) => r.event(EventType::Warning, "PowerFailed", "Power", e.to_string()),
                }
            }
            again = Some(Duration::from_secs(2));
            false
        }
    };
    let want = if s.spec.online { "On" } else { "Off" };
    r.set(
        POWERED_AS_DESIRED,
        as_desired,
        if as_desired { "AsDesired" } else { "PowerChanging" },
        format!("power {power}, desired {want}"),
    );

    // The health signal.
    if provisioning {
        set_health(r, ServerHealthState::Provisioning, "reprovisioning from the image");
    } else if critical {
        set_health(r, ServerHealthState::Critical, "the BMC reports health Critical");
    } else if power_lost {
        let why = match &held {
            Some(w) => format!("; left so while MaintenanceWindow {w} holds recovery"),
            None => String::new(),
        };
        set_health(
            r,
            ServerHealthState::PowerLost,
            format!("power {power} while desired On{why}"),
        );
    } else {
        // A server found off stays PowerLost until it is on again.
        let still_lost = !as_desired
            && r.status
                .health
                .as_ref()
                .is_some_and(|h| h.state == ServerHealthState::PowerLost);
        if !still_lost {
            set_health(
                r,
                ServerHealthState::Healthy,
                "the BMC answers; power and health as expected",
            );
        }
    }
    bmc.close().await;
    again.map(|a| a.min(s.spec.poll_interval.as_std()))
}

/// An Event per provisioning step.
fn step_events(r: &mut Report<'_, Server>, steps: &[crate::api::server::ProvisioningStep]) {
    for st in steps {
        let type_ = if st.outcome == "Succeeded" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        r.event(
            type_,
            "Provisioning",
            "Reprovision",
            format!("{}: {} ({})", st.step, st.message, st.duration),
        );
    }
}

fn unreachable(r: &mut Report<'_, Server>, e: &redfish::RedfishError) {
    r.set(REACHABLE, false, e.reason, e.to_string());
    if r.was(REACHABLE) != Some(false) {
        r.event(EventType::Warning, "Unreachable", "Poll", e.to_string());
    }
    set_health(r, ServerHealthState::Unreachable, e.to_string());
}
