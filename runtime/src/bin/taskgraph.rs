//! `taskgraph`: launch, watch and stop jobs that run on etcd.
//!
//! ```sh
//! taskgraph launch --etcd http://127.0.0.1:2379 --job w1 --tasks 15 --spares 2 -- ./regression --size 1000
//! taskgraph status --etcd http://127.0.0.1:2379 --job w1
//! taskgraph stop   --etcd http://127.0.0.1:2379 --job w1
//! ```

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use taskgraph::coord::{Coordinator, Etcd, EtcdOptions};
use taskgraph::launch::Launch;
use taskgraph::JobStatus;

#[derive(Parser, Debug)]
#[command(name = "taskgraph", version, about = "Launch, watch and stop taskgraph jobs on etcd")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a job as node processes of PROGRAM on this machine, restarting
    /// any that dies, until the job ends. Each node runs
    /// `PROGRAM ARGS --etcd E --job J --node-id N [--task T]`.
    Launch {
        /// etcd endpoints, comma-separated.
        #[arg(long)]
        etcd: String,
        /// The job's name.
        #[arg(long)]
        job: String,
        /// How many tasks the job has (one node process each).
        #[arg(long)]
        tasks: u64,
        /// Spare node processes.
        #[arg(long, default_value_t = 0)]
        spares: usize,
        /// Fail the job if it has not ended after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// The application binary and its arguments.
        #[arg(last = true, required = true)]
        program: Vec<OsString>,
    },
    /// Show a job: its state, epoch, which node is each task's primary,
    /// and the spare nodes.
    Status {
        /// etcd endpoints, comma-separated.
        #[arg(long)]
        etcd: String,
        /// The job's name.
        #[arg(long)]
        job: String,
    },
    /// End a running job (its nodes get `exit` and stop).
    Stop {
        /// etcd endpoints, comma-separated.
        #[arg(long)]
        etcd: String,
        /// The job's name.
        #[arg(long)]
        job: String,
        /// Why, recorded as the job's failure.
        #[arg(long, default_value = "stopped by the operator")]
        reason: String,
    },
}

fn connect(rt: &tokio::runtime::Runtime, etcd: &str) -> Result<Arc<dyn Coordinator>, String> {
    let endpoints: Vec<String> = etcd.split(',').map(str::to_owned).collect();
    rt.block_on(Etcd::connect(&endpoints, EtcdOptions::default()))
        .map(|c| Arc::new(c) as Arc<dyn Coordinator>)
        .map_err(|e| format!("cannot reach etcd at {etcd}: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Cmd::Launch { etcd, job, tasks, spares, timeout, program } => {
            launch(&rt, &etcd, &job, tasks, spares, Duration::from_secs(timeout), program)
        }
        Cmd::Status { etcd, job } => connect(&rt, &etcd).and_then(|c| status(&rt, &*c, &job)),
        Cmd::Stop { etcd, job, reason } => connect(&rt, &etcd).and_then(|c| stop(&rt, &*c, &job, &reason)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn launch(
    rt: &tokio::runtime::Runtime,
    etcd: &str,
    job: &str,
    tasks: u64,
    spares: usize,
    timeout: Duration,
    mut program: Vec<OsString>,
) -> Result<ExitCode, String> {
    let coord = connect(rt, etcd)?;
    let binary = program.remove(0);
    let launch = Launch::new(binary, program, etcd, job, tasks).spares(spares).timeout(timeout);
    let report = launch.run(coord).map_err(|e| e.to_string())?;
    eprintln!("job {job}: {:?} ({} node processes started, {} died and were replaced)", report.status, report.started, report.died);
    Ok(if report.status == JobStatus::Done { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn status(rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, job: &str) -> Result<ExitCode, String> {
    let root = format!("/taskgraph/{job}/");
    let (kvs, _) = rt.block_on(coord.get_prefix(&root)).map_err(|e| e.to_string())?;
    if kvs.is_empty() {
        return Err(format!("no job `{job}` in this etcd"));
    }
    let text = |key: &str| {
        kvs.iter().find(|kv| kv.key == format!("{root}{key}")).map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    };
    println!("job {job}: {}, epoch {}", text("status").unwrap_or_else(|| "?".into()), text("epoch").unwrap_or_else(|| "?".into()));
    let mut primaries = Vec::new();
    let mut nodes = Vec::new();
    for kv in &kvs {
        let rest = &kv.key[root.len()..];
        if let Some(task) = rest.strip_prefix("tasks/").and_then(|r| r.strip_suffix("/primary")) {
            primaries.push((task.parse::<u64>().unwrap_or(u64::MAX), String::from_utf8_lossy(&kv.value).into_owned(), kv.create_revision));
        } else if let Some(id) = rest.strip_prefix("nodes/") {
            nodes.push((id.parse::<u64>().unwrap_or(u64::MAX), String::from_utf8_lossy(&kv.value).into_owned()));
        }
    }
    primaries.sort();
    nodes.sort();
    println!("{:>6}  {:>6}  {:>8}  address", "task", "node", "term");
    let field = |v: &str, name: &str| {
        v.split_whitespace().find_map(|p| p.strip_prefix(name).map(str::to_owned)).unwrap_or_else(|| "?".into())
    };
    let mut busy = Vec::new();
    for (task, value, term) in &primaries {
        let node = field(value, "node=");
        println!("{task:>6}  {node:>6}  {term:>8}  {}", field(value, "addr="));
        busy.push(node);
    }
    let spares: Vec<String> =
        nodes.iter().filter(|(id, _)| !busy.contains(&id.to_string())).map(|(id, v)| format!("{id} ({})", field(v, "addr="))).collect();
    println!("spares: {}", if spares.is_empty() { "none".to_owned() } else { spares.join(", ") });
    Ok(ExitCode::SUCCESS)
}

fn stop(rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, job: &str, reason: &str) -> Result<ExitCode, String> {
    let key = format!("/taskgraph/{job}/status");
    let result = rt
        .block_on(coord.compare_and_swap(
            &key,
            taskgraph::coord::Expect::Value(b"running".to_vec()),
            format!("failed: {reason}").as_bytes(),
            None,
        ))
        .map_err(|e| e.to_string())?;
    match result {
        Ok(_) => {
            println!("job {job} stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(Some(kv)) => Err(format!("job {job} is not running: {}", String::from_utf8_lossy(&kv.value))),
        Err(None) => Err(format!("no job `{job}` in this etcd")),
    }
}
