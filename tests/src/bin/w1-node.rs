//! One node process of the W1 regression on etcd, for the multi-process
//! tests and `scripts/chaos`: `w1-node [--size S] [--epochs E] [--tasks N] [--replicas R]
//! [--linger-after-end MS] [--exit-after-end STATUS] --etcd <endpoints> --job <name> --node-id <id> [--task <t>]`.
//!
//! Once the job has ended, it waits `--linger-after-end` milliseconds (0)
//! and exits with `--exit-after-end` (0): a node that fails after the end,
//! for the supervision tests.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use taskgraph::launch::NodeArgs;

fn value(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let node = match NodeArgs::parse(&args) {
        Ok(Some(node)) => node,
        Ok(None) => {
            eprintln!("usage: w1-node [--size S] [--epochs E] [--tasks N] [--replicas R] [--linger-after-end MS] [--exit-after-end STATUS] --etcd <endpoints> --job <name> --node-id <id> [--task <t>]");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("w1-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (size, epochs, tasks) = (value(&args, "--size", 1) as usize, value(&args, "--epochs", 10), value(&args, "--tasks", 15));
    let replicas = value(&args, "--replicas", 1) as u32;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = taskgraph_examples::regression::run_node_process(&node, tasks, size, epochs, replicas);
    match &result {
        Ok(taskgraph::NodeExit::JobEnded(_)) => {}
        Ok(other) => eprintln!("w1-node {}: stopped: {other:?}", node.node_id),
        Err(e) => eprintln!("w1-node {}: {e}", node.node_id),
    }
    if let Ok(taskgraph::NodeExit::JobEnded(_)) = result {
        std::thread::sleep(std::time::Duration::from_millis(value(&args, "--linger-after-end", 0)));
        let status = value(&args, "--exit-after-end", 0);
        if status != 0 {
            return ExitCode::from(status as u8);
        }
    }
    // 0, or why it stopped: see taskgraph::launch's exit statuses.
    taskgraph::launch::exit_code(&result)
}
