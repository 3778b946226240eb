//! Running a whole job in one process: its nodes share a pool of threads
//! (one per core by default, see [`LocalCluster::threads`]), each thread
//! running its nodes as tasks of one runtime; the embedded coordinator
//! (or any other), real TCP between nodes on loopback, and fault
//! injection. A node that stops while the job runs is replaced by a new
//! one as the [supervision policy](crate::supervise) says.

mod faults;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::{Decision, Event, Exit, Limits, Supervisor, Verdict};
use crate::coord::{Coordinator, Embedded};
use crate::graph::TaskId;
use crate::job::Job;
use crate::keys::{JobStatus, Keys};
use crate::node::{self, FaultHook, NodeConfig, NodeExit};

pub use self::faults::{FaultKind, Faults};
pub use super::DEFAULT_STALL_TIMEOUT;
pub use crate::node::TransportFaults;

/// Runs a job in this process.
///
/// ```no_run
/// # use taskgraph::{job::Job, local::LocalCluster};
/// # fn job() -> Job { unimplemented!() }
/// let result = LocalCluster::new(job()).spares(2).run()?;
/// println!("{:?}", result.status);
/// # Ok::<(), taskgraph::Error>(())
/// ```
pub struct LocalCluster {
    job: Job,
    spares: usize,
    coord: Option<Arc<dyn Coordinator>>,
    faults: Option<Arc<dyn FaultHook>>,
    transport: TransportFaults,
    timeout: Option<Duration>,
    stall: Option<Duration>,
    max_restarts: usize,
    threads: Option<usize>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("job", &self.job)
            .field("spares", &self.spares)
            .field("timeout", &self.timeout)
            .field("stall_timeout", &self.stall)
            .finish_non_exhaustive()
    }
}

/// How a job run by a [`LocalCluster`] went.
#[derive(Clone, Debug)]
pub struct JobResult {
    /// How the job ended.
    pub status: JobStatus,
    /// What its tasks recorded, by name.
    pub records: BTreeMap<String, Vec<u8>>,
    /// How many nodes fault injection killed.
    pub kills: usize,
    /// How many nodes were started in all (tasks, spares, replacements).
    pub nodes_started: usize,
}

impl LocalCluster {
    /// A cluster for `job`: one node per task, no spares, the embedded
    /// coordinator, no overall time limit: the job fails only if it makes
    /// no progress for [`DEFAULT_STALL_TIMEOUT`] (see
    /// [`stall_timeout`](Self::stall_timeout)).
    pub fn new(job: Job) -> Self {
        LocalCluster {
            job,
            spares: 0,
            coord: None,
            faults: None,
            transport: TransportFaults::default(),
            timeout: None,
            stall: Some(DEFAULT_STALL_TIMEOUT),
            max_restarts: 1000,
            threads: None,
        }
    }

    /// Runs the nodes on `n` threads (default: one per core). Nodes on
    /// one thread take turns: a handler that computes for long holds up
    /// the others of its thread; `threads(nodes)` gives each its own.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// Starts `n` spare nodes besides the task nodes (a node killed by a
    /// fault is always replaced by a new spare, as a supervisor restarts a
    /// crashed process).
    pub fn spares(mut self, n: usize) -> Self {
        self.spares = n;
        self
    }

    /// Uses `coord` instead of a fresh embedded coordinator.
    pub fn coordinator(mut self, coord: Arc<dyn Coordinator>) -> Self {
        self.coord = Some(coord);
        self
    }

    /// Kills nodes where `hook` says.
    pub fn faults(mut self, hook: impl FaultHook) -> Self {
        self.faults = Some(Arc::new(hook));
        self
    }

    /// Drops connections and duplicates requests on the client side.
    pub fn transport_faults(mut self, faults: TransportFaults) -> Self {
        self.transport = faults;
        self
    }

    /// Fails the job if it has not ended after `timeout` (default: no
    /// overall limit); [`run`](Self::run) then returns
    /// [`Error::Timeout`](crate::Error::Timeout) ("timed out after ..").
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Fails the job when it makes no progress, no new epoch and no status
    /// change, for `stall` ([`DEFAULT_STALL_TIMEOUT`] by default; `None`:
    /// never): [`run`](Self::run) then returns
    /// [`Error::Timeout`](crate::Error::Timeout) ("made no progress for
    /// .."). A job that keeps advancing runs as long as it needs. Progress
    /// is read from the coordinator's `epoch` and `status` keys, at least
    /// every second.
    pub fn stall_timeout(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    /// The supervision settings of this cluster.
    fn limits(&self) -> Limits {
        Limits { max_restarts: self.max_restarts, stall: self.stall, timeout: self.timeout, ..Limits::default() }
    }

    /// Runs the job to its end.
    pub fn run(self) -> crate::Result<JobResult> {
        self.job.check()?;
        let nodes = (0..self.job.tasks).map(|t| self.job.replicas_of(t) as u64).sum::<u64>() + self.spares as u64;
        open_files::ensure(open_files::needed(&self.job, nodes), &self.job.name)?;
        let coord: Arc<dyn Coordinator> = self.coord.clone().unwrap_or_else(|| Arc::new(Embedded::new()));
        let keys = Keys::new(&self.job.name);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Io(e.to_string()))?;
        // This run owns the job's keys: it starts the job afresh, unless
        // the job is running (on a shared coordinator).
        rt.block_on(crate::job::start_fresh(&*coord, &keys, &self.job.name))?;

        let (exits, exit_rx) = mpsc::channel::<(u64, crate::Result<NodeExit>)>();
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .min((nodes as usize).max(1));
        let mut pool = Vec::with_capacity(threads);
        for i in 0..threads {
            pool.push(NodeThread::start(i, exits.clone())?);
        }
        let mut next_id = 0u64;
        let mut start = |preferred: Option<TaskId>| -> crate::Result<()> {
            let cfg = NodeConfig {
                job: self.job.clone(),
                coord: coord.clone(),
                node_id: next_id,
                preferred_task: preferred,
                faults: self.faults.clone(),
                transport_faults: self.transport.clone(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                network: Default::default(),
            };
            pool[next_id as usize % pool.len()].run(cfg)?;
            next_id += 1;
            Ok(())
        };
        let mut sup = Supervisor::new(self.limits(), Instant::now());
        // A primary and its backups for every task, then the spares.
        for r in 0..self.job.replicas {
            for t in (0..self.job.tasks).filter(|&t| r < self.job.replicas_of(t)) {
                start(Some(t))?;
                sup.on(Event::Started, Instant::now());
            }
        }
        for _ in 0..self.spares {
            start(None)?;
            sup.on(Event::Started, Instant::now());
        }

        // How often progress is read while the job runs.
        let tick = self.stall.map_or(Duration::from_secs(1), |s| (s / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
        let mut read_at: Option<Instant> = None;
        let mut kills = 0;
        // The first node failure, for a job that no node could finish.
        let mut failure: Option<String> = None;
        loop {
            if !sup.ended() && read_at.is_none_or(|t| t.elapsed() >= tick) {
                read_at = Some(Instant::now());
                read_progress(&rt, &*coord, &keys, &mut sup);
            }
            let wait = match sup.next(Instant::now()) {
                Decision::Restart(_) => {
                    start(None)?;
                    continue;
                }
                Decision::FailJob(verdict) => {
                    match rt.block_on(crate::job::fail_running(&*coord, &keys, &verdict.to_string())) {
                        Ok(status) => sup.on(Event::Status(status), Instant::now()),
                        Err(e) => tracing::warn!(error = %e, "cannot mark the job failed"),
                    }
                    continue;
                }
                Decision::GiveUp(patience, why) => {
                    return Err(crate::Error::Coord(crate::coord::CoordError::Unavailable(format!(
                        "job `{}`: the coordinator has been unreachable for {patience:?}: {why}",
                        self.job.name
                    ))))
                }
                Decision::KillAll => {
                    // Nodes on threads cannot be killed: the threads are
                    // left to them.
                    return Err(crate::Error::Timeout(format!(
                        "job `{}`: {} node(s) did not stop after the job ended",
                        self.job.name,
                        sup.live()
                    )));
                }
                Decision::Stop => break,
                Decision::Wait(wait) => wait,
            };
            let (id, exit) = match exit_rx.recv_timeout(wait.min(tick)) {
                Ok(exit) => exit,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let exit = match exit {
                Ok(NodeExit::JobEnded(status)) => {
                    sup.on(Event::Status(status), Instant::now());
                    Exit::JobEnded
                }
                Ok(NodeExit::Killed) => {
                    kills += 1;
                    Exit::SteppedDown
                }
                Ok(NodeExit::CoordinatorLost(why)) => {
                    failure.get_or_insert_with(|| format!("node {id} gave up on the coordinator: {why}"));
                    Exit::CoordinatorLost(why)
                }
                // Every other end: stepped down (see `NodeExit::stepped_down`).
                Ok(_) => Exit::SteppedDown,
                Err(e) => {
                    tracing::error!(node = id, error = %e, "node failed");
                    failure.get_or_insert_with(|| format!("node {id} failed: {e}"));
                    Exit::Failed(e.to_string())
                }
            };
            // A node leaves when the job ends: look before calling its
            // exit a death.
            if !sup.ended() {
                read_progress(&rt, &*coord, &keys, &mut sup);
            }
            sup.on(Event::Exited { node: id, exit }, Instant::now());
        }

        let _ = start; // ends the closure's borrow of the pool
        for thread in pool {
            thread.stop();
        }
        let status = match rt.block_on(coord.get(&keys.status()))? {
            Some(kv) => JobStatus::parse(&kv.value),
            None => JobStatus::Failed("no status".into()),
        };
        let (records, _) = rt.block_on(coord.get_prefix(&keys.records()))?;
        let records = records
            .into_iter()
            .map(|kv| (kv.key.trim_start_matches(&keys.records()).to_owned(), kv.value))
            .collect();
        // A time limit or a stall that this run recorded is an error; an
        // end written first stands.
        if let Some(verdict @ (Verdict::TimedOut(_) | Verdict::Stalled(..))) = sup.verdict() {
            let why = verdict.to_string();
            if status == JobStatus::Failed(why.clone()) {
                let why = why.replacen("no progress", "made no progress", 1);
                return Err(crate::Error::Timeout(format!("job `{}` {why}", self.job.name)));
            }
        }
        if let (Some(why), JobStatus::Running) = (&failure, &status) {
            return Err(crate::Error::Node(why.clone()));
        }
        Ok(JobResult { status, records, kills, nodes_started: next_id as usize })
    }
}

/// Tells `sup` the job's status and epoch, or that the coordinator did
/// not answer.
fn read_progress(rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, keys: &Keys, sup: &mut Supervisor) {
    let read = rt.block_on(async {
        let status = coord.get(&keys.status()).await?.map(|kv| kv.value);
        let epoch = coord.get(&keys.epoch()).await?.map(|kv| kv.value);
        crate::coord::CoordResult::Ok((status, epoch))
    });
    let now = Instant::now();
    match read {
        Ok((status, epoch)) => {
            sup.on(Event::Status(status.map_or(JobStatus::Running, |s| JobStatus::parse(&s))), now);
            sup.on(Event::Epoch(epoch), now);
        }
        Err(e) => sup.on(Event::Unreachable(e.to_string()), now),
    }
}

/// A thread that runs nodes on one `LocalSet`.
struct NodeThread {
    configs: tokio::sync::mpsc::UnboundedSender<NodeConfig>,
    handle: std::thread::JoinHandle<()>,
}

impl NodeThread {
    fn start(index: usize, exits: mpsc::Sender<(u64, crate::Result<NodeExit>)>) -> crate::Result<Self> {
        let (configs, mut incoming) = tokio::sync::mpsc::unbounded_channel::<NodeConfig>();
        let handle = std::thread::Builder::new()
            .name(format!("taskgraph-nodes-{index}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        // Report every node sent here as failed.
                        while let Some(cfg) = incoming.blocking_recv() {
                            let _ = exits.send((cfg.node_id, Err(crate::Error::Io(format!("no runtime: {e}")))));
                        }
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    while let Some(cfg) = incoming.recv().await {
                        let exits = exits.clone();
                        tokio::task::spawn_local(async move {
                            let id = cfg.node_id;
                            // A panic in the node (not in a task: those fail
                            // the job) is reported like any node failure.
                            let exit = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(node::run(cfg)))
                                .await
                                .unwrap_or_else(|_| Err(crate::Error::Node(format!("node {id} panicked"))));
                            let _ = exits.send((id, exit));
                        });
                    }
                });
            })
            .map_err(|e| crate::Error::Io(format!("cannot start a node thread: {e}")))?;
        Ok(NodeThread { configs, handle })
    }

    fn run(&self, cfg: NodeConfig) -> crate::Result<()> {
        self.configs.send(cfg).map_err(|_| crate::Error::Io("a node thread has stopped".into()))
    }

    /// Ends the thread (every node on it has stopped) and waits for it.
    fn stop(self) {
        drop(self.configs);
        let _ = self.handle.join();
    }
}

/// The open files a local job needs, and the process's limit on them.
mod open_files {
    use crate::job::Job;

    /// About how many file descriptors a job of `nodes` nodes needs in one
    /// process: a listening socket per node, and both ends of a TCP
    /// connection each way between neighbours (as at epoch 0), and a
    /// margin.
    pub(super) fn needed(job: &Job, nodes: u64) -> u64 {
        let topology = &job.topology;
        let links: u64 = (0..job.tasks)
            .map(|t| topology.links().iter().map(|l| topology.neighbours(l.id, t, 0).len() as u64).sum::<u64>())
            .sum();
        // Each neighbour relation: a connection each way once both fetch
        // (2 fds each, both ends here); backups add one to their primary.
        let per_link = 2;
        let backups = nodes.saturating_sub(job.tasks) * 2;
        nodes + links * per_link + backups + 64
    }

    /// Raises the soft limit on open files to the hard one (as Go's
    /// runtime does), and fails clearly if even that is too few for
    /// `needed`, rather than letting the nodes fail to accept connections.
    #[cfg(target_os = "linux")]
    pub(super) fn ensure(needed: u64, job: &str) -> crate::Result<()> {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Ok(());
            }
            if limit.rlim_cur < limit.rlim_max && limit.rlim_cur < needed {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        // rlim_t is u64 on 64-bit Linux, u32 on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let (soft, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
        if soft < needed {
            return Err(crate::Error::Job(format!(
                "job `{job}` needs about {needed} open files in this process (a listening socket per node, two per \
                 connection between neighbours), but the process may open {} (RLIMIT_NOFILE, hard limit {}): raise \
                 `ulimit -n`, or run the job as node processes (`taskgraph launch`)",
                soft, hard
            )));
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn ensure(_needed: u64, _job: &str) -> crate::Result<()> {
        Ok(())
    }
}
