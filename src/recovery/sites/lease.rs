//! Who is active: the pure decision a site takes each time it reads the
//! witness. Its effects (the conditional write, the fence, status, Events)
//! are the controller's; here only what to do, from what was read, what the
//! site remembers, and the clock.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::{api::site::SiteRole, providers::witness::Lease};

/// The site's settings for the decision.
#[derive(Clone, Debug)]
pub struct Config {
    pub me: String,
    pub duration: SignedDuration,
    pub skew: SignedDuration,
    pub starts_active: bool,
}

/// What the site remembers between readings (and across restarts, from its status).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    pub role: Option<SiteRole>,
    /// The newest epoch this site held.
    pub held_epoch: Option<u64>,
    /// The end of the lease this process last confirmed, less the skew.
    pub acting_until: Option<Timestamp>,
}

/// What reading the witness gave.
#[derive(Clone, Debug)]
pub enum Seen {
    Unreachable(String),
    Absent,
    Present(Lease),
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Write `lease` (conditionally, against what was read); on success the
    /// site is `role`.
    Write { lease: Lease, role: SiteRole, why: String },
    /// Write nothing; the site is `role`.
    Stay { role: SiteRole, why: String },
}

/// The decision at `now`. `relocate_to` is a peer the local site was asked
/// to hand the lease to.
pub fn decide(c: &Config, m: &Memory, seen: &Seen, now: Timestamp, relocate_to: Option<&str>) -> Decision {
    match seen {
        Seen::Unreachable(e) => unreachable(m, e, now),
        Seen::Absent => absent(c, m, now),
        Seen::Present(l) if l.site == c.me => mine(c, m, l, now, relocate_to),
        Seen::Present(l) => theirs(c, m, l, now),
    }
}

fn lease(c: &Config, site: &str, epoch: u64, now: Timestamp) -> Lease {
    Lease {
        site: site.to_string(),
        epoch,
        until: now + c.duration,
        renewed: now,
        written_by: (site != c.me).then(|| c.me.clone()),
    }
}

fn was_acting(m: &Memory) -> bool {
    matches!(m.role, Some(SiteRole::Active | SiteRole::Fenced))
}

fn unreachable(m: &Memory, e: &str, now: Timestamp) -> Decision {
    match (was_acting(m), m.acting_until) {
        (true, Some(until)) if now < until => Decision::Stay {
            role: SiteRole::Active,
            why: format!("the witness does not answer ({e}); acting while the lease it last confirmed holds"),
        },
        (true, _) => Decision::Stay {
            role: SiteRole::Fenced,
            why: format!(
                "the witness does not answer ({e}) and the lease has run out: not acting until it can be renewed"
            ),
        },
        (false, _) => Decision::Stay {
            role: m.role.filter(|r| *r == SiteRole::Demoted).unwrap_or(SiteRole::Standby),
            why: format!("the witness does not answer ({e}): no automatic failover without it"),
        },
    }
}

fn absent(c: &Config, m: &Memory, now: Timestamp) -> Decision {
    // Only the site that starts active creates the first lease; one that was
    // acting recreates a lease that disappeared. Conditional (If-None-Match):
    // if both try, one wins.
    if c.starts_active || was_acting(m) {
        let epoch = m.held_epoch.unwrap_or(0) + 1;
        Decision::Write {
            lease: lease(c, &c.me, epoch, now),
            role: SiteRole::Active,
            why: format!("the witness held no lease: taken at epoch {epoch}"),
        }
    } else {
        Decision::Stay {
            role: SiteRole::Standby,
            why: "the witness holds no lease yet: waiting for the site that starts active".into(),
        }
    }
}

fn mine(c: &Config, m: &Memory, l: &Lease, now: Timestamp, relocate_to: Option<&str>) -> Decision {
    let epoch = l.epoch.max(m.held_epoch.unwrap_or(0));
    if let Some(peer) = relocate_to.filter(|p| *p != c.me) {
        return Decision::Write {
            lease: lease(c, peer, epoch + 1, now),
            role: SiteRole::Standby,
            why: format!("relocated: the lease handed to site {peer} at epoch {}", epoch + 1),
        };
    }
    let why = match (&l.written_by, was_acting(m)) {
        (Some(from), false) => format!("site {from} handed the lease over at epoch {epoch}"),
        _ => format!("holds the lease at epoch {epoch}"),
    };
    Decision::Write {
        lease: lease(c, &c.me, epoch, now),
        role: SiteRole::Active,
        why,
    }
}

fn theirs(c: &Config, m: &Memory, l: &Lease, now: Timestamp) -> Decision {
    // A site that acted and finds another holder demotes itself first,
    // before anything else (a takeover comes at a later reading).
    if was_acting(m) {
        return Decision::Stay {
            role: SiteRole::Demoted,
            why: format!(
                "site {} holds the lease at epoch {} (this site held epoch {}): demoted",
                l.site,
                l.epoch,
                m.held_epoch.unwrap_or(0)
            ),
        };
    }
    if now > l.until + c.skew {
        let epoch = l.epoch.max(m.held_epoch.unwrap_or(0)) + 1;
        return Decision::Write {
            lease: lease(c, &c.me, epoch, now),
            role: SiteRole::Active,
            why: format!(
                "site {}'s lease at epoch {} ran out at {}: taken over at epoch {epoch}",
                l.site, l.epoch, l.until
            ),
        };
    }
    let role = m.role.filter(|r| *r == SiteRole::Demoted).unwrap_or(SiteRole::Standby);
    Decision::Stay {
        role,
        why: format!("site {} holds the lease at epoch {}", l.site, l.epoch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn cfg(me: &str, starts_active: bool) -> Config {
        Config {
            me: me.into(),
            duration: SignedDuration::from_secs(20),
            skew: SignedDuration::from_secs(2),
            starts_active,
        }
    }

    fn held(site: &str, epoch: u64, renewed: i64) -> Seen {
        Seen::Present(Lease {
            site: site.into(),
            epoch,
            until: t(renewed + 20),
            renewed: t(renewed),
            written_by: None,
        })
    }

    fn active(epoch: u64, until: i64) -> Memory {
        Memory {
            role: Some(SiteRole::Active),
            held_epoch: Some(epoch),
            acting_until: Some(t(until)),
        }
    }

    fn role(d: &Decision) -> SiteRole {
        match d {
            Decision::Write { role, .. } | Decision::Stay { role, .. } => *role,
        }
    }

    #[test]
    fn the_first_lease_is_taken_by_the_site_that_starts_active_only() {
        let d = decide(&cfg("paris", true), &Memory::default(), &Seen::Absent, t(0), None);
        match d {
            Decision::Write { lease, role, .. } => {
                assert_eq!((lease.site.as_str(), lease.epoch, lease.until), ("paris", 1, t(20)));
                assert_eq!(role, SiteRole::Active);
            }
            other => panic!("{other:?}"),
        }
        let d = decide(&cfg("lyon", false), &Memory::default(), &Seen::Absent, t(0), None);
        assert_eq!(role(&d), SiteRole::Standby);
        assert!(matches!(d, Decision::Stay { .. }));
    }

    #[test]
    fn the_holder_renews_at_its_epoch() {
        let d = decide(&cfg("paris", true), &active(4, 18), &held("paris", 4, 0), t(5), None);
        match d {
            Decision::Write { lease, role, .. } => {
                assert_eq!((lease.epoch, lease.until, lease.renewed), (4, t(25), t(5)));
                assert_eq!(role, SiteRole::Active);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_standby_waits_for_the_lease_and_the_skew_then_takes_over_with_a_higher_epoch() {
        let c = cfg("lyon", false);
        let m = Memory::default();
        // Renewed at 0: holds until 20, plus 2 s of skew.
        for now in [5, 20, 22] {
            let d = decide(&c, &m, &held("paris", 4, 0), t(now), None);
            assert_eq!(role(&d), SiteRole::Standby, "at {now}");
            assert!(matches!(d, Decision::Stay { .. }));
        }
        match decide(&c, &m, &held("paris", 4, 0), t(23), None) {
            Decision::Write { lease, role, why } => {
                assert_eq!((lease.site.as_str(), lease.epoch), ("lyon", 5));
                assert_eq!(role, SiteRole::Active);
                assert!(why.contains("ran out"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_site_that_acted_and_finds_a_newer_holder_demotes_itself_before_anything_else() {
        // Paused past its lease, even long enough for the new holder's to end:
        // the first decision is the demotion, not a takeover.
        let c = cfg("paris", true);
        let d = decide(&c, &active(4, 18), &held("lyon", 5, 25), t(100), None);
        assert_eq!(role(&d), SiteRole::Demoted);
        assert!(matches!(d, Decision::Stay { .. }));
        // Demoted, it stays so while the other holds.
        let m = Memory {
            role: Some(SiteRole::Demoted),
            held_epoch: Some(4),
            acting_until: None,
        };
        assert_eq!(
            role(&decide(&c, &m, &held("lyon", 5, 95), t(100), None)),
            SiteRole::Demoted
        );
        // The new holder lost too: a new takeover, above every epoch seen.
        match decide(&c, &m, &held("lyon", 5, 25), t(100), None) {
            Decision::Write { lease, .. } => assert_eq!(lease.epoch, 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_the_witness_the_holder_acts_until_its_lease_ends_and_a_standby_never_takes_over() {
        let e = Seen::Unreachable("connection refused".into());
        let c = cfg("paris", true);
        assert_eq!(role(&decide(&c, &active(4, 18), &e, t(10), None)), SiteRole::Active);
        let d = decide(&c, &active(4, 18), &e, t(18), None);
        assert_eq!(role(&d), SiteRole::Fenced);
        let d = decide(&cfg("lyon", false), &Memory::default(), &e, t(1000), None);
        assert_eq!(role(&d), SiteRole::Standby);
        assert!(matches!(d, Decision::Stay { ref why, .. } if why.contains("no automatic failover")));
    }

    #[test]
    fn a_relocation_hands_the_lease_to_the_peer_with_a_higher_epoch_and_the_peer_adopts_it() {
        let d = decide(
            &cfg("paris", true),
            &active(4, 18),
            &held("paris", 4, 0),
            t(5),
            Some("lyon"),
        );
        let handed = match d {
            Decision::Write { lease, role, .. } => {
                assert_eq!(role, SiteRole::Standby);
                assert_eq!((lease.site.as_str(), lease.epoch), ("lyon", 5));
                assert_eq!(lease.written_by.as_deref(), Some("paris"));
                lease
            }
            other => panic!("{other:?}"),
        };
        match decide(
            &cfg("lyon", false),
            &Memory::default(),
            &Seen::Present(handed),
            t(6),
            None,
        ) {
            Decision::Write { lease, role, why } => {
                assert_eq!((lease.site.as_str(), lease.epoch, lease.written_by), ("lyon", 5, None));
                assert_eq!(role, SiteRole::Active);
                assert!(why.contains("handed the lease over"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}
