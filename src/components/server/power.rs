//! Keeping a server's power as `spec.online` says (pure decisions; the
//! reconciler asks the BMC). A reset reprise asked for is waited on (BMCs
//! apply them with a delay); one that did not take effect, or that the BMC
//! refused, is asked again only after a backoff that doubles each time, so a
//! server whose power never follows is neither hammered nor flooded with Events.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::server::PowerRequest;

/// How long a reset that was accepted is given to take effect.
pub const SETTLE: Duration = Duration::from_secs(120);
/// The first wait before asking again; it doubles with each attempt.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The wait after `attempts` attempts that did not take effect.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

/// What to do about the power now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The power is as desired.
    AsDesired,
    /// Ask the BMC for this reset type (`attempts` is the attempt's number).
    Ask { reset: &'static str, attempts: u32 },
    /// A reset is under way or the next attempt is not due: look again after this long.
    Wait(Duration),
}

fn age(p: &PowerRequest, now: Timestamp) -> Duration {
    Duration::from_secs((now.as_second() - p.time.0.as_second()).max(0) as u64)
}

/// The next attempt of a request that did not take effect (or was refused):
/// `reset` when its backoff is over, else a wait.
fn retry(p: &PowerRequest, now: Timestamp, reset: &'static str) -> Plan {
    let since = age(p, now);
    let settle = if p.refused.is_some() { Duration::ZERO } else { SETTLE };
    let due = settle + backoff(p.attempts.max(1));
    if since >= due {
        Plan::Ask {
            reset,
            attempts: p.attempts + 1,
        }
    } else {
        Plan::Wait(due - since)
    }
}

/// Decides from the desired state, the power the BMC reports, the request
/// reprise last made, and the shutdown timeout.
pub fn decide(
    online: bool,
    power: &str,
    pending: Option<&PowerRequest>,
    now: Timestamp,
    shutdown_timeout: Duration,
) -> Plan {
    match (online, power) {
        (true, "On") | (false, "Off") => Plan::AsDesired,
        (true, _) => match pending.filter(|p| ["On", "ForceRestart"].contains(&p.reset_type.as_str())) {
            None => Plan::Ask {
                reset: "On",
                attempts: 1,
            },
            Some(p) if p.refused.is_none() && age(p, now) < SETTLE => Plan::Wait(Duration::from_secs(2)),
            Some(p) => retry(p, now, "On"),
        },
        (false, _) => match pending {
            Some(p) if p.reset_type == "GracefulShutdown" && p.refused.is_none() => {
                if age(p, now) < shutdown_timeout {
                    Plan::Wait(Duration::from_secs(2))
                } else {
                    Plan::Ask {
                        reset: "ForceOff",
                        attempts: 1,
                    }
                }
            }
            Some(p) if p.reset_type == "ForceOff" => {
                if p.refused.is_none() && age(p, now) < SETTLE {
                    Plan::Wait(Duration::from_secs(2))
                } else {
                    retry(p, now, "ForceOff")
                }
            }
            _ => Plan::Ask {
                reset: "GracefulShutdown",
                attempts: 1,
            },
        },
    }
}

/// Whether a reset reprise asked for is still expected to take effect (the
/// server is then not "lost": reprise is turning it on).
pub fn ours_pending(pending: Option<&PowerRequest>, now: Timestamp) -> bool {
    pending.is_some_and(|p| {
        ["On", "ForceRestart"].contains(&p.reset_type.as_str()) && p.refused.is_none() && age(p, now) < SETTLE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn req(reset: &str, t: i64, attempts: u32, refused: bool) -> PowerRequest {
        PowerRequest {
            reset_type: reset.into(),
            time: Time(at(t)),
            attempts,
            refused: refused.then(|| "HTTP 409: busy".into()),
            reboot_evidence: None,
            baseline: None,
        }
    }

    #[test]
    fn a_server_off_while_desired_on_is_powered_on_once_then_waited_on() {
        let shutdown = Duration::from_secs(300);
        assert_eq!(decide(true, "On", None, at(0), shutdown), Plan::AsDesired);
        assert_eq!(
            decide(true, "Off", None, at(0), shutdown),
            Plan::Ask {
                reset: "On",
                attempts: 1
            }
        );
        let asked = req("On", 0, 1, false);
        assert_eq!(
            decide(true, "Off", Some(&asked), at(30), shutdown),
            Plan::Wait(Duration::from_secs(2))
        );
        // Not on after it settled: asked again after a backoff, which grows.
        assert_eq!(
            decide(true, "Off", Some(&asked), at(121), shutdown),
            Plan::Wait(Duration::from_secs(4))
        );
        assert_eq!(
            decide(true, "Off", Some(&asked), at(125), shutdown),
            Plan::Ask {
                reset: "On",
                attempts: 2
            }
        );
        let again = req("On", 0, 5, false);
        assert_eq!(
            decide(true, "Off", Some(&again), at(121), shutdown),
            Plan::Wait(Duration::from_secs(120 + 80 - 121))
        );
    }

    #[test]
    fn a_refusal_backs_off_without_waiting_for_it_to_settle() {
        let shutdown = Duration::from_secs(300);
        let refused = req("On", 0, 1, true);
        assert_eq!(
            decide(true, "Off", Some(&refused), at(2), shutdown),
            Plan::Wait(Duration::from_secs(3))
        );
        assert_eq!(
            decide(true, "Off", Some(&refused), at(5), shutdown),
            Plan::Ask {
                reset: "On",
                attempts: 2
            }
        );
        let many = req("On", 0, 9, true);
        assert_eq!(
            decide(true, "Off", Some(&many), at(100), shutdown),
            Plan::Wait(Duration::from_secs(600 - 100))
        );
        assert!(!ours_pending(Some(&refused), at(1)));
        // In 3 minutes of refusals, a handful of attempts at most.
        let (mut t, mut last, mut attempts, mut asked) = (0i64, 0i64, 1u32, 1);
        while t < 180 {
            match decide(true, "Off", Some(&req("On", last, attempts, true)), at(t), shutdown) {
                Plan::Wait(d) => t += d.as_secs() as i64,
                Plan::Ask { attempts: a, .. } => {
                    (last, attempts) = (t, a);
                    asked += 1;
                }
                Plan::AsDesired => unreachable!(),
            }
        }
        assert!(asked <= 6, "{asked} attempts in 3 minutes");
    }

    #[test]
    fn a_shutdown_that_does_not_finish_is_forced_then_backs_off() {
        let shutdown = Duration::from_secs(60);
        assert_eq!(
            decide(false, "On", None, at(0), shutdown),
            Plan::Ask {
                reset: "GracefulShutdown",
                attempts: 1
            }
        );
        let graceful = req("GracefulShutdown", 0, 1, false);
        assert_eq!(
            decide(false, "On", Some(&graceful), at(10), shutdown),
            Plan::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            decide(false, "On", Some(&graceful), at(61), shutdown),
            Plan::Ask {
                reset: "ForceOff",
                attempts: 1
            }
        );
        let forced = req("ForceOff", 61, 1, false);
        assert_eq!(
            decide(false, "On", Some(&forced), at(100), shutdown),
            Plan::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            decide(false, "On", Some(&forced), at(61 + 122), shutdown),
            Plan::Wait(Duration::from_secs(3))
        );
        assert_eq!(
            decide(false, "On", Some(&forced), at(61 + 125), shutdown),
            Plan::Ask {
                reset: "ForceOff",
                attempts: 2
            }
        );
    }
}
