//! Running a whole job in one process: one thread per node, the embedded
//! coordinator (or any other), real TCP between nodes on loopback, and
//! fault injection.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::coord::{Coordinator, Embedded};
use crate::graph::TaskId;
use crate::job::{Job, JobStatus, Keys};
use crate::node::{self, FaultHook, FaultPoint, NodeConfig, NodeExit};

pub use crate::launch::DEFAULT_STALL_TIMEOUT;
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
        let replicas = self.job.replicas as usize;
        let nodes = (0..self.job.tasks).map(|t| self.job.replicas_of(t) as usize).sum::<usize>() + self.spares;
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .min(nodes.max(1));
        let mut pool = Vec::with_capacity(threads);
        for i in 0..threads {
            pool.push(NodeThread::start(i, exits.clone())?);
        }
        let mut next_id = 0u64;
        let mut live = 0usize;
        let mut start = |preferred: Option<TaskId>, live: &mut usize| -> crate::Result<()> {
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
            *live += 1;
            Ok(())
        };
        // A primary and its backups for every task.
        for r in 0..replicas {
            for t in 0..self.job.tasks {
                if r < self.job.replicas_of(t) as usize {
                    start(Some(t), &mut live)?;
                }
            }
        }
        for _ in 0..self.spares {
            start(None, &mut live)?;
        }

        let started_at = Instant::now();
        // How often progress (and the time limit) is checked.
        let tick = self.stall.map_or(Duration::from_secs(1), |s| (s / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
        let mut checked_at = Instant::now();
        // The epoch and status keys' values last read.
        type Progress = (Option<Vec<u8>>, Option<Vec<u8>>);
        let mut seen: Option<Progress> = None;
        let mut progressed_at = Instant::now();
        let mut kills = 0;
        let mut restarts = 0;
        let mut ended = false;
        // Why this run stopped the job itself (time limit, no progress).
        let mut stopped: Option<String> = None;
        let mut failure: Option<String> = None;
        while live > 0 {
            let wait = match (stopped.is_some(), self.timeout) {
                (true, _) => Duration::from_secs(10),
                (false, Some(t)) => (started_at + t).saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), tick),
                (false, None) => tick,
            };
            match exit_rx.recv_timeout(wait) {
                Ok((id, exit)) => {
                    live -= 1;
                    let replace = match exit {
                        Ok(NodeExit::JobEnded(_)) => {
                            ended = true;
                            false
                        }
                        Ok(NodeExit::Killed) => {
                            kills += 1;
                            true
                        }
                        Ok(NodeExit::LostLease) => true,
                        Ok(NodeExit::CoordinatorLost(why)) => {
                            failure.get_or_insert_with(|| format!("node {id} gave up on the coordinator: {why}"));
                            true
                        }
                        Err(e) => {
                            tracing::error!(node = id, error = %e, "node failed");
                            failure.get_or_insert_with(|| format!("node {id} failed: {e}"));
                            true
                        }
                    };
                    if replace && !ended && stopped.is_none() {
                        restarts += 1;
                        if restarts > self.max_restarts {
                            failure.get_or_insert_with(|| format!("more than {} node restarts", self.max_restarts));
                            let _ = rt.block_on(crate::job::fail_running(&*coord, &keys, "too many node restarts"));
                        } else {
                            start(None, &mut live)?;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if stopped.is_none() => {}
                Err(_) => {
                    return Err(crate::Error::Timeout(format!(
                        "job `{}`: {live} node(s) did not stop after the job ended",
                        self.job.name
                    )))
                }
            }
            if stopped.is_none() && !ended && checked_at.elapsed() >= tick {
                checked_at = Instant::now();
                if let Some(t) = self.timeout.filter(|t| started_at.elapsed() > *t) {
                    stopped = Some(format!("timed out after {t:?}"));
                } else if let Some(stall) = self.stall {
                    let now = rt.block_on(async {
                        let epoch = coord.get(&keys.epoch()).await?.map(|kv| kv.value);
                        let status = coord.get(&keys.status()).await?.map(|kv| kv.value);
                        crate::coord::CoordResult::Ok((epoch, status))
                    });
                    // An unreachable coordinator is the nodes' to wait out.
                    if let Ok(now) = now {
                        let epoch = now.0.as_deref().map_or("?".into(), |e| String::from_utf8_lossy(e).into_owned());
                        if seen.as_ref() != Some(&now) {
                            seen = Some(now);
                            progressed_at = Instant::now();
                        } else if progressed_at.elapsed() > stall {
                            stopped = Some(format!("no progress for {stall:?} (stuck at epoch {epoch})"));
                        }
                    }
                }
                if let Some(why) = &stopped {
                    let _ = rt.block_on(crate::job::fail_running(&*coord, &keys, why));
                }
            }
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
        if let Some(why) = stopped {
            return Err(crate::Error::Timeout(format!("job `{}` {}", self.job.name, why.replacen("no progress", "made no progress", 1))));
        }
        if let (Some(why), JobStatus::Running) = (&failure, &status) {
            return Err(crate::Error::Node(why.clone()));
        }
        Ok(JobResult { status, records, kills, nodes_started: next_id as usize })
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

/// The kinds of [`FaultPoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// [`FaultPoint::EnterEpoch`].
    EnterEpoch,
    /// [`FaultPoint::DataReceived`].
    DataReceived,
    /// [`FaultPoint::BeforeServe`].
    BeforeServe,
    /// [`FaultPoint::AfterServe`].
    AfterServe,
    /// [`FaultPoint::BackupApplied`].
    BackupApplied,
    /// [`FaultPoint::BackupLost`].
    BackupLost,
}

#[derive(Clone, Debug)]
enum Rule {
    Exact(FaultPoint),
    Random { kind: FaultKind, probability: f64, tasks: Range<TaskId>, edge: Option<u32> },
}

/// A deterministic fault plan: exact points, and random ones decided by a
/// hash of the seed and the point (so a seed gives the same kills whatever
/// the timing). Each point fires at most once: the replacement node that
/// passes the same point again lives.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    rules: Vec<Rule>,
    fired: Mutex<HashSet<FaultPoint>>,
}

impl Faults {
    /// An empty plan with this seed.
    pub fn new(seed: u64) -> Self {
        Faults { seed, rules: Vec::new(), fired: Mutex::new(HashSet::new()) }
    }

    /// Kills the node at exactly this point.
    pub fn at(mut self, point: FaultPoint) -> Self {
        self.rules.push(Rule::Exact(point));
        self
    }

    /// Kills the node of a task in `tasks` at points of `kind` (on `edge`,
    /// if given) with `probability`.
    pub fn random(mut self, kind: FaultKind, probability: f64, tasks: Range<TaskId>, edge: Option<u32>) -> Self {
        self.rules.push(Rule::Random { kind, probability, tasks, edge });
        self
    }

    /// How many points have fired.
    pub fn fired(&self) -> usize {
        self.fired.lock().expect("fault plan lock").len()
    }

    fn decide(&self, point: &FaultPoint) -> bool {
        let (kind, task, epoch, other, edge) = match *point {
            FaultPoint::EnterEpoch { task, epoch } => (FaultKind::EnterEpoch, task, epoch, 0, None),
            FaultPoint::DataReceived { task, epoch, from, edge } => (FaultKind::DataReceived, task, epoch, from, Some(edge)),
            FaultPoint::BeforeServe { task, epoch, to, edge } => (FaultKind::BeforeServe, task, epoch, to, Some(edge)),
            FaultPoint::AfterServe { task, epoch, to, edge } => (FaultKind::AfterServe, task, epoch, to, Some(edge)),
            FaultPoint::BackupApplied { task, epoch } => (FaultKind::BackupApplied, task, epoch, 0, None),
            FaultPoint::BackupLost { task, epoch } => (FaultKind::BackupLost, task, epoch, 0, None),
        };
        self.rules.iter().any(|rule| match rule {
            Rule::Exact(p) => p == point,
            Rule::Random { kind: k, probability, tasks, edge: want } => {
                if *k != kind || !tasks.contains(&task) || want.is_some_and(|w| Some(w) != edge) {
                    return false;
                }
                let h = mix(mix(mix(mix(self.seed ^ kind as u64, task), epoch), other), edge.map_or(u64::MAX, u64::from));
                (h as f64 / u64::MAX as f64) < *probability
            }
        })
    }
}

impl FaultHook for Faults {
    fn kill(&self, point: &FaultPoint) -> bool {
        if !self.decide(point) {
            return false;
        }
        self.fired.lock().expect("fault plan lock").insert(point.clone())
    }
}

impl FaultHook for Arc<Faults> {
    fn kill(&self, point: &FaultPoint) -> bool {
        (**self).kill(point)
    }
}

/// SplitMix64 over `(h, v)`: a stable, well-spread hash.
fn mix(h: u64, v: u64) -> u64 {
    let mut z = h.wrapping_add(v).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
