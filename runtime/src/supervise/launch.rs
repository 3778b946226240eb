//! Running a job as separate node processes on this machine, supervised:
//! a node process that dies while the job runs is replaced by a new one,
//! as a process supervisor (or Kubernetes) restarts a crashed pod.
//!
//! The application binary runs one node when called with
//! `--etcd <endpoints> --job <name> --node-id <id> [--task <t>]` appended
//! to its arguments (see [`NodeArgs`]); the `taskgraph launch` command and
//! [`Launch`] start it that way, and it should end with
//! [`exit_code`]`(&result)` so the launcher knows why it stopped.
//!
//! # Exit statuses of a node process
//!
//! | status | meaning | what [`Launch`] does while the job runs |
//! |---|---|---|
//! | 0 | the job ended ([`NodeExit::JobEnded`]) | nothing (the job is over); if the coordinator still says it runs, starts a replacement at once |
//! | [`EXIT_STEPPED_DOWN`] (75) | the node stepped down: another node holds its task or slot, its id was taken, or the coordinator refused it ([`NodeExit::stepped_down`]), or a fault hook killed it ([`NodeExit::Killed`]) | starts a replacement at once |
//! | [`EXIT_COORDINATOR_LOST`] (69) | it gave up on the coordinator, at start or later ([`NodeExit::CoordinatorLost`], [`CoordError::Unavailable`]) | counts it as evidence the coordinator is gone; replaces it (after the back-off below) only once the coordinator answers again |
//! | [`EXIT_NODE_FAILED`] (1), or any other | another error (a bad configuration, a node id in use, a panic: 101) | starts a replacement after a back-off that doubles with each such failure in a row |
//!
//! A node process killed by SIGKILL (a chaos test, the OOM killer) is
//! replaced at once. Once the job has ended, no exit is a death: a node
//! process that stops then, however, is not replaced, and the job's end
//! stands. The rules are [`supervise`](crate::supervise)'s, which
//! [`LocalCluster`](crate::LocalCluster) follows too.

mod processes;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use self::processes::{exit_of, Exited};
use super::{Decision, Event, Limits, Supervisor};
use crate::coord::{CoordError, CoordResult, Coordinator};
use crate::graph::TaskId;
use crate::keys::{JobStatus, Keys};
use crate::node::NodeExit;

pub use self::processes::Processes;
pub use super::{DEFAULT_COORDINATOR_PATIENCE, DEFAULT_STALL_TIMEOUT};

/// The exit status of a node process that gave up on the coordinator
/// (unreachable at start, or for longer than a node waits it out):
/// `EX_UNAVAILABLE` of sysexits.h. A supervisor that sees it should not
/// just start another node, which would find the coordinator gone too.
pub const EXIT_COORDINATOR_LOST: i32 = 69;

/// The exit status of a node process that stepped down while the job
/// runs (it lost its lease or its task to a newer term, or a fault hook
/// killed it): `EX_TEMPFAIL` of sysexits.h. Nothing is wrong with the
/// program: a supervisor should start another node.
pub const EXIT_STEPPED_DOWN: i32 = 75;

/// The exit status of a node process that failed in any other way (see
/// [`exit_code`]).
pub const EXIT_NODE_FAILED: i32 = 1;

/// The exit status (a number) a node process should end with after
/// [`run_node`](crate::run_node) returned `result`: 0 when the job ended
/// (done or failed: the node did its part), [`EXIT_STEPPED_DOWN`] when it
/// stepped down, [`EXIT_COORDINATOR_LOST`] when it gave up on the
/// coordinator (including a coordinator unreachable at start:
/// [`CoordError::Unavailable`]), [`EXIT_NODE_FAILED`] for any other error.
pub fn exit_status(result: &crate::Result<NodeExit>) -> i32 {
    match result {
        Ok(NodeExit::JobEnded(_)) => 0,
        Ok(NodeExit::CoordinatorLost(_)) | Err(crate::Error::Coord(CoordError::Unavailable(_))) => EXIT_COORDINATOR_LOST,
        Ok(exit) if exit.stepped_down() => EXIT_STEPPED_DOWN,
        Ok(_) => EXIT_NODE_FAILED,
        Err(_) => EXIT_NODE_FAILED,
    }
}

/// [`exit_status`] as the `ExitCode` to return from `main`:
///
/// ```no_run
/// # fn run() -> taskgraph::Result<taskgraph::NodeExit> { unimplemented!() }
/// fn main() -> std::process::ExitCode {
///     let result = run(); // taskgraph::run_node(..)
///     taskgraph::launch::exit_code(&result)
/// }
/// ```
pub fn exit_code(result: &crate::Result<NodeExit>) -> std::process::ExitCode {
    std::process::ExitCode::from(exit_status(result) as u8)
}

/// What becomes of the node processes when their launcher is killed
/// (SIGKILL, a crash: anything that gives it no chance to clean up; a
/// launcher that ends normally always stops its nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Orphans {
    /// They are killed with it (Linux: `PR_SET_PDEATHSIG`). The default,
    /// because nobody supervises orphans: a task whose node dies after the
    /// launcher stays vacant once the spares are used up, and orphans
    /// started by a launcher that is run again would compete with the new
    /// launch's nodes. Killing them ends the job's nodes with their
    /// supervisor, as the job's owner expects; the job's keys stay, and a
    /// new launch starts it afresh. (Elsewhere than Linux this is
    /// [`Keep`](Orphans::Keep).)
    #[default]
    Kill,
    /// They carry on without a supervisor until the job ends (no dead
    /// node is replaced any more); `taskgraph stop` ends them, and
    /// `taskgraph launch --join` can add supervised nodes to the job.
    Keep,
}

impl std::str::FromStr for Orphans {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill" => Ok(Orphans::Kill),
            "keep" => Ok(Orphans::Keep),
            other => Err(format!("`{other}`: expected kill or keep")),
        }
    }
}

/// What a node process is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeArgs {
    /// The coordinator's endpoints (comma-separated etcd URLs).
    pub etcd: String,
    /// The job's name.
    pub job: String,
    /// This node's id.
    pub node_id: u64,
    /// The task to try first.
    pub task: Option<TaskId>,
}

impl NodeArgs {
    /// The arguments that say this.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--etcd".into(), self.etcd.clone(), "--job".into(), self.job.clone(), "--node-id".into(), self.node_id.to_string()];
        if let Some(t) = self.task {
            a.extend(["--task".into(), t.to_string()]);
        }
        a
    }

    /// Finds the node arguments among `args` (anywhere, in any order);
    /// `None` if there is no `--etcd`.
    pub fn parse(args: &[String]) -> Result<Option<NodeArgs>, String> {
        let value = |name: &str| -> Option<&String> {
            args.iter().position(|a| a == name).and_then(|i| args.get(i + 1))
        };
        let Some(etcd) = value("--etcd") else { return Ok(None) };
        let job = value("--job").ok_or("--etcd needs --job <name>")?.clone();
        let node_id = value("--node-id")
            .ok_or("--etcd needs --node-id <id>")?
            .parse()
            .map_err(|_| "--node-id takes a number".to_string())?;
        let task = match value("--task") {
            Some(t) => Some(t.parse().map_err(|_| "--task takes a number".to_string())?),
            None => None,
        };
        Ok(Some(NodeArgs { etcd: etcd.clone(), job, node_id, task }))
    }
}

/// How a launched job went.
#[derive(Clone, Debug)]
pub struct LaunchReport {
    /// How the job ended. `Failed(reason)` also when the launcher gave up
    /// (on the coordinator, after too many restarts, on a stall or its
    /// time limit) whether or not it could record that in the coordinator.
    pub status: JobStatus,
    /// Node processes started in all.
    pub started: usize,
    /// Node processes that died while the job ran (each was replaced,
    /// unless the launcher gave up first).
    pub died: usize,
    /// Whether the launcher gave up because the coordinator was
    /// unreachable for longer than its [patience](Launch::coordinator_patience)
    /// (it then killed its node processes).
    pub coordinator_lost: bool,
}

/// How often the launcher reads the job's epoch (its progress).
const EPOCH_POLL: Duration = Duration::from_millis(500);

/// A job to run as node processes: `tasks + spares` processes of
/// `program args.. <node args>`.
#[derive(Debug)]
pub struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    etcd: String,
    job: String,
    tasks: u64,
    replicas: u32,
    spares: usize,
    limits: Limits,
    orphans: Orphans,
    join: bool,
    processes: Processes,
}

impl Launch {
    /// Runs `program` with `args` for each node of job `job`, coordinated
    /// by the etcd at `etcd`.
    pub fn new(program: impl Into<PathBuf>, args: Vec<OsString>, etcd: impl Into<String>, job: impl Into<String>, tasks: u64) -> Self {
        Launch {
            program: program.into(),
            args,
            etcd: etcd.into(),
            job: job.into(),
            tasks,
            replicas: 1,
            spares: 0,
            limits: Limits::default(),
            orphans: Orphans::Kill,
            join: false,
            processes: Processes::default(),
        }
    }

    /// Starts `replicas` nodes per task (a primary and hot backups; the
    /// program must build its job with the same `Job::replicas`).
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Also starts `n` spare nodes (with [`join`](Self::join): starts
    /// only these).
    pub fn spares(mut self, n: usize) -> Self {
        self.spares = n;
        self
    }

    /// Fails the job if it has not ended after `timeout` (default: no
    /// overall limit; see [`stall_timeout`](Self::stall_timeout)).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = Some(timeout);
        self
    }

    /// Fails the job when it makes no progress (no new epoch, no status
    /// change) for `stall` ([`DEFAULT_STALL_TIMEOUT`] by default; `None`:
    /// never). A job that advances runs as long as it needs. Time the
    /// coordinator is unreachable does not count: see
    /// [`coordinator_patience`](Self::coordinator_patience).
    pub fn stall_timeout(mut self, stall: Option<Duration>) -> Self {
        self.limits.stall = stall;
        self
    }

    /// Gives up when the coordinator has been unreachable for `patience`
    /// ([`DEFAULT_COORDINATOR_PATIENCE`] by default): the launcher's reads
    /// fail, or its node processes exit with [`EXIT_COORDINATOR_LOST`]
    /// and no read succeeds since. It then kills its node processes and
    /// returns a report whose status is `Failed(reason)` (it cannot record
    /// that in the coordinator). Meanwhile it starts no replacement node.
    pub fn coordinator_patience(mut self, patience: Duration) -> Self {
        self.limits.patience = Some(patience);
        self
    }

    /// The delay before replacing a node process that failed (see the
    /// [module docs](self)): `first` after one failure, doubling with each
    /// failure in a row up to `max`; from `first` again after 30 s without
    /// a failure. Default 250 ms to 8 s.
    pub fn restart_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.limits.backoff = (first, max.max(first));
        self
    }

    /// What becomes of the node processes if this launcher is killed
    /// ([`Orphans::Kill`] by default).
    pub fn orphans(mut self, orphans: Orphans) -> Self {
        self.orphans = orphans;
        self
    }

    /// Adds node processes to the job instead of starting it: the job's
    /// keys are left as they are, the `spares` nodes started get ids above
    /// the largest of the job's live nodes, and they wait as spares (or
    /// take vacant tasks). Without `join`, [`run`](Self::run) refuses a
    /// job that is running.
    pub fn join(mut self, join: bool) -> Self {
        self.join = join;
        self
    }

    /// The process ids of the node processes alive now (for status, and
    /// for chaos testing: kill them and watch the job go on).
    pub fn pids(&self) -> Vec<u32> {
        self.processes.pids()
    }

    /// A handle to the live node processes that another thread can use
    /// while [`run`](Self::run) blocks.
    pub fn processes(&self) -> Processes {
        self.processes.clone()
    }

    fn spawn(&self, node_id: u64, task: Option<TaskId>, exits: &mpsc::Sender<Exited>) -> crate::Result<()> {
        let node = NodeArgs { etcd: self.etcd.clone(), job: self.job.clone(), node_id, task };
        self.processes.spawn(&self.program, &self.args, &node, self.orphans, exits)
    }

    /// One coordinator request, bounded: an unreachable etcd must not
    /// hold up the supervision loop (or a reply that never comes).
    fn ask<T>(&self, rt: &tokio::runtime::Runtime, call: impl std::future::Future<Output = CoordResult<T>>) -> CoordResult<T> {
        let patience = self.limits.patience.unwrap_or(DEFAULT_COORDINATOR_PATIENCE);
        let limit = (patience / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
        rt.block_on(async { tokio::time::timeout(limit, call).await })
            .unwrap_or_else(|_| Err(CoordError::Unavailable(format!("no answer within {limit:?}"))))
    }

    /// A node id no live node of the job has, and none this launcher gave.
    fn fresh_id(&self, rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, keys: &Keys, next_id: &mut u64) -> u64 {
        if let Ok(Some(max)) = self.ask(rt, crate::job::largest_node_id(coord, keys)) {
            *next_id = (*next_id).max(max + 1);
        }
        let id = *next_id;
        *next_id += 1;
        id
    }

    /// Tells `sup` the job's status (and, every [`EPOCH_POLL`], its
    /// epoch), or that the coordinator did not answer.
    fn read_progress(&self, rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, keys: &Keys, sup: &mut Supervisor, epoch_read_at: &mut Option<Instant>) -> crate::Result<()> {
        // The coordinator may be away for a while (restarting): the nodes
        // wait it out, and so does the supervisor, up to its patience.
        match self.ask(rt, coord.get(&keys.status())) {
            Ok(kv) => sup.on(Event::Status(kv.map_or(JobStatus::Running, |kv| JobStatus::parse(&kv.value))), Instant::now()),
            Err(CoordError::Unavailable(why)) => {
                tracing::debug!(%why, "coordinator unreachable");
                sup.on(Event::Unreachable(why), Instant::now());
            }
            Err(e) => return Err(e.into()),
        }
        if sup.reachable() && !sup.ended() && epoch_read_at.is_none_or(|t| t.elapsed() >= EPOCH_POLL) {
            *epoch_read_at = Some(Instant::now());
            if let Ok(kv) = self.ask(rt, coord.get(&keys.epoch())) {
                sup.on(Event::Epoch(kv.map(|kv| kv.value)), Instant::now());
            }
        }
        Ok(())
    }

    /// Starts the nodes and supervises them until the job ends.
    ///
    /// A job of this name that is running (it has live nodes and has not
    /// ended) is refused with [`Error::Job`](crate::Error::Job) and left
    /// alone, unless this launch [joins](Self::join) it; any other is
    /// started afresh (its old keys deleted).
    pub fn run(&self, coord: Arc<dyn Coordinator>) -> crate::Result<LaunchReport> {
        let keys = Keys::new(&self.job);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Io(e.to_string()))?;
        let (exits, exit_rx) = mpsc::channel();
        let mut sup = Supervisor::new(self.limits.clone(), Instant::now());
        let mut next_id = 0u64;
        if self.join {
            rt.block_on(crate::job::check_joinable(&*coord, &keys, &self.job))?;
            for _ in 0..self.spares {
                let id = self.fresh_id(&rt, &*coord, &keys, &mut next_id);
                self.spawn(id, None, &exits)?;
                sup.on(Event::Started, Instant::now());
            }
        } else {
            rt.block_on(crate::job::start_fresh(&*coord, &keys, &self.job))?;
            let tasks = (0..self.replicas).flat_map(|_| (0..self.tasks).map(Some));
            for task in tasks.chain((0..self.spares).map(|_| None)) {
                self.spawn(next_id, task, &exits)?;
                next_id += 1;
                sup.on(Event::Started, Instant::now());
            }
        }
        let mut epoch_read_at: Option<Instant> = None;
        let report = |status: JobStatus, sup: &Supervisor, coordinator_lost: bool| LaunchReport {
            status,
            started: self.processes.all_started().len(),
            died: sup.died(),
            coordinator_lost,
        };
        loop {
            if !sup.ended() {
                self.read_progress(&rt, &*coord, &keys, &mut sup, &mut epoch_read_at)?;
            }
            let wait = match sup.next(Instant::now()) {
                Decision::Restart(node) => {
                    let id = self.fresh_id(&rt, &*coord, &keys, &mut next_id);
                    tracing::info!(node = id, replacing = node, "starting a replacement node process");
                    self.spawn(id, None, &exits)?;
                    continue;
                }
                Decision::FailJob(verdict) => {
                    match self.ask(&rt, crate::job::fail_running(&*coord, &keys, &verdict.to_string())) {
                        Ok(status) => sup.on(Event::Status(status), Instant::now()),
                        Err(e) => tracing::warn!(error = %e, "cannot mark the job failed"),
                    }
                    continue;
                }
                Decision::GiveUp(patience, why) => {
                    let why = format!(
                        "the coordinator (etcd at {}) has been unreachable for {patience:?}: {why}; stopped the job's node processes",
                        self.etcd
                    );
                    tracing::error!("{why}");
                    self.processes.kill_all();
                    return Ok(report(JobStatus::Failed(why), &sup, true));
                }
                Decision::KillAll => {
                    self.processes.kill_all();
                    continue;
                }
                Decision::Stop => break,
                Decision::Wait(wait) => wait,
            };
            let wait = wait.min(Duration::from_millis(50));
            let (id, status) = match exit_rx.recv_timeout(wait) {
                Ok(exit) => exit,
                Err(_) => continue,
            };
            // A node leaves when the job ends: look again before calling
            // its exit a death (the read above may be late).
            if !sup.ended() {
                self.read_progress(&rt, &*coord, &keys, &mut sup, &mut epoch_read_at)?;
            }
            let exit = exit_of(status);
            if !sup.ended() {
                tracing::info!(node = id, ?status, ?exit, "node process died");
            }
            sup.on(Event::Exited { node: id, exit }, Instant::now());
        }
        let status = match sup.status() {
            JobStatus::Running => JobStatus::Failed("every node process has stopped".into()),
            status => status.clone(),
        };
        Ok(report(status, &sup, false))
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // No node outlives its launcher.
        self.processes.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_args_round_trip() {
        let a = NodeArgs { etcd: "http://127.0.0.1:2379".into(), job: "j".into(), node_id: 4, task: Some(2) };
        let mut args = vec!["--size".to_string(), "10".into()];
        args.extend(a.to_args());
        assert_eq!(NodeArgs::parse(&args), Ok(Some(a)));
        assert_eq!(NodeArgs::parse(&["--size".into()]), Ok(None));
        assert!(NodeArgs::parse(&["--etcd".into(), "x".into()]).is_err());
    }
}
