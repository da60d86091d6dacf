//! The executor's decisions on fixtures: every branch the integration tests
//! exercise, and more.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::*;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn step(name: &str, action: StepAction, timeout: &str, retries: u32) -> Step {
    Step {
        name: name.into(),
        action,
        timeout: timeout.parse().unwrap(),
        retries,
        responder: None,
    }
}

/// The PlastProd VM procedure: restart, restore, then call the vendor.
fn vm_steps() -> Vec<Step> {
    vec![
        step("restart", StepAction::Restart, "5m", 1),
        step("restore-snapshot", StepAction::RestoreSnapshot, "15m", 0),
        step("call-vendor", StepAction::Notify, "5m", 0),
    ]
}

fn entry(name: &str, action: StepAction, attempt: u32, started: i64, end: Option<(i64, StepOutcome)>) -> TimelineEntry {
    TimelineEntry {
        step: name.into(),
        action,
        attempt,
        started: MicroTime(t(started)),
        finished: end.map(|(s, _)| MicroTime(t(s))),
        outcome: end.map(|(_, o)| o).unwrap_or(StepOutcome::Running),
        message: String::new(),
        bytes: None,
    }
}

fn failing() -> ComponentFacts {
    ComponentFacts {
        health: Some(signal(false, 0)),
        ..Default::default()
    }
}

fn signal(healthy: bool, since: i64) -> Signal {
    Signal {
        state: if healthy { "Healthy" } else { "Failed" }.into(),
        failing: !healthy,
        healthy,
        since: t(since),
        message: String::new(),
    }
}

fn answered(id: &str, outcome: ActionOutcome, at: i64) -> ActionRecord {
    ActionRecord {
        id: id.into(),
        action: "restart".into(),
        time: MicroTime(t(at)),
        outcome,
        message: format!("{outcome:?} it"),
    }
}

struct World {
    now: i64,
    steps: Vec<Step>,
    timeline: Vec<TimelineEntry>,
    phase: IncidentPhase,
    deadline: Option<i64>,
    notify_only: Option<&'static str>,
    approval: Option<&'static str>,
    component: Option<ComponentFacts>,
    waiting_on: Vec<String>,
    observed_at: Option<i64>,
}

impl World {
    fn new(now: i64) -> Self {
        Self {
            now,
            steps: vm_steps(),
            timeline: vec![],
            phase: IncidentPhase::Detected,
            deadline: Some(2700),
            notify_only: None,
            approval: None,
            component: Some(failing()),
            waiting_on: vec![],
            observed_at: None,
        }
    }

    fn decide(&self) -> Next {
        decide(&Facts {
            now: t(self.now),
            steps: &self.steps,
            timeline: &self.timeline,
            phase: self.phase,
            detected_at: t(0),
            observed_at: self.observed_at.map(t),
            deadline: self.deadline.map(t),
            notify_only: self.notify_only,
            approval: self.approval,
            component: self.component.as_ref(),
            waiting_on: &self.waiting_on,
            request_prefix: "u1",
        })
    }

    fn component(&mut self) -> &mut ComponentFacts {
        self.component.as_mut().unwrap()
    }
}

#[test]
fn a_new_incident_starts_the_first_step() {
    assert_eq!(World::new(1).decide(), Next::Start { step: 0, attempt: 1 });
}

#[test]
fn without_a_procedure_it_waits_for_people_or_health() {
    let mut w = World::new(1);
    w.steps.clear();
    assert!(matches!(w.decide(), Next::Wait { phase: None, .. }));
}

#[test]
fn a_healthy_component_at_once_resolves_without_the_procedure() {
    let mut w = World::new(1);
    w.component().health = Some(signal(true, 1));
    assert_eq!(
        w.decide(),
        Next::Resolve {
            at: t(1),
            how: "healthy again without the procedure's actions".into()
        }
    );
}

#[test]
fn a_step_written_but_not_asked_is_asked_with_the_same_id() {
    // The operator died between the timeline write and the request.
    let mut w = World::new(5);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    assert_eq!(
        w.decide(),
        Next::Ask {
            verb: ActionVerb::Restart,
            id: "u1.restart.1".into()
        }
    );
}

#[test]
fn a_step_asked_and_pending_is_waited_on() {
    let mut w = World::new(5);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    w.component().pending = Request::parse("restart/u1.restart.1");
    assert!(matches!(w.decide(), Next::Wait { .. }));
}

#[test]
fn a_step_done_waits_for_evidence() {
    let mut w = World::new(5);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    w.component().last_action = Some(answered("u1.restart.1", ActionOutcome::Done, 3));
    assert!(matches!(w.decide(), Next::Wait { .. }), "done is not healthy");
}

#[test]
fn a_step_succeeds_on_health_observed_after_its_action() {
    let mut w = World::new(20);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    w.component().last_action = Some(answered("u1.restart.1", ActionOutcome::Done, 3));
    w.component().health = Some(signal(true, 15));
    assert!(matches!(
        w.decide(),
        Next::End {
            index: 0,
            outcome: StepOutcome::Succeeded,
            escalate: None,
            ..
        }
    ));
    // Once ended, the incident resolves by it.
    w.timeline[0].outcome = StepOutcome::Succeeded;
    w.timeline[0].finished = Some(MicroTime(t(20)));
    assert_eq!(
        w.decide(),
        Next::Resolve {
            at: t(15),
            how: "by step restart (attempt 1)".into()
        }
    );
}

#[test]
fn health_from_before_the_action_is_no_evidence() {
    // Healthy since 1, the restart carried out at 3: it came back on its own.
    let mut w = World::new(5);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    w.component().last_action = Some(answered("u1.restart.1", ActionOutcome::Done, 3));
    w.component().health = Some(signal(true, 1));
    assert!(matches!(
        w.decide(),
        Next::End {
            outcome: StepOutcome::Skipped,
            ..
        }
    ));
}

#[test]
fn a_step_skipped_because_the_component_came_back_says_how_it_did() {
    // A Database that restored itself before the step's restore: the step
    // names the backup and store the component says it restored from.
    let mut w = World::new(5);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    let mut back = signal(true, 3);
    back.message = "restored database shop from backup b1 in store vault".into();
    w.component().health = Some(back);
    match w.decide() {
        Next::End {
            outcome: StepOutcome::Skipped,
            message,
            ..
        } => assert!(
            message.ends_with("took effect: restored database shop from backup b1 in store vault"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_action_under_way_is_waited_on_even_when_healthy() {
    let mut w = World::new(5);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    w.component().last_action = Some(answered("u1.restart.1", ActionOutcome::Accepted, 3));
    w.component().health = Some(signal(true, 4));
    assert!(matches!(w.decide(), Next::Wait { .. }));
}

#[test]
fn a_refused_action_fails_the_step_and_the_retry_waits_its_backoff() {
    let mut w = World::new(5);
    w.timeline.push(entry("restart", StepAction::Restart, 1, 2, None));
    w.component().last_action = Some(answered("u1.restart.1", ActionOutcome::Rejected, 3));
    assert!(matches!(
        w.decide(),
        Next::End {
            outcome: StepOutcome::Failed,
            escalate: None,
            ..
        }
    ));
    w.timeline[0].outcome = StepOutcome::Failed;
    w.timeline[0].finished = Some(MicroTime(t(5)));
    w.now = 6;
    assert_eq!(
        w.decide(),
        Next::Wait {
            after: Duration::from_secs(1),
            phase: None
        }
    );
    w.now = 7;
    assert_eq!(w.decide(), Next::Start { step: 0, attempt: 2 });
}

#[test]
fn a_step_failed_for_good_escalates_and_the_next_step_follows() {
    let mut w = World::new(30);
    w.timeline.push(entry(
        "restart",
        StepAction::Restart,
        1,
        2,
        Some((5, StepOutcome::Failed)),
    ));
    w.timeline.push(entry("restart", StepAction::Restart, 2, 10, None));
    w.component().last_action = Some(answered("u1.restart.2", ActionOutcome::Failed, 11));
    match w.decide() {
        Next::End {
            outcome: StepOutcome::Failed,
            escalate: Some(why),
            ..
        } => assert!(why.contains("restart failed for good"), "{why}"),
        other => panic!("{other:?}"),
    }
    w.timeline[1].outcome = StepOutcome::Failed;
    w.timeline[1].finished = Some(MicroTime(t(30)));
    w.timeline.push(entry(
        "escalate-vendor",
        StepAction::Notify,
        1,
        30,
        Some((30, StepOutcome::Succeeded)),
    ));
    assert_eq!(w.decide(), Next::Start { step: 1, attempt: 1 });
}

#[test]
fn a_step_past_its_timeout_times_out() {
    let mut w = World::new(2 + 301);
    w.timeline.push(entry("restart", StepAction::Restart, 2, 2, None));
    w.component().last_action = Some(answered("u1.restart.2", ActionOutcome::Done, 3));
    match w.decide() {
        Next::End {
            outcome: StepOutcome::TimedOut,
            escalate,
            message,
            ..
        } => {
            assert!(message.contains("5m"), "{message}");
            assert!(escalate.is_some(), "the last attempt");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_step_used_up_exhausts_the_procedure() {
    let mut w = World::new(100);
    w.steps = vec![step("restart", StepAction::Restart, "1m", 0)];
    w.timeline.push(entry(
        "restart",
        StepAction::Restart,
        1,
        2,
        Some((70, StepOutcome::TimedOut)),
    ));
    assert_eq!(w.decide(), Next::Exhausted);
}

#[test]
fn a_failed_incident_waits_and_resolves_when_the_component_comes_back() {
    let mut w = World::new(100);
    w.phase = IncidentPhase::Failed;
    w.timeline.push(entry(
        "restart",
        StepAction::Restart,
        1,
        2,
        Some((70, StepOutcome::TimedOut)),
    ));
    assert!(matches!(w.decide(), Next::Wait { .. }));
    w.component().health = Some(signal(true, 90));
    assert_eq!(
        w.decide(),
        Next::Resolve {
            at: t(90),
            how: "healthy again after the procedure ran out".into()
        }
    );
}

#[test]
fn notify_only_skips_actions_without_escalating() {
    let mut w = World::new(1);
    w.notify_only = Some("upgrade");
    match w.decide() {
        Next::Skip {
            step: 0,
            escalate: false,
            why,
            ..
        } => assert!(why.contains("NotifyOnly"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The actions skipped, the notification sent: it stays open for people.
    w.timeline.push(entry(
        "restart",
        StepAction::Restart,
        1,
        1,
        Some((1, StepOutcome::Skipped)),
    ));
    w.timeline.push(entry(
        "restore-snapshot",
        StepAction::RestoreSnapshot,
        1,
        1,
        Some((1, StepOutcome::Skipped)),
    ));
    assert_eq!(w.decide(), Next::Start { step: 2, attempt: 1 });
    w.timeline.push(entry(
        "call-vendor",
        StepAction::Notify,
        1,
        1,
        Some((2, StepOutcome::Succeeded)),
    ));
    assert!(matches!(w.decide(), Next::Wait { phase: None, .. }));
}

#[test]
fn a_step_that_would_end_past_the_deadline_is_skipped_and_escalated() {
    let mut w = World::new(1);
    w.deadline = Some(20);
    match w.decide() {
        Next::Skip {
            escalate: true, why, ..
        } => assert!(
            why.contains("would end past the deadline (5m timeout, 19s left)"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_open_ended_level_never_skips_for_a_deadline() {
    let mut w = World::new(100_000);
    w.deadline = None;
    assert_eq!(w.decide(), Next::Start { step: 0, attempt: 1 });
}

#[test]
fn approval_waits_then_records_who() {
    let mut w = World::new(5);
    w.steps = vec![step("approve", StepAction::WaitForApproval, "30m", 0)];
    w.timeline
        .push(entry("approve", StepAction::WaitForApproval, 1, 2, None));
    assert_eq!(
        w.decide(),
        Next::Wait {
            after: POLL,
            phase: Some(IncidentPhase::AwaitingApproval)
        }
    );
    w.approval = Some("false");
    assert!(matches!(w.decide(), Next::Wait { .. }));
    w.approval = Some("alice");
    assert_eq!(
        w.decide(),
        Next::Approved {
            index: 0,
            by: "alice".into()
        }
    );
    w.approval = Some("true");
    assert_eq!(
        w.decide(),
        Next::Approved {
            index: 0,
            by: "someone (annotation)".into()
        }
    );
}

#[test]
fn dependencies_recover_first() {
    let mut w = World::new(1);
    w.waiting_on = vec!["Database shop-db (Incident i1)".into()];
    match w.decide() {
        Next::Await { name, message } => {
            assert_eq!(name, DEPENDENCIES);
            assert!(message.contains("shop-db"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    w.timeline
        .push(entry(DEPENDENCIES, StepAction::AwaitRecovery, 1, 1, None));
    w.now = 10;
    assert!(matches!(w.decide(), Next::Wait { .. }), "still waiting");
    w.waiting_on.clear();
    assert!(matches!(
        w.decide(),
        Next::End {
            index: 0,
            outcome: StepOutcome::Succeeded,
            ..
        }
    ));
}

#[test]
fn the_components_own_repair_is_let_finish_once_then_capped() {
    let mut w = World::new(1);
    w.component().own_repair = Some("restoring on its own".into());
    assert!(matches!(w.decide(), Next::Await { name: SELF_REPAIR, .. }));
    w.timeline
        .push(entry(SELF_REPAIR, StepAction::AwaitRecovery, 1, 1, None));
    w.now = 100;
    assert!(matches!(w.decide(), Next::Wait { .. }));
    w.now = 1 + SELF_REPAIR_CAP + 1;
    assert!(matches!(
        w.decide(),
        Next::End {
            outcome: StepOutcome::TimedOut,
            ..
        }
    ));
    // Not waited on a second time.
    w.timeline[0].outcome = StepOutcome::TimedOut;
    w.timeline[0].finished = Some(MicroTime(t(w.now)));
    assert!(matches!(w.decide(), Next::Start { step: 0, attempt: 1 }));
}

#[test]
fn an_own_repair_that_ends_records_what_the_component_says_it_did() {
    let mut w = World::new(1);
    w.component().own_repair = Some("restoring on its own".into());
    w.timeline
        .push(entry(SELF_REPAIR, StepAction::AwaitRecovery, 1, 1, None));
    w.now = 40;
    w.component().own_repair = None;
    let mut healthy = signal(true, 39);
    healthy.message = "restored database shop from backup b1 in store offsite".into();
    w.component().health = Some(healthy);
    match w.decide() {
        Next::End { outcome, message, .. } => {
            assert_eq!(outcome, StepOutcome::Succeeded);
            assert!(
                message.ends_with("healthy again: restored database shop from backup b1 in store offsite"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn half_the_window_gone_escalates_once() {
    let mut w = World::new(1351);
    assert!(matches!(w.decide(), Next::Escalate { .. }));
    w.timeline.push(entry(
        "escalate-vendor",
        StepAction::Notify,
        1,
        1351,
        Some((1351, StepOutcome::Succeeded)),
    ));
    assert_eq!(w.decide(), Next::Start { step: 0, attempt: 1 });
}

#[test]
fn a_running_delivery_step_waits_for_its_delivery() {
    let mut w = World::new(5);
    w.steps = vec![step("call-it", StepAction::Notify, "5m", 0)];
    w.timeline.push(entry("call-it", StepAction::Notify, 1, 2, None));
    assert!(matches!(w.decide(), Next::Wait { phase: None, .. }));
}

#[test]
fn a_deleted_component_abandons_the_incident() {
    let mut w = World::new(5);
    w.component = None;
    assert!(matches!(w.decide(), Next::Abandon { .. }));
}

#[test]
fn a_new_leader_resumes_at_the_running_step_and_never_reruns_a_finished_one() {
    let mut w = World::new(50);
    w.timeline.push(entry(
        "restart",
        StepAction::Restart,
        1,
        2,
        Some((40, StepOutcome::TimedOut)),
    ));
    w.timeline.push(entry("restart", StepAction::Restart, 2, 45, None));
    w.component().last_action = Some(answered("u1.restart.1", ActionOutcome::Done, 3));
    // The running attempt is 2: asked again with its own id, not attempt 1's.
    assert_eq!(
        w.decide(),
        Next::Ask {
            verb: ActionVerb::Restart,
            id: "u1.restart.2".into()
        }
    );
}

#[test]
fn a_succeeded_step_is_not_started_again() {
    let mut w = World::new(50);
    w.timeline.push(entry(
        "restart",
        StepAction::Restart,
        1,
        2,
        Some((10, StepOutcome::Succeeded)),
    ));
    // The component failed again later: the next step, not the restart again.
    assert_eq!(w.decide(), Next::Start { step: 1, attempt: 1 });
}

#[test]
fn a_running_approval_is_not_needed_once_healthy() {
    let mut w = World::new(5);
    w.steps = vec![step("approve", StepAction::WaitForApproval, "30m", 0)];
    w.timeline
        .push(entry("approve", StepAction::WaitForApproval, 1, 2, None));
    w.component().health = Some(signal(true, 4));
    assert!(matches!(
        w.decide(),
        Next::End {
            outcome: StepOutcome::Skipped,
            ..
        }
    ));
}

#[test]
fn request_ids_are_per_incident_step_and_attempt() {
    assert_eq!(request_id("0a1b2c3d", "restart", 2), "0a1b2c3d.restart.2");
    assert_ne!(
        request_id("0a1b2c3d", "restart", 1),
        request_id("0a1b2c3d", "restart", 2)
    );
}

#[test]
fn without_a_procedure_an_own_repair_is_awaited_up_to_the_components_cap() {
    let mut w = World::new(1);
    w.steps = vec![];
    w.component().own_repair = Some("taking over from paris: wave Database".into());
    w.component().repair_cap = Some(4 * 3600);
    match w.decide() {
        Next::Await { name, message } => {
            assert_eq!(name, SELF_REPAIR);
            assert!(message.contains("wave Database"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    w.timeline
        .push(entry(SELF_REPAIR, StepAction::AwaitRecovery, 1, 1, None));
    // Past the engine's cap, within the component's own.
    w.now = 1 + SELF_REPAIR_CAP + 60;
    assert!(matches!(w.decide(), Next::Wait { .. }));
    w.now = 1 + 4 * 3600 + 1;
    assert!(matches!(
        w.decide(),
        Next::End {
            outcome: StepOutcome::TimedOut,
            ..
        }
    ));
    // Without an own repair and without a procedure: people repair it.
    let mut w = World::new(1);
    w.steps = vec![];
    assert!(matches!(w.decide(), Next::Wait { .. }));
}

#[test]
fn a_healthy_signal_older_than_the_failure_is_no_evidence_of_recovery() {
    let mut w = World::new(20);
    w.observed_at = Some(10);
    // Healthy since 5: written before the failure was seen, not renewed since.
    w.component().health = Some(signal(true, 5));
    assert!(matches!(w.decide(), Next::Wait { .. }), "{:?}", w.decide());
    w.component().health = Some(signal(true, 15));
    assert!(matches!(w.decide(), Next::Resolve { .. }), "{:?}", w.decide());
}
