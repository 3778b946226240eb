//! The runtime core, through the public API: W1 and its failure
//! scenarios, exactly-once fetches under injected faults, large payloads,
//! bad topologies.

use std::time::Duration;

use taskgraph::local::TransportFaults;
use taskgraph::prelude::*;
use taskgraph_examples::regression::{self, Scenario};
use taskgraph_examples::regression_by_hand;
use taskgraph_tests::jobs;

fn w1_values() -> Vec<(Epoch, String)> {
    (0..=10).map(|e| (e, (105 * e).to_string())).collect()
}

fn run_w1(size: usize, scenarios: &[Scenario], seed: u64) -> JobResult {
    let mut cluster = LocalCluster::new(regression::job(15, size, 10)).spares(2).timeout(Duration::from_secs(120));
    if !scenarios.is_empty() {
        cluster = cluster.faults(regression::faults(scenarios, 15, seed));
    }
    let result = cluster.run().expect("the job runs");
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    assert_eq!(regression::root_values(&result), w1_values());
    result
}

#[test]
fn w1_gives_the_root_values() {
    let r = run_w1(1, &[], 0);
    assert_eq!(r.kills, 0);
}

#[test]
fn w1_with_a_million_values_per_vector() {
    run_w1(1_000_000, &[], 0);
}

#[test]
fn f1_root_dies_entering_epoch_1() {
    let r = run_w1(1, &[Scenario::F1], 0);
    assert_eq!(r.kills, 1);
}

#[test]
fn f2_workers_die_on_receiving_the_parameter() {
    // Seeds chosen so that each run kills at least one node.
    for seed in [3, 11] {
        let r = run_w1(1, &[Scenario::F2], seed);
        assert!(r.kills >= 1, "seed {seed} killed nobody");
    }
}

#[test]
fn f3_workers_die_around_serving_their_gradient() {
    for seed in [5, 8] {
        let r = run_w1(1, &[Scenario::F3], seed);
        assert!(r.kills >= 1, "seed {seed} killed nobody");
    }
}

#[test]
fn all_failures_at_once_with_big_vectors() {
    let r = run_w1(100_000, &[Scenario::F1, Scenario::F2, Scenario::F3], 7);
    assert!(r.kills >= 3);
}

fn counts(result: &JobResult, per_epoch: u32, last_epoch: Epoch) {
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    let expected: Vec<(String, Vec<u8>)> =
        (0..=last_epoch).map(|e| (format!("epoch/{e:04}"), per_epoch.to_string().into_bytes())).collect();
    assert_eq!(result.records.clone().into_iter().collect::<Vec<_>>(), expected);
}

#[test]
fn exactly_once_with_duplicated_requests() {
    let faults = TransportFaults { duplicate_every: 3, disconnect_every: 0 };
    let result = LocalCluster::new(jobs::counter_job("dup", 5, 20, 5)).transport_faults(faults).run().unwrap();
    counts(&result, 20, 5);
}

#[test]
fn exactly_once_with_dropped_connections() {
    let faults = TransportFaults { duplicate_every: 0, disconnect_every: 4 };
    let result = LocalCluster::new(jobs::counter_job("cut", 5, 20, 5)).transport_faults(faults).timeout(Duration::from_secs(30)).run().unwrap();
    counts(&result, 20, 5);
}

#[test]
fn exactly_once_with_both_and_node_deaths() {
    let faults = TransportFaults { duplicate_every: 5, disconnect_every: 7 };
    let plan = Faults::new(9)
        .random(FaultKind::DataReceived, 0.02, 1..5, Some(jobs::NUM.id))
        .random(FaultKind::AfterServe, 0.02, 1..5, Some(jobs::NUM.id));
    let result = LocalCluster::new(jobs::counter_job("mixed", 5, 10, 5))
        .spares(1)
        .transport_faults(faults)
        .faults(plan)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    counts(&result, 10, 5);
    assert!(result.kills >= 1, "the plan killed nobody");
}

#[test]
fn a_40_mib_message_travels_in_chunks() {
    let len = 10 << 20; // 10 Mi f32 = 40 MiB, five 8 MiB chunks
    let result = LocalCluster::new(jobs::big_job(len)).run().unwrap();
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    let bytes: usize = String::from_utf8(result.records["bytes"].clone()).unwrap().parse().unwrap();
    assert!(bytes > 40 << 20);
}

#[test]
fn a_message_over_the_limit_fails_the_job_clearly() {
    let job = jobs::big_job(1 << 20).limits(taskgraph::message::Limits::max_bytes(1 << 16));
    let result = LocalCluster::new(job).run().unwrap();
    match result.status {
        JobStatus::Failed(why) => assert!(why.contains("exceeds the limit"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

struct BadTree;

const LINKS: [LinkType; 2] = [regression_by_hand::PARENT, regression_by_hand::CHILDREN];

impl Topology for BadTree {
    fn links(&self) -> &[LinkType] {
        &LINKS
    }
    fn neighbours(&self, link: u32, task: TaskId, epoch: Epoch) -> Vec<TaskId> {
        let good = regression_by_hand::Tree { tasks: 7 }.neighbours(link, task, epoch);
        // From epoch 2 on, task 1 forgets its second child.
        if link == regression_by_hand::CHILDREN.id && task == 1 && epoch >= 2 {
            return good.into_iter().take(1).collect();
        }
        good
    }
}

#[test]
fn an_inconsistent_topology_fails_the_job_naming_the_pair() {
    let job = Job::new("bad", 7, BadTree, |_| Box::new(regression_by_hand::Regression::new(1, 10)) as Box<dyn Task>)
        .edge(regression_by_hand::PARAM)
        .edge(regression_by_hand::GRAD);
    let result = LocalCluster::new(job).run().unwrap();
    assert_eq!(
        result.status,
        JobStatus::Failed(
            "inconsistent topology at epoch 2: task 4 lists task 1 over `parent`, but task 1 does not list task 4 over `children`"
                .into()
        )
    );
}

#[test]
fn a_panicking_task_fails_the_job() {
    struct Panics;
    impl Task for Panics {
        fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch) {
            if cx.task() == 1 && epoch == 0 {
                panic!("boom");
            }
        }
        fn data_ready(&mut self, _: &mut Context<'_>, _: Received) {}
        fn serve(&mut self, _: &mut Context<'_>, _: ServeRequest) {}
    }
    let job = Job::new("panics", 2, jobs::Ring { tasks: 2 }, |_| Box::new(Panics) as Box<dyn Task>);
    let result = LocalCluster::new(job).run().unwrap();
    assert_eq!(result.status, JobStatus::Failed("task 1 panicked at epoch 0: boom".into()));
}

#[test]
fn counter_without_faults() {
    let result = LocalCluster::new(jobs::counter_job("plain", 5, 20, 5)).timeout(Duration::from_secs(10)).run().unwrap();
    counts(&result, 20, 5);
}

/// Records the events it gets: flags, neighbours failing and restarting.
struct Watcher;

impl Task for Watcher {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, _epoch: Epoch) {
        if cx.task() == 0 {
            cx.flag(jobs::ALL, b"go");
            for t in cx.neighbours(jobs::ALL) {
                cx.fetch(jobs::NUM, t);
            }
        }
    }
    fn data_ready(&mut self, _: &mut Context<'_>, _: Received) {}
    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        cx.reply(jobs::NUM, request, &jobs::Num { task: cx.task(), epoch: cx.epoch() });
    }
    fn meta_ready(&mut self, cx: &mut Context<'_>, from: TaskId, link: LinkType, meta: &[u8]) {
        cx.record(format!("meta/{}/{}", cx.epoch(), cx.task()), format!("{from} {link} {}", String::from_utf8_lossy(meta)));
    }
    fn neighbour_failed(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId) {
        cx.record(format!("failed/{}/{task}", cx.task()), link.name);
    }
    fn neighbour_restarted(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId, term: u64) {
        assert!(term > 0, "a restarted neighbour has a term");
        cx.record(format!("restarted/{}/{task}", cx.task()), link.name);
    }
}

/// Task 0 of the watcher job: ends epochs when both answers are in.
struct WatchRoot {
    answers: usize,
}

impl Task for WatchRoot {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch) {
        self.answers = 0;
        Watcher.enter_epoch(cx, epoch);
    }
    fn data_ready(&mut self, cx: &mut Context<'_>, _: Received) {
        self.answers += 1;
        if self.answers == 2 {
            if cx.epoch() == 2 {
                cx.end_job();
            } else {
                cx.advance_epoch();
            }
        }
    }
    fn serve(&mut self, _: &mut Context<'_>, _: ServeRequest) {}
    fn neighbour_failed(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId) {
        Watcher.neighbour_failed(cx, link, task)
    }
    fn neighbour_restarted(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId, term: u64) {
        Watcher.neighbour_restarted(cx, link, task, term)
    }
}

#[test]
fn tasks_get_flags_and_neighbour_events() {
    let job = Job::new("events", 3, jobs::Ring { tasks: 3 }, |t| {
        if t == 0 {
            Box::new(WatchRoot { answers: 0 }) as Box<dyn Task>
        } else {
            Box::new(Watcher)
        }
    })
    .edge(jobs::NUM)
    .lease_ttl(Duration::from_millis(200));
    let result = LocalCluster::new(job)
        .spares(1)
        .faults(Faults::new(0).at(FaultPoint::EnterEpoch { task: 1, epoch: 1 }))
        .run()
        .unwrap();
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    assert_eq!(result.kills, 1);
    let text = |k: &str| result.records.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    // Task 1's node died entering epoch 1: task 0 sees it fail, then come
    // back on the spare, over the link it has task 1 on.
    assert_eq!(text("failed/0/1").as_deref(), Some("all"));
    assert_eq!(text("restarted/0/1").as_deref(), Some("all"));
    // Every flag of every epoch arrived (the one to the dying node is
    // delivered to its replacement, which enters the same epoch).
    for e in 0..=2 {
        for t in 1..=2 {
            assert_eq!(text(&format!("meta/{e}/{t}")).as_deref(), Some("0 root go"), "epoch {e} task {t}: {:?}", result.records.keys());
        }
    }
}
