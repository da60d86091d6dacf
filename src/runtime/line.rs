//! The line reconciles of one kind wait in: first come, first served, each
//! object at most once in it, and a fixed number of workers taking from it.
//!
//! kube-runtime's controller can bound concurrency itself, but what it holds
//! back waits in a hash set and leaves in hash order: under a steady stream of
//! triggers (a cold start of 10,000 Applications) some objects waited more
//! than 25 minutes for their first reconcile while others ran again and
//! again. Letting its runner hold every waiting reconcile instead (each
//! waiting on a fair semaphore) kept the order but cost O(waiting) CPU on
//! every trigger and every finished reconcile: its runner polls all of them
//! each time (a cold start of 3,000 spent its CPU in `JoinHandle::poll`). So
//! kube-runtime only says which object to look at, and this line (the
//! semantics of client-go's workqueue) decides when:
//! - an object waiting is not added twice: it keeps its place;
//! - an object added while it is being reconciled goes once more after that
//!   reconcile, at the back of the line (never two reconciles of one object
//!   at once);
//! - a reconcile's "again in d" sets the object's one timer, and a reconcile
//!   that asks for nothing clears it (kube-runtime's semantics).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    hash::Hash,
    sync::Mutex,
    time::Duration,
};

use prometheus_client::metrics::gauge::Gauge;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

pub struct Line<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    /// The earliest timer moved earlier: the timers' task looks again.
    sooner: Notify,
    stop: CancellationToken,
    /// How many wait (reprise_queue_depth): the line of every scope adds to it.
    depth: Gauge,
}

struct State<T> {
    /// In turn, each with the time it joined.
    queue: VecDeque<(T, Instant)>,
    /// Waiting: in `queue`, or due again once its running reconcile ends.
    waiting: HashSet<T>,
    running: HashSet<T>,
    timers: Timers<T>,
}

impl<T: Hash + Eq + Clone + Send + 'static> Line<T> {
    /// A line whose `next` returns None once `stop` is cancelled; `depth`
    /// counts what waits in it.
    pub fn new(stop: CancellationToken, depth: Gauge) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                waiting: HashSet::new(),
                running: HashSet::new(),
                timers: Timers::default(),
            }),
            ready: Notify::new(),
            sooner: Notify::new(),
            stop,
            depth,
        }
    }

    /// `x` joins the line (where it already waits, nothing changes).
    pub fn add(&self, x: T) {
        let mut s = self.state.lock().expect("line");
        if !s.waiting.insert(x.clone()) || s.running.contains(&x) {
            return;
        }
        s.queue.push_back((x, Instant::now()));
        drop(s);
        self.depth.inc();
        self.ready.notify_one();
    }

    /// The next object to reconcile, in turn, and how long it waited; None
    /// once the operator stops (what waits is then not started).
    pub async fn next(&self) -> Option<(T, Duration)> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stop.is_cancelled() {
                return None;
            }
            if let Some(x) = self.take() {
                return Some(x);
            }
            tokio::select! {
                _ = notified => {}
                _ = self.stop.cancelled() => return None,
            }
        }
    }

    fn take(&self) -> Option<(T, Duration)> {
        let mut s = self.state.lock().expect("line");
        let (x, since) = s.queue.pop_front()?;
        s.waiting.remove(&x);
        s.running.insert(x.clone());
        drop(s);
        self.depth.dec();
        Some((x, since.elapsed()))
    }

    /// `x`'s reconcile ended; it goes again after `again` (None: only when
    /// something changes), or at once if it was added meanwhile.
    pub fn done(&self, x: &T, again: Option<Duration>) {
        let mut s = self.state.lock().expect("line");
        s.running.remove(x);
        let requeued = s.waiting.contains(x);
        if requeued {
            s.queue.push_back((x.clone(), Instant::now()));
        }
        let first = s.timers.first();
        let at = again.map(|d| Instant::now() + d);
        s.timers.set(x, at);
        drop(s);
        if requeued {
            self.depth.inc();
            self.ready.notify_one();
        }
        if at.is_some_and(|at| first.is_none_or(|first| at < first)) {
            self.sooner.notify_one();
        }
    }

    /// Fires the timers (one per object, set by its last reconcile) until
    /// the operator stops. Run once per line.
    pub async fn timers(&self) {
        loop {
            let sooner = self.sooner.notified();
            tokio::pin!(sooner);
            sooner.as_mut().enable();
            let first = self.state.lock().expect("line").timers.first();
            tokio::select! {
                _ = sooner => {}
                _ = sleep_until(first) => {
                    let due = self.state.lock().expect("line").timers.due(Instant::now());
                    for x in due {
                        self.add(x);
                    }
                }
                _ = self.stop.cancelled() => return,
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// At most one timer per object; the earliest fires first, ties in the
/// order they were set.
struct Timers<T> {
    by_time: BTreeMap<(Instant, u64), T>,
    of: HashMap<T, (Instant, u64)>,
    seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            of: HashMap::new(),
            seq: 0,
        }
    }
}

impl<T: Hash + Eq + Clone> Timers<T> {
    fn set(&mut self, x: &T, at: Option<Instant>) {
        if let Some(old) = self.of.remove(x) {
            self.by_time.remove(&old);
        }
        if let Some(at) = at {
            self.seq += 1;
            self.by_time.insert((at, self.seq), x.clone());
            self.of.insert(x.clone(), (at, self.seq));
        }
    }

    fn first(&self) -> Option<Instant> {
        self.by_time.keys().next().map(|(at, _)| *at)
    }

    fn due(&mut self, now: Instant) -> Vec<T> {
        let later = self.by_time.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.by_time, later);
        due.into_values()
            .inspect(|x| {
                self.of.remove(x);
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn line() -> Line<u32> {
        Line::new(CancellationToken::new(), Gauge::default())
    }

    async fn next(l: &Line<u32>) -> Option<u32> {
        l.next().await.map(|(x, _)| x)
    }

    async fn drain(l: &Line<u32>) -> Vec<u32> {
        let mut out = vec![];
        while let Ok(Some(x)) = tokio::time::timeout(Duration::from_millis(20), next(l)).await {
            out.push(x);
            l.done(&x, None);
        }
        out
    }

    #[tokio::test]
    async fn objects_leave_in_the_order_they_arrived_and_keep_their_place() {
        let l = line();
        for x in [3, 1, 2, 1, 3] {
            l.add(x);
        }
        assert_eq!(drain(&l).await, vec![3, 1, 2]);
    }

    #[tokio::test]
    async fn an_object_added_while_running_goes_once_more_after_at_the_back() {
        let l = line();
        l.add(1);
        l.add(2);
        let one = next(&l).await.unwrap();
        assert_eq!(one, 1);
        l.add(1);
        l.add(1);
        // Never handed out twice at once: 2 comes, then nothing until 1 ends.
        assert_eq!(next(&l).await, Some(2));
        assert!(tokio::time::timeout(Duration::from_millis(20), next(&l)).await.is_err());
        l.done(&1, None);
        l.done(&2, None);
        assert_eq!(drain(&l).await, vec![1]);
    }

    #[tokio::test]
    async fn workers_waiting_are_woken_one_object_each() {
        let l = Arc::new(line());
        let got = Arc::new(Mutex::new(vec![]));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (l, got) = (l.clone(), got.clone());
                tokio::spawn(async move {
                    let x = next(&l).await.unwrap();
                    got.lock().unwrap().push(x);
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        for x in 0..4 {
            l.add(x);
        }
        for w in workers {
            tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
        }
        let mut got = got.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_sets_its_objects_one_timer_and_asking_nothing_clears_it() {
        let l = Arc::new(line());
        let t = tokio::spawn({
            let l = l.clone();
            async move { l.timers().await }
        });
        l.add(1);
        l.add(2);
        let (a, b) = (next(&l).await.unwrap(), next(&l).await.unwrap());
        l.done(&a, Some(Duration::from_secs(5)));
        l.done(&b, Some(Duration::from_secs(5)));
        // 1 again, asking for nothing: its timer is gone; 2 is due in 5 s.
        l.add(1);
        let one = next(&l).await.unwrap();
        l.done(&one, None);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(tokio::time::timeout(Duration::from_millis(1), next(&l)).await.is_err());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(next(&l).await, Some(2));
        l.done(&2, None);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(tokio::time::timeout(Duration::from_millis(1), next(&l)).await.is_err());
        t.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_depth_counts_what_waits_and_each_says_how_long_it_waited() {
        let depth = Gauge::default();
        let l = Line::new(CancellationToken::new(), depth.clone());
        l.add(1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        l.add(2);
        l.add(1);
        assert_eq!(depth.get(), 2);
        let (x, waited) = l.next().await.unwrap();
        assert_eq!((x, waited), (1, Duration::from_secs(3)));
        assert_eq!(depth.get(), 1);
        l.add(1);
        assert_eq!(depth.get(), 1, "running: it goes again once done, not twice");
        l.done(&1, None);
        assert_eq!(depth.get(), 2);
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait() {
        let stop = CancellationToken::new();
        let l: Line<u32> = Line::new(stop.clone(), Gauge::default());
        l.add(1);
        stop.cancel();
        assert_eq!(next(&l).await, None);
    }
}
