//! What a reconcile asks for next: kube-runtime's `Action`, with the wait
//! readable (kube-runtime keeps it private; the line needs it to set the
//! object's timer).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Look again after `d` even if nothing changes.
    pub const fn requeue(d: Duration) -> Self {
        Self { requeue_after: Some(d) }
    }

    /// Look again only when something changes.
    pub const fn await_change() -> Self {
        Self { requeue_after: None }
    }

    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}
