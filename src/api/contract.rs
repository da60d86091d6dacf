//! The contract between the recovery engine and the components, as types.
//!
//! - A component's **health** is one shape, [`Health`], over a state enum of
//!   its kind that says which states are failures ([`HealthState`]); `since`
//!   moves only when the component turns healthy or stops being healthy, so a
//!   failure keeps its first observation and "healthy since" is evidence of
//!   when it came back.
//! - **Actions** have one spelling ([`ActionVerb`]); the list each kind
//!   supports ([`actions`]) feeds the CRD's CEL rule, the executor and the
//!   controllers. They travel through the annotation
//!   `reprise.dev/action: <verb>/<request id>` ([`Request`]); each request id
//!   runs once, and its answer is the component's `status.lastAction`
//!   ([`ActionOutcome`]).
//! - A procedure's steps end with a [`StepOutcome`].
//! - [`Component`] is all the engine may know of a component.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::common::ACTION_ANNOTATION;
use super::{
    common::{ActionRecord, ComponentKind, ComponentRef},
    recovery_plan::Action as StepAction,
};

/// A recovery action a component's controller carries out on request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ActionVerb {
    Restart,
    Recreate,
    Rollback,
    Reconnect,
    Backup,
    Restore,
    RestoreSnapshot,
    Move,
    PowerCycle,
    Reprovision,
    Drill,
    Failover,
}

impl ActionVerb {
    pub const ALL: [ActionVerb; 12] = [
        Self::Restart,
        Self::Recreate,
        Self::Rollback,
        Self::Reconnect,
        Self::Backup,
        Self::Restore,
        Self::RestoreSnapshot,
        Self::Move,
        Self::PowerCycle,
        Self::Reprovision,
        Self::Drill,
        Self::Failover,
    ];

    /// The one spelling: in the annotation and in `status.lastAction.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Recreate => "recreate",
            Self::Rollback => "rollback",
            Self::Reconnect => "reconnect",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::RestoreSnapshot => "restoreSnapshot",
            Self::Move => "move",
            Self::PowerCycle => "powerCycle",
            Self::Reprovision => "reprovision",
            Self::Drill => "drill",
            Self::Failover => "failover",
        }
    }

    /// Reads a verb however a person capitalised it (`restoreSnapshot`,
    /// `RestoreSnapshot`, `restoresnapshot`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for ActionVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The actions each kind's controller carries out.
pub fn actions(kind: ComponentKind) -> &'static [ActionVerb] {
    use ActionVerb::*;
    match kind {
        ComponentKind::Application => &[Restart, Recreate, Rollback],
        ComponentKind::Database => &[Reconnect, Backup, Restore, Drill],
        ComponentKind::VirtualMachine => &[Restart, Recreate, RestoreSnapshot, Move, Drill],
        ComponentKind::Server => &[PowerCycle, Reprovision],
        ComponentKind::Site => &[Failover],
    }
}

/// The component action a procedure step asks for (None: the engine's own
/// steps, `Notify`, `WaitForApproval`, `AwaitRecovery`).
pub fn verb_of_step(a: StepAction) -> Option<ActionVerb> {
    Some(match a {
        StepAction::Restart => ActionVerb::Restart,
        StepAction::Recreate => ActionVerb::Recreate,
        StepAction::Rollback => ActionVerb::Rollback,
        StepAction::Reconnect => ActionVerb::Reconnect,
        StepAction::Restore => ActionVerb::Restore,
        StepAction::RestoreSnapshot => ActionVerb::RestoreSnapshot,
        StepAction::Move => ActionVerb::Move,
        StepAction::PowerCycle => ActionVerb::PowerCycle,
        StepAction::Reprovision => ActionVerb::Reprovision,
        StepAction::Failover => ActionVerb::Failover,
        StepAction::Notify | StepAction::WaitForApproval | StepAction::AwaitRecovery => return None,
    })
}

/// The procedure step action of a verb, if a plan may use it as a step.
fn step_of_verb(v: ActionVerb) -> Option<StepAction> {
    StepAction::ALL.into_iter().find(|a| verb_of_step(*a) == Some(v))
}

/// The CEL rule on a procedure: each step's action is one its kind supports
/// (built from [`actions`], so the API server and the controllers agree).
pub fn procedure_rule() -> (String, String) {
    let per_kind: Vec<(ComponentKind, Vec<String>)> = ComponentKind::ALL
        .into_iter()
        .map(|k| {
            let steps = actions(k)
                .iter()
                .filter_map(|v| step_of_verb(*v))
                .map(|a| format!("{a:?}"))
                .collect();
            (k, steps)
        })
        .collect();
    let quoted = |steps: &[String]| steps.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    let clauses: Vec<String> = per_kind
        .iter()
        .map(|(k, steps)| format!("(self.kind == '{k}' && s.action in [{}])", quoted(steps)))
        .collect();
    let rule = format!(
        "self.steps.all(s, s.action in ['Notify', 'WaitForApproval'] || {})",
        clauses.join(" || ")
    );
    let listed: Vec<String> = per_kind
        .iter()
        .map(|(k, steps)| format!("{k}: {}", steps.join(", ")))
        .collect();
    let message = format!(
        "spec.procedures[].steps[].action must be one this procedure's kind supports: {}; any: Notify, WaitForApproval",
        listed.join("; ")
    );
    (rule, message)
}

/// A request read from the `reprise.dev/action` annotation: `<verb>/<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The verb as written (it may name no action).
    pub verb: String,
    pub id: String,
}

impl Request {
    /// Parses the annotation's value; None when it is not `<verb>/<id>`.
    pub fn parse(value: &str) -> Option<Self> {
        let (verb, id) = value.split_once('/')?;
        let (verb, id) = (verb.trim(), id.trim());
        (!verb.is_empty() && !id.is_empty()).then(|| Self {
            verb: verb.to_string(),
            id: id.to_string(),
        })
    }

    /// The annotation's value asking for `verb` with request `id`.
    pub fn format(verb: ActionVerb, id: &str) -> String {
        format!("{}/{id}", verb.as_str())
    }

    pub fn action(&self) -> Option<ActionVerb> {
        ActionVerb::parse(&self.verb)
    }
}

/// How a component's controller answered a request (`status.lastAction.outcome`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ActionOutcome {
    /// Taken on, under way: its effect is not known yet.
    Accepted,
    /// Carried out; the component's health says whether it helped.
    Done,
    /// Not carried out: not an action of this kind, or not possible now (the message says why).
    Rejected,
    /// Tried and failed.
    Failed,
}

/// How a step of a procedure (or a notification) ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StepOutcome {
    Running,
    /// The component was observed healthy after the step's action.
    Succeeded,
    Failed,
    TimedOut,
    /// Not run (the message says why).
    Skipped,
}

impl StepOutcome {
    pub fn finished(self) -> bool {
        self != Self::Running
    }
}

/// The states of a kind's health signal.
pub trait HealthState: Copy + PartialEq + std::fmt::Debug {
    /// The engine opens an incident for it.
    fn is_failure(self) -> bool;
    /// The component serves as its spec says: evidence of a recovery.
    fn is_healthy(self) -> bool;
}

/// A component's health signal: its state, since when (to the microsecond),
/// and what was observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health<S> {
    /// The state.
    pub state: S,
    /// When the component last turned healthy or stopped being healthy: for a
    /// failure, when it was first observed (kept through the failing states).
    pub since: MicroTime,
    /// What was observed.
    #[serde(default)]
    pub message: String,
}

impl<S: HealthState> Health<S> {
    /// The signal after observing `state` at `now`: `since` moves only when
    /// the component turns healthy or stops being healthy.
    pub fn observe(previous: Option<&Self>, state: S, message: impl Into<String>, now: Timestamp) -> Self {
        let since = match previous {
            Some(p) if p.state.is_healthy() == state.is_healthy() => p.since.clone(),
            _ => MicroTime(now),
        };
        Self {
            state,
            since,
            message: message.into(),
        }
    }
}

/// The health as the engine reads it, whatever the kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub state: String,
    pub failing: bool,
    pub healthy: bool,
    pub since: Timestamp,
    pub message: String,
}

impl<S: HealthState> From<&Health<S>> for Signal {
    fn from(h: &Health<S>) -> Self {
        Signal {
            state: format!("{:?}", h.state),
            failing: h.state.is_failure(),
            healthy: h.state.is_healthy(),
            since: h.since.0,
            message: h.message.clone(),
        }
    }
}

/// A component's newest good backup, as the plan's readiness reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backups {
    /// The kind has no backups, or the component declares none.
    NotApplicable,
    /// Declared, none good yet.
    None,
    /// The newest good one is from then.
    At(Timestamp),
    /// Kept in several stores, some off-site: the newest good one is from
    /// `newest`, the newest off-site copy from `offsite` (None: none yet).
    /// The plan counts the off-site copy against its RPO: the site may be lost.
    Offsite {
        newest: Option<Timestamp>,
        offsite: Option<Timestamp>,
    },
}

/// A component's answer to a drill.
#[derive(Clone, Debug, PartialEq)]
pub struct DrillAnswer {
    pub verified: bool,
    pub message: String,
    /// The measured restore time, in seconds.
    pub seconds: Option<f64>,
}

/// The part of [`Component`] every kind answers from its metadata and the
/// common fields of its status (`status.lastAction`): its reference, labels,
/// pending request and last action. Used inside `impl Component for <Kind>`.
#[macro_export]
macro_rules! component_common {
    ($kind:ident) => {
        fn reference(&self) -> $crate::api::common::ComponentRef {
            $crate::api::common::ComponentRef {
                kind: $crate::api::common::ComponentKind::$kind,
                name: ::kube::ResourceExt::name_any(self),
            }
        }

        fn labels(&self) -> &::std::collections::BTreeMap<String, String> {
            ::kube::ResourceExt::labels(self)
        }

        fn pending_request(&self) -> Option<$crate::api::contract::Request> {
            $crate::api::contract::Request::parse(
                ::kube::ResourceExt::annotations(self).get($crate::api::contract::ACTION_ANNOTATION)?,
            )
        }

        fn last_action(&self) -> Option<&$crate::api::common::ActionRecord> {
            self.status.as_ref()?.last_action.as_ref()
        }
    };
}

/// All the recovery engine may know of a component.
pub trait Component: Send + Sync {
    fn reference(&self) -> ComponentRef;
    fn labels(&self) -> &BTreeMap<String, String>;
    /// Its health signal (None until its controller wrote one).
    fn health(&self) -> Option<Signal>;
    /// The request in its action annotation, if any.
    fn pending_request(&self) -> Option<Request>;
    /// Its answer to the last request it carried out.
    fn last_action(&self) -> Option<&ActionRecord>;
    /// A repair its own controller has under way (the engine lets it finish).
    fn own_repair(&self, now: Timestamp) -> Option<String>;
    /// How long its own repair may take, in seconds (None: the engine's cap).
    fn own_repair_cap(&self) -> Option<i64> {
        None
    }
    /// Its newest good backup.
    fn backups(&self) -> Backups {
        Backups::NotApplicable
    }
    /// Its answer to drill `id`, once it gave one.
    fn drill_answer(&self, _id: &str) -> Option<DrillAnswer> {
        None
    }
    /// The components it needs: they recover first.
    fn depends_on(&self) -> Vec<ComponentRef> {
        vec![]
    }
    /// Why it cannot carry `verb` out as its spec stands (a Server without a
    /// provisioning image cannot be reprovisioned), if so.
    fn unable(&self, _verb: ActionVerb) -> Option<String> {
        None
    }
    /// What a responder needs to know of it (a server's model and serial).
    fn responder_details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Whether it takes part in drills (it has backups).
    fn drillable(&self) -> bool {
        actions(self.reference().kind).contains(&ActionVerb::Drill) && self.backups() != Backups::NotApplicable
    }
}

/// The last `n` letters and digits of a drill id (`<plan uid prefix>.drill.<unix seconds>`),
/// lower-case: what tells one drill's scratch copies from another's.
pub fn drill_tag(id: &str, n: usize) -> String {
    let chars: Vec<char> = id
        .replace(".drill.", "")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    chars[chars.len().saturating_sub(n)..]
        .iter()
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_have_one_spelling_and_read_any_case() {
        for v in ActionVerb::ALL {
            assert_eq!(ActionVerb::parse(v.as_str()), Some(v));
            assert_eq!(ActionVerb::parse(&v.as_str().to_uppercase()), Some(v));
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        assert_eq!(ActionVerb::parse("RestoreSnapshot"), Some(ActionVerb::RestoreSnapshot));
        assert_eq!(ActionVerb::parse("restoresnapshot"), Some(ActionVerb::RestoreSnapshot));
        assert_eq!(ActionVerb::parse("reboot"), None);
    }

    #[test]
    fn requests_are_parsed_and_formatted_in_one_place() {
        let r = Request::parse(" restoreSnapshot / 0a1b.restore.1 ").unwrap();
        assert_eq!(r.action(), Some(ActionVerb::RestoreSnapshot));
        assert_eq!(r.id, "0a1b.restore.1");
        assert_eq!(Request::format(ActionVerb::PowerCycle, "x.1"), "powerCycle/x.1");
        assert_eq!(Request::parse("restart"), None);
        assert_eq!(Request::parse("/x"), None);
        assert_eq!(Request::parse("restart/"), None);
        assert_eq!(Request::parse("reboot/1").unwrap().action(), None);
    }

    #[test]
    fn the_procedure_rule_lists_each_kinds_actions() {
        let (rule, message) = procedure_rule();
        assert!(
            rule.contains("(self.kind == 'Database' && s.action in ['Reconnect', 'Restore'])"),
            "{rule}"
        );
        assert!(
            rule.contains("(self.kind == 'Server' && s.action in ['PowerCycle', 'Reprovision'])"),
            "{rule}"
        );
        assert!(
            message.contains("VirtualMachine: Restart, Recreate, RestoreSnapshot, Move"),
            "{message}"
        );
        for k in ComponentKind::ALL {
            for v in actions(k) {
                if let Some(step) = step_of_verb(*v) {
                    assert_eq!(verb_of_step(step), Some(*v));
                }
            }
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum S {
        Ok,
        Starting,
        Down,
        Gone,
    }
    impl HealthState for S {
        fn is_failure(self) -> bool {
            matches!(self, S::Down | S::Gone)
        }
        fn is_healthy(self) -> bool {
            self == S::Ok
        }
    }

    #[test]
    fn since_moves_only_when_the_component_turns_healthy_or_stops_being_so() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let h = Health::observe(None, S::Ok, "", t(0));
        let down = Health::observe(Some(&h), S::Down, "", t(10));
        assert_eq!(down.since.0, t(10));
        let gone = Health::observe(Some(&down), S::Gone, "", t(20));
        assert_eq!(gone.since.0, t(10), "a failure keeps its first observation");
        let starting = Health::observe(Some(&gone), S::Starting, "", t(30));
        assert_eq!(starting.since.0, t(10));
        let back = Health::observe(Some(&starting), S::Ok, "", t(40));
        assert_eq!(back.since.0, t(40), "healthy since it came back");
        assert_eq!(Health::observe(Some(&back), S::Ok, "", t(50)).since.0, t(40));
        assert!(Signal::from(&gone).failing && !Signal::from(&starting).healthy);
    }

    #[test]
    fn drill_tags_tell_drills_apart() {
        assert_eq!(drill_tag("0A1B2C3D.drill.17", 16), "0a1b2c3d17");
        assert_ne!(drill_tag("a.drill.1764400000", 4), drill_tag("a.drill.1764400060", 4));
    }
}
