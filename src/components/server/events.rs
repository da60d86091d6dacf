//! A Server's power and health seen as they change, where its BMC sends
//! events (Redfish's EventService over Server-Sent Events): a task kept per
//! Server reads the BMC's stream, and an event about its system makes the
//! Server's reconcile come now. The poll stays at its interval and stays the
//! only judge: an event is a hint to look, never read as a state. A BMC that
//! sends none is polled as before, at no extra cost (the service root says
//! whether it does).
//!
//! The task reads, never writes. It ends with its Server, when this site
//! stops acting, or when what it was started from changes; it reconnects
//! after a break (with a backoff), and gives up on a refused login until the
//! next poll starts it again. Wakes come at most once a second per Server.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::FutureExt;
use kube::ResourceExt;

use crate::{
    api::Server,
    providers::bmc::{BmcError, Board, Feed, Origins},
    runtime::{Context, wake::Subject},
};

/// The least time between two wakes of one Server.
const WAKE_GAP: Duration = Duration::from_secs(1);
/// The longest wait before connecting again after a break.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a Server whose BMC sends nothing is checked for still being there.
const PARKED_CHECK: Duration = Duration::from_secs(30);

/// Whether an event may concern the system at `system` (its path on the
/// BMC): unless every origin it names is another system's.
pub fn concerns(o: &Origins, system: &str) -> bool {
    if o.unknown || o.links.is_empty() {
        return true;
    }
    let mine = |l: &str| {
        let l = l.trim_end_matches('/');
        let s = system.trim_end_matches('/');
        l == s || l.starts_with(&format!("{s}/"))
    };
    let other_system = |l: &str| {
        let parent = system
            .trim_end_matches('/')
            .rsplit_once('/')
            .map(|(p, _)| p)
            .unwrap_or("");
        !parent.is_empty() && l.starts_with(&format!("{parent}/")) && !mine(l)
    };
    o.links.iter().any(|l| mine(l) || !other_system(l))
}

/// Whether a break means the BMC is away (worth trying again soon). A
/// refused login or TLS failure waits for the next poll.
fn away(e: &BmcError) -> bool {
    use crate::providers::redfish::{AUTHENTICATION_FAILED, TLS_FAILED};
    ![
        AUTHENTICATION_FAILED,
        TLS_FAILED,
        "BadAddress",
        crate::providers::redfish::LINK_REFUSED,
    ]
    .contains(&e.reason)
}

/// Starts (or keeps) the task that reads `s`'s BMC events. `fingerprint`
/// names what it was started from (address, credentials, trust, system).
pub fn keep<B, F, Fut>(ctx: &Context, s: &Server, system: &str, fingerprint: u64, open: F)
where
    B: Board + Send + Sync + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<B, BmcError>> + Send + 'static,
{
    if !ctx.settings.bmc_events {
        return;
    }
    let who = Subject::new(
        ctx,
        "Server",
        s,
        |st, ns, name| crate::runtime::stores::get(&st.servers, ns, name).and_then(|s| s.uid()),
        &ctx.wakes.servers,
    );
    let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
    let system = system.to_string();
    ctx.kept.ensure(&format!("Server/{ns}/{name}"), fingerprint, move || {
        listen(open, who, system).boxed()
    });
}

/// How one connection ended.
enum Ended {
    /// The BMC sends no events: nothing to read, ever (for this fingerprint).
    NoEvents,
    /// A break worth reconnecting after.
    Break(BmcError),
    /// A refusal that waits for the next poll.
    GiveUp(BmcError),
    /// The Server is gone or this site stopped acting.
    Done,
}

async fn listen<B, F, Fut>(open: F, who: Subject, system: String)
where
    B: Board + Send + Sync + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<B, BmcError>>,
{
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    while who.still() {
        let began = Instant::now();
        match connection(&open, &who, &system, !first).await {
            Ended::Done => return,
            Ended::NoEvents => return park(&who).await,
            Ended::GiveUp(e) => {
                tracing::info!(namespace = %who.ns, server = %who.name, error = %e, "BMC events refused; polling until the next look");
                return;
            }
            Ended::Break(e) => {
                tracing::debug!(namespace = %who.ns, server = %who.name, error = %e, retry_in = ?backoff, "BMC event stream broke");
            }
        }
        first = false;
        // A stream that lasted is a BMC that works: its next break starts the backoff over.
        if began.elapsed() > MAX_BACKOFF * 2 {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Stays (so the next poll does not ask again) until the Server is gone.
async fn park(who: &Subject) {
    while who.still() {
        tokio::time::sleep(PARKED_CHECK).await;
    }
}

/// One connection: opens the conversation and its feed, reads it until it
/// breaks. `again`: a reconnection (what was missed meanwhile is looked at).
async fn connection<B, F, Fut>(open: &F, who: &Subject, system: &str, again: bool) -> Ended
where
    B: Board + Send + Sync + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<B, BmcError>>,
{
    let bmc = match open().await {
        Ok(b) => b,
        Err(e) if away(&e) => return Ended::Break(e),
        Err(e) => return Ended::GiveUp(e),
    };
    let ended = match bmc.feed().await {
        Ok(None) => Ended::NoEvents,
        Ok(Some(feed)) => {
            tracing::info!(namespace = %who.ns, server = %who.name, "reading the BMC's events");
            if again {
                who.wake();
            }
            read(feed, who, system).await
        }
        Err(e) if e.reason == crate::providers::redfish::NOT_SUPPORTED => Ended::NoEvents,
        Err(e) if away(&e) => Ended::Break(e),
        Err(e) => Ended::GiveUp(e),
    };
    bmc.close().await;
    ended
}

/// What the reader hears next.
enum Tick {
    Event(Result<Origins, BmcError>),
    /// A wake held back by the gap is due.
    Owed,
    /// Nothing for a while: time to check the Server is still there.
    Quiet,
}

/// Reads events, waking the Server at most once per [`WAKE_GAP`].
async fn read(mut feed: impl Feed, who: &Subject, system: &str) -> Ended {
    let mut last: Option<Instant> = None;
    let mut owed: Option<tokio::time::Instant> = None;
    loop {
        let due = owed.unwrap_or_else(|| tokio::time::Instant::now() + PARKED_CHECK);
        // Feed::next is cancel-safe: a chunk is parsed only once received.
        let tick = tokio::select! {
            n = feed.next() => Tick::Event(n),
            _ = tokio::time::sleep_until(due), if owed.is_some() => Tick::Owed,
            _ = tokio::time::sleep(PARKED_CHECK) => Tick::Quiet,
        };
        if !who.still() {
            return Ended::Done;
        }
        let origins = match tick {
            Tick::Event(Ok(o)) => o,
            Tick::Event(Err(e)) => return Ended::Break(e),
            Tick::Quiet => continue,
            Tick::Owed => {
                (owed, last) = (None, Some(Instant::now()));
                who.wake();
                continue;
            }
        };
        if !concerns(&origins, system) || owed.is_some() {
            continue;
        }
        match gate(last, Instant::now()) {
            None => {
                last = Some(Instant::now());
                tracing::debug!(namespace = %who.ns, server = %who.name, "a BMC event; looking now");
                who.wake();
            }
            Some(wait) => owed = Some(tokio::time::Instant::now() + wait),
        }
    }
}

/// How long a wake must wait after the last one at `last` (None: not at all).
fn gate(last: Option<Instant>, now: Instant) -> Option<Duration> {
    let since = now.duration_since(last?);
    WAKE_GAP.checked_sub(since).filter(|w| !w.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(links: &[&str]) -> Origins {
        Origins {
            links: links.iter().map(|s| s.to_string()).collect(),
            unknown: false,
        }
    }

    #[test]
    fn an_event_about_another_system_only_is_not_ours() {
        let sys = "/redfish/v1/Systems/a1";
        assert!(concerns(&o(&["/redfish/v1/Systems/a1"]), sys));
        assert!(concerns(&o(&["/redfish/v1/Systems/a1/Bios"]), sys));
        assert!(
            concerns(&o(&["/redfish/v1/Chassis/1/Power"]), sys),
            "a chassis may be ours"
        );
        assert!(!concerns(&o(&["/redfish/v1/Systems/a2"]), sys));
        assert!(
            !concerns(&o(&["/redfish/v1/Systems/a10"]), sys),
            "a prefix is not a path"
        );
        assert!(concerns(&o(&["/redfish/v1/Systems/a2", "/redfish/v1/Systems/a1"]), sys));
        assert!(
            concerns(
                &Origins {
                    links: vec![],
                    unknown: true
                },
                sys
            ),
            "an event that names nothing may be ours"
        );
    }

    #[test]
    fn wakes_are_a_second_apart_at_least() {
        let t0 = Instant::now();
        assert_eq!(gate(None, t0), None);
        assert_eq!(
            gate(Some(t0), t0 + Duration::from_millis(300)),
            Some(Duration::from_millis(700))
        );
        assert_eq!(gate(Some(t0), t0 + Duration::from_secs(2)), None);
    }
}
