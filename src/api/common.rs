//! Types shared by every kind: conditions, references, durations, retention.

use std::{fmt, str::FromStr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Condition types and reasons used by more than one kind.
pub mod reasons {
    /// The object is ready for use; kstatus and `kubectl wait` read this one.
    pub const READY: &str = "Ready";
    /// Everything the object needs is in place and healthy.
    pub const RECONCILED: &str = "Reconciled";
    /// The spec passed the API server but is wrong in a way only the operator
    /// sees (a bad cron schedule, a missing Secret, a dangling reference).
    /// The operator waits for the next change of the spec.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The controller has not acted on this generation yet.
    pub const PENDING: &str = "Pending";
    /// A component this object depends on is not Ready.
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    /// kstatus: work is under way (True while not Ready and not stalled).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: the object cannot progress without a change by a person.
    pub const STALLED: &str = "Stalled";
    /// The operator cannot read the object (a value the schema let through).
    pub const MALFORMED: &str = "MalformedObject";
    /// What the object would write exists and belongs to something else.
    pub const CONFLICT: &str = "Conflict";
}

/// Status of a condition, as in every Kubernetes API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One aspect of an object's current state. Kept as a list keyed by `type`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase word saying why the condition has this status.
    pub reason: String,
    /// A sentence for people: what is wrong and, when something is, which field.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (not when the condition was last written).
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default)]
    pub observed_generation: i64,
}

/// A Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// One key of a Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// The kinds of component a RecoveryPlan covers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum ComponentKind {
    Application,
    Database,
    VirtualMachine,
    Server,
    /// A site of the plan (named in a RecoveryPlan's `spec.sites`, never
    /// selected by label): its failure is the loss of the active site.
    Site,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 5] = [
        Self::Application,
        Self::Database,
        Self::VirtualMachine,
        Self::Server,
        Self::Site,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "Application",
            Self::Database => "Database",
            Self::VirtualMachine => "VirtualMachine",
            Self::Server => "Server",
            Self::Site => "Site",
        }
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A component (Application, Database, VirtualMachine, Server or Site) in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRef {
    /// Kind of the component.
    pub kind: ComponentKind,
    /// Name of the component, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An object of a known kind in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How long to keep backups: the newest `count`, and none older than `maxAge`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// How many backups to keep at most (the newest ones).
    #[serde(default = "default_retention_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: u32,
    /// Backups older than this are deleted (a duration such as `168h`). Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("maxAge must be at least 1m"))]
    pub max_age: Option<Duration>,
}

fn default_retention_count() -> u32 {
    7
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            count: default_retention_count(),
            max_age: None,
        }
    }
}

/// A duration written as Go and Kubernetes write them: a sequence of numbers
/// with units `ms`, `s`, `m`, `h`, e.g. `30s`, `15m`, `1h30m`.
///
/// The text is kept as written so that what the operator writes back matches
/// what the user applied.
#[derive(Clone, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

/// The pattern every duration field carries in its schema.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(\.[0-9]{1,9})?(ms|s|m|h))+$";

impl Duration {
    pub fn as_std(&self) -> std::time::Duration {
        self.value
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A whole number of seconds, written in the largest exact unit (`1h`, `10m`, `90s`).
    pub fn from_secs(secs: u64) -> Self {
        let text = match secs {
            s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
            s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        Self {
            text,
            value: std::time::Duration::from_secs(secs),
        }
    }
}

impl FromStr for Duration {
    type Err = String;

    /// Parses the subset of Go's format the schema allows. Written here rather
    /// than borrowed because a huge value must be an error, never a panic.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const MAX_NANOS: u128 = 100 * 365 * 24 * 3600 * 1_000_000_000;
        let bad = |why: &str| format!("invalid duration {s:?}: {why}");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let mut total: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| bad("missing unit"))?;
            let (num, tail) = rest.split_at(num_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let per_unit: u128 = match unit {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(bad("missing unit")),
                other => return Err(bad(&format!("unknown unit {other:?} (use ms, s, m or h)"))),
            };
            let (int, frac) = num.split_once('.').unwrap_or((num, ""));
            if int.is_empty() || int.len() > 12 || frac.len() > 9 || frac.contains('.') {
                return Err(bad("number out of range"));
            }
            let int: u128 = int.parse().map_err(|_| bad("not a number"))?;
            let frac_nanos = if frac.is_empty() {
                0
            } else {
                let f: u128 = frac.parse().map_err(|_| bad("not a number"))?;
                f * per_unit / 10u128.pow(frac.len() as u32)
            };
            total = total
                .saturating_add(int.saturating_mul(per_unit))
                .saturating_add(frac_nanos);
            if total > MAX_NANOS {
                return Err(bad("longer than 100 years"));
            }
            rest = tail;
        }
        let value = std::time::Duration::from_nanos(total as u64);
        Ok(Self {
            text: s.to_string(),
            value,
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({})", self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": "duration(self) <= duration('87600h')",
                "message": "a duration is at most 87600h (10 years)",
            }],
        })
    }
}

/// Sets `cond` in `conditions` (keyed by type). `lastTransitionTime` moves
/// only when the status changes, so rewriting the same facts changes nothing.
pub fn set_condition(conditions: &mut Vec<Condition>, mut cond: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) => {
            if existing.status == cond.status {
                cond.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = cond;
        }
        None => conditions.push(cond),
    }
}

/// Builds a condition stamped with `generation` and the current time.
pub fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>, generation: i64) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time: Time(now()),
        observed_generation: generation,
    }
}

/// Looks a condition up by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whole milliseconds from `from` to `to`, each end cut to its millisecond:
/// how an incident's measures count a duration, and every view of them too.
pub fn millis_between(from: k8s_openapi::jiff::Timestamp, to: k8s_openapi::jiff::Timestamp) -> i64 {
    to.as_millisecond() - from.as_millisecond()
}

/// The current time in the type Kubernetes' `Time` wraps.
pub fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go_and_keep_their_text() {
        let d: Duration = "1h30m".parse().unwrap();
        assert_eq!(d.as_std(), std::time::Duration::from_secs(5400));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        assert!("-5m".parse::<Duration>().is_err());
        assert!("5 minutes".parse::<Duration>().is_err());
        assert!("99999999999999999999h".parse::<Duration>().is_err());
        assert!("999999999999h".parse::<Duration>().is_err());
        assert_eq!(
            "1.5m".parse::<Duration>().unwrap().as_std(),
            std::time::Duration::from_secs(90)
        );
        assert_eq!(
            "250ms".parse::<Duration>().unwrap().as_std(),
            std::time::Duration::from_millis(250)
        );
        assert!("5d".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
    }

    #[test]
    fn transition_time_moves_only_on_a_real_transition() {
        let mut conds = vec![];
        let first = condition("Ready", false, "Pending", "", 1);
        set_condition(&mut conds, first.clone());
        let mut again = condition("Ready", false, "Pending", "still", 2);
        again.last_transition_time = Time(now() + k8s_openapi::jiff::SignedDuration::from_secs(60));
        set_condition(&mut conds, again);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, first.last_transition_time);
        assert_eq!(conds[0].observed_generation, 2);
        let mut flipped = condition("Ready", true, "Reconciled", "", 2);
        flipped.last_transition_time = Time(now() + k8s_openapi::jiff::SignedDuration::from_secs(60));
        let expected = flipped.last_transition_time.clone();
        set_condition(&mut conds, flipped);
        assert_eq!(conds[0].last_transition_time, expected);
    }
}

/// Annotation through which the recovery engine (or a person) asks a
/// component's controller for a recovery action: `<action>/<request id>`, e.g.
/// `restart/7f3a`. Each request id is carried out once.
pub const ACTION_ANNOTATION: &str = "reprise.dev/action";

/// A recovery action run on request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// The request id (after the `/` in the annotation).
    pub id: String,
    /// The action asked, e.g. `restart` or `restore`.
    pub action: String,
    /// When it was carried out (or taken on, while `Accepted`).
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime,
    /// `Accepted` (under way), `Done`, `Rejected` (not possible: the message
    /// says why) or `Failed`.
    pub outcome: super::contract::ActionOutcome,
    /// Details.
    #[serde(default)]
    pub message: String,
}
