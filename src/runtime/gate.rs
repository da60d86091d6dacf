//! The line reconciles of one kind wait in: at most `n` run at once, and
//! they start in the order they arrived.
//!
//! kube-runtime's controller can bound concurrency itself, but what it holds
//! back waits in a hash set and leaves in hash order: under a steady stream of
//! new triggers (a cold start of 10,000 Applications) some objects waited
//! more than 25 minutes for their first reconcile while others ran again and
//! again. So the controller runs unbounded and each reconcile takes a permit
//! here first (tokio's semaphore is fair: first come, first served). An
//! object whose reconcile waits here still counts as running for kube-runtime,
//! so what arrives for it meanwhile is merged into one more reconcile after it.

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

pub struct Gate {
    permits: Semaphore,
    stop: CancellationToken,
}

impl Gate {
    /// `n` at once (0: no bound); waiting ends when `stop` is cancelled.
    pub fn new(n: u16, stop: CancellationToken) -> Self {
        let n = if n == 0 { Semaphore::MAX_PERMITS } else { n.into() };
        Self {
            permits: Semaphore::new(n),
            stop,
        }
    }

    /// A permit, in turn; None once the operator stops (the reconcile is
    /// then not started: a shutdown waits only for those already running).
    pub async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        tokio::select! {
            p = self.permits.acquire() => p.ok(),
            _ = self.stop.cancelled() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn reconciles_start_in_the_order_they_arrived() {
        let gate = Arc::new(Gate::new(1, CancellationToken::new()));
        let first = gate.enter().await.expect("a permit");
        let order = Arc::new(std::sync::Mutex::new(vec![]));
        let mut waiting = vec![];
        for i in 0..20 {
            let (gate, order) = (gate.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _p = gate.enter().await.expect("a permit");
                order.lock().unwrap().push(i);
            }));
            // Each has joined the line before the next arrives.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn no_more_than_n_at_once() {
        let gate = Gate::new(2, CancellationToken::new());
        let (_a, _b) = (gate.enter().await, gate.enter().await);
        let third = tokio::time::timeout(Duration::from_millis(50), gate.enter()).await;
        assert!(third.is_err(), "a third reconcile started beside two");
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_without_a_permit() {
        let stop = CancellationToken::new();
        let gate = Gate::new(1, stop.clone());
        let _held = gate.enter().await;
        stop.cancel();
        assert!(gate.enter().await.is_none());
    }
}
