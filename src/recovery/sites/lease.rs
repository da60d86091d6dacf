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
    /// The lease record as last read, and since when (this site's clock) it
    /// has been read unchanged with the witness answering.
    pub observed: Option<Observed>,
    /// The epoch a person approved taking without the witness (a failover
    /// asked through the site Incident), until the witness holds it.
    pub approved: Option<u64>,
}

/// A lease record seen unchanged since `since`.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub site: String,
    pub epoch: u64,
    pub renewed: Timestamp,
    pub since: Timestamp,
}

/// What this site has observed after reading `seen` at `now`: the same
/// record keeps its first sighting; a new record, or a witness that did not
/// answer, starts the count again. A standby takes over only once the same
/// record has been seen for a whole lease on its own clock (as Kubernetes'
/// leader election does): after a witness outage the holder gets a whole
/// lease to renew, and the sites' clocks need not agree.
pub fn observe(prev: Option<&Observed>, seen: &Seen, now: Timestamp) -> Option<Observed> {
    let Seen::Present(l) = seen else {
        return None;
    };
    match prev {
        Some(o) if o.site == l.site && o.epoch == l.epoch && o.renewed == l.renewed => Some(o.clone()),
        _ => Some(Observed {
            site: l.site.clone(),
            epoch: l.epoch,
            renewed: l.renewed,
            since: now,
        }),
    }
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
    if let Some(epoch) = m.approved {
        return approved(c, epoch, seen, now);
    }
    match seen {
        Seen::Unreachable(e) => unreachable(m, e, now),
        Seen::Absent => absent(c, m, now),
        Seen::Present(l) if l.site == c.me => mine(c, m, l, now, relocate_to),
        Seen::Present(l) => theirs(c, m, l, now),
    }
}

/// A site that cannot rebuild the plan (`unfit`: why, e.g. a mapping to a
/// Server it lacks) does not start acting: a decision that would make it
/// active when it was not is held back; one that keeps it acting stands.
pub fn unless_unfit(m: &Memory, unfit: Option<&str>, d: Decision) -> Decision {
    let Some(unfit) = unfit else { return d };
    let (role, why) = match &d {
        Decision::Write { role, why, .. } | Decision::Stay { role, why } => (*role, why),
    };
    if role != SiteRole::Active || was_acting(m) {
        return d;
    }
    Decision::Stay {
        role: not_acting(m),
        why: format!("not taking the lease ({why}): {unfit}"),
    }
}

/// A failover a person approved while the witness did not answer: acting
/// at `epoch` (above every epoch seen) without the witness, and writing it
/// there as soon as it answers, over the older holder's record, which
/// demotes that site at its next reading. A newer epoch there wins.
fn approved(c: &Config, epoch: u64, seen: &Seen, now: Timestamp) -> Decision {
    match seen {
        Seen::Unreachable(e) => Decision::Stay {
            role: SiteRole::Active,
            why: format!("failover approved at epoch {epoch}: acting without the witness ({e})"),
        },
        Seen::Present(l) if l.epoch >= epoch && l.site != c.me => Decision::Stay {
            role: SiteRole::Demoted,
            why: format!(
                "site {} holds the lease at epoch {}, above the approved epoch {epoch}: demoted",
                l.site, l.epoch
            ),
        },
        Seen::Present(l) if l.epoch > epoch => mine(c, &Memory::default(), l, now, None),
        _ => Decision::Write {
            lease: lease(c, &c.me, epoch, now),
            role: SiteRole::Active,
            why: format!("failover approved at epoch {epoch}: the witness answers and holds it now"),
        },
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

/// What a site that does not act is: demoted if it was, else standby.
fn not_acting(m: &Memory) -> SiteRole {
    m.role.filter(|r| *r == SiteRole::Demoted).unwrap_or(SiteRole::Standby)
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
            role: not_acting(m),
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
    // Ran out by the holder's word and by this site's own watch of it.
    let unchanged_since = m
        .observed
        .as_ref()
        .filter(|o| o.site == l.site && o.epoch == l.epoch && o.renewed == l.renewed)
        .map(|o| o.since);
    let watched_out = unchanged_since.is_some_and(|since| now > since + c.duration + c.skew);
    if now > l.until + c.skew && watched_out {
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
    let role = not_acting(m);
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
            observed: None,
            approved: None,
        }
    }

    fn role(d: &Decision) -> SiteRole {
        match d {
            Decision::Write { role, .. } | Decision::Stay { role, .. } => *role,
        }
    }

    #[test]
    fn a_site_unfit_to_rebuild_takes_no_lease_but_keeps_one_it_holds() {
        let unfit = Some("spec.overrides[0].replacedBy: Server hv-11 does not exist");
        // A standby would take over a lease run out: held back, and says why.
        let standby = Memory {
            role: Some(SiteRole::Standby),
            observed: Some(Observed {
                site: "paris".into(),
                epoch: 1,
                renewed: t(0),
                since: t(1),
            }),
            ..Memory::default()
        };
        let c = cfg("lyon", false);
        let d = decide(&c, &standby, &held("paris", 1, 0), t(60), None);
        assert!(matches!(d, Decision::Write { .. }), "{d:?}");
        let held_back = unless_unfit(&standby, unfit, d);
        match &held_back {
            Decision::Stay { role, why } => {
                assert_eq!(*role, SiteRole::Standby);
                assert!(
                    why.contains("not taking the lease") && why.contains("replacedBy"),
                    "{why}"
                );
            }
            d => panic!("{d:?}"),
        }
        // A first start: neither.
        let first = decide(&cfg("paris", true), &Memory::default(), &Seen::Absent, t(0), None);
        assert_eq!(role(&unless_unfit(&Memory::default(), unfit, first)), SiteRole::Standby);
        // The holder renews: a fault in what it would rebuild from does not stop it.
        let renew = decide(&cfg("paris", true), &active(1, 18), &held("paris", 1, 0), t(5), None);
        let kept = unless_unfit(&active(1, 18), unfit, renew.clone());
        assert_eq!(format!("{kept:?}"), format!("{renew:?}"));
        // Fit: unchanged.
        let d = decide(&c, &standby, &held("paris", 1, 0), t(60), None);
        assert!(matches!(unless_unfit(&standby, None, d), Decision::Write { .. }));
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
        // First seen at 1 (a second after its renewal).
        let m = Memory {
            observed: observe(None, &held("paris", 4, 0), t(1)),
            ..Default::default()
        };
        // Renewed at 0: holds until 20, plus 2 s of skew, and watched since 1.
        for now in [5, 20, 22, 23] {
            let d = decide(&c, &m, &held("paris", 4, 0), t(now), None);
            assert_eq!(role(&d), SiteRole::Standby, "at {now}");
            assert!(matches!(d, Decision::Stay { .. }));
        }
        match decide(&c, &m, &held("paris", 4, 0), t(24), None) {
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
            observed: None,
            approved: None,
        };
        assert_eq!(
            role(&decide(&c, &m, &held("lyon", 5, 95), t(100), None)),
            SiteRole::Demoted
        );
        // The new holder lost too: a new takeover, above every epoch seen.
        let m = Memory {
            observed: observe(None, &held("lyon", 5, 25), t(50)),
            ..m
        };
        match decide(&c, &m, &held("lyon", 5, 25), t(100), None) {
            Decision::Write { lease, .. } => assert_eq!(lease.epoch, 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn after_a_witness_outage_the_holder_gets_a_whole_lease_to_renew() {
        // lyon read paris's lease at 1, then the witness went down until 100:
        // the lease ran out long ago by its own word, but lyon has watched it
        // for no time since the witness came back.
        let c = cfg("lyon", false);
        let seen = held("paris", 4, 0);
        let before = observe(None, &seen, t(1));
        let after = observe(before.as_ref(), &Seen::Unreachable("down".into()), t(50));
        assert_eq!(after, None, "an outage restarts the watch");
        let back = observe(after.as_ref(), &seen, t(100));
        let m = Memory {
            observed: back.clone(),
            ..Default::default()
        };
        assert_eq!(role(&decide(&c, &m, &seen, t(110), None)), SiteRole::Standby);
        // Still unchanged a whole lease (and the skew) later: the holder is gone.
        let m = Memory {
            observed: observe(back.as_ref(), &seen, t(115)),
            ..Default::default()
        };
        assert_eq!(m.observed.as_ref().unwrap().since, t(100), "the first sighting is kept");
        assert_eq!(role(&decide(&c, &m, &seen, t(123), None)), SiteRole::Active);
        // A renewal in between restarts it.
        let renewed = held("paris", 4, 110);
        let o = observe(m.observed.as_ref(), &renewed, t(111)).unwrap();
        assert_eq!(o.since, t(111));
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

    #[test]
    fn an_approved_failover_acts_without_the_witness_then_writes_its_epoch_over_the_old_holder() {
        let lyon = cfg("lyon", false);
        let m = Memory {
            role: Some(SiteRole::Standby),
            approved: Some(5),
            ..Memory::default()
        };
        let d = decide(&lyon, &m, &Seen::Unreachable("timeout".into()), t(100), None);
        assert_eq!(role(&d), SiteRole::Active);
        assert!(
            matches!(d, Decision::Stay { .. }),
            "nothing written: the witness is away"
        );
        // Back: paris's record at epoch 4 (even renewed since) is replaced.
        match decide(&lyon, &m, &held("paris", 4, 95), t(101), None) {
            Decision::Write { lease, role, .. } => {
                assert_eq!((lease.site.as_str(), lease.epoch, role), ("lyon", 5, SiteRole::Active));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&lyon, &m, &Seen::Absent, t(101), None),
            Decision::Write { .. }
        ));
        // A newer epoch than the approved one wins.
        let d = decide(&lyon, &m, &held("paris", 6, 95), t(101), None);
        assert_eq!(role(&d), SiteRole::Demoted);
        // paris, cut off meanwhile, finds epoch 5 and demotes itself first.
        let d = decide(
            &cfg("paris", true),
            &active(4, 130),
            &held("lyon", 5, 101),
            t(102),
            None,
        );
        assert_eq!(role(&d), SiteRole::Demoted);
    }
}
