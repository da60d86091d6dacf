//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it.
//!
//! - A candidate takes the Lease when it is free, or when its record has not
//!   changed for the lease duration *as observed locally* (no trust in clocks
//!   of other machines).
//! - The leader renews every `retry_period`. If no renewal succeeds for
//!   `renew_deadline` (shorter than the lease duration), it gives leadership
//!   up *before* any other replica may take the Lease, so two writers never
//!   overlap.
//! - On a clean shutdown the leader releases the Lease so a follower takes
//!   over at once instead of waiting for it to expire.
//! - Every write carries the resourceVersion it read: two candidates racing
//!   for a free Lease cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio_util::sync::CancellationToken;

/// Timings of the election. The defaults are client-go's.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err("the renew deadline must be shorter than the lease duration".into());
        }
        if self.retry_period >= self.renew_deadline {
            return Err("the retry period must be shorter than the renew deadline".into());
        }
        Ok(())
    }
}

/// What a candidate does with the Lease it just read.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// It is ours (or free, or expired): write ourselves into it.
    Acquire,
    /// Someone else holds it and it has not expired.
    Follow,
}

/// Pure decision: `unchanged_for` is how long the record has been seen unchanged locally.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration, default_duration: Duration) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == me => Decision::Acquire,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(default_duration);
            if unchanged_for >= duration {
                Decision::Acquire
            } else {
                Decision::Follow
            }
        }
    }
}

/// Why leadership ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Shutdown was requested; the Lease should be released.
    Shutdown,
    /// No renewal succeeded within the renew deadline, or another replica took the Lease.
    Lost(String),
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last record seen (holder, renew time) and when it was first seen.
    observed: Option<(String, Option<MicroTime>, Instant)>,
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self {
            api,
            cfg,
            observed: None,
        }
    }

    fn unchanged_for(&mut self, lease: &Lease) -> Duration {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.unwrap_or_default();
        match &self.observed {
            Some((h, r, at)) if *h == holder && *r == spec.renew_time => at.elapsed(),
            _ => {
                self.observed = Some((holder, spec.renew_time, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One attempt to take or keep the Lease. Ok(true): we hold it now.
    pub async fn try_acquire(&mut self) -> kube::Result<bool> {
        let me = self.cfg.identity.clone();
        let current = match self.api.get_opt(&self.cfg.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec_for(None, true)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        let unchanged = self.unchanged_for(&current);
        if decide(current.spec.as_ref(), &me, unchanged, self.cfg.lease_duration) == Decision::Follow {
            return Ok(false);
        }
        let was_ours = current.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(me.as_str());
        let mut next = current.clone();
        next.spec = Some(self.spec_for(current.spec.as_ref(), !was_ours));
        match self.api.replace(&self.cfg.name, &PostParams::default(), &next).await {
            Ok(_) => Ok(true),
            // Someone else wrote first: read again next round.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec_for(&self, previous: Option<&LeaseSpec>, new_term: bool) -> LeaseSpec {
        let now = now_micro();
        let prev = previous.cloned().unwrap_or_default();
        let transitions = prev.lease_transitions.unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs() as i32),
            acquire_time: if new_term { Some(now.clone()) } else { prev.acquire_time },
            renew_time: Some(now),
            lease_transitions: Some(if new_term && previous.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..prev
        }
    }

    /// Waits until this replica leads. `on_follow` runs each time another holds the Lease.
    /// Returns false when shutdown was requested first.
    pub async fn acquire(&mut self, shutdown: &CancellationToken, mut on_follow: impl FnMut()) -> bool {
        loop {
            match self.try_acquire().await {
                Ok(true) => return true,
                Ok(false) => on_follow(),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.cfg.name, "cannot read or write the Lease")
                }
            }
            let jitter = self.cfg.retry_period.mul_f64(rand_fraction() * 0.2);
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.cfg.retry_period + jitter) => {}
            }
        }
    }

    /// Renews until shutdown or loss. Each renewal attempt is bounded by the
    /// time left before the renew deadline, so a hung API server cannot keep
    /// this replica believing it leads.
    pub async fn hold(&mut self, shutdown: &CancellationToken) -> Ended {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            let left = self.cfg.renew_deadline.saturating_sub(last_renew.elapsed());
            let outcome = tokio::time::timeout(left, self.renew()).await;
            match outcome {
                Ok(Ok(())) => last_renew = Instant::now(),
                Ok(Err(RenewError::Taken(by))) => {
                    return Ended::Lost(format!("the Lease is now held by {by}"));
                }
                Ok(Err(RenewError::Api(e))) => tracing::warn!(error = %e, "lease renewal failed"),
                Err(_) => tracing::warn!("lease renewal timed out"),
            }
            if last_renew.elapsed() >= self.cfg.renew_deadline {
                return Ended::Lost(format!("no renewal succeeded for {:?}", self.cfg.renew_deadline));
            }
        }
    }

    async fn renew(&mut self) -> Result<(), RenewError> {
        let current = self.api.get(&self.cfg.name).await.map_err(RenewError::Api)?;
        let holder = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder != self.cfg.identity {
            return Err(RenewError::Taken(holder));
        }
        let mut next = current.clone();
        next.spec = Some(self.spec_for(current.spec.as_ref(), false));
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &next)
            .await
            .map_err(RenewError::Api)?;
        Ok(())
    }

    /// Gives the Lease up so that a follower takes over at once.
    pub async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        if current.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(self.cfg.identity.as_str()) {
            return;
        }
        let mut next = current.clone();
        let mut spec = current.spec.clone().unwrap_or_default();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        next.spec = Some(spec);
        match self.api.replace(&self.cfg.name, &PostParams::default(), &next).await {
            Ok(_) => tracing::info!(lease = %current.name_any(), "released the Lease"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the Lease; it expires by itself")
            }
        }
    }
}

enum RenewError {
    Taken(String),
    Api(kube::Error),
}

/// A fraction in [0, 1) for jitter, without a random-number dependency.
pub fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(who: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn free_or_own_leases_are_taken() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "a", Duration::ZERO, d), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", Duration::ZERO, d),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("a", 15)), "a", Duration::ZERO, d),
            Decision::Acquire
        );
    }

    #[test]
    fn another_holder_is_followed_until_its_record_goes_stale() {
        let d = Duration::from_secs(15);
        let spec = held_by("b", 15);
        assert_eq!(decide(Some(&spec), "a", Duration::from_secs(14), d), Decision::Follow);
        assert_eq!(decide(Some(&spec), "a", Duration::from_secs(15), d), Decision::Acquire);
        // A released lease (duration 1s) is taken after a second even with a holder left in.
        assert_eq!(
            decide(Some(&held_by("b", 1)), "a", Duration::from_secs(1), d),
            Decision::Acquire
        );
    }

    #[test]
    fn timings_must_nest() {
        let mut c = LeaseConfig::new("l", "ns", "me");
        assert!(c.validate().is_ok());
        c.renew_deadline = c.lease_duration;
        assert!(c.validate().is_err());
    }
}
