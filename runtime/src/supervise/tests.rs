//! The supervision policy's rules, one by one, on a clock of its own.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn limits() -> Limits {
    Limits {
        max_restarts: 5,
        backoff: (100 * MS, 400 * MS),
        healthy_while: 1000 * MS,
        stall: None,
        timeout: None,
        patience: None,
        grace: 500 * MS,
    }
}

/// A supervisor of `nodes` nodes, its start time, and the job at epoch 0.
fn supervisor(limits: Limits, nodes: usize) -> (Supervisor, Instant) {
    let t0 = Instant::now();
    let mut s = Supervisor::new(limits, t0);
    for _ in 0..nodes {
        s.on(Event::Started, t0);
    }
    s.on(Event::Status(JobStatus::Running), t0);
    s.on(Event::Epoch(Some(b"0".to_vec())), t0);
    (s, t0)
}

fn exit(s: &mut Supervisor, node: u64, exit: Exit, at: Instant) {
    s.on(Event::Exited { node, exit }, at);
}

fn waits(d: &Decision) -> bool {
    matches!(d, Decision::Wait(_))
}

#[test]
fn a_node_that_steps_down_is_replaced_at_once() {
    let (mut s, t0) = supervisor(limits(), 3);
    exit(&mut s, 1, Exit::SteppedDown, t0);
    assert_eq!(s.next(t0), Decision::Restart(1));
    assert!(waits(&s.next(t0)));
    assert_eq!((s.live(), s.died()), (3, 1));
}

#[test]
fn failed_nodes_are_replaced_after_a_back_off_that_doubles_and_resets() {
    let (mut s, t0) = supervisor(limits(), 1);
    let mut now = t0;
    for delay in [100, 200, 400, 400] {
        exit(&mut s, 0, Exit::Failed("boom".into()), now);
        assert_eq!(s.next(now), Decision::Wait(delay * MS), "after a failure, wait {delay} ms");
        assert!(waits(&s.next(now + (delay - 1) * MS)));
        now += delay * MS;
        assert_eq!(s.next(now), Decision::Restart(0));
    }
    // Healthy for longer than `healthy_while`: from the first step again.
    now += 1001 * MS;
    exit(&mut s, 0, Exit::Failed("boom".into()), now);
    assert_eq!(s.next(now), Decision::Wait(100 * MS));
}

#[test]
fn too_many_restarts_fail_the_job_once() {
    let (mut s, t0) = supervisor(limits(), 1);
    for _ in 0..5 {
        exit(&mut s, 0, Exit::SteppedDown, t0);
        assert_eq!(s.next(t0), Decision::Restart(0));
    }
    exit(&mut s, 0, Exit::SteppedDown, t0);
    assert_eq!(s.next(t0), Decision::FailJob(Verdict::TooManyRestarts(5)));
    assert_eq!(s.status(), &JobStatus::Failed("more than 5 node restarts".into()));
    assert_eq!(s.next(t0), Decision::Stop, "no node left, none restarted");
}

#[test]
fn a_node_that_exits_after_the_end_is_no_death_whatever_its_exit() {
    for how in [Exit::Failed("exit status 1".into()), Exit::SteppedDown, Exit::CoordinatorLost("gone".into()), Exit::JobEnded] {
        let (mut s, t0) = supervisor(limits(), 2);
        s.on(Event::Status(JobStatus::Done), t0);
        exit(&mut s, 0, how.clone(), t0);
        assert!(waits(&s.next(t0)), "{how:?}");
        exit(&mut s, 1, how.clone(), t0);
        assert_eq!(s.next(t0), Decision::Stop, "{how:?}");
        assert_eq!((s.status(), s.died(), s.verdict()), (&JobStatus::Done, 0, None), "{how:?}");
    }
}

#[test]
fn an_end_is_final_and_cancels_the_replacements_due() {
    let (mut s, t0) = supervisor(limits(), 2);
    exit(&mut s, 0, Exit::Failed("boom".into()), t0);
    s.on(Event::Status(JobStatus::Done), t0);
    s.on(Event::Status(JobStatus::Running), t0);
    assert_eq!(s.status(), &JobStatus::Done);
    assert!(waits(&s.next(t0 + 200 * MS)), "no restart after the end");
}

#[test]
fn the_time_limit_fails_the_job_and_an_end_written_first_stands() {
    let (mut s, t0) = supervisor(Limits { timeout: Some(300 * MS), ..limits() }, 1);
    assert_eq!(s.next(t0), Decision::Wait(300 * MS));
    assert_eq!(s.next(t0 + 301 * MS), Decision::FailJob(Verdict::TimedOut(300 * MS)));
    assert_eq!(s.verdict(), Some(&Verdict::TimedOut(300 * MS)));
    // The compare-and-swap lost: the job was done by then.
    s.on(Event::Status(JobStatus::Done), t0 + 302 * MS);
    assert_eq!((s.status(), s.verdict()), (&JobStatus::Done, None));
    // Its verdict recorded: it stands.
    let (mut s, t0) = supervisor(Limits { timeout: Some(300 * MS), ..limits() }, 1);
    let Decision::FailJob(v) = s.next(t0 + 301 * MS) else { panic!() };
    s.on(Event::Status(JobStatus::Failed(v.to_string())), t0 + 302 * MS);
    assert_eq!(s.verdict(), Some(&Verdict::TimedOut(300 * MS)));
    assert_eq!(v.to_string(), "timed out after 300ms");
}

#[test]
fn a_stall_fails_the_job_but_a_job_that_advances_runs_on() {
    let (mut s, t0) = supervisor(Limits { stall: Some(300 * MS), ..limits() }, 1);
    for e in 1..10u64 {
        let now = t0 + (e as u32) * 200 * MS;
        s.on(Event::Epoch(Some(e.to_string().into_bytes())), now);
        assert!(waits(&s.next(now)));
    }
    let last = t0 + 1800 * MS;
    s.on(Event::Epoch(Some(b"9".to_vec())), last + 250 * MS);
    assert!(waits(&s.next(last + 300 * MS)));
    let d = s.next(last + 301 * MS);
    assert_eq!(d, Decision::FailJob(Verdict::Stalled(300 * MS, "9".into())));
    let Decision::FailJob(v) = d else { unreachable!() };
    assert_eq!(v.to_string(), "no progress for 300ms (stuck at epoch 9)");
}

#[test]
fn time_without_the_coordinator_is_no_stall() {
    let (mut s, t0) = supervisor(Limits { stall: Some(300 * MS), ..limits() }, 1);
    s.on(Event::Unreachable("no answer".into()), t0 + 100 * MS);
    assert!(waits(&s.next(t0 + 1000 * MS)), "no stall while the coordinator is away");
    s.on(Event::Epoch(Some(b"0".to_vec())), t0 + 1100 * MS);
    // 100 ms before the outage, 150 after it.
    assert!(waits(&s.next(t0 + 1250 * MS)));
    assert!(matches!(s.next(t0 + 1400 * MS), Decision::FailJob(Verdict::Stalled(..))));
}

#[test]
fn a_node_that_lost_the_coordinator_is_replaced_once_it_answers_and_patience_ends_it() {
    let patient = Limits { patience: Some(1000 * MS), ..limits() };
    let (mut s, t0) = supervisor(patient.clone(), 2);
    exit(&mut s, 0, Exit::CoordinatorLost("cannot renew".into()), t0);
    assert!(waits(&s.next(t0 + 500 * MS)), "no replacement while the coordinator is away");
    s.on(Event::Status(JobStatus::Running), t0 + 600 * MS);
    assert_eq!(s.next(t0 + 600 * MS), Decision::Restart(0));
    // Away for good.
    let (mut s, t0) = supervisor(patient, 2);
    s.on(Event::Unreachable("no answer".into()), t0);
    exit(&mut s, 1, Exit::CoordinatorLost("cannot renew".into()), t0 + 10 * MS);
    assert!(waits(&s.next(t0 + 999 * MS)));
    assert_eq!(s.next(t0 + 1000 * MS), Decision::GiveUp(1000 * MS, "no answer".into()));
    assert!(matches!(s.status(), JobStatus::Failed(why) if why.contains("unreachable")));
    assert_eq!(s.next(t0 + 1000 * MS), Decision::Stop);
}

#[test]
fn the_nodes_get_their_grace_after_the_end_then_are_killed() {
    let (mut s, t0) = supervisor(limits(), 3);
    s.on(Event::Status(JobStatus::Failed("by a task".into())), t0);
    exit(&mut s, 0, Exit::JobEnded, t0 + 400 * MS);
    // Counted from the last node that left.
    assert!(waits(&s.next(t0 + 800 * MS)));
    assert_eq!(s.next(t0 + 900 * MS), Decision::KillAll);
    assert!(waits(&s.next(t0 + 900 * MS)), "killed once");
    exit(&mut s, 1, Exit::SteppedDown, t0 + 901 * MS);
    exit(&mut s, 2, Exit::SteppedDown, t0 + 901 * MS);
    assert_eq!(s.next(t0 + 901 * MS), Decision::Stop);
    assert_eq!(s.died(), 0);
}

#[test]
fn a_node_that_says_the_job_ended_while_it_runs_is_replaced() {
    let (mut s, t0) = supervisor(limits(), 1);
    exit(&mut s, 0, Exit::JobEnded, t0);
    assert_eq!(s.next(t0), Decision::Restart(0));
}

#[test]
fn with_no_node_and_none_due_supervision_stops_with_the_job_running() {
    let (mut s, t0) = supervisor(limits(), 0);
    assert_eq!(s.next(t0), Decision::Stop);
    assert_eq!(s.status(), &JobStatus::Running);
}
