//! Scale: many tasks in one process (P6 of docs/workloads.md).

use taskgraph::JobStatus;

/// P6: W1 with 1 023 tasks in one process used to fail (keep-alives
/// starved behind a thousand nodes' handlers; every node followed every
/// task). Ten epochs, exact values.
#[test]
fn w1_with_1023_tasks_in_one_process() {
    let tasks = 1023;
    let result = taskgraph::LocalCluster::new(taskgraph_examples::regression::job(tasks, 1, 10)).spares(2).run().expect("the job runs");
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    let sum: u64 = (1..tasks).sum();
    let values = taskgraph_examples::regression::root_values(&result);
    assert_eq!(values, (0..=10).map(|e| (e, (sum * e).to_string())).collect::<Vec<_>>());
    // Under load a node may still lose its lease and be replaced; the job
    // goes on. (It used to fail with "too many node restarts".)
    eprintln!("{} nodes started for {} tasks and 2 spares", result.nodes_started, tasks);
}

