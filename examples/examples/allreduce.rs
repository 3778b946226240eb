//! W4, a topology that changes every epoch: an all-reduce by recursive
//! doubling over 8 tasks plus spares on the embedded coordinator. Prints
//! every task's value after each epoch, checks them against the sequential
//! computation and exits non-zero on a mismatch; with `--graph <epoch>`,
//! prints the graph at that epoch instead.
//!
//! ```sh
//! cargo run --release --example allreduce
//! cargo run --release --example allreduce -- --kill enter:5@2,after-serve:0@4
//! cargo run --release --example allreduce -- --epochs 20 --random 5 --seed 3
//! cargo run --release --example allreduce -- --graph 1          # Mermaid
//! cargo run --release --example allreduce -- --graph 1 --dot    # DOT
//! ```

use clap::Parser;
use taskgraph::prelude::*;
use taskgraph_examples::allreduce::{self, AllReduce, Hypercube, Kill};

#[derive(Parser, Debug)]
#[command(about = "W4: all-reduce by recursive doubling (partners change every epoch), checked against a sequential run")]
struct Args {
    /// Number of tasks (a power of two, at least 2).
    #[arg(long, default_value_t = 8)]
    tasks: u64,
    /// The last epoch.
    #[arg(long, default_value_t = 5)]
    epochs: u64,
    /// Spare nodes.
    #[arg(long, default_value_t = 2)]
    spares: usize,
    /// Nodes to kill, comma-separated `KIND:TASK@EPOCH`, KIND one of
    /// `enter` (entering the epoch), `before-serve` / `after-serve`
    /// (around serving its value to its partner), `received` (on getting
    /// its partner's value). Killing a task and its previous partner in
    /// the same epoch loses their value: the job stalls (see the module
    /// doc of `allreduce`).
    #[arg(long, value_delimiter = ',', value_parser = parse_kill)]
    kill: Vec<(Kill, TaskId, Epoch)>,
    /// Also kill this many nodes at points drawn from `--seed`, at most
    /// one in any two consecutive epochs.
    #[arg(long, default_value_t = 0)]
    random: usize,
    /// Seed of the random kills.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the graph at this epoch (Mermaid) and exit.
    #[arg(long)]
    graph: Option<Epoch>,
    /// With `--graph`: print DOT instead of Mermaid.
    #[arg(long, requires = "graph")]
    dot: bool,
}

fn parse_kill(s: &str) -> Result<(Kill, TaskId, Epoch), String> {
    let syntax = || format!("`{s}`: expected KIND:TASK@EPOCH, e.g. enter:5@2");
    let (kind, at) = s.split_once(':').ok_or_else(syntax)?;
    let (task, epoch) = at.split_once('@').ok_or_else(syntax)?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "enter" => Kill::Enter,
        "before-serve" => Kill::BeforeServe,
        "after-serve" => Kill::AfterServe,
        "received" => Kill::Received,
        other => return Err(format!("unknown kill `{other}`: expected enter, before-serve, after-serve or received")),
    };
    Ok((kind, task.parse().map_err(|_| syntax())?, epoch.parse().map_err(|_| syntax())?))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let args = Args::parse();
    if args.tasks < 2 || !args.tasks.is_power_of_two() {
        eprintln!("--tasks must be a power of two, at least 2 (not {})", args.tasks);
        return std::process::ExitCode::FAILURE;
    }
    if let Some(epoch) = args.graph {
        let picture = AllReduce::graph(&Hypercube::new(args.tasks), args.tasks, epoch);
        print!("{}", if args.dot { picture.to_dot() } else { picture.to_mermaid() });
        return std::process::ExitCode::SUCCESS;
    }
    if let Some((_, t, _)) = args.kill.iter().find(|(_, t, _)| *t >= args.tasks) {
        eprintln!("--kill: there is no task {t} (tasks 0..{})", args.tasks);
        return std::process::ExitCode::FAILURE;
    }

    let mut kills = args.kill.clone();
    kills.extend(allreduce::spaced_faults(args.tasks, args.epochs, args.random, args.seed));
    let mut faults = Faults::new(args.seed);
    for &(kind, task, epoch) in &kills {
        eprintln!("will kill task {task}'s node at epoch {epoch}: {kind:?}");
        faults = faults.at(allreduce::fault_point(args.tasks, kind, task, epoch));
    }
    let result = match LocalCluster::new(allreduce::job(args.tasks, args.epochs)).spares(args.spares).faults(faults).run() {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };

    let restored = allreduce::restorations(&result);
    for (e, values) in allreduce::values(&result) {
        let text: Vec<String> = values.iter().map(u64::to_string).collect();
        println!("epoch {e}: {}", text.join(" "));
        for (_, task, from) in restored.iter().filter(|(re, _, _)| *re == e) {
            println!("  (task {task} was replaced and restored its value from task {from})");
        }
    }
    if result.kills > 0 {
        eprintln!("({} node(s) killed by fault injection and replaced)", result.kills);
    }
    if result.status != JobStatus::Done {
        eprintln!("job ended: {:?}", result.status);
        return std::process::ExitCode::FAILURE;
    }
    let want = allreduce::simulate(args.tasks, args.epochs);
    let got = allreduce::values(&result);
    if got != want {
        for (e, values) in &want {
            if got.iter().find(|(g, _)| g == e).map(|(_, v)| v) != Some(values) {
                eprintln!("MISMATCH at epoch {e}: the sequential computation gives {values:?}");
            }
        }
        if got.len() != want.len() {
            eprintln!("MISMATCH: the job recorded {} epochs, not {}", got.len(), want.len());
        }
        return std::process::ExitCode::FAILURE;
    }
    println!("all {} epochs match the sequential computation", want.len());
    std::process::ExitCode::SUCCESS
}
