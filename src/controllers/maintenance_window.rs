//! MaintenanceWindow reconciler: its phase in time and the components it covers.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Context, Error, components,
    detection::failure,
    status::{with_ready, write_status},
    validation::report_invalid,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    MaintenanceWindow,
    common::reasons,
    maintenance_window::{RecordedFailure, WindowPhase},
};

/// Where `now` falls in the window, and how long until the next boundary.
pub fn phase(start: Timestamp, end: Timestamp, now: Timestamp) -> (WindowPhase, Option<Duration>) {
    let until = |t: Timestamp| Duration::from_secs_f64(now.duration_until(t).as_secs_f64().max(0.0));
    if now < start {
        (WindowPhase::Scheduled, Some(until(start)))
    } else if now < end {
        (WindowPhase::Active, Some(until(end)))
    } else {
        (WindowPhase::Ended, None)
    }
}

pub fn reconcile(obj: Arc<MaintenanceWindow>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let selector = match components::selector("spec.selector", &obj.spec.selector) {
            Ok(s) => s,
            Err(invalid) => return report_invalid(&ctx, obj.as_ref(), &invalid).await,
        };
        let ns = obj.namespace().unwrap_or_default();
        let (phase, next) = phase(obj.spec.start.0, obj.spec.end.0, Timestamp::now());
        let mut status = with_ready(obj.as_ref(), true, reasons::RECONCILED, format!("{phase:?}"));
        status.phase = Some(phase);
        status.covered = components::selected(&ctx.stores, &ns, &selector);
        if phase == WindowPhase::Active {
            // The maintenance's measures: each failure seen inside it, once.
            for c in &status.covered {
                let Some(f) = failure(&ctx.stores, &ns, c) else {
                    continue;
                };
                let since = Time(f.since);
                if status.failures.iter().any(|x| &x.component == c && x.since == since) {
                    continue;
                }
                status.failures_recorded += 1;
                status.failures.push(RecordedFailure {
                    component: c.clone(),
                    since,
                    cause: f.cause.chars().take(512).collect(),
                });
            }
            let extra = status.failures.len().saturating_sub(50);
            status.failures.drain(..extra);
        }
        write_status(&ctx, obj.as_ref(), &status).await?;
        // Wake up right after the next boundary to move the phase.
        Ok(next
            .map(|d| Action::requeue(d + Duration::from_secs(1)))
            .unwrap_or_else(Action::await_change))
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_clock() {
        let start: Timestamp = "2026-12-05T20:00:00Z".parse().unwrap();
        let end: Timestamp = "2026-12-05T22:00:00Z".parse().unwrap();
        let before: Timestamp = "2026-12-05T19:00:00Z".parse().unwrap();
        let during: Timestamp = "2026-12-05T21:30:00Z".parse().unwrap();
        assert_eq!(
            phase(start, end, before),
            (WindowPhase::Scheduled, Some(Duration::from_secs(3600)))
        );
        assert_eq!(
            phase(start, end, during),
            (WindowPhase::Active, Some(Duration::from_secs(1800)))
        );
        assert_eq!(phase(start, end, end).0, WindowPhase::Ended);
    }
}
