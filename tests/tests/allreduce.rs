//! W4, a topology that changes every epoch: the recursive-doubling
//! all-reduce of `examples/src/allreduce.rs` gives the values of the
//! sequential computation, without failures and with nodes killed at the
//! points where a replaced task must restore its lost value from its
//! previous partner; and its picture changes with the epoch.

use std::time::Duration;

use taskgraph::prelude::*;
use taskgraph_examples::allreduce::{self, AllReduce, Hypercube, Kill};

/// Runs the job of `tasks` tasks for epochs `0..=last_epoch` with `kills`
/// (each `(kind, task, epoch)`), checks that it succeeds with the
/// sequential values and that every kill happened.
fn run(tasks: u64, last_epoch: Epoch, kills: &[(Kill, TaskId, Epoch)]) -> JobResult {
    let mut faults = Faults::new(0);
    for &(kind, task, epoch) in kills {
        faults = faults.at(allreduce::fault_point(tasks, kind, task, epoch));
    }
    let result = LocalCluster::new(allreduce::job(tasks, last_epoch))
        .spares(2)
        .faults(faults)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("the job runs");
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    assert_eq!(allreduce::values(&result), allreduce::simulate(tasks, last_epoch));
    assert_eq!(result.kills, kills.len(), "every fault point fires once: {kills:?}");
    result
}

/// `(epoch, task)` of each restore, with the previous partner it came
/// from checked.
fn restored(tasks: u64, result: &JobResult) -> Vec<(Epoch, TaskId)> {
    let cube = Hypercube::new(tasks);
    allreduce::restorations(result)
        .into_iter()
        .map(|(e, t, from)| {
            assert!(e > 0, "task {t} restored at epoch 0, which starts from known values");
            assert_eq!(from, cube.partner_of(t, e - 1), "task {t} restored at epoch {e} from {from}, not its previous partner");
            (e, t)
        })
        .collect()
}

#[test]
fn the_sequential_computation_sums_in_log2_tasks_epochs() {
    let sim = allreduce::simulate(8, 4);
    assert_eq!(sim[0], (0, vec![3, 3, 7, 7, 11, 11, 15, 15]));
    assert_eq!(sim[1], (1, vec![10, 10, 10, 10, 26, 26, 26, 26]));
    // After log2(8) = 3 epochs every task holds 1 + ... + 8; then the sum
    // doubles each epoch.
    assert_eq!(sim[2], (2, vec![36; 8]));
    assert_eq!(sim[3], (3, vec![72; 8]));
    assert_eq!(allreduce::simulate(2, 1), vec![(0, vec![3, 3]), (1, vec![6, 6])]);
}

#[test]
fn without_failures_the_values_are_the_sequential_ones() {
    for (tasks, last_epoch) in [(2, 3), (8, 5), (16, 5)] {
        let r = run(tasks, last_epoch, &[]);
        assert_eq!(restored(tasks, &r), vec![], "{tasks} tasks: nobody lost a value");
    }
}

#[test]
fn a_peer_dying_as_it_enters_an_epoch_restores_from_its_previous_partner() {
    // Epoch 2: task 5's previous partner is 5 ^ 2 = 7.
    let r = run(8, 5, &[(Kill::Enter, 5, 2)]);
    assert_eq!(restored(8, &r), vec![(2, 5)]);
}

#[test]
fn a_peer_dying_before_serving_its_value_answers_its_partner_once_restored() {
    // The partner's fetch moves to the replacement, which may not have its
    // value yet: then its serve waits for the restore (`Serve::later`) and
    // the restore answers. Task 6 at epoch 1 (partner 4,
    // previous partner 7), then task 3 at epoch 4 (partner 1 = 3 ^ 2,
    // previous partner 2 = 3 ^ 1): far enough apart to be separate losses.
    let r = run(8, 5, &[(Kill::BeforeServe, 6, 1), (Kill::BeforeServe, 3, 4)]);
    assert_eq!(restored(8, &r), vec![(1, 6), (4, 3)]);
}

#[test]
fn a_peer_dying_after_serving_its_value_or_on_receiving_its_partners() {
    // After serving, its partner has its value; it still must get its
    // own back. It may die after answering the barrier too, and its
    // replacement then enters the next epoch: either way it restores once.
    let r = run(8, 6, &[(Kill::AfterServe, 2, 1), (Kill::Received, 7, 3), (Kill::AfterServe, 4, 5)]);
    let got = restored(8, &r);
    assert_eq!(got.len(), 3, "{got:?}");
    for (e, t) in [(1, 2), (3, 7), (5, 4)] {
        assert!(got.contains(&(e, t)) || got.contains(&(e + 1, t)), "task {t} killed at epoch {e}: restores {got:?}");
    }
}

#[test]
fn the_leader_dying_redoes_the_barrier_and_restores_its_value() {
    // Entering epoch 3, and on receiving its partner's value at epoch 1
    // (after some peers may already have answered the barrier: the
    // runtime answers the replacement's fetches with the kept replies).
    let r = run(8, 4, &[(Kill::Received, 0, 1), (Kill::Enter, 0, 3)]);
    assert_eq!(restored(8, &r), vec![(1, 0), (3, 0)]);
}

#[test]
fn partners_of_the_current_epoch_may_die_together() {
    // Tasks 1 and 5 exchange at epoch 2 (1 ^ 4); their previous partners
    // are 3 and 7, alive: both restore, then add each other's value.
    let r = run(8, 3, &[(Kill::Enter, 1, 2), (Kill::Enter, 5, 2)]);
    assert_eq!(restored(8, &r), vec![(2, 1), (2, 5)]);
}

#[test]
fn spaced_random_kills_are_survived() {
    for seed in [1, 2] {
        let kills = allreduce::spaced_faults(8, 9, 4, seed);
        assert_eq!(kills.len(), 4, "seed {seed}: {kills:?}");
        for w in kills.windows(2) {
            assert!(w[1].2 >= w[0].2 + 2, "seed {seed}: kills too close: {kills:?}");
        }
        run(8, 9, &kills);
    }
}

#[test]
fn the_picture_changes_with_the_epoch() {
    let cube = Hypercube::new(4);
    let at = |e| AllReduce::graph(&cube, 4, e).to_mermaid();
    let (e0, e1, e2) = (at(0), at(1), at(2));
    assert_ne!(e0, e1);
    // Two dimensions: epoch 2 pairs tasks as epoch 0 did, but now the
    // previous partners (those of epoch 1) are there to restore from.
    assert_ne!(e0, e2);
    let want1 = "\
%% AllReduce at epoch 1
flowchart TD
    t0[\"0: Leader\"]
    t1[\"1: Peer\"]
    t2[\"2: Peer\"]
    t3[\"3: Peer\"]
    t2 -->|value| t0
    t1 -->|restore| t0
    t1 -->|done| t0
    t2 -->|done| t0
    t3 -->|done| t0
    t3 -->|value| t1
    t0 -->|restore| t1
    t0 -->|value| t2
    t3 -->|restore| t2
    t1 -->|value| t3
    t2 -->|restore| t3
";
    assert_eq!(e1, want1);
    // Epoch 0: partners differ in bit 0, and nothing to restore from.
    assert!(e0.contains("t1 -->|value| t0") && e0.contains("t0 -->|value| t1"), "{e0}");
    assert!(!e0.contains("restore"), "{e0}");
    // Epoch 2: the partners of epoch 0 again, restoring from those of 1.
    assert!(e2.contains("t1 -->|value| t0") && e2.contains("t2 -->|restore| t0"), "{e2}");
    let dot = AllReduce::graph(&cube, 4, 1).to_dot();
    assert!(dot.contains("    t2 -> t0 [label=\"value\"];\n"), "{dot}");
}
