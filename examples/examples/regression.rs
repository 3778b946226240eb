//! W1, the tree regression: 15 tasks plus spares on the embedded
//! coordinator, printing `epoch <e> root <value>` for epochs 0..=10.
//!
//! ```sh
//! cargo run --release --example regression
//! cargo run --release --example regression -- --size 1000000 --fail f1,f2,f3 --seed 7
//! cargo run --release --example regression -- --graph 0          # the graph at epoch 0, as Mermaid
//! cargo run --release --example regression -- --graph 0 --dot    # ... as Graphviz DOT
//! cargo run --release --example regression -- --schema           # the messages as a .capnp file
//! ```

// Big message buffers: see the workspace Cargo.toml on why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use taskgraph::prelude::*;
use taskgraph_examples::regression::{self, Regression, Scenario, Tree};

#[derive(Parser, Debug)]
#[command(about = "W1: tree regression over 15 tasks (root values 105 * epoch)")]
struct Args {
    /// Values per parameter and gradient vector.
    #[arg(long, default_value_t = 1)]
    size: usize,
    /// Number of tasks in the tree.
    #[arg(long, default_value_t = 15)]
    tasks: u64,
    /// The last epoch.
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Spare nodes.
    #[arg(long, default_value_t = 2)]
    spares: usize,
    /// Nodes per task: a primary and `replicas - 1` hot backups that hold
    /// its state and take over when it dies.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Failure scenarios to inject: f1, f2, f3 (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_scenario)]
    fail: Vec<Scenario>,
    /// Seed of the random failures.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fail the job if it has not ended after this many seconds (default:
    /// no limit; a job fails only when it stops making progress, see
    /// --stall-timeout).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Fail the job when it makes no progress (no new epoch) for this many
    /// seconds; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = taskgraph::local::DEFAULT_STALL_TIMEOUT.as_secs())]
    stall_timeout: u64,
    /// Print the graph at this epoch (Mermaid; DOT with `--dot`) and exit.
    #[arg(long, value_name = "EPOCH")]
    graph: Option<u64>,
    /// With `--graph`: print Graphviz DOT instead of Mermaid.
    #[arg(long, requires = "graph")]
    dot: bool,
    /// Print the graph's messages as a Cap'n Proto schema and exit.
    #[arg(long)]
    schema: bool,
    /// Run as one node process of a job on this etcd (comma-separated
    /// endpoints) instead of the whole job in this process; `taskgraph
    /// launch` starts node processes this way. Needs `--features etcd`.
    #[arg(long, requires_all = ["job", "node_id"])]
    etcd: Option<String>,
    /// The job's name (with `--etcd`).
    #[arg(long)]
    job: Option<String>,
    /// This node's id (with `--etcd`).
    #[arg(long)]
    node_id: Option<u64>,
    /// The task this node tries first (with `--etcd`).
    #[arg(long)]
    task: Option<u64>,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    match s.to_ascii_lowercase().as_str() {
        "f1" => Ok(Scenario::F1),
        "f2" => Ok(Scenario::F2),
        "f3" => Ok(Scenario::F3),
        other => Err(format!("unknown scenario `{other}`: expected f1, f2 or f3")),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let args = Args::parse();
    if let Some(epoch) = args.graph {
        let picture = Regression::graph(&Tree { tasks: args.tasks }, args.tasks, epoch);
        print!("{}", if args.dot { picture.to_dot() } else { picture.to_mermaid() });
        return std::process::ExitCode::SUCCESS;
    }
    if args.schema {
        print!("{}", Regression::capnp_schema());
        return std::process::ExitCode::SUCCESS;
    }
    if let (Some(etcd), Some(job), Some(node_id)) = (&args.etcd, &args.job, args.node_id) {
        let node = taskgraph::launch::NodeArgs { etcd: etcd.clone(), job: job.clone(), node_id, task: args.task };
        return run_node(&node, &args);
    }
    let job = regression::job(args.tasks, args.size, args.epochs).replicas(args.replicas);
    let mut cluster = LocalCluster::new(job)
        .spares(args.spares)
        .stall_timeout((args.stall_timeout > 0).then(|| std::time::Duration::from_secs(args.stall_timeout)));
    if let Some(secs) = args.timeout {
        cluster = cluster.timeout(std::time::Duration::from_secs(secs));
    }
    if !args.fail.is_empty() {
        cluster = cluster.faults(regression::faults(&args.fail, args.tasks, args.seed));
    }
    match cluster.run() {
        Ok(result) => {
            for (e, v) in regression::root_values(&result) {
                println!("epoch {e} root {v}");
            }
            if result.kills > 0 {
                eprintln!("({} node(s) killed by fault injection and replaced)", result.kills);
            }
            match result.status {
                JobStatus::Done => std::process::ExitCode::SUCCESS,
                other => {
                    eprintln!("job ended: {other:?}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "etcd")]
fn run_node(node: &taskgraph::launch::NodeArgs, args: &Args) -> std::process::ExitCode {
    let result = regression::run_node_process(node, args.tasks, args.size, args.epochs, args.replicas);
    match &result {
        Ok(exit) => tracing::info!(?exit, "node stopped"),
        Err(e) => eprintln!("node {}: {e}", node.node_id),
    }
    // Tells `taskgraph launch` why it stopped (e.g. 69: etcd is gone).
    taskgraph::launch::exit_code(&result)
}

#[cfg(not(feature = "etcd"))]
fn run_node(_: &taskgraph::launch::NodeArgs, _: &Args) -> std::process::ExitCode {
    eprintln!("this build has no etcd support: build the example with `--features etcd`");
    std::process::ExitCode::FAILURE
}
