//! `taskgraph`: launch, watch and stop jobs that run on etcd.
//!
//! ```sh
//! taskgraph launch --etcd http://127.0.0.1:2379 --job w1 --tasks 15 --spares 2 -- ./regression --size 1000
//! taskgraph status --etcd http://127.0.0.1:2379 --job w1
//! taskgraph stop   --etcd http://127.0.0.1:2379 --job w1
//! ```

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use taskgraph::coord::{Coordinator, Etcd, EtcdOptions};
use taskgraph::launch::{Launch, Orphans, EXIT_COORDINATOR_LOST};
use taskgraph::keys::{Holder, Keys};
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
    ///
    /// Refuses a job of this name that is running (has live nodes): stop
    /// it first, or add nodes to it with --join. Exits 0 when the job is
    /// done, 69 when it gave up on an unreachable etcd, 1 otherwise.
    Launch {
        /// etcd endpoints, comma-separated.
        #[arg(long)]
        etcd: String,
        /// The job's name.
        #[arg(long)]
        job: String,
        /// How many tasks the job has (one node process each).
        #[arg(long, required_unless_present = "join")]
        tasks: Option<u64>,
        /// Spare node processes.
        #[arg(long, default_value_t = 0)]
        spares: usize,
        /// Add the --spares node processes to the running job JOB (its
        /// keys untouched; node ids above its live nodes') instead of
        /// starting it.
        #[arg(long)]
        join: bool,
        /// Fail the job if it has not ended after this many seconds
        /// (default: no limit; see --stall-timeout).
        #[arg(long)]
        timeout: Option<u64>,
        /// Fail the job when it goes this many seconds without a new epoch
        /// (0: never).
        #[arg(long, default_value_t = 180)]
        stall_timeout: u64,
        /// Give up (kill the nodes, exit 69) when etcd has been
        /// unreachable for this many seconds.
        #[arg(long, default_value_t = 60)]
        coordinator_patience: u64,
        /// What becomes of the node processes if this launcher is killed:
        /// `kill` (they die with it; Linux) or `keep` (they carry on,
        /// unsupervised, until the job ends or `taskgraph stop`).
        #[arg(long, default_value = "kill", value_parser = |s: &str| s.parse::<Orphans>())]
        orphans: Orphans,
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
        Cmd::Launch { etcd, job, tasks, spares, join, timeout, stall_timeout, coordinator_patience, orphans, program } => {
            let options = LaunchOptions {
                tasks: tasks.unwrap_or(0),
                spares,
                join,
                timeout: timeout.map(Duration::from_secs),
                stall: (stall_timeout > 0).then(|| Duration::from_secs(stall_timeout)),
                patience: Duration::from_secs(coordinator_patience),
                orphans,
            };
            launch(&rt, &etcd, &job, options, program)
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

struct LaunchOptions {
    tasks: u64,
    spares: usize,
    join: bool,
    timeout: Option<Duration>,
    stall: Option<Duration>,
    patience: Duration,
    orphans: Orphans,
}

fn launch(rt: &tokio::runtime::Runtime, etcd: &str, job: &str, o: LaunchOptions, mut program: Vec<OsString>) -> Result<ExitCode, String> {
    let coord = connect(rt, etcd)?;
    let binary = program.remove(0);
    let mut launch = Launch::new(binary, program, etcd, job, o.tasks)
        .spares(o.spares)
        .join(o.join)
        .stall_timeout(o.stall)
        .coordinator_patience(o.patience)
        .orphans(o.orphans);
    if let Some(t) = o.timeout {
        launch = launch.timeout(t);
    }
    let report = launch.run(coord).map_err(|e| e.to_string())?;
    eprintln!("job {job}: {:?} ({} node processes started, {} died while the job ran)", report.status, report.started, report.died);
    Ok(match report.status {
        JobStatus::Done => ExitCode::SUCCESS,
        _ if report.coordinator_lost => ExitCode::from(EXIT_COORDINATOR_LOST as u8),
        _ => ExitCode::FAILURE,
    })
}

/// Standard output, locked; a reader that went away (`taskgraph status |
/// head -3`) ends the command quietly instead of panicking as `println!`
/// does.
struct Out(std::io::StdoutLock<'static>);

/// What a closed standard output means for a command: nothing to report.
struct Closed;

impl Out {
    fn new() -> Self {
        Out(std::io::stdout().lock())
    }
    fn line(&mut self, args: std::fmt::Arguments<'_>) -> Result<(), Closed> {
        match self.0.write_fmt(args).and_then(|()| self.0.write_all(b"\n")) {
            Ok(()) => Ok(()),
            // Any other write error: nowhere to report it either.
            Err(_) => Err(Closed),
        }
    }
    fn done(mut self) -> Result<(), Closed> {
        self.0.flush().map_err(|_| Closed)
    }
}

fn status(rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, job: &str) -> Result<ExitCode, String> {
    let lines = status_lines(rt, coord, job)?;
    let mut out = Out::new();
    // A reader that stopped reading (`| head -3`) wanted no more.
    let _ = lines.iter().try_for_each(|line| out.line(format_args!("{line}"))).and_then(|()| out.done());
    Ok(ExitCode::SUCCESS)
}

fn status_lines(rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, job: &str) -> Result<Vec<String>, String> {
    let keys = Keys::new(job);
    let (kvs, _) = rt.block_on(coord.get_prefix(keys.root())).map_err(|e| e.to_string())?;
    if kvs.is_empty() {
        return Err(format!("no job `{job}` in this etcd"));
    }
    let value = |key: &str| kvs.iter().find(|kv| kv.key == key).map(|kv| kv.value.clone());
    let status = value(&keys.status()).map_or_else(|| "?".into(), |v| String::from_utf8_lossy(&v).into_owned());
    let epoch = value(&keys.epoch()).map_or_else(|| "?".into(), |v| String::from_utf8_lossy(&v).into_owned());
    let mut lines = vec![format!("job {job}: {status}, epoch {epoch}")];
    let mut primaries = Vec::new();
    let mut nodes = Vec::new();
    // Each task's backups: (task, holder).
    let mut backups: Vec<(u64, Holder)> = Vec::new();
    for kv in &kvs {
        if let Some(task) = keys.primary_task(&kv.key) {
            primaries.push((task, Holder::parse(&kv.value), kv.create_revision));
        } else if let Some((task, _slot)) = keys.backup_slot(&kv.key) {
            backups.extend(Holder::parse(&kv.value).map(|h| (task, h)));
        } else if kv.key.starts_with(&keys.nodes()) {
            let addr = String::from_utf8_lossy(&kv.value).split_whitespace().find_map(|p| p.strip_prefix("addr=").map(str::to_owned));
            nodes.push((keys.node_id(&kv.key).unwrap_or(u64::MAX), addr.unwrap_or_else(|| "?".into())));
        }
    }
    primaries.sort_by_key(|p| p.0);
    nodes.sort();
    lines.push(format!("{:>6}  {:>6}  {:>8}  address", "task", "node", "term"));
    let mut busy: Vec<u64> = backups.iter().map(|(_, h)| h.node).collect();
    for (task, holder, term) in &primaries {
        let (node, addr) = holder.as_ref().map_or(("?".to_owned(), "?".to_owned()), |h| (h.node.to_string(), h.addr.to_string()));
        let mut line = format!("{task:>6}  {node:>6}  {term:>8}  {addr}");
        let of_task: Vec<String> = backups
            .iter()
            .filter(|(t, h)| t == task && holder.as_ref().is_none_or(|p| p.node != h.node))
            .map(|(_, h)| format!("{} ({})", h.node, if h.ready { "caught up" } else { "catching up" }))
            .collect();
        if !of_task.is_empty() {
            line.push_str(&format!("  backups: {}", of_task.join(", ")));
        }
        lines.push(line);
        busy.extend(holder.as_ref().map(|h| h.node));
    }
    let spares: Vec<String> = nodes.iter().filter(|(id, _)| !busy.contains(id)).map(|(id, addr)| format!("{id} ({addr})")).collect();
    lines.push(format!("spares: {}", if spares.is_empty() { "none".to_owned() } else { spares.join(", ") }));
    Ok(lines)
}

fn stop(rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, job: &str, reason: &str) -> Result<ExitCode, String> {
    let key = Keys::new(job).status();
    let result = rt
        .block_on(coord.compare_and_swap(
            &key,
            taskgraph::coord::Expect::Value(JobStatus::Running.encode()),
            &JobStatus::Failed(reason.to_owned()).encode(),
            None,
        ))
        .map_err(|e| e.to_string())?;
    match result {
        Ok(_) => {
            let mut out = Out::new();
            let _ = out.line(format_args!("job {job} stopped")).and_then(|()| out.done());
            Ok(ExitCode::SUCCESS)
        }
        Err(Some(kv)) => Err(format!("job {job} is not running: {}", String::from_utf8_lossy(&kv.value))),
        Err(None) => Err(format!("no job `{job}` in this etcd")),
    }
}
