//! Checks the API server cannot make (cron syntax, references that must
//! exist, Secrets that must hold given keys), and how a failed one is reported:
//! `Ready=False`, reason `InvalidSpec`, the field named, one Warning Event, and
//! one status write per generation.

use std::{fmt, str::FromStr, time::Duration};

use kube::runtime::events::EventType;

use super::Action;

use super::{
    Context, Error,
    kind::Kind,
    report::{publish, write_status},
};
use crate::api::common::reasons;

/// A spec that is wrong in a way only the operator can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// JSON path of the field, e.g. `spec.backup.schedule`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
    /// Whether the fix may come from outside the spec (a Secret created
    /// later): then the object is checked again after a while, quietly.
    pub external: bool,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            external: false,
        }
    }

    pub fn external(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            external: true,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// How long an object whose spec points at something missing waits before it looks again.
pub const RECHECK_MISSING: Duration = Duration::from_secs(60);

/// Reports `invalid` on `obj`: status first, and an Event only when the status changed.
pub async fn report_invalid<K: Kind>(ctx: &Context, obj: &K, invalid: &Invalid) -> Result<Action, Error> {
    // Built as every status is (on our own last write while the watch lags):
    // the same facts keep their transition time and are not written twice.
    let mut r = super::report::Report::new(ctx, obj);
    r.set(reasons::READY, false, reasons::INVALID_SPEC, invalid.to_string());
    let status = r.status;
    if write_status(ctx, obj, &status).await? {
        publish(
            ctx,
            obj,
            EventType::Warning,
            reasons::INVALID_SPEC,
            "Validate",
            invalid.to_string(),
        )
        .await;
        tracing::warn!(field = %invalid.field, message = %invalid.message, "invalid spec");
    }
    Ok(if invalid.external {
        Action::requeue(RECHECK_MISSING)
    } else {
        Action::await_change()
    })
}

/// A 5-field cron schedule (minute hour day-of-month month day-of-week), UTC.
pub fn check_cron(field: &str, expr: &str) -> Result<(), Invalid> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(Invalid::new(
            field,
            format!(
                "{expr:?} is not a cron schedule: expected 5 fields (minute hour day month weekday), found {fields}"
            ),
        ));
    }
    let cron = croner::Cron::from_str(expr)
        .map_err(|e| Invalid::new(field, format!("{expr:?} is not a cron schedule: {e}")))?;
    // A schedule that names no real day (31 February) never fires: say so
    // rather than wait forever. Looked for over the next 8 years (leap days).
    let now = k8s_openapi::jiff::Timestamp::now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    let horizon = now.timestamp().as_second() + 8 * 366 * 24 * 3600;
    match cron.find_next_occurrence(&now, false) {
        Ok(next) if next.timestamp().as_second() <= horizon => Ok(()),
        _ => Err(Invalid::new(field, format!("{expr:?} never fires (no such date)"))),
    }
}

/// A date `YYYY-MM-DD` that exists in the calendar.
pub fn check_date(field: &str, value: &str) -> Result<k8s_openapi::jiff::civil::Date, Invalid> {
    value
        .parse()
        .map_err(|e| Invalid::new(field, format!("{value:?} is not a date (YYYY-MM-DD): {e}")))
}

/// The Secret `name` exists in `ns`, offers itself to `who` and holds every
/// key in `keys` (read through the Secret cache: no API call while the
/// Secret is unchanged).
pub async fn check_secret(
    ctx: &Context,
    ns: &str,
    who: super::secrets::Requester<'_>,
    field: &str,
    name: &str,
    keys: &[&str],
) -> Result<Result<(), Invalid>, Error> {
    let data = match super::secrets::read(ctx, ns, name, who).await? {
        Ok(data) => data,
        Err(why) => return Ok(Err(Invalid::external(field, why))),
    };
    let missing: Vec<&str> = keys.iter().copied().filter(|k| !data.contains_key(*k)).collect();
    if missing.is_empty() {
        Ok(Ok(()))
    } else {
        Ok(Err(Invalid::external(
            field,
            format!("Secret {name:?} lacks the key(s) {}", missing.join(", ")),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_schedules_need_five_valid_fields() {
        assert!(check_cron("spec.backup.schedule", "0 2 * * *").is_ok());
        assert!(check_cron("spec.backup.schedule", "*/15 * * * 1-5").is_ok());
        let e = check_cron("spec.backup.schedule", "every night").unwrap_err();
        assert_eq!(e.field, "spec.backup.schedule");
        assert!(e.message.contains("5 fields"), "{e}");
        assert!(check_cron("f", "61 2 * * *").is_err());
        assert!(check_cron("f", "0 0 2 * * *").is_err());
        assert!(check_cron("f", "0 0 29 2 *").is_ok(), "a leap day comes");
        let e = check_cron("f", "0 0 31 2 *").unwrap_err();
        assert!(e.message.contains("never fires"), "{e}");
        assert!(check_cron("f", "*/0 * * * *").is_err());
        assert!(check_cron("f", "0 0 30 2 *").is_err());
    }

    #[test]
    fn dates_must_exist() {
        assert!(check_date("c", "2027-12-31").is_ok());
        assert!(check_date("c", "2027-02-30").is_err());
    }
}
