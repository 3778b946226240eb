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
//! | 0 | the job ended ([`NodeExit::JobEnded`]) | nothing (the job is over) |
//! | [`EXIT_STEPPED_DOWN`] (75) | the node stepped down: it lost its lease or task ([`NodeExit::LostLease`]), or a fault hook killed it ([`NodeExit::Killed`]) | starts a replacement at once |
//! | [`EXIT_COORDINATOR_LOST`] (69) | it gave up on the coordinator, at start or later ([`NodeExit::CoordinatorLost`], [`CoordError::Unavailable`]) | counts it as evidence the coordinator is gone; replaces it only once the coordinator answers again |
//! | [`EXIT_NODE_FAILED`] (1), or any other | another error (a bad configuration, a node id in use, a panic: 101) | starts a replacement after a back-off that doubles with each such failure in a row |
//!
//! A node process killed by SIGKILL (a chaos test, the OOM killer) is
//! replaced at once.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::coord::{CoordError, CoordResult, Coordinator};
use crate::graph::TaskId;
use crate::keys::{JobStatus, Keys};
use crate::node::NodeExit;

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
        Ok(NodeExit::Killed | NodeExit::LostLease) => EXIT_STEPPED_DOWN,
        Ok(NodeExit::CoordinatorLost(_)) | Err(crate::Error::Coord(CoordError::Unavailable(_))) => EXIT_COORDINATOR_LOST,
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

/// The default of [`Launch::stall_timeout`] and
/// [`LocalCluster::stall_timeout`](crate::LocalCluster::stall_timeout), 3
/// minutes: how long a running job may go without a new epoch or status
/// before the launcher fails it.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(180);

/// The default of [`Launch::coordinator_patience`].
pub const DEFAULT_COORDINATOR_PATIENCE: Duration = Duration::from_secs(60);

/// After this long without a failed node start, the restart back-off
/// starts again from its first step.
const HEALTHY_WHILE: Duration = Duration::from_secs(30);

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
    timeout: Option<Duration>,
    stall: Option<Duration>,
    patience: Duration,
    backoff: (Duration, Duration),
    orphans: Orphans,
    join: bool,
    max_restarts: usize,
    children: Arc<Mutex<HashMap<u64, Child>>>,
    started: Arc<Mutex<Vec<u32>>>,
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
            timeout: None,
            stall: Some(DEFAULT_STALL_TIMEOUT),
            patience: DEFAULT_COORDINATOR_PATIENCE,
            backoff: (Duration::from_millis(250), Duration::from_secs(8)),
            orphans: Orphans::Kill,
            join: false,
            max_restarts: 1000,
            children: Arc::new(Mutex::new(HashMap::new())),
            started: Arc::new(Mutex::new(Vec::new())),
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
        self.timeout = Some(timeout);
        self
    }

    /// Fails the job when it makes no progress (no new epoch, no status
    /// change) for `stall` ([`DEFAULT_STALL_TIMEOUT`] by default; `None`:
    /// never). A job that advances runs as long as it needs. Time the
    /// coordinator is unreachable does not count: see
    /// [`coordinator_patience`](Self::coordinator_patience).
    pub fn stall_timeout(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    /// Gives up when the coordinator has been unreachable for `patience`
    /// ([`DEFAULT_COORDINATOR_PATIENCE`] by default): the launcher's reads
    /// fail, or its node processes exit with [`EXIT_COORDINATOR_LOST`]
    /// and no read succeeds since. It then kills its node processes and
    /// returns a report whose status is `Failed(reason)` (it cannot record
    /// that in the coordinator). Meanwhile it starts no replacement node.
    pub fn coordinator_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The delay before replacing a node process that failed (see the
    /// [module docs](self)): `first` after one failure, doubling with each
    /// failure in a row up to `max`; back to no delay after 30 s without a
    /// failure. Default 250 ms to 8 s.
    pub fn restart_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max.max(first));
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
        self.children.lock().expect("children lock").values().map(Child::id).collect()
    }

    /// A handle to the live node processes that another thread can use
    /// while [`run`](Self::run) blocks.
    pub fn processes(&self) -> Processes {
        Processes { children: self.children.clone(), started: self.started.clone() }
    }

    fn spawn(&self, node_id: u64, task: Option<TaskId>, exits: &mpsc::Sender<(u64, Option<ExitStatus>)>) -> crate::Result<()> {
        let node = NodeArgs { etcd: self.etcd.clone(), job: self.job.clone(), node_id, task };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).args(node.to_args()).stdin(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a signal to the launcher's group does
            // not reach the nodes, and the launcher can kill a node's group.
            cmd.process_group(0);
        }
        #[cfg(target_os = "linux")]
        if self.orphans == Orphans::Kill {
            die_with_parent(&mut cmd);
        }
        let child = cmd.spawn().map_err(|e| crate::Error::Io(format!("cannot start {}: {e}", self.program.display())))?;
        let pid = child.id();
        self.started.lock().expect("started lock").push(pid);
        self.children.lock().expect("children lock").insert(node_id, child);
        let children = self.children.clone();
        let exits = exits.clone();
        std::thread::Builder::new()
            .name(format!("launch-wait-{node_id}"))
            .spawn(move || loop {
                // Poll: `Child::wait` would need the child out of the map,
                // where `kill` must still find it.
                {
                    let mut map = children.lock().expect("children lock");
                    let done = match map.get_mut(&node_id).map(Child::try_wait) {
                        Some(Ok(Some(status))) => {
                            map.remove(&node_id);
                            Some(Some(status))
                        }
                        Some(Ok(None)) => None,
                        Some(Err(_)) | None => Some(None),
                    };
                    // Sent under the lock: once the map is empty, every
                    // exit is in the channel.
                    if let Some(status) = done {
                        let _ = exits.send((node_id, status));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            })
            .map_err(|e| crate::Error::Io(format!("cannot start a waiter thread for pid {pid}: {e}")))?;
        Ok(())
    }

    /// One coordinator request, bounded: an unreachable etcd must not
    /// hold up the supervision loop (or a reply that never comes).
    fn ask<T>(&self, rt: &tokio::runtime::Runtime, call: impl std::future::Future<Output = CoordResult<T>>) -> CoordResult<T> {
        let limit = (self.patience / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
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
        let mut next_id = 0u64;
        if self.join {
            rt.block_on(crate::job::check_joinable(&*coord, &keys, &self.job))?;
            for _ in 0..self.spares {
                let id = self.fresh_id(&rt, &*coord, &keys, &mut next_id);
                self.spawn(id, None, &exits)?;
            }
        } else {
            rt.block_on(crate::job::start_fresh(&*coord, &keys, &self.job))?;
            for _ in 0..self.replicas {
                for t in 0..self.tasks {
                    self.spawn(next_id, Some(t), &exits)?;
                    next_id += 1;
                }
            }
            for _ in 0..self.spares {
                self.spawn(next_id, None, &exits)?;
                next_id += 1;
            }
        }
        let started_at = Instant::now();
        let mut died = 0;
        let mut status = JobStatus::Running;
        let mut ended_at: Option<Instant> = None;
        // Replacements due, each at its time.
        let mut pending: VecDeque<Instant> = VecDeque::new();
        // Failed starts in a row, and when the last was.
        let mut streak = 0u32;
        let mut last_failure: Option<Instant> = None;
        // Since when the coordinator has not answered, and why.
        let mut unreachable: Option<(Instant, String)> = None;
        // Progress: the last epoch seen, and when something last changed.
        let mut epoch: Option<Vec<u8>> = None;
        let mut progressed_at = Instant::now();
        let mut epoch_read_at: Option<Instant> = None;
        let mut gave_up: Option<String> = None;
        loop {
            if status == JobStatus::Running {
                // The coordinator may be away for a while (restarting):
                // the nodes wait it out, and so does the supervisor, up to
                // its patience.
                match self.ask(&rt, coord.get(&keys.status())) {
                    Ok(kv) => {
                        unreachable = None;
                        status = kv.map_or(JobStatus::Running, |kv| JobStatus::parse(&kv.value));
                    }
                    Err(CoordError::Unavailable(why)) => {
                        tracing::debug!(%why, "coordinator unreachable");
                        unreachable.get_or_insert_with(|| (Instant::now(), why));
                    }
                    Err(e) => return Err(e.into()),
                }
                if unreachable.is_none() && epoch_read_at.is_none_or(|t| t.elapsed() >= EPOCH_POLL) {
                    epoch_read_at = Some(Instant::now());
                    if let Ok(kv) = self.ask(&rt, coord.get(&keys.epoch())) {
                        let now = kv.map(|kv| kv.value);
                        if now != epoch {
                            epoch = now;
                            progressed_at = Instant::now();
                        }
                    }
                }
            }
            if status != JobStatus::Running && ended_at.is_none() {
                ended_at = Some(Instant::now());
            }
            if let Some((since, why)) = &unreachable {
                if since.elapsed() >= self.patience && status == JobStatus::Running {
                    let why = format!(
                        "the coordinator (etcd at {}) has been unreachable for {:?}: {why}; stopped the job's node processes",
                        self.etcd, self.patience
                    );
                    tracing::error!("{why}");
                    self.processes().kill_all();
                    let started = self.started.lock().expect("started lock").len();
                    return Ok(LaunchReport { status: JobStatus::Failed(why), started, died, coordinator_lost: true });
                }
            }
            if status == JobStatus::Running && unreachable.is_none() {
                let why = if self.timeout.is_some_and(|t| started_at.elapsed() > t) {
                    self.timeout.map(|t| format!("timed out after {t:?}"))
                } else if self.stall.is_some_and(|s| progressed_at.elapsed() > s) {
                    let at = epoch.as_deref().map_or("?".into(), |e| String::from_utf8_lossy(e).into_owned());
                    self.stall.map(|s| format!("no progress for {s:?} (stuck at epoch {at})"))
                } else {
                    None
                };
                if let Some(why) = why {
                    status = match self.ask(&rt, crate::job::fail_running(&*coord, &keys, &why)) {
                        // It ended by itself meanwhile: that end stands.
                        Ok(false) => match self.ask(&rt, coord.get(&keys.status())) {
                            Ok(Some(kv)) => JobStatus::parse(&kv.value),
                            _ => JobStatus::Failed(why),
                        },
                        Ok(true) => JobStatus::Failed(why),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot mark the job failed");
                            JobStatus::Failed(why)
                        }
                    };
                    ended_at = Some(Instant::now());
                }
            }
            // Nodes get a while to see the end and leave; then they go.
            if ended_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                self.processes().kill_all();
            }
            // Replacements that are due (none while the coordinator is
            // away: they would find it gone too).
            while status == JobStatus::Running && unreachable.is_none() && pending.front().is_some_and(|t| *t <= Instant::now()) {
                pending.pop_front();
                let id = self.fresh_id(&rt, &*coord, &keys, &mut next_id);
                self.spawn(id, None, &exits)?;
            }
            if status != JobStatus::Running {
                pending.clear();
            }
            // No node left and none to start: what is in the channel is
            // all there will be.
            let idle = self.children.lock().expect("children lock").is_empty() && pending.is_empty();
            let wait = if idle {
                Duration::ZERO
            } else {
                pending.front().map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)))
            };
            match exit_rx.recv_timeout(wait) {
                Ok((id, exit)) => {
                    // A node leaves when the job ends: look again before
                    // calling its exit a death (the poll above may be late).
                    if status == JobStatus::Running {
                        if let Ok(Some(kv)) = self.ask(&rt, coord.get(&keys.status())) {
                            status = JobStatus::parse(&kv.value);
                            if status != JobStatus::Running {
                                ended_at.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    if status == JobStatus::Running {
                        died += 1;
                        let code = exit.and_then(|s| s.code());
                        let failed = match code {
                            Some(0 | EXIT_STEPPED_DOWN) => false,
                            Some(_) => true,
                            None => !exit.is_some_and(killed_by_sigkill),
                        };
                        if code == Some(EXIT_COORDINATOR_LOST) {
                            unreachable.get_or_insert_with(|| {
                                (Instant::now(), format!("node {id} exited with status {EXIT_COORDINATOR_LOST} (it gave up on the coordinator)"))
                            });
                        }
                        let mut delay = Duration::ZERO;
                        if failed {
                            if last_failure.is_some_and(|t| t.elapsed() > HEALTHY_WHILE) {
                                streak = 0;
                            }
                            streak += 1;
                            last_failure = Some(Instant::now());
                            delay = self.backoff.0.saturating_mul(1 << (streak - 1).min(16)).min(self.backoff.1);
                        }
                        tracing::info!(node = id, ?exit, ?delay, "node process died; starting a replacement");
                        if died > self.max_restarts {
                            let why = format!("more than {} node restarts", self.max_restarts);
                            if let Err(e) = self.ask(&rt, crate::job::fail_running(&*coord, &keys, &why)) {
                                tracing::warn!(error = %e, "cannot mark the job failed");
                            }
                            gave_up = Some(why);
                        } else {
                            pending.push_back(Instant::now() + delay);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if idle => {
                    if status == JobStatus::Running {
                        status = JobStatus::Failed(gave_up.take().unwrap_or_else(|| "every node process has stopped".into()));
                    }
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let started = self.started.lock().expect("started lock").len();
        Ok(LaunchReport { status, started, died, coordinator_lost: false })
    }
}

#[cfg(unix)]
fn killed_by_sigkill(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed_by_sigkill(_: ExitStatus) -> bool {
    false
}

/// Makes the child die (SIGKILL) when this process dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
/// not the process: [`Launch::run`] spawns every node from its own thread,
/// which lives until the nodes have stopped. If the launcher died between
/// the fork and the `prctl`, the signal would never come: the child then
/// sees another parent and exits at once.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls (prctl, getppid, _exit); it
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(EXIT_NODE_FAILED);
            }
            Ok(())
        });
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // No node outlives its launcher.
        self.processes().kill_all();
    }
}

/// The live node processes of a [`Launch`].
#[derive(Clone, Debug)]
pub struct Processes {
    children: Arc<Mutex<HashMap<u64, Child>>>,
    started: Arc<Mutex<Vec<u32>>>,
}

impl Processes {
    /// (node id, process id) of the live node processes.
    pub fn pids_by_node(&self) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = self.children.lock().expect("children lock").iter().map(|(id, c)| (*id, c.id())).collect();
        v.sort();
        v
    }

    /// The process ids of every node process ever started.
    pub fn all_started(&self) -> Vec<u32> {
        self.started.lock().expect("started lock").clone()
    }

    /// Process ids of the live node processes.
    pub fn pids(&self) -> Vec<u32> {
        self.children.lock().expect("children lock").values().map(Child::id).collect()
    }

    /// Sends SIGKILL to the node process `pid` (if it is one of ours).
    pub fn kill(&self, pid: u32) -> bool {
        let mut map = self.children.lock().expect("children lock");
        match map.values_mut().find(|c| c.id() == pid) {
            Some(c) => c.kill().is_ok(),
            None => false,
        }
    }

    /// Kills every live node process.
    pub fn kill_all(&self) {
        let mut map = self.children.lock().expect("children lock");
        for c in map.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        map.clear();
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
