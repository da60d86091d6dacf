//! Releases: which version to run, when a release succeeded, when it failed
//! and the last good version comes back (pure; the reconciler feeds it what it
//! observed and applies what it decides).

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::api::application::{ApplicationStatus, FailedVersion, Release};

pub const PROGRESSING: &str = "Progressing";
pub const SUCCEEDED: &str = "Succeeded";
pub const ROLLED_BACK: &str = "RolledBack";
pub const FAILED: &str = "Failed";

/// What the reconciler observed.
pub struct Inputs<'a> {
    pub spec_version: &'a str,
    pub generation: i64,
    /// Every dependency is Ready.
    pub deps_ready: bool,
    pub deadline: Duration,
    pub history_limit: usize,
    pub now: Timestamp,
    /// The Deployment runs `status.currentVersion` with every replica updated and available.
    pub rolled_out: bool,
    /// Why it is not rolled out, for the record when the deadline passes.
    pub not_rolled_out_why: &'a str,
}

/// The version to run, and when to look again (a release's deadline).
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub version: String,
    pub requeue: Option<Duration>,
    /// Set when this step rolled a failed version back: (version, why).
    pub rolled_back: Option<(String, String)>,
}

/// A duration as people read it: `850ms`, `12.4s`, `3m5s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn elapsed(from: &Time, now: Timestamp) -> Duration {
    Duration::from_secs_f64(from.0.duration_until(now).as_secs_f64().max(0.0))
}

fn target(status: &ApplicationStatus, i: &Inputs) -> String {
    let mut version = i.spec_version.to_string();
    if let Some(f) = &status.failed_version
        && f.version == version
        && f.generation == i.generation
    {
        version = status
            .last_good_version
            .clone()
            .or_else(|| status.current_version.clone())
            .unwrap_or(version);
    }
    // No new version while a dependency is not Ready; a first deployment still goes ahead.
    if !i.deps_ready
        && let Some(current) = &status.current_version
    {
        version = current.clone();
    }
    version
}

/// Moves the release state forward and says which version to run.
pub fn step(status: &mut ApplicationStatus, i: &Inputs) -> Decision {
    if status
        .failed_version
        .as_ref()
        .is_some_and(|f| f.generation != i.generation && f.version != i.spec_version)
    {
        status.failed_version = None;
    }
    let mut rolled_back = None;
    for _ in 0..2 {
        let version = target(status, i);
        if status.current_version.as_deref() != Some(version.as_str()) {
            let rollback = status
                .failed_version
                .as_ref()
                .map(|f| format!("rollback from {}", f.version));
            status.releases.insert(
                0,
                Release {
                    version: version.clone(),
                    started: Time(i.now),
                    finished: None,
                    duration: None,
                    outcome: PROGRESSING.into(),
                    message: rollback,
                },
            );
            status.releases.truncate(i.history_limit.max(1));
            status.current_version = Some(version.clone());
            return Decision {
                version,
                requeue: Some(i.deadline),
                rolled_back,
            };
        }
        let Some(release) = status
            .releases
            .first_mut()
            .filter(|r| r.outcome == PROGRESSING && r.version == version)
        else {
            return Decision {
                version,
                requeue: None,
                rolled_back,
            };
        };
        let took = elapsed(&release.started, i.now);
        if i.rolled_out {
            release.outcome = SUCCEEDED.into();
            release.finished = Some(Time(i.now));
            release.duration = Some(human(took));
            status.last_good_version = Some(version.clone());
            return Decision {
                version,
                requeue: None,
                rolled_back,
            };
        }
        if took < i.deadline {
            return Decision {
                version,
                requeue: Some(i.deadline - took),
                rolled_back,
            };
        }
        let can_roll_back = status.last_good_version.as_ref().is_some_and(|g| *g != version);
        let why = format!("not rolled out after {}: {}", human(i.deadline), i.not_rolled_out_why);
        release.outcome = if can_roll_back { ROLLED_BACK } else { FAILED }.into();
        release.finished = Some(Time(i.now));
        release.duration = Some(human(took));
        release.message = Some(why.clone());
        status.failed_version = Some(FailedVersion {
            version: version.clone(),
            generation: i.generation,
            reason: why.clone(),
        });
        if !can_roll_back {
            return Decision {
                version,
                requeue: None,
                rolled_back,
            };
        }
        rolled_back = Some((version, why));
    }
    Decision {
        version: target(status, i),
        requeue: Some(i.deadline),
        rolled_back,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(version: &'a str, now: Timestamp, rolled_out: bool) -> Inputs<'a> {
        Inputs {
            spec_version: version,
            generation: 1,
            deps_ready: true,
            deadline: Duration::from_secs(60),
            history_limit: 10,
            now,
            rolled_out,
            not_rolled_out_why: "0 of 2 replicas available",
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn a_release_succeeds_once_rolled_out() {
        let mut st = ApplicationStatus::default();
        let d = step(&mut st, &inputs("1.0", at(0), false));
        assert_eq!(
            d,
            Decision {
                version: "1.0".into(),
                requeue: Some(Duration::from_secs(60)),
                rolled_back: None
            }
        );
        assert_eq!(st.releases[0].outcome, PROGRESSING);
        let d = step(&mut st, &inputs("1.0", at(20), true));
        assert_eq!(d.requeue, None);
        assert_eq!(st.releases[0].outcome, SUCCEEDED);
        assert_eq!(st.releases[0].duration.as_deref(), Some("20.0s"));
        assert_eq!(st.last_good_version.as_deref(), Some("1.0"));
    }

    #[test]
    fn a_release_past_its_deadline_rolls_back_and_is_not_retried() {
        let mut st = ApplicationStatus::default();
        step(&mut st, &inputs("1.0", at(0), false));
        step(&mut st, &inputs("1.0", at(5), true));
        let mut i = inputs("2.0", at(10), false);
        i.generation = 2;
        assert_eq!(step(&mut st, &i).version, "2.0");
        i.now = at(40);
        assert_eq!(step(&mut st, &i).requeue, Some(Duration::from_secs(30)));
        i.now = at(75);
        let d = step(&mut st, &i);
        assert_eq!(d.version, "1.0", "back to the last good version");
        assert_eq!(d.rolled_back.as_ref().map(|r| r.0.as_str()), Some("2.0"));
        assert_eq!(st.releases[1].version, "2.0");
        assert_eq!(st.releases[1].outcome, ROLLED_BACK);
        assert!(st.releases[1].message.as_deref().unwrap().contains("0 of 2 replicas"));
        assert_eq!(st.releases[0].message.as_deref(), Some("rollback from 2.0"));
        i.now = at(80);
        i.rolled_out = true;
        assert_eq!(step(&mut st, &i).version, "1.0");
        assert_eq!(st.releases[0].outcome, SUCCEEDED);
        // Same spec: 2.0 is not tried again.
        i.now = at(200);
        assert_eq!(step(&mut st, &i).version, "1.0");
        assert_eq!(st.failed_version.as_ref().unwrap().version, "2.0");
        // A new spec asks for 2.0 again: it is tried.
        i.generation = 3;
        assert_eq!(step(&mut st, &i).version, "2.0");
    }

    #[test]
    fn no_new_version_while_a_dependency_is_not_ready() {
        let mut st = ApplicationStatus::default();
        step(&mut st, &inputs("1.0", at(0), false));
        step(&mut st, &inputs("1.0", at(1), true));
        let mut i = inputs("2.0", at(2), false);
        i.deps_ready = false;
        assert_eq!(step(&mut st, &i).version, "1.0");
        i.deps_ready = true;
        assert_eq!(step(&mut st, &i).version, "2.0");
    }

    #[test]
    fn history_is_bounded() {
        let mut st = ApplicationStatus::default();
        for n in 0..15 {
            let v = format!("1.{n}");
            let mut i = inputs(&v, at(n * 10), false);
            i.history_limit = 5;
            step(&mut st, &i);
            i.rolled_out = true;
            step(&mut st, &i);
        }
        assert_eq!(st.releases.len(), 5);
        assert_eq!(st.releases[0].version, "1.14");
    }
}
