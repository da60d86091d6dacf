//! Server reconciler: polls the BMC over Redfish (per-server interval with
//! jitter, a bound on concurrent BMC conversations, a timeout on every call
//! and a deadline on each whole conversation, so a slow or dead BMC delays
//! only its own server), keeps the inventory and the cabling check in status,
//! enforces the desired power (with backoff when the BMC refuses or the power
//! does not follow), runs the engine's `powerCycle` and `reprovision`
//! actions, and publishes the health signal.

pub mod cabling;
pub mod contract;
pub mod events;
pub mod power;
pub mod provisioning;

use crate::runtime::Action;
use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, runtime::events::EventType};

use crate::runtime::{
    Context, Error,
    report::{Report, action_record, requested_action, unknown_action},
    secrets,
    validation::{Invalid, check_secret, report_invalid},
};
use crate::{
    api::{
        Server,
        common::{ComponentKind, reasons},
        contract::{ActionOutcome, ActionVerb, Health},
        server::{PowerRequest, ServerHealthState},
    },
    crash,
    providers::{
        bmc::{Board, SystemView},
        postgres::Password,
        redfish::{self, Bmc, Trust, origin},
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
    if let Ok(u) = reqwest::Url::parse(&bmc.address)
        && (!u.username().is_empty() || u.password().is_some())
    {
        return Ok(Err(Invalid::new(
            "spec.bmc.address",
            "the address carries user information; put the credentials in spec.bmc.credentialsSecretRef",
        )));
    }
    let who = secrets::Requester {
        kind: "Server",
        name: s.metadata.name.as_deref().unwrap_or_default(),
    };
    let creds = check_secret(
        ctx,
        &ns,
        who,
        "spec.bmc.credentialsSecretRef",
        &bmc.credentials_secret_ref.name,
        &["username", "password"],
    )
    .await?;
    if creds.is_err() {
        return Ok(creds);
    }
    if let Some(ca) = &bmc.ca_bundle_secret_ref {
        return check_secret(
            ctx,
            &ns,
            who,
            "spec.bmc.caBundleSecretRef",
            &ca.name,
            &[ca.key.as_str()],
        )
        .await;
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
    r.status.health = Some(Health::observe(r.status.health.as_ref(), state, message, r.now));
}

/// What one conversation with the BMC needs.
#[derive(Clone)]
struct Conversation {
    http: reqwest::Client,
    user: String,
    password: Password,
    limits: redfish::Limits,
    /// A fingerprint of where and how it talks (address, credentials, trust).
    mark: u64,
}

pub fn reconcile(obj: Arc<Server>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let s = obj.as_ref();
        if let Err(invalid) = validate(&ctx, s).await? {
            return report_invalid(&ctx, s, &invalid).await;
        }
        let ns = s.namespace().unwrap_or_default();
        let who = secrets::Requester {
            kind: "Server",
            name: s.metadata.name.as_deref().unwrap_or_default(),
        };
        // validate() saw both Secrets offered: a change since is an empty read
        // now and a new reconcile soon (the Secret watch).
        let creds = secrets::read(&ctx, &ns, &s.spec.bmc.credentials_secret_ref.name, who)
            .await?
            .unwrap_or_default();
        let trust = match &s.spec.bmc.ca_bundle_secret_ref {
            Some(r) => Trust::Ca(
                secrets::read(&ctx, &ns, &r.name, who)
                    .await?
                    .ok()
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
        let (user, password) = (text(&creds, "username"), text(&creds, "password"));
        let mark = crate::runtime::wake::fingerprint(&[
            s.spec.bmc.address.as_bytes(),
            user.as_bytes(),
            password.as_bytes(),
            trust.key(),
        ]);
        let talk = Conversation {
            http,
            user,
            password: Password(password),
            limits: ctx.settings.bmc_limits,
            mark,
        };
        // A bound on BMC conversations in flight; a BMC whose last conversation
        // ran out of time waits in a lane of its own, so it cannot hold the others up.
        let interval = s.spec.poll_interval.as_std().max(Duration::from_secs(1));
        let _slot = if ctx.bmc_lanes.is_slow(&key) {
            // A slow lane that is full is not waited on: the reconcile slot goes back, the poll comes later.
            match ctx.bmc_lanes.slow.try_acquire() {
                Ok(slot) => slot,
                Err(_) => return Ok(Action::requeue(jittered(interval, &key))),
            }
        } else {
            ctx.bmc_lanes.normal.acquire().await.map_err(|_| Error::ShuttingDown)?
        };
        let mut r = Report::new(&ctx, s);
        let deadline = ctx.settings.bmc_conversation_timeout;
        let again = match tokio::time::timeout(deadline, poll(&mut r, &ctx, s, talk)).await {
            Ok(again) => {
                ctx.bmc_lanes.set_slow(&key, false);
                again?
            }
            Err(_) => {
                ctx.bmc_lanes.set_slow(&key, true);
                let e = redfish::RedfishError {
                    reason: redfish::TIMEOUT,
                    bmc: origin::redact(&s.spec.bmc.address),
                    resource: "conversation".into(),
                    status: None,
                    message: format!(
                        "the conversation did not finish within {}s (--bmc-conversation-seconds)",
                        deadline.as_secs()
                    ),
                };
                unreachable(&mut r, &e);
                None
            }
        };
        ready(&mut r);
        r.write().await?;
        Ok(Action::requeue(
            again
                .map(|a| a.min(interval))
                .unwrap_or_else(|| jittered(interval, &key)),
        ))
    }
    .boxed()
}

/// `Ready`: every part true, else the first that is not, with its message.
fn ready(r: &mut Report<'_, Server>) {
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
}

/// One conversation with the BMC. Returns a shorter requeue when something is under way.
async fn poll(
    r: &mut Report<'_, Server>,
    ctx: &Context,
    s: &Server,
    talk: Conversation,
) -> Result<Option<Duration>, Error> {
    // The BMC's protocol: Redfish (another one is one more arm here).
    let opener = {
        let (address, talk) = (s.spec.bmc.address.clone(), talk.clone());
        move || {
            let (address, t) = (address.clone(), talk.clone());
            async move { Bmc::open(&address, &t.user, t.password, t.http, t.limits).await }
        }
    };
    match opener().await {
        Ok(bmc) => {
            // Where the BMC sends events, a kept reader makes failures seen at once.
            let offers = bmc.offers_events();
            let seen = |sys: &<Bmc as Board>::System| {
                if offers {
                    let mark = crate::runtime::wake::fingerprint(&[
                        &talk.mark.to_be_bytes(),
                        s.uid().unwrap_or_default().as_bytes(),
                        sys.location().as_bytes(),
                    ]);
                    events::keep(ctx, s, sys.location(), mark, opener);
                }
            };
            converse(r, ctx, s, bmc, seen).await
        }
        Err(e) => {
            unreachable(r, &e);
            Ok(None)
        }
    }
}

/// What one conversation does: inventory, health, the action asked, the power.
/// `seen` is told the system once it is read.
async fn converse<B: Board>(
    r: &mut Report<'_, Server>,
    ctx: &Context,
    s: &Server,
    bmc: B,
    seen: impl FnOnce(&B::System),
) -> Result<Option<Duration>, Error> {
    let system_id = s.spec.bmc.system_id.as_deref();
    let sys = match bmc.system(system_id).await {
        Ok(sys) => {
            seen(&sys);
            sys
        }
        Err(e) => {
            bmc.close().await;
            unreachable(r, &e);
            return Ok(None);
        }
    };
    let result = act_on(r, ctx, s, &bmc, &sys).await;
    bmc.close().await;
    result
}

/// With the BMC answering: everything the poll keeps up to date.
async fn act_on<B: Board>(
    r: &mut Report<'_, Server>,
    ctx: &Context,
    s: &Server,
    bmc: &B,
    sys: &B::System,
) -> Result<Option<Duration>, Error> {
    let version: String = bmc.version().chars().take(32).collect();
    let path = sys.location().to_string();
    r.set(
        REACHABLE,
        true,
        "Connected",
        format!(
            "Redfish {version} at {}, system {path}",
            origin::redact(&s.spec.bmc.address)
        ),
    );
    if r.was(REACHABLE) == Some(false) {
        r.event(
            EventType::Normal,
            "Reachable",
            "Poll",
            format!("the BMC answers again ({path})"),
        );
    }
    let inventory = bmc.inventory(sys).await;
    record_inventory(r, s, inventory);
    let critical = record_health(r, sys);
    let power = sys.power_state().unwrap_or("Unknown").to_string();
    r.status.power_state = Some(power.clone());
    finish_accepted(r);
    let mut again = run_action(r, ctx, s, bmc, sys, &power).await?;
    let restarting = follow_restart(r, sys, &power);
    if restarting {
        again = Some(Duration::from_secs(1));
    }
    let provisioning = r
        .status
        .provisioning
        .as_ref()
        .is_some_and(|p| p.phase == provisioning::IN_PROGRESS);
    let (power_lost, held, wait) = keep_power(r, ctx, s, bmc, sys, &power, provisioning).await?;
    if let Some(w) = wait {
        again = Some(again.map_or(w, |a| a.min(w)));
    }
    health(r, provisioning, restarting, critical, power_lost, held, &power);
    Ok(again)
}

/// The health signal from what the poll saw.
fn health(
    r: &mut Report<'_, Server>,
    provisioning: bool,
    restarting: bool,
    critical: bool,
    power_lost: bool,
    held: Option<String>,
    power: &str,
) {
    if provisioning {
        set_health(r, ServerHealthState::Provisioning, "reprovisioning from the image");
    } else if restarting && !critical {
        set_health(
            r,
            ServerHealthState::Restarting,
            "a power cycle reprise asked for is under way",
        );
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
        let still_lost = !r.is(POWERED_AS_DESIRED)
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
}

/// The inventory and the cabling check against the declared network.
fn record_inventory(r: &mut Report<'_, Server>, s: &Server, inventory: crate::api::server::Inventory) {
    let drift = cabling::compare(
        s.spec
            .network
            .as_ref()
            .map(|n| n.interfaces.as_slice())
            .unwrap_or_default(),
        &inventory.nics,
    );
    if !inventory.errors.is_empty() && r.status.inventory.as_ref().map(|i| &i.errors) != Some(&inventory.errors) {
        r.event(
            EventType::Warning,
            "InventoryIncomplete",
            "Poll",
            inventory.errors.join("; "),
        );
    }
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
}

/// The health the BMC reports; returns whether it is Critical.
fn record_health(r: &mut Report<'_, Server>, sys: &impl SystemView) -> bool {
    let bmc_health = sys.health();
    let critical = bmc_health.as_deref() == Some("Critical");
    let reason: String = bmc_health
        .clone()
        .unwrap_or_else(|| "Unknown".into())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    r.set(
        HEALTHY,
        !critical,
        if reason.is_empty() { "Unknown" } else { &reason },
        format!("the BMC reports health {}", bmc_health.as_deref().unwrap_or("nothing")),
    );
    r.status.bmc_health = bmc_health;
    critical
}

/// Runs the action the engine asked for, or moves a provisioning on.
async fn run_action<B: Board>(
    r: &mut Report<'_, Server>,
    ctx: &Context,
    s: &Server,
    bmc: &B,
    sys: &B::System,
    power: &str,
) -> Result<Option<Duration>, Error> {
    let system_id = s.spec.bmc.system_id.as_deref();
    let Some(req) = requested_action(s, r.status.last_action.as_ref()) else {
        let (Some(mut p), Some(spec)) = (r.status.provisioning.clone(), &s.spec.provisioning) else {
            return Ok(None);
        };
        if p.phase != provisioning::IN_PROGRESS {
            return Ok(None);
        }
        let before = p.steps.len();
        let again = provisioning::advance(bmc, sys, spec, &mut p).await;
        step_events(r, &p.steps[before..]);
        r.status.provisioning = Some(p);
        return Ok(again);
    };
    let (action, id) = (req.verb.clone(), req.id.clone());
    let mut again = None;
    let (outcome, message) = match req.action() {
        Some(ActionVerb::PowerCycle) => {
            let reset = if power == "On" { "ForceRestart" } else { "On" };
            // Recorded before it is asked: an operator that takes over never asks twice.
            accept(r, &action, &id, format!("reset ({reset}) being asked of the BMC"));
            r.status.power_request = Some(PowerRequest {
                reset_type: reset.into(),
                time: Time(r.now),
                attempts: 1,
                refused: None,
                reboot_evidence: None,
                baseline: Some(sys.boot_marks()),
            });
            r.still_active()?;
            r.checkpoint().await?;
            crash::point("server:power-cycle");
            match bmc.reset(sys, reset).await {
                Ok(()) => {
                    // A restart can be short: look at once for the power going off.
                    if let (Ok(after), Some(p)) = (bmc.system(system_id).await, r.status.power_request.as_mut()) {
                        p.reboot_evidence =
                            provisioning::reboot_evidence(p.baseline.as_deref().unwrap_or_default(), &after);
                    }
                    again = Some(Duration::from_secs(1));
                    (ActionOutcome::Done, format!("reset ({reset}) asked of the BMC"))
                }
                Err(e) => {
                    r.status.power_request = None;
                    (ActionOutcome::Failed, e.to_string())
                }
            }
        }
        Some(ActionVerb::Reprovision) => match &s.spec.provisioning {
            None => (
                ActionOutcome::Rejected,
                "spec.provisioning.image is not set".to_string(),
            ),
            Some(p) => {
                let started = provisioning::start(bmc, &ctx.http, system_id, sys, p, &id).await;
                let failed = started.phase == "Failed";
                let last = started.steps.last().map(|s| s.message.clone()).unwrap_or_default();
                step_events(r, &started.steps);
                r.status.provisioning = Some(started);
                again = Some(Duration::from_secs(1));
                if failed {
                    (ActionOutcome::Failed, last)
                } else {
                    (
                        ActionOutcome::Done,
                        format!("installing {} (media in, boot once from it, reset)", p.image),
                    )
                }
            }
        },
        _ => (ActionOutcome::Rejected, unknown_action(&action, ComponentKind::Server)),
    };
    let (record, type_, note) = action_record(r.now, action, id, outcome, message);
    r.event(type_, "RecoveryAction", "Recover", note);
    r.status.last_action = Some(record);
    Ok(again)
}

/// Records a request as taken on (`Accepted`) before its effect is asked for.
fn accept(r: &mut Report<'_, Server>, action: &str, id: &str, message: String) {
    let (record, _, _) = action_record(r.now, action.into(), id.into(), ActionOutcome::Accepted, message);
    r.status.last_action = Some(record);
}

/// A request an operator took on and never answered (it was replaced in
/// between): the reset it was about to ask may or may not have reached the
/// BMC, so it is not asked again; the reboot's evidence decides.
fn finish_accepted(r: &mut Report<'_, Server>) {
    let Some(last) = r
        .status
        .last_action
        .as_mut()
        .filter(|a| a.outcome == ActionOutcome::Accepted)
    else {
        return;
    };
    last.outcome = ActionOutcome::Done;
    last.message = format!(
        "{}; taken over after a restart of the operator, not asked again: the BMC's evidence of a reboot decides",
        last.message
    );
}

/// A power cycle under way: done once the BMC shows the reboot and the power
/// is on again; without evidence within the settle time, the request's answer
/// becomes `Failed` (its effect was never seen). Returns whether it is still under way.
fn follow_restart(r: &mut Report<'_, Server>, sys: &impl SystemView, power: &str) -> bool {
    let Some(p) = r
        .status
        .power_request
        .as_mut()
        .filter(|p| p.reset_type == "ForceRestart")
    else {
        return false;
    };
    if p.reboot_evidence.is_none() {
        p.reboot_evidence = provisioning::reboot_evidence(p.baseline.as_deref().unwrap_or_default(), sys);
    }
    let age = (r.now.as_second() - p.time.0.as_second()).max(0) as u64;
    if power == "On" && p.reboot_evidence.is_some() {
        r.status.power_request = None;
        return false;
    }
    if age < power::SETTLE.as_secs() {
        return true;
    }
    let why = format!(
        "no evidence of a reboot within {}s of the ForceRestart: the BMC reports {}",
        power::SETTLE.as_secs(),
        sys.boot_marks()
    );
    r.status.power_request = None;
    if let Some(last) = r.status.last_action.as_mut()
        && ActionVerb::parse(&last.action) == Some(ActionVerb::PowerCycle)
    {
        last.outcome = ActionOutcome::Failed;
        last.message = why.clone();
    }
    r.event(EventType::Warning, "RestartNotSeen", "Recover", why);
    false
}

/// Keeps the power as desired: (power lost, the window holding repairs, when to look again).
async fn keep_power<B: Board>(
    r: &mut Report<'_, Server>,
    ctx: &Context,
    s: &Server,
    bmc: &B,
    sys: &B::System,
    power: &str,
    provisioning: bool,
) -> Result<(bool, Option<String>, Option<Duration>), Error> {
    let want = if s.spec.online { "On" } else { "Off" };
    let pending = r.status.power_request.clone();
    let plan = if provisioning {
        power::Plan::AsDesired
    } else {
        power::decide(
            s.spec.online,
            power,
            pending.as_ref(),
            r.now,
            s.spec.shutdown_timeout.as_std(),
        )
    };
    let as_desired = (s.spec.online && power == "On") || (!s.spec.online && power == "Off");
    let restart_pending = pending.as_ref().is_some_and(|p| p.reset_type == "ForceRestart");
    if as_desired && !restart_pending {
        r.status.power_request = None;
    }
    let power_lost = s.spec.online && power != "On" && !provisioning && !power::ours_pending(pending.as_ref(), r.now);
    let mut held = None;
    let wait = match plan {
        power::Plan::AsDesired => None,
        power::Plan::Wait(d) => Some(d),
        power::Plan::Ask { reset, attempts } => {
            held = (reset == "On")
                .then(|| crate::runtime::holds::held_by(&ctx.stores, s))
                .flatten();
            match held {
                // Held by a window: the usual poll notices when it ends.
                Some(_) => None,
                None => {
                    ask_power(r, ctx, bmc, sys, power, reset, attempts).await?;
                    Some(Duration::from_secs(2))
                }
            }
        }
    };
    r.set(
        POWERED_AS_DESIRED,
        as_desired || provisioning,
        if as_desired || provisioning {
            "AsDesired"
        } else {
            "PowerChanging"
        },
        format!("power {power}, desired {want}"),
    );
    Ok((power_lost, held, wait))
}

/// Asks the BMC for a reset that brings the power where the spec wants it,
/// and records the request (or the BMC's refusal) for the backoff.
async fn ask_power<B: Board>(
    r: &mut Report<'_, Server>,
    ctx: &Context,
    bmc: &B,
    sys: &B::System,
    power: &str,
    reset: &'static str,
    attempts: u32,
) -> Result<(), Error> {
    tracing::debug!(reset, attempts, "asking the BMC for a reset");
    // Recorded before it is asked: an operator that takes over waits on it
    // instead of asking a second time.
    r.status.power_request = Some(PowerRequest {
        reset_type: reset.into(),
        time: Time(r.now),
        attempts,
        refused: None,
        reboot_evidence: None,
        baseline: None,
    });
    r.still_active()?;
    r.checkpoint().await?;
    let result = bmc.reset(sys, reset).await;
    crash::point("server:power");
    if let (Err(e), Some(p)) = (&result, r.status.power_request.as_mut()) {
        p.refused = Some(e.message.clone());
    }
    match result {
        Ok(()) => {
            let (reason, type_, note) = match reset {
                "On" => {
                    ctx.metrics.repaired("Server", "Power", "PoweredOn");
                    (
                        "PoweredOn",
                        EventType::Warning,
                        format!("the server was {power} while it should be on; powering it on"),
                    )
                }
                "ForceOff" => (
                    "PoweringOff",
                    EventType::Normal,
                    "the graceful shutdown did not finish in time; forcing the power off".to_string(),
                ),
                _ => (
                    "PoweringOff",
                    EventType::Normal,
                    "the server should be off; shutting it down gracefully".to_string(),
                ),
            };
            r.event(type_, reason, "Power", note);
        }
        Err(e) => {
            // The same refusal again is one more of the same Event (a series), not a new one.
            r.event(
                EventType::Warning,
                "PowerRefused",
                "Power",
                format!("the BMC refused {reset}; asked again after a growing wait: {e}"),
            );
        }
    }
    Ok(())
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
