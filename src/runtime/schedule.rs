//! Cron schedules (5 fields, UTC): backups, snapshots and drills are due at
//! the first occurrence after the last attempt, or after the object's creation.

use std::str::FromStr;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{Timestamp, tz::TimeZone},
};

/// When `schedule` is next due after `last` (or `created`, or now). None for an invalid schedule.
pub fn next_due(schedule: &str, last: Option<Timestamp>, created: Option<&Time>) -> Option<Timestamp> {
    let cron = croner::Cron::from_str(schedule).ok()?;
    let from = last.or_else(|| created.map(|t| t.0)).unwrap_or_else(Timestamp::now);
    Some(
        cron.find_next_occurrence(&from.to_zoned(TimeZone::UTC), false)
            .ok()?
            .timestamp(),
    )
}
