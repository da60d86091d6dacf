//! Telling responders about an incident — the level's first when it opens,
//! the next ones on escalation, any in a `Notify` step: a JSON message to
//! each one's webhook (the vendor only while its contract runs, with the
//! modes the level gives it; for a server, what a technician needs to come
//! prepared), each delivery in the incident's timeline.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};
use serde_json::{Value, json};

use super::{Context, Error, secrets, status::Report};
use crate::{
    api::{
        Incident, Server,
        common::ComponentKind,
        incident::{IncidentStatus, TimelineEntry},
        recovery_plan::{Action as StepAction, InterventionMode, RecoveryPlan, ResponderType},
    },
    providers::webhook,
};

/// Step name of the opening notification to `responder`.
pub fn step_name(responder: &str) -> String {
    format!("notify-{responder}")
}

/// What a technician needs for a server: model, serial, BMC health, the failed parts.
fn server_details(ctx: &Context, ns: &str, name: &str) -> Value {
    let s: Option<Server> = super::components::get(&ctx.stores.servers, ns, name);
    let Some(st) = s.and_then(|s| s.status) else {
        return Value::Null;
    };
    let inv = st.inventory.unwrap_or_default();
    let failed: Vec<String> = inv
        .network_adapters
        .iter()
        .filter(|a| a.health.as_deref().is_some_and(|h| h != "OK"))
        .map(|a| format!("network adapter {} ({})", a.id, a.health.as_deref().unwrap_or_default()))
        .chain(
            inv.nics
                .iter()
                .filter(|n| n.link_status.as_deref() == Some("LinkDown"))
                .map(|n| format!("NIC {} link down", n.name)),
        )
        .collect();
    json!({
        "manufacturer": inv.manufacturer,
        "model": inv.model,
        "serialNumber": inv.serial,
        "bmcHealth": st.bmc_health,
        "powerState": st.power_state,
        "failedParts": failed,
    })
}

/// Delivers the incident to one responder: (outcome — `Succeeded`, `Failed`,
/// or `Skipped` when the responder cannot be called —, message, attempts).
pub(super) async fn deliver(
    ctx: &Context,
    inc: &Incident,
    plan: &RecoveryPlan,
    name: &str,
    modes: &[InterventionMode],
    status: &IncidentStatus,
) -> Result<(&'static str, String, u32), Error> {
    let ns = inc.namespace().unwrap_or_default();
    let Some(responder) = plan.spec.responders.iter().find(|x| x.name == name) else {
        return Ok(("Failed", format!("no responder {name} in the plan"), 0));
    };
    let today = Timestamp::now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    let contract_ended = responder.type_ == ResponderType::Vendor
        && responder
            .contract
            .as_ref()
            .and_then(|c| c.until.parse::<k8s_openapi::jiff::civil::Date>().ok())
            .is_some_and(|until| until < today);
    if contract_ended {
        return Ok(("Skipped", format!("the contract of {} has ended", responder.name), 0));
    }
    let Some(hook) = &responder.webhook else {
        return Ok((
            "Skipped",
            format!(
                "{} has no webhook; call {}",
                responder.name,
                responder.phone.as_deref().unwrap_or("them")
            ),
            0,
        ));
    };
    let token = match &hook.token_secret_ref {
        Some(t) => secrets::data(ctx, &ns, &t.name)
            .await?
            .and_then(|d| d.get(&t.key).cloned())
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        None => None,
    };
    let level = plan.spec.levels.iter().find(|l| l.level == inc.spec.level);
    let mut body = json!({
        "incident": inc.name_any(),
        "namespace": ns,
        "component": {"kind": inc.spec.component.kind.as_str(), "name": inc.spec.component.name},
        "level": inc.spec.level,
        "levelName": level.and_then(|l| l.name.clone()),
        "phase": format!("{:?}", status.phase),
        "cause": inc.spec.cause,
        "detectedAt": status.detected_at,
        "deadline": status.deadline,
        "modes": modes,
        "contract": responder.contract.as_ref().and_then(|c| c.reference.clone()),
        "timeline": format!("kubectl -n {ns} get incident {} -o yaml", inc.name_any()),
    });
    if inc.spec.component.kind == ComponentKind::Server {
        body["server"] = server_details(ctx, &ns, &inc.spec.component.name);
    }
    let d = webhook::post(&ctx.http, &hook.url, token.as_deref(), &body, 3).await;
    Ok((if d.ok { "Succeeded" } else { "Failed" }, d.message, d.attempts))
}

/// A `Notify` step: the named responder, or every responder of the level.
pub async fn step(
    ctx: &Context,
    inc: &Incident,
    plan: &RecoveryPlan,
    responder: Option<&str>,
    status: &IncidentStatus,
) -> Result<(String, String), Error> {
    let level = plan.spec.levels.iter().find(|l| l.level == inc.spec.level);
    let targets: Vec<(String, Vec<InterventionMode>)> = match responder {
        Some(name) => vec![(
            name.to_string(),
            level
                .and_then(|l| l.responders.iter().find(|r| r.name == name))
                .map(|r| r.modes.clone())
                .unwrap_or_default(),
        )],
        None => level
            .map(|l| l.responders.iter().map(|r| (r.name.clone(), r.modes.clone())).collect())
            .unwrap_or_default(),
    };
    let mut any_ok = false;
    let mut messages = vec![];
    for (name, modes) in targets {
        let (outcome, message, _) = deliver(ctx, inc, plan, &name, &modes, status).await?;
        any_ok |= outcome == "Succeeded";
        messages.push(format!("{name}: {outcome} ({message})"));
    }
    Ok((
        if any_ok { "Succeeded" } else { "Failed" }.to_string(),
        messages.join("; "),
    ))
}

/// Notifies the level's first responder once (the timeline says whether it was);
/// the next ones are called on escalation.
pub async fn on_open(r: &mut Report<'_, Incident>, ctx: &Context, plan: &RecoveryPlan) -> Result<(), Error> {
    let inc = r.obj;
    let Some(level) = plan.spec.levels.iter().find(|l| l.level == inc.spec.level) else {
        return Ok(());
    };
    for lr in level.responders.iter().take(1) {
        let step = step_name(&lr.name);
        if r.status.timeline.iter().any(|e| e.step == step && e.finished.is_some()) {
            continue;
        }
        let started = Timestamp::now();
        let (outcome, message, attempts) = deliver(ctx, inc, plan, &lr.name, &lr.modes, &r.status).await?;
        r.event(
            if outcome == "Failed" {
                EventType::Warning
            } else {
                EventType::Normal
            },
            "Notify",
            "Notify",
            format!("{}: {outcome}: {message}", lr.name),
        );
        r.status.timeline.push(TimelineEntry {
            step,
            action: StepAction::Notify,
            attempt: attempts.max(1),
            started: Time(started),
            finished: Some(Time(Timestamp::now())),
            outcome: outcome.into(),
            message,
            bytes: None,
        });
    }
    Ok(())
}
