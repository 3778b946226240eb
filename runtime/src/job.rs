//! A job: what runs (tasks, topology, edges) and where its state lives in
//! the coordinator.
//!
//! # Key layout
//!
//! Everything of job `J` lives under `/taskgraph/J/`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `epoch` | the current epoch, decimal | created as `0` by the first node; advanced by compare-and-swap |
//! | `status` | `running`, `done`, or `failed: <reason>` | created by the first node; set once by the task that ends the job |
//! | `tasks/<t>/primary` | `node=<id> addr=<ip:port>`, bound to the node's lease | created-if-absent by the node that wins task `t`; its create revision is the primary's **term** |
//! | `tasks/<t>/backup/<slot>` | `node=<id> addr=<ip:port>`, then ` ready=1` appended once the backup has caught up with its primary, bound to the node's lease | created-if-absent by a node that becomes a backup of task `t` (slots `1..replicas`); deleted by it when it becomes the primary, or by its primary when it stops following |
//! | `nodes/<id>` | `addr=<ip:port>`, bound to the node's lease | each node, while it lives |
//! | `records/<name>` | bytes | [`Context::record`](crate::task::Context::record) |
//!
//! A node's death shows as the deletion of its lease's keys: its
//! `nodes/<id>` and, if it was a primary, `tasks/<t>/primary`, which spare
//! nodes race to create.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::coord::Coordinator;
use crate::graph::{Edge, SharedTopology, TaskId, Topology};
use crate::message::Limits;
use crate::task::Task;

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

/// Where a job's state lives in the coordinator (the table in this
/// module's documentation): for tools that read or watch a job from
/// outside, such as `taskgraph status`, a dashboard or a test, so that
/// none of them spells the layout out again.
#[derive(Clone, Debug)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The keys of job `job`.
    pub fn new(job: &str) -> Self {
        Keys { root: format!("/taskgraph/{job}/") }
    }
    /// The prefix of every key of the job.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// The epoch (decimal).
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.root)
    }
    /// The job's status ([`JobStatus::parse`]).
    pub fn status(&self) -> String {
        format!("{}status", self.root)
    }
    /// The prefix of every task's keys.
    pub fn tasks(&self) -> String {
        format!("{}tasks/", self.root)
    }
    /// Every key of task `task` (its primary and backups).
    pub fn task(&self, task: TaskId) -> String {
        format!("{}tasks/{task}/", self.root)
    }
    /// Task `task`'s primary ([`Holder::parse`]; its create revision is the term).
    pub fn primary(&self, task: TaskId) -> String {
        format!("{}tasks/{task}/primary", self.root)
    }
    /// A live node's key.
    pub fn node(&self, node: u64) -> String {
        format!("{}nodes/{node}", self.root)
    }
    /// The prefix of the live nodes' keys.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }
    /// A record's key.
    pub fn record(&self, name: &str) -> String {
        format!("{}records/{name}", self.root)
    }
    /// The prefix of the records' keys.
    pub fn records(&self) -> String {
        format!("{}records/", self.root)
    }
    /// Task `task`'s backup in `slot` ([`Holder::parse`]).
    pub fn backup(&self, task: TaskId, slot: u32) -> String {
        format!("{}tasks/{task}/backup/{slot}", self.root)
    }
    /// The task and slot of a `tasks/<t>/backup/<slot>` key.
    pub fn backup_slot(&self, key: &str) -> Option<(TaskId, u32)> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("tasks/")?;
        let (task, slot) = rest.split_once("/backup/")?;
        Some((task.parse().ok()?, slot.parse().ok()?))
    }
    /// The task of a `tasks/<t>/primary` key.
    pub fn primary_task(&self, key: &str) -> Option<TaskId> {
        key.strip_prefix(&self.root)?.strip_prefix("tasks/")?.strip_suffix("/primary")?.parse().ok()
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
        let nodes = kvs.iter().filter_map(|kv| kv.key.strip_prefix(&keys.nodes())?.parse().ok()).collect();
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
/// Whether it was still running.
pub(crate) async fn fail_running(coord: &dyn Coordinator, keys: &Keys, why: &str) -> crate::coord::CoordResult<bool> {
    let running = crate::coord::Expect::Value(JobStatus::Running.encode());
    Ok(coord.compare_and_swap(&keys.status(), running, &JobStatus::Failed(why.to_owned()).encode(), None).await?.is_ok())
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
    Ok(kvs.iter().filter_map(|kv| kv.key.strip_prefix(&keys.nodes())?.parse().ok()).max())
}

/// Who holds a task: the value of a `tasks/<t>/primary` or
/// `tasks/<t>/backup/<slot>` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The node's id.
    pub node: u64,
    /// Where the node serves its peers.
    pub addr: std::net::SocketAddr,
    /// On a backup key: the backup has caught up with its primary's
    /// stream (from then on its primary syncs it before every effect), so
    /// it can take the task over with its state (` ready=1`).
    pub ready: bool,
}

impl Holder {
    /// The key's value (`node=<id> addr=<ip:port>[ ready=1]`).
    pub fn encode(&self) -> Vec<u8> {
        let ready = if self.ready { " ready=1" } else { "" };
        format!("node={} addr={}{ready}", self.node, self.addr).into_bytes()
    }
    /// Reads a key's value (unknown `name=value` parts are skipped);
    /// `None` if it has no node or address.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut node = None;
        let mut addr = None;
        let mut ready = false;
        for part in text.split_whitespace() {
            match part.split_once('=')? {
                ("node", v) => node = v.parse().ok(),
                ("addr", v) => addr = v.parse().ok(),
                ("ready", v) => ready = v == "1",
                _ => {}
            }
        }
        Some(Holder { node: node?, addr: addr?, ready })
    }
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Still running.
    Running,
    /// Ended by a task with [`end_job`](crate::task::Context::end_job).
    Done,
    /// Ended by [`fail_job`](crate::task::Context::fail_job) or by the
    /// runtime (e.g. an inconsistent topology).
    Failed(String),
}

impl JobStatus {
    /// The status key's value (`running`, `done`, `failed: <reason>`).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            JobStatus::Running => b"running".to_vec(),
            JobStatus::Done => b"done".to_vec(),
            JobStatus::Failed(r) => format!("failed: {r}").into_bytes(),
        }
    }
    /// Reads the status key's value.
    pub fn parse(bytes: &[u8]) -> JobStatus {
        match std::str::from_utf8(bytes) {
            Ok("running") => JobStatus::Running,
            Ok("done") => JobStatus::Done,
            Ok(s) => JobStatus::Failed(s.strip_prefix("failed: ").unwrap_or(s).to_owned()),
            Err(_) => JobStatus::Failed("unreadable status".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("j");
        assert_eq!(k.primary(12), "/taskgraph/j/tasks/12/primary");
        assert_eq!(k.primary_task(&k.primary(12)), Some(12));
        assert_eq!(k.primary_task("/taskgraph/j/tasks/x/primary"), None);
        assert_eq!(k.primary_task("/taskgraph/other/tasks/1/primary"), None);
        assert_eq!(k.backup_slot(&k.backup(12, 2)), Some((12, 2)));
        assert_eq!(k.primary_task(&k.backup(12, 2)), None);
        assert_eq!(k.backup_slot(&k.primary(12)), None);
        let v = Holder { node: 3, addr: "127.0.0.1:5000".parse().unwrap(), ready: false };
        assert_eq!(Holder::parse(&v.encode()), Some(v.clone()));
        let r = Holder { ready: true, ..v };
        assert_eq!(Holder::parse(&r.encode()), Some(r));
        assert_eq!(k.task(1), "/taskgraph/j/tasks/1/");
        assert_eq!(Holder::parse(b"garbage"), None);
        assert_eq!(JobStatus::parse(&JobStatus::Failed("x y".into()).encode()), JobStatus::Failed("x y".into()));
    }
}
