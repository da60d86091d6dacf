//! Work a controller does apart from its reconciles, and how that work asks
//! for one: tasks kept per object (a connection kept open to watch an
//! instance), and a channel that makes a controller look at one object now.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// How many wakes may wait for their controller; more are dropped (the
/// object's next scheduled look catches what a dropped wake told).
const QUEUED: usize = 1024;

/// The channel of one kind's wakes: `(namespace, name)`.
pub struct Wake {
    tx: mpsc::Sender<(String, String)>,
    rx: Mutex<Option<mpsc::Receiver<(String, String)>>>,
}

impl Default for Wake {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUED);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Wake {
    pub fn waker(&self) -> Waker {
        Waker(self.tx.clone())
    }

    /// The receiving end, once (the runner turns it into reconciles).
    pub fn take(&self) -> Option<mpsc::Receiver<(String, String)>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Asks for a reconcile of one object of one kind.
#[derive(Clone)]
pub struct Waker(mpsc::Sender<(String, String)>);

impl Waker {
    pub fn wake(&self, namespace: &str, name: &str) {
        let _ = self.0.try_send((namespace.to_string(), name.to_string()));
    }
}

/// The wakes of each kind that has work apart from its reconciles.
#[derive(Default)]
pub struct Wakes {
    pub databases: Wake,
    pub servers: Wake,
}

/// The object a kept task works for: whether it should go on, and how it
/// asks for the object's reconcile.
pub struct Subject {
    pub ns: String,
    pub name: String,
    uid: String,
    stores: super::Stores,
    fence: Arc<super::fence::Fence>,
    kind: &'static str,
    uid_in: fn(&super::Stores, &str, &str) -> Option<String>,
    waker: Waker,
}

impl Subject {
    /// `obj`, of `kind`, found again in the stores by `uid_in`; woken through `wake`.
    pub fn new<K: kube::Resource>(
        ctx: &super::Context,
        kind: &'static str,
        obj: &K,
        uid_in: fn(&super::Stores, &str, &str) -> Option<String>,
        wake: &Wake,
    ) -> Self {
        let meta = obj.meta();
        Self {
            ns: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            stores: ctx.stores.clone(),
            fence: ctx.fence.clone(),
            kind,
            uid_in,
            waker: wake.waker(),
        }
    }

    /// The same object still exists and this site acts for its namespace.
    pub fn still(&self) -> bool {
        let same = (self.uid_in)(&self.stores, &self.ns, &self.name).as_deref() == Some(self.uid.as_str());
        same && self.fence.permit_kind(&self.stores, &self.ns, self.kind).is_ok()
    }

    /// Asks for the object's reconcile now.
    pub fn wake(&self) {
        self.waker.wake(&self.ns, &self.name);
    }
}

/// One background task per object key, kept while its fingerprint (what it
/// was started from) stays the same; a new fingerprint replaces the task,
/// and a task that ended is started again by the next `ensure`.
#[derive(Default)]
pub struct Kept {
    tasks: Mutex<HashMap<String, (u64, tokio::task::AbortHandle)>>,
}

impl Kept {
    pub fn ensure(&self, key: &str, fingerprint: u64, start: impl FnOnce() -> BoxFuture<'static, ()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|_, (_, h)| !h.is_finished());
        if let Some((f, h)) = tasks.get(key) {
            if *f == fingerprint {
                return;
            }
            h.abort();
        }
        let handle = tokio::spawn(start()).abort_handle();
        tasks.insert(key.to_string(), (fingerprint, handle));
    }

    /// How many tasks run.
    pub fn running(&self) -> usize {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.values().filter(|(_, h)| !h.is_finished()).count()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        for (_, h) in self.tasks.get_mut().unwrap_or_else(|p| p.into_inner()).values() {
            h.abort();
        }
    }
}

/// A fingerprint of what a task was started from.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// Sleeps `every`, or less when `until` ends first.
pub async fn pause(every: Duration, until: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = tokio::time::sleep(every) => {}
        _ = until => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_is_kept_while_its_fingerprint_stays_and_replaced_when_it_changes() {
        let kept = Kept::default();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = |s: std::sync::Arc<std::sync::atomic::AtomicUsize>| {
            move || -> BoxFuture<'static, ()> {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(futures::future::pending())
            }
        };
        kept.ensure("ns/a", 1, start(started.clone()));
        kept.ensure("ns/a", 1, start(started.clone()));
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        kept.ensure("ns/a", 2, start(started.clone()));
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
        tokio::task::yield_now().await;
        assert_eq!(kept.running(), 1, "the replaced task was aborted");
    }

    #[tokio::test]
    async fn a_task_that_ended_is_started_again() {
        let kept = Kept::default();
        kept.ensure("ns/a", 1, || Box::pin(async {}));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(kept.running(), 0);
        let again = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let a = again.clone();
        kept.ensure("ns/a", 1, move || {
            a.store(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(futures::future::pending())
        });
        assert!(again.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn wakes_reach_the_receiver_once_taken() {
        let wake = Wake::default();
        let mut rx = wake.take().expect("first take");
        assert!(wake.take().is_none());
        wake.waker().wake("ns", "shop");
        assert_eq!(rx.recv().await, Some(("ns".into(), "shop".into())));
    }
}
