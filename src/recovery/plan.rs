//! RecoveryPlan reconciler: validation, coverage, readiness per level
//! (responders and their contracts, backups fresher than the level's RPO),
//! and detection (an Incident per failed covered component, see `opening`).
//! The procedure executor builds on it.

use crate::runtime::Action;
use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use kube::ResourceExt;

use crate::{
    api::{
        RecoveryPlan,
        common::{ComponentKind, ComponentRef, reasons},
        contract::{Backups, verb_of_step},
        recovery_plan::{Coverage, LevelReadiness, RecoveryPlan as Plan, ResponderType},
    },
    runtime::{
        Context, Error,
        report::Report,
        stores::{self as registry},
        validation::{Invalid, check_cron, check_date, report_invalid},
    },
};

/// Checks only the operator can make.
pub fn validate(ctx: &Context, plan: &Plan, covered: &[ComponentRef]) -> Result<(), Invalid> {
    registry::selector("spec.selector", &plan.spec.selector)?;
    if let Some(d) = &plan.spec.drills {
        check_cron("spec.drills.schedule", &d.schedule)?;
    }
    for (i, r) in plan.spec.responders.iter().enumerate() {
        if let Some(c) = &r.contract {
            check_date(&format!("spec.responders[{i}].contract.until"), &c.until)?;
        }
    }
    let ns = plan.namespace().unwrap_or_default();
    // Each action step must be one every covered component of its kind can carry out.
    for (p, proc_) in plan.spec.procedures.iter().enumerate() {
        for (s, step) in proc_.steps.iter().enumerate() {
            let Some(verb) = verb_of_step(step.action) else {
                continue;
            };
            for c in covered.iter().filter(|c| c.kind == proc_.kind) {
                let why = registry::component(&ctx.stores, &ns, c).and_then(|c| c.unable(verb));
                if let Some(why) = why {
                    return Err(Invalid::external(
                        format!("spec.procedures[{p}].steps[{s}]"),
                        format!("{:?} cannot run: {why}", step.action),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What the plan's coverage leaves unsaid: a selector that selects nothing,
/// covered components whose kind no level applies to (their failures would
/// open no incident), components another plan covers too. `others`: the
/// other plans of the namespace, by name, with what they cover.
pub fn coverage_gaps(plan: &Plan, covered: &[ComponentRef], others: &[(String, Vec<ComponentRef>)]) -> Vec<String> {
    let mut gaps = vec![];
    if covered.is_empty() {
        gaps.push("spec.selector selects no component in the namespace".to_string());
    }
    let kinds: BTreeSet<_> = plan
        .spec
        .levels
        .iter()
        .flat_map(|l| l.applies_to.iter().copied())
        .collect();
    let orphans: BTreeSet<_> = covered
        .iter()
        .filter(|c| !kinds.contains(&c.kind))
        .map(|c| c.kind)
        .collect();
    for k in orphans {
        gaps.push(format!(
            "spec.levels: no level applies to {k}, yet the plan covers {k}s: their failures would open no incident"
        ));
    }
    for name in &plan.spec.sites {
        if !covered.iter().any(|c| c.kind == ComponentKind::Site && &c.name == name) {
            gaps.push(format!(
                "spec.sites names Site {name}, which does not exist in the namespace"
            ));
        }
    }
    for (other, theirs) in others {
        let shared: Vec<String> = covered
            .iter()
            .filter(|c| theirs.contains(c))
            .map(|c| format!("{} {}", c.kind, c.name))
            .collect();
        if !shared.is_empty() {
            gaps.push(format!(
                "{} also covered by RecoveryPlan {other}: one plan per component",
                shared.join(", ")
            ));
        }
    }
    gaps
}

/// Per level: can the plan's people be reached under its terms today?
pub fn readiness(plan: &Plan, today: k8s_openapi::jiff::civil::Date) -> Vec<LevelReadiness> {
    plan.spec
        .levels
        .iter()
        // The site level of a plan that names no site has nothing to be ready for.
        .filter(|l| !plan.spec.sites.is_empty() || l.applies_to.iter().any(|k| *k != ComponentKind::Site))
        .map(|level| {
            let mut reasons = vec![];
            let mut reachable = 0;
            for lr in &level.responders {
                let Some(r) = plan.spec.responders.iter().find(|r| r.name == lr.name) else {
                    continue;
                };
                let expired = r.type_ == ResponderType::Vendor
                    && r.contract
                        .as_ref()
                        .and_then(|c| c.until.parse::<k8s_openapi::jiff::civil::Date>().ok())
                        .is_some_and(|until| until < today);
                if expired {
                    reasons.push(format!("the contract of {} ended; it is not called", r.name));
                } else if r.webhook.is_none() && r.phone.is_none() {
                    reasons.push(format!("{} has neither a webhook nor a phone number", r.name));
                } else {
                    reachable += 1;
                }
            }
            if reachable == 0 {
                reasons.push(format!("no reachable responder for level {}", level.level));
            }
            LevelReadiness {
                level: level.level,
                ready: reachable > 0,
                reasons,
            }
        })
        .collect()
}

/// Per level with an RPO: the covered Databases and VirtualMachines whose
/// newest backup is older than it (or missing); where a component keeps
/// off-site copies, the newest off-site copy is the one that counts (a fresh
/// local copy does not survive the site). `backup_of` reads a component's
/// backups. Also returns when the next backup turns stale, to look again then.
pub fn stale_backups(
    plan: &Plan,
    covered: &[ComponentRef],
    backup_of: impl Fn(&ComponentRef) -> Backups,
    now: k8s_openapi::jiff::Timestamp,
) -> (Vec<(u8, String)>, Option<Duration>) {
    let mut out = vec![];
    let mut next: Option<Duration> = None;
    for level in &plan.spec.levels {
        let Some(rpo) = level.objectives.as_ref().and_then(|o| o.rpo.as_ref()) else {
            continue;
        };
        let limit = rpo.as_std().as_secs() as i64;
        for c in covered.iter().filter(|c| level.applies_to.contains(&c.kind)) {
            let (counted, what) = match backup_of(c) {
                Backups::NotApplicable => continue,
                Backups::None => (None, "backup"),
                Backups::At(t) => (Some(t), "backup"),
                Backups::Offsite { offsite, .. } => (offsite, "off-site copy"),
            };
            let local = match backup_of(c) {
                Backups::Offsite { newest: Some(n), .. } => {
                    format!(" (the newest local copy is {}s old)", now.as_second() - n.as_second())
                }
                _ => String::new(),
            };
            match counted {
                None => out.push((
                    level.level,
                    format!("{} {} has no {what} yet (RPO {}){local}", c.kind, c.name, rpo.as_str()),
                )),
                Some(t) => {
                    let age = now.as_second() - t.as_second();
                    if age > limit {
                        out.push((
                            level.level,
                            format!(
                                "{} {}'s newest {what} is {}s old, beyond the RPO of {}{local}",
                                c.kind,
                                c.name,
                                age,
                                rpo.as_str()
                            ),
                        ));
                    } else {
                        let left = Duration::from_secs((limit - age + 1) as u64);
                        next = Some(next.map_or(left, |n| n.min(left)));
                    }
                }
            }
        }
    }
    (out, next)
}

/// A component's backups (NotApplicable when it is not found).
fn backup_time(ctx: &Context, ns: &str, c: &ComponentRef) -> Backups {
    registry::component(&ctx.stores, ns, c).map_or(Backups::NotApplicable, |c| c.backups())
}

/// What the namespace's plans cover: this plan's components, those no plan
/// covers, and each other plan's (by name; for overlaps).
struct Cover {
    covered: Vec<ComponentRef>,
    uncovered: Vec<ComponentRef>,
    others: Vec<(String, Vec<ComponentRef>)>,
}

fn coverage(ctx: &Context, plan: &Plan) -> Result<Cover, Invalid> {
    let ns = plan.namespace().unwrap_or_default();
    let mine = registry::selector("spec.selector", &plan.spec.selector)?;
    let mut covered = registry::selected(&ctx.stores, &ns, &mine);
    covered.extend(sites_named(ctx, &ns, plan));
    let mut others = vec![];
    for other in ctx.stores.recovery_plans.state() {
        let Ok(other) = &other.0 else { continue };
        if other.namespace().as_deref() != Some(ns.as_str()) || other.uid() == plan.uid() {
            continue;
        }
        if let Ok(sel) = registry::selector("spec.selector", &other.spec.selector) {
            others.push((other.name_any(), registry::selected(&ctx.stores, &ns, &sel)));
        }
    }
    let any: BTreeSet<&ComponentRef> = covered.iter().chain(others.iter().flat_map(|(_, c)| c)).collect();
    let uncovered = registry::in_namespace(&ctx.stores, &ns)
        .into_iter()
        .map(|c| c.reference())
        .filter(|c| !any.contains(c))
        .collect();
    Ok(Cover {
        covered,
        uncovered,
        others,
    })
}

/// The Sites the plan names that exist in its namespace.
fn sites_named(ctx: &Context, ns: &str, plan: &Plan) -> Vec<ComponentRef> {
    plan.spec
        .sites
        .iter()
        .map(|name| ComponentRef {
            kind: ComponentKind::Site,
            name: name.clone(),
        })
        .filter(|c| registry::exists(&ctx.stores, ns, c))
        .collect()
}

/// Readiness of the level that applies to Sites: the local Site's witness
/// answers and, on a standby, the plan bundle it would rebuild from verifies.
fn site_readiness(ctx: &Context, ns: &str, covered: &[ComponentRef]) -> Vec<String> {
    let mut reasons = vec![];
    for c in covered.iter().filter(|c| c.kind == ComponentKind::Site) {
        let Some(site) = registry::get(&ctx.stores.sites, ns, &c.name) else {
            continue;
        };
        if !site.spec.local {
            continue;
        }
        let st = site.status.clone().unwrap_or_default();
        let answered = crate::api::common::find_condition(&st.conditions, crate::recovery::sites::WITNESS_REACHABLE)
            .is_some_and(|c| c.status == crate::api::common::ConditionStatus::True);
        if !answered {
            reasons.push(format!("Site {}: the witness does not answer", c.name));
        }
        if let Some(b) = st.bundle.as_ref().filter(|b| !b.verified || !b.message.is_empty()) {
            reasons.push(format!("Site {}: plan bundle: {}", c.name, b.message));
        }
        if site.spec.bundle.is_none() {
            reasons.push(format!(
                "Site {}: no plan bundle (spec.bundle): a standby would have nothing to rebuild from",
                c.name
            ));
        }
    }
    reasons
}

pub fn reconcile(obj: Arc<RecoveryPlan>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let Cover {
            covered,
            uncovered,
            others,
        } = match coverage(&ctx, &obj) {
            Ok(c) => c,
            Err(invalid) => return report_invalid(&ctx, obj.as_ref(), &invalid).await,
        };
        if let Err(invalid) = validate(&ctx, &obj, &covered) {
            return report_invalid(&ctx, obj.as_ref(), &invalid).await;
        }
        let ns = obj.namespace().unwrap_or_default();
        let open = super::opening::all_open(&ctx.stores)
            .iter()
            .filter(|i| i.namespace().as_deref() == Some(ns.as_str()) && i.spec.plan_ref.name == obj.name_any())
            .count() as u32;
        let today = k8s_openapi::jiff::Timestamp::now()
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .date();
        let mut readiness = readiness(&obj, today);
        let (stale, stale_next) = stale_backups(
            &obj,
            &covered,
            |c| backup_time(&ctx, &ns, c),
            k8s_openapi::jiff::Timestamp::now(),
        );
        let sites = site_readiness(&ctx, &ns, &covered);
        if let Some(l) = obj
            .spec
            .levels
            .iter()
            .find(|l| l.applies_to.contains(&ComponentKind::Site))
            && let Some(r) = readiness.iter_mut().find(|r| r.level == l.level)
            && !sites.is_empty()
        {
            r.ready = false;
            r.reasons.extend(sites);
        }
        for (level, reason) in stale {
            if let Some(l) = readiness.iter_mut().find(|l| l.level == level) {
                l.ready = false;
                l.reasons.push(reason);
            }
        }
        let gaps = coverage_gaps(&obj, &covered, &others);
        let overlap = gaps.iter().any(|g| g.contains("also covered by"));
        let not_ready: Vec<String> = gaps
            .iter()
            .cloned()
            .chain(readiness.iter().filter(|l| !l.ready).flat_map(|l| l.reasons.clone()))
            .collect();
        let message = if not_ready.is_empty() {
            format!(
                "{} components covered, {} uncovered in the namespace",
                covered.len(),
                uncovered.len()
            )
        } else {
            not_ready.join("; ")
        };
        let mut r = Report::new(&ctx, obj.as_ref());
        r.set(
            reasons::READY,
            not_ready.is_empty(),
            if not_ready.is_empty() {
                reasons::RECONCILED
            } else if overlap {
                "Overlap"
            } else if !gaps.is_empty() {
                "CoverageGaps"
            } else {
                "ObjectivesAtRisk"
            },
            message,
        );
        r.status.readiness = readiness;
        // Detection: failed covered components get an Incident.
        let paused = super::opening::open_for_failures(&ctx, &obj, &covered).await?;
        if !paused.is_empty() {
            tracing::info!(components = ?paused, "failures inside a Pause maintenance window: no incident");
        }
        r.status.open_incidents = open;
        let mut notes = vec![];
        let mut last_drill = r.status.last_drill.clone();
        let drill_next = super::drills::advance(&ctx, &obj, &covered, &mut last_drill, &mut notes).await?;
        r.status.last_drill = last_drill;
        r.status.coverage = Some(Coverage {
            covered_count: covered.len() as u32,
            uncovered_count: uncovered.len() as u32,
            covered,
            uncovered,
        });
        for (type_, reason, note) in notes {
            r.event(type_, reason, "Drill", note);
        }
        let covered = r
            .status
            .coverage
            .as_ref()
            .map(|c| c.covered.as_slice())
            .unwrap_or_default();
        super::gauges::publish(&ctx, &obj, &r.status, covered);
        r.write().await?;
        // Contracts end at midnight, backups age, drills come due: look again
        // within the hour, or at the soonest of those.
        let hour = Duration::from_secs(3600);
        Ok(Action::requeue(
            [stale_next, drill_next].into_iter().flatten().fold(hour, Duration::min),
        ))
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_gaps_name_what_would_never_page_or_would_page_twice() {
        use crate::api::common::ComponentKind;
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "RecoveryPlan", "metadata": {"name": "p"},
            "spec": {"levels": [{"level": 1, "appliesTo": ["Application"], "minWindow": "15m"}]}
        }))
        .unwrap();
        let c = |kind, name: &str| ComponentRef {
            kind,
            name: name.into(),
        };
        assert_eq!(
            coverage_gaps(&plan, &[], &[]),
            ["spec.selector selects no component in the namespace"]
        );
        let covered = [c(ComponentKind::Application, "web"), c(ComponentKind::Server, "hv")];
        let gaps = coverage_gaps(&plan, &covered, &[]);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].contains("no level applies to Server"), "{gaps:?}");
        let others = [("other".to_string(), vec![c(ComponentKind::Application, "web")])];
        let gaps = coverage_gaps(&plan, &covered[..1], &others);
        assert_eq!(
            gaps,
            ["Application web also covered by RecoveryPlan other: one plan per component"]
        );
        assert!(coverage_gaps(&plan, &covered[..1], &[("x".into(), vec![])]).is_empty());
    }
    use crate::api::common::ComponentKind;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn backups_older_than_a_levels_rpo_put_it_at_risk() {
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "RecoveryPlan",
            "metadata": {"name": "p"},
            "spec": {
                "selector": {},
                "levels": [
                    {"level": 1, "appliesTo": ["Database"], "minWindow": "15m", "maxWindow": "30m", "objectives": {"rpo": "6h"}},
                    {"level": 2, "appliesTo": ["VirtualMachine"], "minWindow": "30m", "maxWindow": "45m"}
                ]
            }
        }))
        .unwrap();
        let now: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let c = |kind, name: &str| ComponentRef {
            kind,
            name: name.into(),
        };
        let covered = [
            c(ComponentKind::Database, "fresh"),
            c(ComponentKind::Database, "old"),
            c(ComponentKind::Database, "never"),
            c(ComponentKind::VirtualMachine, "vm"),
            c(ComponentKind::Database, "local-only-fresh"),
        ];
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let (stale, next) = stale_backups(
            &plan,
            &covered,
            |c| match c.name.as_str() {
                "fresh" => Backups::At(t("2026-11-29T10:00:00Z")),
                "old" => Backups::At(t("2026-11-29T05:00:00Z")),
                "local-only-fresh" => Backups::Offsite {
                    newest: Some(t("2026-11-29T11:59:00Z")),
                    offsite: Some(t("2026-11-29T03:00:00Z")),
                },
                _ => Backups::None,
            },
            now,
        );
        let reasons: Vec<&str> = stale.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(stale.len(), 3, "{reasons:?}");
        assert!(
            reasons[2].contains("local-only-fresh's newest off-site copy is 32400s old")
                && reasons[2].contains("the newest local copy is 60s old"),
            "a fresh local copy does not hide a stale off-site one: {reasons:?}"
        );
        assert!(
            reasons[0].contains("old") && reasons[0].contains("25200s"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("never") && reasons[1].contains("no backup"),
            "{reasons:?}"
        );
        assert_eq!(
            next,
            Some(Duration::from_secs(4 * 3600 + 1)),
            "the fresh one turns stale in 4 h"
        );
    }
}
