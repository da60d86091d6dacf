//! MaintenanceWindow reconciler: its phase in time and the components it covers.

use crate::runtime::Action;
use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::detection::failure;
use crate::{
    api::{
        MaintenanceWindow,
        common::reasons,
        maintenance_window::{RecordedFailure, WindowPhase},
    },
    runtime::{Context, Error, report::Report, stores as registry, validation::report_invalid},
};

pub use crate::runtime::holds::phase;

pub fn reconcile(obj: Arc<MaintenanceWindow>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let selector = match registry::selector("spec.selector", &obj.spec.selector) {
            Ok(s) => s,
            Err(invalid) => return report_invalid(&ctx, obj.as_ref(), &invalid).await,
        };
        let ns = obj.namespace().unwrap_or_default();
        let (phase, next) = phase(obj.spec.start.0, obj.spec.end.0, Timestamp::now());
        let mut r = Report::new(&ctx, obj.as_ref());
        r.set(reasons::READY, true, reasons::RECONCILED, format!("{phase:?}"));
        let status = &mut r.status;
        status.phase = Some(phase);
        status.covered = registry::selected(&ctx.stores, &ns, &selector);
        if phase == WindowPhase::Active {
            // The maintenance's measures: each failure seen inside it, once.
            for c in &status.covered {
                let Some(f) = failure(&ctx.stores, &ns, c) else {
                    continue;
                };
                let since = MicroTime(f.since);
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
        r.write().await?;
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
