//! Hot standby, in one process: tasks held by a primary and backups
//! (`Job::replicas`), primaries killed at exact points. A backup takes its
//! task over with its state (nothing is recomputed), replies released
//! before the failure are served again byte for byte, and nothing is
//! delivered twice; when every node of a task is gone, a spare takes over
//! and recomputes, and the result is still exact.

use std::collections::BTreeMap;
use std::time::Duration;

use taskgraph::prelude::*;
use taskgraph::node::TransportFaults;
use taskgraph_tests::jobs;


fn text(result: &JobResult, key: &str) -> String {
    String::from_utf8_lossy(result.records.get(key).unwrap_or_else(|| panic!("no record {key}: {result:?}"))).into_owned()
}

/// Every task's total is exact; returns what each recomputed.
fn check_totals(result: &JobResult, tasks: u64, last_epoch: Epoch) -> Vec<u64> {
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    let want = jobs::accumulator_totals(tasks, last_epoch);
    for t in 0..tasks {
        assert_eq!(text(result, &format!("total/{t}")), want[t as usize].to_string(), "task {t}'s total: {:?}", records(result));
    }
    (0..tasks).map(|t| text(result, &format!("recomputed/{t}")).parse().unwrap()).collect()
}

fn records(result: &JobResult) -> Vec<(String, String)> {
    result.records.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect()
}

fn takeovers(result: &JobResult) -> BTreeMap<String, String> {
    result
        .records
        .iter()
        .filter(|(k, _)| k.starts_with("takeover/"))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[test]
fn with_backups_and_no_failure_the_totals_are_exact() {
    let result = LocalCluster::new(jobs::accumulator_job("standby-calm", 5, 6, 2)).timeout(Duration::from_secs(60)).run().unwrap();
    assert_eq!(check_totals(&result, 5, 6), vec![0; 5]);
    assert!(takeovers(&result).is_empty(), "{:?}", takeovers(&result));
}

#[test]
fn killed_primaries_are_taken_over_by_their_backups_with_their_state() {
    let plan = Faults::new(1)
        .at(FaultPoint::EnterEpoch { task: 2, epoch: 3 })
        .at(FaultPoint::DataReceived { task: 0, epoch: 5, from: 1, edge: jobs::NUM.id })
        .at(FaultPoint::AfterServe { task: 3, epoch: 7, to: 2, edge: jobs::NUM.id })
        .at(FaultPoint::BeforeServe { task: 4, epoch: 8, to: 0, edge: jobs::DONE.id });
    let result = LocalCluster::new(jobs::accumulator_job("standby-kills", 5, 10, 2))
        .spares(2)
        .faults(plan)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert_eq!(result.kills, 4, "{result:?}");
    // No task recomputed an epoch: each backup had the state.
    assert_eq!(check_totals(&result, 5, 10), vec![0; 5]);
    let t = takeovers(&result);
    assert_eq!(t.len(), 4, "one takeover per kill, each by a backup with the state: {t:?}");
    for task in [2, 0, 3, 4] {
        assert!(t.keys().any(|k| k.starts_with(&format!("takeover/{task}/"))), "task {task} was taken over: {t:?}");
    }
}

#[test]
fn the_same_task_killed_again_is_taken_over_by_the_spare_that_became_its_backup() {
    // The first kill promotes the backup; a spare becomes the new backup
    // (from a snapshot); the second kill promotes it in turn.
    let plan = Faults::new(1)
        .at(FaultPoint::EnterEpoch { task: 1, epoch: 2 })
        .at(FaultPoint::EnterEpoch { task: 1, epoch: 6 });
    let result = LocalCluster::new(jobs::accumulator_job("standby-twice", 4, 8, 2))
        .spares(2)
        .faults(plan)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert_eq!(result.kills, 2);
    assert_eq!(check_totals(&result, 4, 8), vec![0; 4]);
    assert_eq!(takeovers(&result).len(), 2, "{:?}", takeovers(&result));
}

#[test]
fn without_backups_a_spare_recomputes_and_the_totals_are_still_exact() {
    let plan = Faults::new(1).at(FaultPoint::EnterEpoch { task: 2, epoch: 4 });
    let result = LocalCluster::new(jobs::accumulator_job("standby-none", 5, 6, 1))
        .spares(1)
        .faults(plan)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert_eq!(result.kills, 1);
    // The spare started from nothing at epoch 4: it redid epochs 0..4.
    assert_eq!(check_totals(&result, 5, 6), vec![0, 0, 4, 0, 0]);
    assert!(takeovers(&result).is_empty());
}

#[test]
fn when_every_replica_of_a_task_dies_a_spare_recomputes() {
    // Task 2's backup dies as it applies the primary's epoch-3 update; the
    // primary dies just as it drops that backup: no node holds the task's
    // state any more. A spare (or a new backup that never caught up) takes
    // the task over from nothing and recomputes epochs 0..3.
    let plan = Faults::new(1)
        .at(FaultPoint::BackupApplied { task: 2, epoch: 3 })
        .at(FaultPoint::BackupLost { task: 2, epoch: 3 });
    let result = LocalCluster::new(jobs::accumulator_job("standby-both", 5, 6, 2))
        .spares(2)
        .faults(plan)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert_eq!(result.kills, 2, "{result:?}");
    assert_eq!(check_totals(&result, 5, 6), vec![0, 0, 3, 0, 0]);
}

#[test]
fn exactly_once_with_backups_duplicates_cuts_and_deaths() {
    let faults = TransportFaults { duplicate_every: 5, disconnect_every: 7 };
    let plan = Faults::new(9)
        .random(FaultKind::DataReceived, 0.02, 0..5, Some(jobs::NUM.id))
        .random(FaultKind::AfterServe, 0.02, 0..5, Some(jobs::NUM.id));
    let result = LocalCluster::new(jobs::counter_job("standby-counter", 5, 10, 5).replicas(2))
        .spares(2)
        .transport_faults(faults)
        .faults(plan)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    let expected: Vec<(String, Vec<u8>)> = (0..=5).map(|e| (format!("epoch/{e:04}"), b"10".to_vec())).collect();
    assert_eq!(result.records.clone().into_iter().collect::<Vec<_>>(), expected);
    assert!(result.kills >= 1, "the plan killed nobody");
}

#[test]
fn w1_with_hot_backups_keeps_every_tasks_progress_through_kills_of_primaries() {
    use taskgraph_examples::regression;
    let plan = Faults::new(1)
        .at(FaultPoint::EnterEpoch { task: 0, epoch: 2 })
        .at(FaultPoint::DataReceived { task: 3, epoch: 4, from: 1, edge: regression::Regression::PARAM.id })
        .at(FaultPoint::BeforeServe { task: 5, epoch: 6, to: 2, edge: regression::Regression::GRAD.id })
        .at(FaultPoint::AfterServe { task: 0, epoch: 8, to: 1, edge: regression::Regression::PARAM.id });
    let job = regression::job(15, 1, 10).replicas(2).named("standby-w1");
    let result = LocalCluster::new(job).spares(2).faults(plan).timeout(Duration::from_secs(60)).run().unwrap();
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    assert_eq!(result.kills, 4);
    let want: Vec<(Epoch, String)> = (0..=10).map(|e| (e, (105 * e).to_string())).collect();
    assert_eq!(regression::root_values(&result), want);
    // Every task has every epoch in its progress: the backups that took
    // over had it. Only an epoch in progress at a kill may have been
    // computed twice.
    let computed = regression::computed(&result);
    assert_eq!(computed.len(), 15);
    let mut again = 0;
    for (t, counts) in &computed {
        assert_eq!(counts.len(), 11, "task {t}: {counts:?}");
        assert!(counts.iter().all(|&n| n >= 1), "task {t} lost progress: {counts:?}");
        again += counts.iter().map(|&n| n - 1).sum::<u32>();
    }
    assert!(again <= 4, "{again} epochs computed again: {computed:?}");
    assert_eq!(regression::takeovers(&result).len(), 4, "{:?}", regression::takeovers(&result));
}

/// Two roles, one replicated: only its tasks get hot backups.
mod mixed {
    use super::*;

    #[topology(helpers <-> keeper)]
    #[derive(Clone, Copy, Debug)]
    pub struct Star {
        pub tasks: u64,
    }

    impl StarLinks for Star {
        fn helpers(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
            if task == 0 {
                (1..self.tasks).collect()
            } else {
                vec![]
            }
        }
        fn keeper(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
            if task == 0 {
                vec![]
            } else {
                vec![0]
            }
        }
    }

    #[derive(Message, Debug, Clone, PartialEq)]
    pub struct Tick {
        #[capnp(ordinal = 0)]
        pub value: u64,
    }

    #[derive(Message, Debug, Clone, PartialEq, Default)]
    pub struct Count {
        #[capnp(ordinal = 0)]
        pub total: u64,
        #[capnp(ordinal = 1)]
        pub next: u64,
    }

    taskgraph! {
        graph Mixed(topology = Star) {
            messages Tick, Count;
            role Keeper = 0 replicated(Count);
            role Helper = 1..;
            Keeper fetches Tick over helpers from Helper;
        }
    }

    /// Adds its helpers' ticks every epoch (once per epoch, whoever
    /// computes it), keeping the sum replicated.
    #[task(Mixed::Keeper)]
    pub struct Keeper {
        count: Count,
        pending: usize,
        last_epoch: Epoch,
    }

    impl KeeperHandlers for Keeper {
        fn enter_epoch(&mut self, cx: &mut KeeperCx<'_>, epoch: Epoch) {
            assert_eq!(self.count.next, epoch, "the keeper's state is at epoch {}", self.count.next);
            self.pending = cx.fetch_tick();
        }
        fn on_tick(&mut self, cx: &mut KeeperCx<'_>, _from: TaskId, tick: Fetched<Tick>) {
            self.count.total += tick.value;
            self.pending -= 1;
            if self.pending == 0 {
                self.count.next = cx.epoch() + 1;
                cx.replicate(&self.count);
                let e = cx.epoch();
                cx.record(format!("total/{e:02}"), self.count.total.to_string());
                if e >= self.last_epoch {
                    cx.end_job();
                } else {
                    cx.advance_epoch();
                }
            }
        }
        fn became_primary(&mut self, _: &mut KeeperCx<'_>, _term: u64) {}
        fn became_backup(&mut self, _: &mut KeeperCx<'_>) {}
        fn apply_update(&mut self, _: &mut KeeperCx<'_>, update: Count) {
            self.count = update;
        }
        fn snapshot(&self) -> Option<Count> {
            Some(self.count.clone())
        }
    }

    #[task(Mixed::Helper)]
    pub struct Helper;

    impl HelperHandlers for Helper {
        fn enter_epoch(&mut self, _: &mut HelperCx<'_>, _: Epoch) {}
        fn serve_tick(&mut self, cx: &mut HelperCx<'_>, _to: TaskId) -> Serve<Tick> {
            Serve::now(&Tick { value: cx.task() * 10 + cx.epoch() })
        }
    }

    fn job(last_epoch: Epoch) -> Job {
        Mixed::job(
            Star { tasks: 4 },
            4,
            MixedTasks { keeper: move |_| Keeper { count: Count::default(), pending: 0, last_epoch }, helper: |_| Helper },
        )
        .replicas(2)
        .lease_ttl(Duration::from_millis(300))
    }

    #[test]
    fn only_the_replicated_role_gets_backups_and_its_state_survives_its_primary() {
        let job = job(6).named("standby-mixed");
        assert_eq!((0..4).map(|t| job.replicas_of(t)).collect::<Vec<_>>(), vec![2, 1, 1, 1]);
        let plan = Faults::new(1)
            .at(FaultPoint::DataReceived { task: 0, epoch: 3, from: 2, edge: Mixed::TICK.id })
            .at(FaultPoint::BeforeServe { task: 2, epoch: 4, to: 0, edge: Mixed::TICK.id });
        let result = LocalCluster::new(job).spares(1).faults(plan).timeout(Duration::from_secs(60)).run().unwrap();
        assert_eq!(result.status, JobStatus::Done, "{result:?}");
        assert_eq!(result.kills, 2);
        // 2 nodes for the keeper, 1 for each helper, 1 spare, and a
        // replacement per kill.
        assert_eq!(result.nodes_started, 2 + 3 + 1 + 2);
        // The keeper's total is exact: its backup had the sum (a fresh
        // keeper would have failed its state assertion at entry).
        let mut total = 0;
        for e in 0..=6u64 {
            total += (1..4).map(|t| t * 10 + e).sum::<u64>();
            assert_eq!(text(&result, &format!("total/{e:02}")), total.to_string(), "epoch {e}");
        }
    }
}
