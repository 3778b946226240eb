//! `scripts/chaos`: W1 as 17 node processes on a fresh etcd, with random
//! node processes SIGKILLed while it runs. Prints one line per kill, then
//! `chaos: <n> kills, result ok` (exit 0) or what went wrong (exit 1).
//!
//! `chaos [--kills N] [--seed S] [--replicas R]` (defaults: 20 kills, seed
//! 1, one node per task). With `--replicas 2` every task has a hot backup
//! (32 node processes): the victims are primaries, and the report gives
//! the failover times (SIGKILL to the task's new primary) and checks that
//! no task lost its progress.

use std::process::ExitCode;

fn value(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kills, seed) = (value(&args, "--kills", 20) as usize, value(&args, "--seed", 1));
    let replicas = value(&args, "--replicas", 1) as u32;
    let node = std::env::current_exe().expect("own path").with_file_name("w1-node");
    if !node.exists() {
        eprintln!("chaos: {} is missing: build it with `cargo build -p taskgraph-tests --bins`", node.display());
        return ExitCode::FAILURE;
    }
    let report = taskgraph_tests::chaos::run(&node, kills, seed, replicas, |line| println!("{line}"));
    let last = 2 * kills as u64 + 10;
    let mut problems = Vec::new();
    if report.status != taskgraph::JobStatus::Done {
        problems.push(format!("the job ended {:?}", report.status));
    }
    if report.kills < kills {
        problems.push(format!("only {} of {kills} kills happened", report.kills));
    }
    if !report.values_ok(last) {
        problems.push(format!("wrong root values: {:?}", report.values));
    }
    if !report.leftovers.is_empty() {
        problems.push(format!("processes left running: {:?}", report.leftovers));
    }
    if replicas > 1 && !report.progress_complete(last) {
        problems.push(format!("a task lost its progress: {:?}", report.computed));
    }
    if let Some((median, worst)) = report.failover_stats() {
        println!(
            "failover (SIGKILL to the task's new primary), {} kills: median {:.1} ms, worst {:.1} ms; {} takeovers by hot backups, {} epochs computed again",
            report.failovers.len(),
            median.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3,
            report.takeovers,
            report.recomputations()
        );
    }
    if problems.is_empty() {
        println!("chaos: {} kills ({} of the root's node), {} node processes, result ok", report.kills, report.root_kills, report.started);
        ExitCode::SUCCESS
    } else {
        println!("chaos: {} kills, result FAILED: {}", report.kills, problems.join("; "));
        ExitCode::FAILURE
    }
}
