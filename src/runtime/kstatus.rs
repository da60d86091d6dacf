//! The conditions GitOps tools read (kstatus, as Flux and Argo CD use it):
//! `Reconciling` while work is under way, `Stalled` when the object cannot
//! progress without a change (an invalid spec, a Secret not offered, a
//! password refused, a failed rollout waiting for a new version). Derived
//! from `Ready` and the conditions beside it, in one place, on every status
//! write: a controller only says why it is not Ready.

use crate::api::common::{Condition, ConditionStatus, condition, find_condition, reasons, set_condition};

/// Reasons that mean the object waits for a person: a new spec, a Secret,
/// a credential, a new version.
pub const STALLED_REASONS: &[&str] = &[
    reasons::INVALID_SPEC,
    reasons::MALFORMED,
    reasons::CONFLICT,
    "AuthenticationFailed",
    "TLSFailed",
    "NotSupported",
    "LinkRefused",
    "RolledBack",
    "RolloutFailed",
    "ProviderNotInstalled",
    "PowerRefused",
    // Two RecoveryPlans cover one component.
    "Overlap",
    // Incidents: the procedure ran out, or the incident was not believed.
    "Failed",
    "Rejected",
];

/// Sets `Reconciling` and `Stalled` from `Ready` (and, for a stalled reason,
/// any False condition beside it). Without `Ready`, nothing: the object has
/// not been looked at.
pub fn derive(conds: &mut Vec<Condition>, generation: i64) {
    let Some(ready) = find_condition(conds, reasons::READY).cloned() else {
        return;
    };
    let stalled_by = (ready.status != ConditionStatus::True)
        .then(|| {
            std::iter::once(&ready)
                .chain(conds.iter().filter(|c| c.status == ConditionStatus::False))
                .find(|c| STALLED_REASONS.contains(&c.reason.as_str()))
                .cloned()
        })
        .flatten();
    let (reconciling, stalled) = match (&stalled_by, ready.status) {
        (Some(c), _) => (None, Some(c)),
        (None, ConditionStatus::True) => (None, None),
        (None, _) => (Some(&ready), None),
    };
    let cond = |type_: &str, on: Option<&Condition>, idle: &str| match on {
        Some(c) => condition(type_, true, &c.reason, c.message.clone(), generation),
        None => condition(type_, false, idle, String::new(), generation),
    };
    set_condition(conds, cond(reasons::RECONCILING, reconciling, "Idle"));
    set_condition(conds, cond(reasons::STALLED, stalled, "Progressing"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(conds: &[Condition], t: &str) -> (ConditionStatus, String) {
        let c = find_condition(conds, t).unwrap();
        (c.status, c.reason.clone())
    }

    #[test]
    fn ready_false_is_reconciling_unless_the_reason_needs_a_person() {
        let mut conds = vec![condition("Ready", false, "Unreachable", "down", 3)];
        derive(&mut conds, 3);
        assert_eq!(
            status_of(&conds, "Reconciling"),
            (ConditionStatus::True, "Unreachable".into())
        );
        assert_eq!(status_of(&conds, "Stalled").0, ConditionStatus::False);

        let mut conds = vec![condition("Ready", false, "InvalidSpec", "spec.x: bad", 3)];
        derive(&mut conds, 3);
        assert_eq!(
            status_of(&conds, "Stalled"),
            (ConditionStatus::True, "InvalidSpec".into())
        );
        assert_eq!(find_condition(&conds, "Stalled").unwrap().message, "spec.x: bad");
        assert_eq!(status_of(&conds, "Reconciling").0, ConditionStatus::False);
    }

    #[test]
    fn a_stalled_part_stalls_the_whole_and_ready_clears_both() {
        let mut conds = vec![
            condition("Reachable", false, "AuthenticationFailed", "401", 1),
            condition("Ready", false, "NotReachable", "Reachable: 401", 1),
        ];
        derive(&mut conds, 1);
        assert_eq!(
            status_of(&conds, "Stalled"),
            (ConditionStatus::True, "AuthenticationFailed".into())
        );
        let ready = condition("Ready", true, "Reconciled", "", 2);
        set_condition(&mut conds, ready);
        set_condition(&mut conds, condition("Reachable", true, "Answered", "", 2));
        derive(&mut conds, 2);
        assert_eq!(status_of(&conds, "Stalled").0, ConditionStatus::False);
        assert_eq!(status_of(&conds, "Reconciling").0, ConditionStatus::False);
        let before = conds.clone();
        derive(&mut conds, 2);
        assert_eq!(conds, before, "deriving twice changes nothing");
    }

    #[test]
    fn nothing_before_the_first_look() {
        let mut conds = vec![];
        derive(&mut conds, 1);
        assert!(conds.is_empty());
    }
}
