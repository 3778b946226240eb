//! A job: what runs (tasks, topology, edges), and starting, joining and
//! failing it in the coordinator. Where its state lives there: [`keys`](crate::keys).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::coord::Coordinator;
use crate::graph::{Edge, SharedTopology, TaskId, Topology};
use crate::message::Limits;
use crate::task::Task;

// The key layout lived here before it had its own module: these paths
// stay for the programs that use them.
pub use crate::keys::{Holder, JobStatus, Keys};

/// Makes the task of a task id (called on the node that hosts it).
pub type TaskFactory = Arc<dyn Fn(TaskId) -> Box<dyn Task> + Send + Sync>;

/// A job to run: its tasks, topology, edges and settings.
#[derive(Clone)]
pub struct Job {
    pub(crate) name: String,
    pub(crate) tasks: u64,
    pub(crate) topology: SharedTopology,
    pub(crate) factory: TaskFactory,
    pub(crate) edges: Vec<(u32, &'static str)>,
    pub(crate) limits: Limits,
    pub(crate) lease_ttl: Duration,
    pub(crate) graph: Option<&'static crate::dsl::GraphSpec>,
    pub(crate) replicas: u32,
    pub(crate) vacancy_timeout: Duration,
    pub(crate) compaction: Option<Duration>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("tasks", &self.tasks)
            .field("edges", &self.edges)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job named `name` of `tasks` tasks linked by `topology`, whose
    /// task `t` is `factory(t)`.
    pub fn new<F>(name: impl Into<String>, tasks: u64, topology: impl Topology, factory: F) -> Self
    where
        F: Fn(TaskId) -> Box<dyn Task> + Send + Sync + 'static,
    {
        Job {
            name: name.into(),
            tasks,
            topology: Arc::new(topology),
            factory: Arc::new(factory),
            edges: Vec::new(),
            limits: Limits::default(),
            lease_ttl: Duration::from_secs(2),
            graph: None,
            replicas: 1,
            vacancy_timeout: Duration::from_secs(60),
            compaction: Some(crate::coord::Compactor::DEFAULT_PERIOD),
        }
    }

    /// The same job under another name (its keys live under the name).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Declares an edge the tasks serve (a fetch of an undeclared edge is
    /// answered with an `unknownEdge` error).
    pub fn edge<M>(mut self, edge: Edge<M>) -> Self {
        self.edges.push((edge.id, edge.name));
        self
    }

    /// Limits on received messages (raise `max_bytes` for bulk data).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a silent node keeps its tasks (its lease TTL).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long a task may have no node at all (its nodes died and no
    /// spare took it over) before the job fails, saying which task: a job
    /// that cannot go on ends clearly instead of waiting forever. 60 s by
    /// default; a supervisor that restarts dead nodes fills a vacancy in
    /// well under a second.
    pub fn vacancy_timeout(mut self, timeout: Duration) -> Self {
        self.vacancy_timeout = timeout;
        self
    }

    /// How much of the coordinator's history the job keeps: the primary of
    /// task 0 compacts it as the epochs go, to the revision of one
    /// `period` ago ([`Compactor`](crate::coord::Compactor); 5 minutes by
    /// default, as Kubernetes does). `None`: never (leave it to the
    /// coordinator's own settings, e.g. etcd's `--auto-compaction-*`).
    pub fn compaction(mut self, period: Option<Duration>) -> Self {
        self.compaction = period;
        self
    }

    /// How many nodes hold each task: one primary and `replicas - 1` hot
    /// backups (1, the default: no backups). A backup follows its
    /// primary's replication stream ([`Context::replicate`]) and takes the
    /// task over, state and all, when the primary dies; see the README's
    /// "Hot standby".
    ///
    /// [`Context::replicate`]: crate::task::Context::replicate
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How many nodes hold each task (at most: see [`replicas_of`](Self::replicas_of)).
    pub fn replica_count(&self) -> u32 {
        self.replicas
    }

    /// How many nodes hold task `task`: [`replicas`](Self::replicas), but
    /// 1 for a task whose role in the job's graph is not `replicated(..)`
    /// (it has no state for a backup to hold).
    pub fn replicas_of(&self, task: TaskId) -> u32 {
        match self.graph {
            Some(g) if !g.role_of(task).is_some_and(|r| g.roles.get(r as usize).is_some_and(|r| r.replicated)) => 1,
            _ => self.replicas,
        }
    }

    /// The graph the job runs (set by `taskgraph!`'s generated `job`):
    /// the runtime checks that every task has a role before it starts.
    pub fn graph(mut self, graph: &'static crate::dsl::GraphSpec) -> Self {
        self.graph = Some(graph);
        self
    }

    /// Whether the job can run as configured: it has tasks, and each has a
    /// role in its graph (if it has one). Nodes and [`LocalCluster`]
    /// check it before they start.
    ///
    /// [`LocalCluster`]: crate::LocalCluster
    pub fn check(&self) -> crate::Result<()> {
        if self.tasks == 0 {
            return Err(crate::Error::Job(format!("job `{}` has no tasks", self.name)));
        }
        if let Some(graph) = self.graph {
            graph.check_tasks(self.tasks).map_err(crate::Error::Job)?;
        }
        Ok(())
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many tasks it has.
    pub fn tasks(&self) -> u64 {
        self.tasks
    }

    pub(crate) fn has_edge(&self, edge: u32) -> bool {
        self.edges.iter().any(|(id, _)| *id == edge)
    }
}

/// What the coordinator holds of a job when someone wants to start it.
#[derive(Debug)]
struct Existing {
    /// Its status key, if it has one.
    status: Option<JobStatus>,
    /// Its epoch key's value.
    epoch: Option<String>,
    /// The ids of its live nodes (`nodes/<id>` keys: they go with their
    /// node's lease).
    nodes: Vec<u64>,
}

impl Existing {
    async fn read(coord: &dyn Coordinator, keys: &Keys) -> crate::Result<Existing> {
        let status = coord.get(&keys.status()).await?.map(|kv| JobStatus::parse(&kv.value));
        let epoch = coord.get(&keys.epoch()).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let (kvs, _) = coord.get_prefix(&keys.nodes()).await?;
        let nodes = kvs.iter().filter_map(|kv| keys.node_id(&kv.key)).collect();
        Ok(Existing { status, epoch, nodes })
    }

    /// Running: it has live nodes and has not ended.
    fn running(&self) -> bool {
        !self.nodes.is_empty() && !matches!(self.status, Some(JobStatus::Done | JobStatus::Failed(_)))
    }
}

/// Makes way for a new run of job `name`: refuses (with
/// [`Error::Job`](crate::Error::Job), touching nothing) if the job is
/// running, i.e. has live nodes and has not ended; otherwise deletes what
/// is left of an earlier run (an ended job, or one whose nodes are all
/// gone). [`Launch`](crate::launch::Launch) and
/// [`LocalCluster`](crate::LocalCluster) start every job through it.
///
/// The check and the deletion are two requests: two launches of the same
/// job at the same instant can both pass (their nodes then share the
/// job's keys, as with `--join`); a launch of a job that has been running
/// for a moment is always refused.
pub(crate) async fn start_fresh(coord: &dyn Coordinator, keys: &Keys, name: &str) -> crate::Result<()> {
    let existing = Existing::read(coord, keys).await?;
    if existing.running() {
        return Err(crate::Error::Job(format!(
            "job `{name}` is running (epoch {}, {} live node{}): stop it first with `taskgraph stop`, or use --join",
            existing.epoch.as_deref().unwrap_or("?"),
            existing.nodes.len(),
            if existing.nodes.len() == 1 { "" } else { "s" },
        )));
    }
    coord.delete_prefix(keys.root()).await?;
    Ok(())
}

/// Ends a running job as failed, for `why` (a supervisor's verdict: a
/// timeout, a stall, too many restarts). Compare-and-swap from
/// `running`: a job that has ended meanwhile (done, say) keeps its end.
/// The status that stands: `Failed(why)`, or the end written first (also
/// `Failed(why)` if the job has no status key, so nothing to fail).
pub(crate) async fn fail_running(coord: &dyn Coordinator, keys: &Keys, why: &str) -> crate::coord::CoordResult<JobStatus> {
    let running = crate::coord::Expect::Value(JobStatus::Running.encode());
    let failed = JobStatus::Failed(why.to_owned());
    Ok(match coord.compare_and_swap(&keys.status(), running, &failed.encode(), None).await? {
        Err(Some(kv)) => JobStatus::parse(&kv.value),
        Ok(_) | Err(None) => failed,
    })
}

/// Whether nodes may join job `name`: not if it has ended (its nodes would
/// leave at once).
pub(crate) async fn check_joinable(coord: &dyn Coordinator, keys: &Keys, name: &str) -> crate::Result<()> {
    match Existing::read(coord, keys).await?.status {
        Some(status @ (JobStatus::Done | JobStatus::Failed(_))) => Err(crate::Error::Job(format!(
            "job `{name}` has ended ({status:?}): there is nothing to join; launch it afresh without --join"
        ))),
        _ => Ok(()),
    }
}

/// The largest id of the job's live nodes.
pub(crate) async fn largest_node_id(coord: &dyn Coordinator, keys: &Keys) -> crate::coord::CoordResult<Option<u64>> {
    let (kvs, _) = coord.get_prefix(&keys.nodes()).await?;
    Ok(kvs.iter().filter_map(|kv| keys.node_id(&kv.key)).max())
}
