//! Sites: which site is active. The local Site's reconcile reads the
//! witness's lease every `renewInterval`, decides (`lease`, pure), writes
//! the lease conditionally when the decision says so, and keeps the fence
//! (`runtime::fence`) every other controller asks before acting. Peer Sites
//! get the role the witness gives them. Status is written when the role,
//! the epoch or the holder changes, not at each renewal.

pub mod approval;
pub mod bundle;
pub mod component;
pub mod failover;
pub mod lease;
pub mod mapping;
pub mod relocate;
pub mod replica;

use crate::runtime::Action;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::{ResourceExt, runtime::events::EventType};

use self::lease::{Config, Decision, Memory, Seen};
use crate::{
    api::{
        common::reasons,
        contract::Health,
        site::{
            BundleStatus, FailoverRecord, RELOCATE_TO_ANNOTATION, Site, SiteHealthState, SiteRole, SiteStatus, Witness,
        },
    },
    providers::witness::{Register, S3Config, S3Witness, WitnessError},
    runtime::{
        Context, Error,
        fence::Standing,
        report::{Report, write_status},
        secrets,
    },
};

/// Condition: the witness answered the last reading.
pub const WITNESS_REACHABLE: &str = "WitnessReachable";

pub fn reconcile(site: Arc<Site>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let ns = site.namespace().unwrap_or_default();
        if !site.spec.local {
            // A peer's status follows the local site's readings.
            return Ok(Action::await_change());
        }
        let locals: Vec<String> = sites_of(&ctx, &ns)
            .iter()
            .filter(|s| s.spec.local)
            .map(|s| s.name_any())
            .collect();
        if locals.len() > 1 {
            let why = format!(
                "spec.local: {} Sites of namespace {ns} say they are local ({}); exactly one may: reprise does not act here until it is fixed",
                locals.len(),
                locals.join(", ")
            );
            return invalid(&ctx, &site, why).await;
        }
        let Some(witness) = &site.spec.witness else {
            return invalid(&ctx, &site, "spec.witness is required on the local Site".into()).await;
        };
        let register = match register(&ctx, &site, witness).await? {
            Ok(r) => r,
            Err(why) => return invalid(&ctx, &site, why).await,
        };
        let every = witness.renew_interval.as_std();
        let unfit = mapping::check(&site, |kind, name| failover::exists(&ctx, kind, &ns, name));
        round(&ctx, &site, witness, register.as_ref(), unfit).await?;
        Ok(Action::requeue(every))
    }
    .boxed()
}

/// One reading of the witness, the decision and its effects.
/// `unfit`: why this site could not rebuild the plan (it takes no lease).
async fn round(
    ctx: &Context,
    site: &Site,
    w: &Witness,
    register: &S3Witness,
    unfit: Option<String>,
) -> Result<(), Error> {
    let ns = site.namespace().unwrap_or_default();
    let me = site.name_any();
    let cfg = Config {
        me: me.clone(),
        duration: SignedDuration::try_from(w.lease_duration.as_std()).unwrap_or(SignedDuration::from_secs(20)),
        skew: SignedDuration::try_from(w.max_clock_skew.as_std()).unwrap_or(SignedDuration::from_secs(2)),
        starts_active: site.spec.starts_active,
    };
    let memory = remember(ctx, site, &ns);
    let (read, prev) = match register.read().await {
        Ok(Some(h)) => (Seen::Present(h.lease.clone()), Some(h)),
        Ok(None) => (Seen::Absent, None),
        Err(e) => (Seen::Unreachable(e.to_string()), None),
    };
    let relocate = relocation(ctx, site, &ns);
    let now = Timestamp::now();
    let observed = lease::observe(observed_of(&ns).as_ref(), &read, now);
    set_observed(&ns, observed.clone());
    if let Seen::Present(l) = &read {
        set_last_seen(&ns, l.clone());
    }
    let answer = approval::asked(site, last_seen(&ns).as_ref());
    let approved = match &answer {
        Some((_, Ok(epoch))) => Some(*epoch),
        _ => memory.approved,
    };
    let memory = Memory {
        observed,
        approved,
        ..memory
    };
    // A relocation hands the lease over once the site has quiesced.
    let (hand_over, quiescing) = match (&relocate, memory.role) {
        (Some(peer), Some(SiteRole::Active)) => {
            let epoch = memory.held_epoch.unwrap_or(0);
            match relocate::quiesced(ctx, site, peer, epoch).await? {
                Ok(()) => (Some(peer.clone()), None),
                Err(note) => (None, Some(note)),
            }
        }
        _ => (None, None),
    };
    let decision = lease::decide(&cfg, &memory, &read, now, hand_over.as_deref());
    let decision = lease::unless_unfit(&memory, unfit.as_deref(), decision);
    let Outcome {
        role,
        why,
        seen_lease,
        acting_until,
    } = carry_out(register, &cfg, &memory, (&read, prev.as_ref()), now, decision).await;
    let held = match (&seen_lease, role, memory.approved) {
        (Some(l), SiteRole::Active, _) if l.site == me => Some(l.epoch),
        (_, SiteRole::Active, Some(a)) => Some(a),
        _ => memory.held_epoch,
    };
    // Approved until the witness holds it, or holds as new an epoch for
    // another site (a lost race for the write keeps it: written next round).
    let approved = memory
        .approved
        .filter(|a| seen_lease.as_ref().is_none_or(|l| l.epoch < *a));
    let epoch = seen_lease.as_ref().map(|l| l.epoch).unwrap_or(0).max(held.unwrap_or(0));
    ctx.fence.set(
        &ns,
        Standing {
            site: me.clone(),
            role,
            epoch,
            acting_until: acting_until.map(|t| deadline(t, Timestamp::now(), Instant::now())),
            why: why.clone(),
            quiescing: relocate.clone().filter(|_| role == SiteRole::Active),
        },
    );
    let why = match quiescing.filter(|_| role == SiteRole::Active) {
        Some(note) => format!("{why}; {note}"),
        None => why,
    };
    metrics(ctx, &me, role, seen_lease.as_ref(), now);
    let unreachable = unanswered(w, &read);
    let reachable = unreachable.is_none();
    let took_over = role == SiteRole::Active && matches!(memory.role, Some(SiteRole::Standby | SiteRole::Demoted));
    let from = lease_of(&read).or_else(|| last_seen(&ns)).filter(|l| l.site != me);
    let needs = approval::needed(&cfg, role, reachable, last_seen(&ns).as_ref(), now);
    let turn = Turn {
        took_over,
        from: from.as_ref(),
        role,
        epoch,
        lease: w.lease_duration.as_std(),
    };
    let plan = bundle_round(ctx, site, register, turn).await?;
    let said = Said {
        role,
        why,
        epoch,
        held,
        lease: seen_lease.clone(),
        unreachable,
        approved,
        answer,
        needs: needs.clone(),
        unfit,
    };
    report(ctx, site, said, plan).await?;
    // After the health that says why is written: the Incident reads it.
    if let Some((since, why)) = &needs
        && let Some(note) = approval::open_incident(ctx, site, *since, why).await?
    {
        crate::runtime::report::publish(ctx, site, EventType::Normal, "NeedsApproval", "Failover", note).await;
    }
    peers(ctx, &ns, &me, seen_lease.as_ref()).await
}

/// Why the witness did not answer `read`, naming the field (None: it did).
fn unanswered(w: &Witness, read: &Seen) -> Option<String> {
    let Seen::Unreachable(e) = read else { return None };
    Some(format!(
        "spec.witness.s3: {} (bucket {}) does not answer: {e}",
        w.s3.endpoint.as_deref().unwrap_or("AWS S3"),
        w.s3.bucket
    ))
}

/// The monotonic deadline for the wall-clock time `t`, both clocks read
/// now (`wall`, `mono`). Measured from the decision's time instead, a write
/// that took seconds (a witness timing out, then answering a retry) would
/// push the deadline past the lease's end by as long.
fn deadline(t: Timestamp, wall: Timestamp, mono: Instant) -> Instant {
    let left = wall.duration_until(t).as_secs_f64().max(0.0);
    mono + Duration::from_secs_f64(left)
}

/// What a decision came to, once carried out.
struct Outcome {
    role: SiteRole,
    why: String,
    seen_lease: Option<crate::providers::witness::Lease>,
    acting_until: Option<Timestamp>,
}

/// Carries a decision out: the conditional write, when it says so, and
/// what the site is afterwards (a lost race or a witness gone meanwhile
/// included). `read`: what was read, and the version a write must match.
async fn carry_out(
    register: &S3Witness,
    cfg: &Config,
    memory: &Memory,
    (read, prev): (&Seen, Option<&crate::providers::witness::Held>),
    now: Timestamp,
    decision: Decision,
) -> Outcome {
    let (role, why, seen_lease, acting_until) = match decision {
        Decision::Stay { role, why } if role == SiteRole::Active && memory.approved.is_some() => {
            // Acting by a person's approval, without the witness: for one lease at a time.
            let until = now + cfg.duration - cfg.skew;
            (role, why, lease_of(read), Some(until))
        }
        Decision::Stay { role, why } => {
            let keep = (role == SiteRole::Active).then_some(memory.acting_until).flatten();
            (role, why, lease_of(read), keep)
        }
        Decision::Write { lease, role, why } => {
            let started = Instant::now();
            match register.write(&lease, prev).await {
                Ok(_) => {
                    let until = (role == SiteRole::Active).then(|| {
                        let margin = cfg.duration - cfg.skew;
                        Timestamp::now() + margin - SignedDuration::try_from(started.elapsed()).unwrap_or_default()
                    });
                    (role, why, Some(lease), until)
                }
                Err(WitnessError::Conflict) => (
                    // Someone wrote first: not acting until the next reading says who.
                    if role == SiteRole::Active && memory.role == Some(SiteRole::Active) {
                        SiteRole::Fenced
                    } else {
                        memory.role.unwrap_or(SiteRole::Standby)
                    },
                    "another site wrote the lease first: reading it again".into(),
                    lease_of(read),
                    None,
                ),
                Err(e) => {
                    let d = lease::decide(cfg, memory, &Seen::Unreachable(e.to_string()), now, None);
                    let Decision::Stay { role, why } = d else {
                        unreachable!("an unreachable witness is never written")
                    };
                    let keep = (role == SiteRole::Active).then_some(memory.acting_until).flatten();
                    (role, why, lease_of(read), keep)
                }
            }
        }
    };
    Outcome {
        role,
        why,
        seen_lease,
        acting_until,
    }
}

fn lease_of(seen: &Seen) -> Option<crate::providers::witness::Lease> {
    match seen {
        Seen::Present(l) => Some(l.clone()),
        _ => None,
    }
}

/// What the site remembers: the fence this process keeps, else its status
/// (after a restart: its role and epoch, but no confirmed lease).
fn remember(ctx: &Context, site: &Site, ns: &str) -> Memory {
    let status = site.status.clone().unwrap_or_default();
    match ctx.fence.get(ns) {
        Some(s) => Memory {
            role: Some(s.role),
            held_epoch: status.held_epoch,
            // The fence's monotonic deadline, as a time for the decision.
            acting_until: s.acting_until.map(|until| {
                let left = until.saturating_duration_since(Instant::now());
                Timestamp::now() + SignedDuration::try_from(left).unwrap_or_default()
            }),
            observed: None,
            approved: status.approved_epoch,
        },
        None => Memory {
            role: status.role,
            held_epoch: status.held_epoch,
            acting_until: None,
            observed: None,
            approved: status.approved_epoch,
        },
    }
}

/// The lease record each local site last read, and since when.
fn observations() -> &'static Mutex<HashMap<String, Option<lease::Observed>>> {
    static O: std::sync::OnceLock<Mutex<HashMap<String, Option<lease::Observed>>>> = std::sync::OnceLock::new();
    O.get_or_init(Default::default)
}

/// The last lease each local site read (its holder's last heartbeat seen).
fn last_seen_all() -> &'static Mutex<HashMap<String, crate::providers::witness::Lease>> {
    static L: std::sync::OnceLock<Mutex<HashMap<String, crate::providers::witness::Lease>>> =
        std::sync::OnceLock::new();
    L.get_or_init(Default::default)
}

fn last_seen(ns: &str) -> Option<crate::providers::witness::Lease> {
    last_seen_all()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(ns)
        .cloned()
}

fn set_last_seen(ns: &str, l: crate::providers::witness::Lease) {
    last_seen_all()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ns.into(), l);
}

fn observed_of(ns: &str) -> Option<lease::Observed> {
    observations()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(ns)
        .cloned()
        .flatten()
}

fn set_observed(ns: &str, o: Option<lease::Observed>) {
    observations()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ns.into(), o);
}

/// The peer named by `reprise.dev/relocate-to`, when it names one.
fn relocation(ctx: &Context, site: &Site, ns: &str) -> Option<String> {
    let to = site.annotations().get(RELOCATE_TO_ANNOTATION)?;
    sites_of(ctx, ns)
        .iter()
        .any(|s| !s.spec.local && s.name_any() == *to)
        .then(|| to.clone())
}

fn sites_of(ctx: &Context, ns: &str) -> Vec<Site> {
    ctx.stores
        .sites
        .state()
        .iter()
        .filter_map(|s| s.0.as_ref().ok())
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .cloned()
        .collect()
}

/// The witness's register for `site`, built once per configuration.
async fn register(ctx: &Context, site: &Site, w: &Witness) -> Result<Result<Arc<S3Witness>, String>, Error> {
    let ns = site.namespace().unwrap_or_default();
    let name = &w.s3.credentials_secret_ref.name;
    let who = secrets::Requester {
        kind: "Site",
        name: site.metadata.name.as_deref().unwrap_or_default(),
    };
    let data = match secrets::read(ctx, &ns, name, who).await? {
        Ok(d) => d,
        Err(why) => return Ok(Err(format!("spec.witness.s3.credentialsSecretRef: {why}"))),
    };
    let (id, secret) = match crate::providers::backup_store::S3Credentials::from_data(&data) {
        Ok(c) => (c.access_key_id, c.secret_access_key),
        Err(k) => {
            return Ok(Err(format!(
                "spec.witness.s3.credentialsSecretRef: Secret {name:?} has no key {k:?}"
            )));
        }
    };
    let key = format!(
        "{}|{:?}|{}|{:?}|{}|{id}|{}",
        site.uid().unwrap_or_default(),
        w.s3.endpoint,
        w.s3.bucket,
        w.s3.prefix,
        w.lease,
        crate::providers::artifacts::hex(&sha2::Sha256::digest(secret.as_bytes()))
    );
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Arc<S3Witness>>>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(Ok(r.clone()));
    }
    let built = S3Witness::new(&S3Config {
        endpoint: w.s3.endpoint.as_deref(),
        bucket: &w.s3.bucket,
        region: w.s3.region.as_deref(),
        prefix: w.s3.prefix.as_deref(),
        lease: &w.lease,
        access_key_id: &id,
        secret_access_key: &secret,
    })
    .map(Arc::new)
    .map_err(|e| format!("spec.witness.s3: {e}"));
    if let Ok(r) = &built {
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|k, _| !k.starts_with(&format!("{}|", site.uid().unwrap_or_default())));
        c.insert(key, r.clone());
    }
    Ok(built)
}

use sha2::Digest;

/// A local Site reprise cannot use: said in status, nothing acts.
async fn invalid(ctx: &Context, site: &Site, why: String) -> Result<Action, Error> {
    let ns = site.namespace().unwrap_or_default();
    ctx.fence.set(
        &ns,
        Standing {
            site: site.name_any(),
            role: SiteRole::Fenced,
            epoch: site.status.as_ref().map_or(0, |s| s.epoch),
            acting_until: None,
            why: why.clone(),
            quiescing: None,
        },
    );
    let mut r = Report::new(ctx, site);
    r.fail_and_tell(reasons::READY, reasons::INVALID_SPEC, "Validate", why);
    r.write().await?;
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// What a round found, for the local Site's status.
struct Said {
    role: SiteRole,
    why: String,
    epoch: u64,
    held: Option<u64>,
    lease: Option<crate::providers::witness::Lease>,
    /// Why the witness did not answer the last reading, naming the field.
    unreachable: Option<String>,
    /// The epoch taken by a person's approval, until the witness holds it.
    approved: Option<u64>,
    /// A failover asked of the site this round, and its answer.
    answer: Option<(crate::api::contract::Request, Result<u64, String>)>,
    /// Why a person must decide, since when.
    needs: Option<(Timestamp, String)>,
    /// Why this site could not rebuild the plan (its overrides).
    unfit: Option<String>,
}

/// What a round did with the plan bundle.
#[derive(Default)]
struct PlanBundle {
    status: Option<BundleStatus>,
    failover: Option<FailoverRecord>,
    /// Whether the failover started this round.
    started: bool,
    /// A standby's measure of what it could rebuild from, when taken.
    replicas: Option<Vec<crate::api::site::Replica>>,
}

/// Where a round leaves the site, for the bundle's part of it.
struct Turn<'a> {
    took_over: bool,
    /// The lease's holder before this round (when another site).
    from: Option<&'a crate::providers::witness::Lease>,
    role: SiteRole,
    epoch: u64,
    /// The lease's duration (how often a standby measures its replicas).
    lease: Duration,
}

/// The bundle's part of a round: after a takeover, the rebuild, wave by
/// wave, until it completes; while active, publishing (not before a
/// rebuild completes); while standby, reading and checking.
async fn bundle_round(ctx: &Context, site: &Site, w: &S3Witness, turn: Turn<'_>) -> Result<PlanBundle, Error> {
    let ns = site.namespace().unwrap_or_default();
    let was = site.status.as_ref().and_then(|s| s.bundle.clone());
    let mut out = PlanBundle {
        status: was.clone(),
        ..Default::default()
    };
    let key = match failover::key(ctx, site).await? {
        None => return Ok(out),
        Some(Ok(k)) => k,
        Some(Err(why)) => {
            out.status = Some(BundleStatus {
                verified: false,
                message: why,
                ..was.unwrap_or_default()
            });
            return Ok(out);
        }
    };
    if turn.took_over {
        out.failover = Some(failover::rebuild(ctx, w, &key, site, turn.epoch, turn.from).await);
        out.started = true;
        return Ok(out);
    }
    if turn.role == SiteRole::Active {
        let under_way = site
            .status
            .as_ref()
            .and_then(|s| s.failover.clone())
            .filter(|f| f.completed.is_none() && f.epoch == turn.epoch);
        match under_way {
            Some(mut f) => {
                failover::advance(ctx, w, &key, site, &mut f).await;
                out.failover = Some(f);
            }
            None => {
                out.status =
                    Some(failover::publish(ctx, w, &key, &ns, &site.name_any(), turn.epoch, was.as_ref()).await)
            }
        }
    } else {
        out.status = failover::read(w, &key, &ns, was.as_ref()).await.or(was);
        if turn.role == SiteRole::Standby
            && let Some(p) = failover::known_payload(&ns).filter(|_| measure_due(&ns, turn.lease))
        {
            out.replicas = Some(replica::measure(ctx, site, &p).await?);
        }
    }
    Ok(out)
}

/// Whether a standby's measure of its replicas is due (every lease
/// duration, at most [`replica::EVERY`]); marks it taken.
fn measure_due(ns: &str, lease: Duration) -> bool {
    static LAST: std::sync::OnceLock<Mutex<HashMap<String, Instant>>> = std::sync::OnceLock::new();
    let mut last = LAST
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let due = last.get(ns).is_none_or(|t| t.elapsed() >= lease.min(replica::EVERY));
    if due {
        last.insert(ns.into(), Instant::now());
    }
    due
}

/// The local site's health: failing over while a takeover's rebuild is
/// under way (since the lost site's last heartbeat: where the site
/// Incident's times start), else healthy.
fn health(
    now: Timestamp,
    role: SiteRole,
    was: Option<&Health<SiteHealthState>>,
    failover: Option<&FailoverRecord>,
) -> Health<SiteHealthState> {
    match failover.filter(|f| f.completed.is_none() && role == SiteRole::Active) {
        Some(f) => Health {
            state: SiteHealthState::FailingOver,
            since: f.last_heartbeat.clone().unwrap_or(MicroTime(f.at.0)),
            message: component::progress(f),
        },
        None => {
            let message = match failover {
                Some(f) if f.completed.is_some() => {
                    let said: Vec<&str> = f
                        .waves
                        .iter()
                        .map(|w| w.message.as_str())
                        .filter(|m| !m.is_empty())
                        .collect();
                    format!(
                        "took over from {} at epoch {}: every wave healthy{}",
                        f.from.as_deref().unwrap_or("the lost site"),
                        f.epoch,
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", said.join("; "))
                        }
                    )
                }
                _ => format!("{role:?}: no failover under way"),
            };
            Health::observe(was, SiteHealthState::Healthy, message, now)
        }
    }
}

/// The local Site's status, and an Event when its role changes.
async fn report(ctx: &Context, site: &Site, said: Said, plan: PlanBundle) -> Result<(), Error> {
    let Said {
        role,
        why,
        epoch,
        held,
        lease,
        unreachable,
        approved,
        answer,
        needs,
        unfit,
    } = said;
    let lease = lease.as_ref();
    let mut r = Report::new(ctx, site);
    r.status.approved_epoch = approved;
    if let Some((req, verdict)) = answer {
        use crate::api::contract::ActionOutcome;
        let (outcome, message) = match verdict {
            Ok(e) => (
                ActionOutcome::Done,
                format!("failover approved: taking over at epoch {e} without the witness"),
            ),
            Err(why) => (ActionOutcome::Rejected, why),
        };
        let (rec, type_, note) =
            crate::runtime::report::action_record(r.now, req.verb.clone(), req.id, outcome, message);
        r.event(type_, "Failover", "Failover", note);
        r.status.last_action = Some(rec);
    }
    if let Some(f) = plan.failover.as_ref().filter(|_| plan.started) {
        r.event(
            EventType::Normal,
            "FailedOver",
            "Failover",
            format!(
                "took the lease at epoch {}; from bundle {}: created {} ({}), {} already here{}",
                f.epoch,
                f.bundle.as_deref().unwrap_or("none"),
                f.created.len(),
                f.created.join(", "),
                f.present.len(),
                if f.message.is_empty() {
                    String::new()
                } else {
                    format!("; {}", f.message)
                }
            ),
        );
    }
    if let Some(f) = plan.failover {
        if f.completed.is_some() && r.status.failover.as_ref().is_none_or(|w| w.completed.is_none()) {
            let waves: Vec<String> = f.waves.iter().map(|w| format!("{} ({})", w.kind, w.message)).collect();
            r.event(
                EventType::Normal,
                "FailoverCompleted",
                "Failover",
                format!("every wave healthy: {}", waves.join("; ")),
            );
        }
        r.status.failover = Some(f);
    }
    let h = match needs {
        Some((since, why)) => Health {
            state: SiteHealthState::NeedsApproval,
            since: MicroTime(since),
            message: why,
        },
        None => health(r.now, role, r.status.health.as_ref(), r.status.failover.as_ref()),
    };
    r.status.health = Some(h);
    r.status.bundle = plan.status;
    if let Some(replicas) = plan.replicas {
        for (component, age) in replica::ages(&replicas, r.now) {
            let labels = crate::telemetry::ReplicaLabels {
                site: site.name_any(),
                component,
            };
            ctx.metrics.site_replicated_rpo.get_or_create(&labels).set(age);
        }
        r.status.replicas = replicas;
    }
    if role != SiteRole::Standby {
        r.status.replicas.clear();
    }
    let was = r.status.role;
    if was != Some(role) {
        r.status.since = Some(Time(r.now));
        let type_ = match role {
            SiteRole::Active | SiteRole::Standby => EventType::Normal,
            SiteRole::Demoted | SiteRole::Fenced => EventType::Warning,
        };
        let reason = match role {
            SiteRole::Active => "Active",
            SiteRole::Standby => "Standby",
            SiteRole::Demoted => "Demoted",
            SiteRole::Fenced => "Fenced",
        };
        let was = was.map_or("unknown".to_string(), |w| format!("{w:?}"));
        r.event(type_, reason, "Lease", format!("{was} -> {role:?}: {why}"));
    }
    r.status.role = Some(role);
    r.status.epoch = epoch;
    r.status.held_epoch = held;
    r.status.holder = lease.map(|l| l.site.clone());
    r.status.message = Some(why.clone());
    witness_condition(&mut r, unreachable, &why);
    match unfit {
        Some(u) => r.fail_and_tell(reasons::READY, reasons::INVALID_SPEC, "Validate", u),
        None => r.set(reasons::READY, true, reasons::RECONCILED, format!("{role:?}: {why}")),
    }
    r.write().await
}

/// `WitnessReachable`: whether the last reading was answered, and if not, why.
fn witness_condition(r: &mut Report<'_, Site>, unreachable: Option<String>, why: &str) {
    match unreachable {
        None => r.set(
            WITNESS_REACHABLE,
            true,
            "Answered",
            "the witness answered the last reading",
        ),
        Some(u) => r.set(WITNESS_REACHABLE, false, "Unreachable", format!("{u}; {why}")),
    }
}

/// Peer Sites: `Active` for the holder, `Standby` for the others.
async fn peers(
    ctx: &Context,
    ns: &str,
    me: &str,
    lease: Option<&crate::providers::witness::Lease>,
) -> Result<(), Error> {
    for peer in sites_of(ctx, ns).iter().filter(|s| s.name_any() != me && !s.spec.local) {
        let holds = lease.is_some_and(|l| l.site == peer.name_any());
        let mut status: SiteStatus = crate::runtime::report::with_ready(
            peer,
            true,
            reasons::RECONCILED,
            if holds {
                "holds the lease"
            } else {
                "does not hold the lease"
            },
        );
        let role = if holds { SiteRole::Active } else { SiteRole::Standby };
        if status.role != Some(role) {
            status.since = Some(Time(Timestamp::now()));
        }
        status.role = Some(role);
        status.epoch = lease.map_or(status.epoch, |l| l.epoch);
        status.holder = lease.map(|l| l.site.clone());
        write_status(ctx, peer, &status).await?;
    }
    Ok(())
}

fn metrics(ctx: &Context, me: &str, role: SiteRole, lease: Option<&crate::providers::witness::Lease>, now: Timestamp) {
    use crate::telemetry::{SiteLabels, SiteRoleLabels};
    for r in [SiteRole::Active, SiteRole::Standby, SiteRole::Demoted, SiteRole::Fenced] {
        ctx.metrics
            .site_role
            .get_or_create(&SiteRoleLabels {
                site: me.into(),
                role: format!("{r:?}"),
            })
            .set(i64::from(r == role));
    }
    if let Some(l) = lease {
        let age = l.renewed.duration_until(now).as_secs_f64().max(0.0);
        let labels = SiteLabels { site: l.site.clone() };
        ctx.metrics.site_lease_age.get_or_create(&labels).set(age);
        ctx.metrics
            .site_epoch
            .get_or_create(&SiteLabels { site: me.into() })
            .set(l.epoch as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(completed: bool) -> FailoverRecord {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        FailoverRecord {
            at: Time(t(30)),
            epoch: 3,
            bundle: Some("abc".into()),
            created: vec![],
            present: vec![],
            overridden: vec![],
            replaced: vec![],
            message: String::new(),
            from: Some("paris".into()),
            last_heartbeat: Some(MicroTime(t(5))),
            waves: vec![crate::api::site::Wave {
                kind: "Database".into(),
                started: MicroTime(t(31)),
                finished: completed.then(|| MicroTime(t(40))),
                objects: vec!["shop".into()],
                message: "waiting for Database shop: Restoring".into(),
            }],
            completed: completed.then(|| MicroTime(t(41))),
        }
    }

    #[test]
    fn the_acting_deadline_is_the_lease_margin_left_now_not_at_the_decision() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let mono = Instant::now();
        // Acting until t(7); the write that confirmed it took 4 s after the
        // decision at t(0): 3 s are left, not 7.
        assert_eq!(deadline(t(7), t(4), mono), mono + Duration::from_secs(3));
        assert_eq!(deadline(t(7), t(9), mono), mono, "past: no time left");
    }

    #[test]
    fn a_site_fails_over_from_the_lost_sites_last_heartbeat_until_every_wave_is_healthy() {
        let now = Timestamp::from_second(1_800_000_050).unwrap();
        let under_way = record(false);
        let h = health(now, SiteRole::Active, None, Some(&under_way));
        assert_eq!(h.state, SiteHealthState::FailingOver);
        assert_eq!(
            h.since,
            under_way.last_heartbeat.clone().unwrap(),
            "counted from the last heartbeat"
        );
        assert!(
            h.message
                .contains("from paris at epoch 3: wave Database (shop): waiting"),
            "{}",
            h.message
        );
        let done = health(now, SiteRole::Active, Some(&h), Some(&record(true)));
        assert_eq!(done.state, SiteHealthState::Healthy);
        assert_eq!(done.since.0, now);
        assert!(done.message.contains("every wave healthy"), "{}", done.message);
        // Demoted in the middle of its rebuild: not failing over any more.
        let demoted = health(now, SiteRole::Demoted, Some(&h), Some(&under_way));
        assert_eq!(demoted.state, SiteHealthState::Healthy);
        assert_eq!(
            health(now, SiteRole::Standby, None, None).state,
            SiteHealthState::Healthy
        );
    }
}
