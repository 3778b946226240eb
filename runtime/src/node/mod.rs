//! A node: one thread running one event loop, hosting one task as its
//! primary, or waiting as a spare to take over a task whose node died.
//!
//! Everything of a node lives on its thread (capnp-rpc is `!Send`): a
//! current-thread tokio runtime with a `LocalSet` runs the RPC server, the
//! connections to peers, the coordinator watch and the event loop, which
//! owns the task and calls its handlers one at a time.
//!
//! The event loop is a plain state machine fed by one channel: requests
//! from peers, answers to this node's fetches, coordinator changes, and a
//! retry tick. Handlers' actions run in order after each handler.

mod lease;
mod replication;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::coord::{CoordError, Coordinator, Event as CoordEvent, Expect, KeyValue, LeaseId};
use crate::graph::{Epoch, TaskId};
use crate::{job::Job, keys::{Holder, JobStatus, Keys}};
use crate::task::{Action, Context, Received, ServeRequest, Task};

pub use crate::transport::TransportFaults;
pub(crate) use crate::transport::{Answer, FetchFailure, Fetched, ReplicaEntry, Replication, Status, StatusKind};
use lease::{Keeper, LeaseNews, SureUntil};
use replication::primary::{Answer as ReplicaAnswer, Gate, Next as ReplicaNext, Sending};
use replication::Stream;
use session::{patiently, Lane, Write, Written, COORDINATOR_PATIENCE};
use crate::spawn::Spawner;
use crate::transport::{self, Inbound, Shared, Transport};

/// Where a fault can be injected: the runtime asks a [`FaultHook`] at each
/// of these points, and the node dies on the spot if it says so.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// The task is about to enter `epoch` (before its handler runs).
    EnterEpoch {
        /// The task.
        task: TaskId,
        /// The epoch.
        epoch: Epoch,
    },
    /// A fetched message arrived (before `data_ready`).
    DataReceived {
        /// The task that fetched.
        task: TaskId,
        /// The epoch.
        epoch: Epoch,
        /// The task it came from.
        from: TaskId,
        /// The edge.
        edge: u32,
    },
    /// A neighbour's fetch arrived (before `serve`).
    BeforeServe {
        /// The serving task.
        task: TaskId,
        /// The epoch.
        epoch: Epoch,
        /// The task asking.
        to: TaskId,
        /// The edge.
        edge: u32,
    },
    /// A backup of the task is about to apply an update of its primary's
    /// at this epoch.
    BackupApplied {
        /// The task.
        task: TaskId,
        /// The epoch.
        epoch: Epoch,
    },
    /// The task's primary has just dropped a backup that stopped
    /// answering (the backup is gone or frozen).
    BackupLost {
        /// The task.
        task: TaskId,
        /// The epoch.
        epoch: Epoch,
    },
    /// The task replied to a fetch (the reply has been sent).
    AfterServe {
        /// The serving task.
        task: TaskId,
        /// The epoch.
        epoch: Epoch,
        /// The task asking.
        to: TaskId,
        /// The edge.
        edge: u32,
    },
}

/// Decides where nodes die (fault injection for tests and chaos runs).
pub trait FaultHook: Send + Sync + 'static {
    /// Whether the node at `point` dies now.
    fn kill(&self, point: &FaultPoint) -> bool;
}

/// Why a node stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeExit {
    /// The job ended.
    JobEnded(JobStatus),
    /// A fault hook killed it.
    Killed,
    /// It lost its lease (or its task's key) while alive.
    LostLease,
    /// It gave up on the coordinator: unreachable for longer than the
    /// node waits it out. A supervisor should not just restart it: the
    /// next node would find the coordinator gone too (see
    /// [`crate::launch::EXIT_COORDINATOR_LOST`]).
    CoordinatorLost(String),
}

/// What a node needs to run.
#[derive(Clone)]
pub(crate) struct NodeConfig {
    pub(crate) job: Job,
    pub(crate) coord: Arc<dyn Coordinator>,
    pub(crate) node_id: u64,
    pub(crate) preferred_task: Option<TaskId>,
    pub(crate) faults: Option<Arc<dyn FaultHook>>,
    pub(crate) transport_faults: TransportFaults,
    pub(crate) listen: SocketAddr,
    /// The transport to listen and reach peers with (TCP by default).
    pub(crate) network: transport::Network,
}

/// Where the answer to one fetch goes.
type Responder = oneshot::Sender<Answer>;

/// An event for the loop.
pub(crate) enum Event {
    /// A peer fetches from this node's task.
    Fetch(transport::FetchRequest, oneshot::Sender<Answer>),
    /// A peer flags this node's task.
    Flag(transport::MetaFlag, oneshot::Sender<Status>),
    /// A task's primary sends this backup its replication stream.
    Replicate(Replication, oneshot::Sender<(Status, u64)>),
    /// One attempt to deliver a flag of this epoch finished.
    FlagDone { index: usize, epoch: Epoch, term: u64, delivered: bool },
    /// One of this node's fetches finished (one attempt of it).
    FetchDone { seq: u64, attempt: u32, result: Result<Fetched, FetchFailure> },
    /// A connection to the node at this address ended by itself.
    PeerGone(SocketAddr),
    /// A backup's attempt to watch its primary at `addr` finished
    /// (`refused`: nothing listens there any more).
    Watching { refused: bool, addr: SocketAddr },
    /// Nothing listens where task `task`'s primary (as of `mod_revision`)
    /// was: its process is gone.
    PrimaryGone { task: TaskId, mod_revision: i64 },
    /// The coordinator changed.
    Coord(CoordEvent),
    /// The coordinator watch or keep-alive failed.
    CoordLost(String),
    /// A write of the coordinator lane did not simply succeed.
    Written(Written),
    /// A read of the keys under `prefix` (see `follow_soon`).
    Followed { prefix: String, kvs: Vec<KeyValue> },
    /// On a backup: its key now says `ready` (or could not be written).
    MarkedReady { task: TaskId, slot: u32, term: u64, result: crate::coord::CoordResult<Result<i64, ()>> },
    /// A backup answered attempt `attempt` of a batch of the stream.
    Replicated { slot: u32, attempt: u64, answer: ReplicaAnswer },
}

/// Something others see, in the order the task asked for it: waits for the
/// backups (see `replication::primary`).
#[derive(Debug)]
enum Effect {
    Action(Action),
    Write(Write),
}

/// One of this node's fetches.
#[derive(Debug)]
struct Outstanding {
    edge: u32,
    to: TaskId,
    epoch: Epoch,
    /// The attempt in flight (results of older attempts are stale).
    attempt: u32,
    in_flight: bool,
    /// The term of the node the attempt went to.
    sent_to_term: u64,
    /// When to try again if not in flight.
    retry_at: Instant,
}

/// A flag this task sent this epoch.
#[derive(Debug)]
struct SentFlag {
    flag: transport::MetaFlag,
    /// The term of the receiver's node it last went to.
    sent_to_term: u64,
    in_flight: bool,
    delivered: bool,
}

/// What a served (edge, requester) pair of this epoch is at.
enum Served {
    Pending(Vec<Responder>),
    Ready(Arc<Vec<u8>>),
}

#[derive(Clone, Copy, Debug)]
struct Primary {
    /// The node's id (for logs).
    node: u64,
    addr: SocketAddr,
    term: u64,
    /// The revision of the key's last write (to delete exactly this one).
    mod_revision: i64,
    /// A backup that has caught up with its primary (see `Holder`).
    ready: bool,
}

struct Loop {
    cfg: NodeConfig,
    keys: Keys,
    lease: LeaseId,
    /// Until when the lease is certainly alive (see `lease`).
    lease_sure_until: SureUntil,
    /// The keep-alive loop of `lease`, and where it reports.
    keeper: Keeper,
    lease_news: mpsc::UnboundedSender<LeaseNews>,
    /// When this node last took its keys again after losing its lease.
    rejoined_at: Option<Instant>,
    /// When to look for tasks vacant for too long next (see
    /// `Job::vacancy_timeout`), and whether this node has failed the job
    /// for one already.
    next_vacancy_check: Instant,
    gave_up: bool,
    /// On task 0's primary: when to compact the coordinator's history.
    compactor: Option<crate::coord::Compactor>,
    /// The key prefixes this node follows (see `follow`).
    followed: Vec<String>,
    value: Vec<u8>,
    tx: mpsc::UnboundedSender<Event>,
    spawner: Spawner,
    peers: Rc<dyn Transport>,
    shared: Rc<Shared>,
    /// The task this node is primary of, and its term.
    role: Option<(TaskId, u64)>,
    /// The task this node is a backup of, and its slot.
    backup_of: Option<(TaskId, u32)>,
    /// Every task's backups, by slot (from the coordinator).
    backups: HashMap<TaskId, std::collections::BTreeMap<u32, Primary>>,
    /// The replication stream this node writes (primary) or follows (backup).
    stream: Stream,
    /// The epoch whose replies `served` holds.
    served_epoch: Option<Epoch>,
    /// A backup's watch of its primary is being set up.
    watching: bool,
    task: Option<Box<dyn Task>>,
    epoch: Epoch,
    entered: bool,
    status: JobStatus,
    primaries: HashMap<TaskId, Primary>,
    served: HashMap<(u32, TaskId), Served>,
    held: Vec<(transport::FetchRequest, Responder)>,
    /// Flags that came before this task entered their epoch.
    held_flags: Vec<transport::MetaFlag>,
    /// Flags this task sent this epoch: retried until a node of the
    /// receiver takes them, and sent again to a receiver's new node.
    flags: Vec<SentFlag>,
    outstanding: HashMap<u64, Outstanding>,
    next_seq: u64,
    /// Tasks whose primary key was seen deleted (for backups and spares
    /// to claim; see `fill_vacancy`).
    vacant: HashMap<TaskId, Vacancy>,
    /// Actions of handlers, run in order by `apply_pending`.
    pending: std::collections::VecDeque<Action>,
    /// Records, epoch advances and the job's end, written in order off
    /// the loop (see `session`).
    lane: Lane,
    /// On a primary: its backups' progress, the effects waiting for them,
    /// and the replies among those (by edge and requester).
    sending: Sending,
    gate: Gate<Effect>,
    replying: std::collections::HashSet<(u32, TaskId)>,
}

/// A task without a primary, as this node knows it.
#[derive(Clone, Copy, Debug)]
struct Vacancy {
    /// Since when.
    since: Instant,
    /// When this node looks at it again (if it can claim it).
    next_look: Instant,
}

const MAX_HELD: usize = 100_000;
const RETRY_MIN: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(500);

type Exit = NodeExit;

/// How to run one node of a job in this process.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's id: unique among the job's live nodes (two live nodes
    /// with one id are refused).
    pub node_id: u64,
    /// The task to try first (it may be taken: the node then serves as a
    /// spare).
    pub task: Option<TaskId>,
    /// The address to serve peers on (port 0: any free port). Other nodes
    /// connect to the address this resolves to, so on a cluster use the
    /// host's reachable address, not loopback.
    pub listen: SocketAddr,
}

impl NodeOptions {
    /// Node `node_id`, trying task `task` first, on a free loopback port.
    pub fn new(node_id: u64, task: Option<TaskId>) -> Self {
        NodeOptions { node_id, task, listen: SocketAddr::from(([127, 0, 0, 1], 0)) }
    }
}

/// Runs one node of `job` in this process until the job ends (or the node
/// loses its lease), coordinated through `coord`: the way a job runs as
/// separate processes, one node each, on one machine or many.
pub fn run_node(job: Job, coord: Arc<dyn Coordinator>, options: NodeOptions) -> crate::Result<NodeExit> {
    run_blocking(NodeConfig {
        job,
        coord,
        node_id: options.node_id,
        preferred_task: options.task,
        faults: None,
        transport_faults: TransportFaults::default(),
        listen: options.listen,
        network: Default::default(),
    })
}

/// Runs a node on the current thread until it stops.
pub(crate) fn run_blocking(cfg: NodeConfig) -> crate::Result<NodeExit> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::Io(format!("cannot start a node runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(cfg))
}

/// Runs a node on the current thread's `LocalSet` until it stops; other
/// nodes may share the thread.
pub(crate) async fn run(cfg: NodeConfig) -> crate::Result<NodeExit> {
    cfg.job.check()?;
    let keys = Keys::new(&cfg.job.name);
    let coord = cfg.coord.clone();
    let listener = cfg.network.listen(cfg.listen)
        .await
        .map_err(|e| crate::Error::Io(format!("node {} cannot listen on {}: {e}", cfg.node_id, cfg.listen)))?;
    let addr = listener.addr();

    // The job's layout, created by whichever node comes first.
    // (`Err(existing)` just means another node came first.)
    let _ = coord.create(&keys.epoch(), b"0", None).await?;
    let _ = coord.create(&keys.status(), &JobStatus::Running.encode(), None).await?;

    let granted_at = Instant::now();
    let lease = coord.grant(cfg.job.lease_ttl).await?;
    // The lease cannot end before a TTL after the last keep-alive that
    // succeeded was sent: until then this node knows it still holds it.
    let lease_sure_until = SureUntil::new(granted_at + cfg.job.lease_ttl);
    if coord.create(&keys.node(cfg.node_id), format!("addr={addr}").as_bytes(), Some(lease)).await?.is_err() {
        let _ = coord.revoke(lease).await;
        return Err(crate::Error::Node(format!("node id {} is in use by a live node of job `{}`", cfg.node_id, cfg.job.name)));
    }

    // Everything this node starts ends with it.
    let spawner = Spawner::new();
    let _stop_all = spawner.guard();
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Rc::new(Shared::new(cfg.node_id, &cfg.job.name, addr));
    let (inbound, inbound_rx) = mpsc::unbounded_channel();
    let peers = cfg.network.transport(cfg.job.limits.clone(), cfg.transport_faults.clone(), spawner.clone(), inbound.clone());
    spawner.spawn(listener.serve(inbound, shared.clone(), spawner.clone()));
    spawner.spawn(forward_inbound(inbound_rx, tx.clone()));
    let (lease_news, lease_rx) = mpsc::unbounded_channel();
    let keeper = lease::keep(coord.clone(), lease, cfg.job.lease_ttl, COORDINATOR_PATIENCE, lease_sure_until.clone(), lease_news.clone());

    // Every node follows the epoch and the job's status; the tasks' keys
    // it follows as it needs them (see `follow`). Not records, which
    // would wake every node each time a task records a result.
    let mut snapshot = Vec::new();
    for key in [keys.epoch(), keys.status()] {
        let (kvs, revision) = coord.get_prefix(&key).await?;
        snapshot.extend(kvs.into_iter().filter(|kv| kv.key == key));
        forward(&spawner, &tx, coord.watch(&key, revision + 1).await?);
    }

    let value = Holder { node: cfg.node_id, addr, ready: false }.encode();
    let lane_setup = session::LaneSetup { coord: coord.clone(), keys: keys.clone(), node_id: cfg.node_id, sure_until: lease_sure_until.clone() };
    let lane_tx = tx.clone();
    let lane = Lane::start(&spawner, lane_setup, move |w| {
        let _ = lane_tx.send(Event::Written(w));
    });
    let mut node = Loop {
        keys,
        lease,
        lease_sure_until,
        keeper,
        lease_news,
        rejoined_at: None,
        next_vacancy_check: Instant::now(),
        gave_up: false,
        compactor: None,
        followed: Vec::new(),
        value,
        tx,
        spawner,
        peers,
        shared,
        role: None,
        backup_of: None,
        backups: HashMap::new(),
        stream: Stream::default(),
        served_epoch: None,
        watching: false,
        task: None,
        epoch: 0,
        entered: false,
        status: JobStatus::Running,
        primaries: HashMap::new(),
        served: HashMap::new(),
        held: Vec::new(),
        held_flags: Vec::new(),
        flags: Vec::new(),
        outstanding: HashMap::new(),
        next_seq: 1,
        vacant: HashMap::new(),
        pending: Default::default(),
        lane,
        sending: Sending::default(),
        gate: Gate::default(),
        replying: Default::default(),
        cfg,
    };
    let exit = node.main(snapshot, rx, lease_rx).await;
    // A clean end gives the lease back; a killed node just vanishes.
    if matches!(exit, NodeExit::JobEnded(_)) {
        let _ = coord.revoke(node.lease).await;
    }
    Ok(exit)
}

/// Feeds what the transport delivers to the loop, until either ends.
async fn forward_inbound(mut inbound: mpsc::UnboundedReceiver<Inbound>, tx: mpsc::UnboundedSender<Event>) {
    while let Some(i) = inbound.recv().await {
        let event = match i {
            Inbound::Fetch(req, respond) => Event::Fetch(req, respond),
            Inbound::Flag(flag, respond) => Event::Flag(flag, respond),
            Inbound::Replicate(batch, respond) => Event::Replicate(batch, respond),
            Inbound::PeerGone(addr) => Event::PeerGone(addr),
        };
        if tx.send(event).is_err() {
            break;
        }
    }
}

/// Feeds a coordinator watch to the loop, until either ends.
fn forward(spawner: &Spawner, tx: &mpsc::UnboundedSender<Event>, mut watch: crate::coord::Watch) {
    let tx = tx.clone();
    spawner.spawn(async move {
        while let Some(event) = watch.next().await {
            let msg = match event {
                Ok(e) => Event::Coord(e),
                Err(e) => Event::CoordLost(e.to_string()),
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
}

impl Loop {
    async fn main(
        &mut self,
        snapshot: Vec<KeyValue>,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut lease_rx: mpsc::UnboundedReceiver<LeaseNews>,
    ) -> NodeExit {
        for kv in snapshot {
            if let Some(exit) = self.on_put(kv).await {
                return exit;
            }
        }
        if let JobStatus::Done | JobStatus::Failed(_) = self.status {
            return NodeExit::JobEnded(self.status.clone());
        }
        if let Err(exit) = self.find_work().await {
            return exit;
        }
        let mut tick = tokio::time::interval(RETRY_MIN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut result = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => Err(NodeExit::LostLease),
                },
                Some(news) = lease_rx.recv() => self.on_lease_news(news).await,
                _ = tick.tick() => self.retry_due().await,
            };
            if result.is_ok() {
                result = self.apply_pending().await;
            }
            if let Err(exit) = result {
                self.shutdown(&exit);
                return exit;
            }
        }
    }

    fn shutdown(&mut self, exit: &NodeExit) {
        if let NodeExit::JobEnded(_) = exit {
            // Peers still waiting on this node get a clear answer.
            let status = Status::new(StatusKind::ShuttingDown, "the job ended", self.epoch, self.term());
            for (_, waiters) in self.served.drain() {
                if let Served::Pending(ws) = waiters {
                    for w in ws {
                        let _ = w.send(Err(status.clone()));
                    }
                }
            }
            for (_, w) in self.held.drain(..) {
                let _ = w.send(Err(status.clone()));
            }
        }
    }

    /// What a coordinator error means for this node: it gave up on an
    /// unreachable coordinator, or it lost its lease.
    fn coordinator_failed(&self, what: &str, e: CoordError) -> Exit {
        tracing::warn!(node = self.cfg.node_id, error = %e, "cannot {what}");
        match e {
            CoordError::Unavailable(why) => NodeExit::CoordinatorLost(format!("cannot {what}: {why}")),
            _ => NodeExit::LostLease,
        }
    }

    fn term(&self) -> u64 {
        self.role.map_or(0, |(_, term)| term)
    }

    fn kill_at(&self, point: FaultPoint) -> Result<(), Exit> {
        match &self.cfg.faults {
            Some(hook) if hook.kill(&point) => {
                tracing::info!(node = self.cfg.node_id, ?point, "fault injected: node dies");
                Err(NodeExit::Killed)
            }
            _ => Ok(()),
        }
    }

    async fn handle(&mut self, event: Event) -> Result<(), Exit> {
        match event {
            Event::Fetch(req, respond) => self.on_fetch(req, respond).await,
            Event::Flag(flag, respond) => self.on_flag(flag, respond).await,
            Event::Replicate(batch, respond) => {
                match self.on_replicate(batch)? {
                    (answer, true) => self.publish_ready(answer, respond),
                    (answer, false) => {
                        let _ = respond.send(answer);
                    }
                }
                Ok(())
            }
            Event::MarkedReady { task, slot, term, result } => self.on_marked_ready(task, slot, term, result),
            Event::FetchDone { seq, attempt, result } => self.on_fetch_done(seq, attempt, result).await,
            Event::FlagDone { index, epoch, term, delivered } => {
                if epoch == self.epoch {
                    if let Some(f) = self.flags.get_mut(index) {
                        if f.sent_to_term == term {
                            f.in_flight = false;
                            f.delivered = delivered;
                        }
                    }
                }
                Ok(())
            }
            Event::Watching { refused, addr } => {
                self.watching = false;
                if refused {
                    // The primary's process is gone (its port is closed).
                    let _ = self.tx.send(Event::PeerGone(addr));
                }
                Ok(())
            }
            Event::PeerGone(addr) => {
                // Its process may have died: check the tasks it held now,
                // rather than when their leases run out.
                let held: Vec<(TaskId, i64)> =
                    self.primaries.iter().filter(|(_, p)| p.addr == addr).map(|(t, p)| (*t, p.mod_revision)).collect();
                if !held.is_empty() {
                    let (tx, refused) = (self.tx.clone(), self.peers.refused(addr));
                    self.spawner.spawn(async move {
                        if refused.await {
                            for (task, mod_revision) in held {
                                let _ = tx.send(Event::PrimaryGone { task, mod_revision });
                            }
                        }
                    });
                }
                Ok(())
            }
            Event::PrimaryGone { task, mod_revision } => {
                if let Some(p) = self.primaries.get(&task).filter(|p| p.mod_revision == mod_revision) {
                    tracing::info!(task, "the task's primary is gone (its connection ended, its port is closed); freeing the task");
                    self.evict(task, p.term);
                }
                Ok(())
            }
            Event::Coord(CoordEvent::Put(kv)) => match self.on_put(kv).await {
                Some(exit) => Err(exit),
                None => Ok(()),
            },
            Event::Coord(CoordEvent::Delete { key, revision }) => self.on_delete(&key, revision).await,
            Event::CoordLost(why) => {
                tracing::warn!(node = self.cfg.node_id, %why, "lost the coordinator");
                Err(NodeExit::CoordinatorLost(why))
            }
            Event::Written(written) => self.on_written(written).await,
            Event::Followed { prefix, kvs } => {
                self.took_in(&prefix, &kvs);
                // Fetches and flags that waited for these primaries go now.
                for t in kvs.iter().filter_map(|kv| self.keys.primary_task(&kv.key)).collect::<Vec<_>>() {
                    self.reroute(t);
                }
                Ok(())
            }
            Event::Replicated { slot, attempt, answer } => self.on_replicated(slot, attempt, answer).await,
        }
    }

    /// A write of the lane did not simply succeed.
    async fn on_written(&mut self, written: Written) -> Result<(), Exit> {
        match written {
            // The lane found this node's key gone (before the watch said
            // so): take it again, unless done already.
            Written::KeyGone { term } if self.term() == term => self.rejoin().await,
            Written::KeyGone { .. } => Ok(()),
            Written::NotPrimary => {
                tracing::warn!(node = self.cfg.node_id, "no longer the task's primary: stepping down");
                Err(NodeExit::LostLease)
            }
            Written::Failed { records: true, error } => Err(self.coordinator_failed("record results or advance the epoch", error)),
            Written::Failed { records: false, error } => {
                tracing::warn!(%error, "cannot end the job");
                Ok(())
            }
        }
    }

    // -----------------------------------------------------------------------
    // Coordinator changes.

    async fn on_put(&mut self, kv: KeyValue) -> Option<Exit> {
        if kv.key == self.keys.epoch() {
            self.compact_as_we_go(kv.mod_revision);
            let epoch = std::str::from_utf8(&kv.value).ok().and_then(|s| s.parse().ok());
            match epoch {
                Some(e) => return self.set_epoch(e).await.err(),
                None => tracing::error!(value = ?kv.value, "unreadable epoch in the coordinator"),
            }
        } else if kv.key == self.keys.status() {
            self.status = JobStatus::parse(&kv.value);
            if self.status != JobStatus::Running {
                // The last chance to save work: what `exit` records is
                // written (nothing else it asks for is of use now) — by the
                // primaries the job ended with, not by a node that claimed
                // a task after the end (a backup whose primary left first).
                if self.role.is_some_and(|(_, term)| term as i64 > kv.mod_revision) {
                    return Some(NodeExit::JobEnded(self.status.clone()));
                }
                self.call(|task, cx| task.exit(cx));
                let pending = std::mem::take(&mut self.pending);
                let puts: Vec<(String, Vec<u8>)> = pending
                    .into_iter()
                    .filter_map(|a| match a {
                        Action::Record { name, value } => Some((self.keys.record(&name), value)),
                        _ => None,
                    })
                    .collect();
                // (No backup needs them: the job is over, nobody takes over.)
                if !puts.is_empty() {
                    self.lane.submit(Write::Records { puts, advance: None });
                }
                // The job is over: what this node still has to write (its
                // records, these last ones) is written before it leaves.
                let _ = self.lane.flush().await;
                return Some(NodeExit::JobEnded(self.status.clone()));
            }
        } else if let Some((t, slot)) = self.keys.backup_slot(&kv.key) {
            let Some(v) = Holder::parse(&kv.value) else {
                tracing::error!(key = %kv.key, "unreadable backup value");
                return None;
            };
            let b = Primary { node: v.node, addr: v.addr, term: kv.create_revision as u64, mod_revision: kv.mod_revision, ready: v.ready };
            if self.backups.get(&t).and_then(|m| m.get(&slot)).is_some_and(|known| known.term > b.term) {
                return None;
            }
            let old = self.backups.entry(t).or_default().insert(slot, b);
            if self.role.is_some_and(|(me, _)| me == t) && old.is_none_or(|o| o.term != b.term) {
                // A new backup of ours: bring it up to date now.
                tracing::info!(task = t, slot, node = b.node, "a new backup");
                self.sending.add(slot);
                self.pump();
            }
        } else if let Some(t) = self.keys.primary_task(&kv.key) {
            let Some(v) = Holder::parse(&kv.value) else {
                tracing::error!(key = %kv.key, "unreadable primary value");
                return None;
            };
            let new = Primary { node: v.node, addr: v.addr, term: kv.create_revision as u64, mod_revision: kv.mod_revision, ready: false };
            if self.primaries.get(&t).is_some_and(|p| p.term > new.term) {
                // An older key than the one this node knows (it lags).
                return None;
            }
            let was_vacant = self.vacant.remove(&t).is_some();
            let old = self.primaries.insert(t, new);
            let restarted = match old {
                Some(o) => o.term != new.term,
                None => was_vacant,
            };
            if restarted {
                self.neighbour_event(t, true);
            }
            if self.backup_of.is_some_and(|(b, _)| b == t) {
                self.watch_primary();
            }
            self.reroute(t);
        }
        None
    }

    async fn on_delete(&mut self, key: &str, revision: i64) -> Result<(), Exit> {
        // The watch may lag what this node has read or written since: a
        // deletion older than the key this node knows is about an earlier
        // holder's key (say its own, before it took the key again).
        if let Some((t, slot)) = self.keys.backup_slot(key) {
            if self.backups.get(&t).and_then(|m| m.get(&slot)).is_some_and(|b| b.term as i64 > revision) {
                return Ok(());
            }
            if let Some(m) = self.backups.get_mut(&t) {
                m.remove(&slot);
            }
            if self.backup_of == Some((t, slot)) {
                // Our lease lapsed (then we take the slot again), or our
                // primary dropped us (then we stop following).
                if self.lease_alive().await? {
                    tracing::warn!(node = self.cfg.node_id, task = t, slot, "dropped by the task's primary: stopping");
                    return Err(NodeExit::LostLease);
                }
                return self.rejoin().await;
            }
            if self.role.is_some_and(|(me, _)| me == t) {
                self.sending.remove(slot);
                self.release().await?;
            }
            // A freed slot (or a task now without backups) may be work
            // for a spare.
            return self.find_work().await;
        }
        let Some(t) = self.keys.primary_task(key) else { return Ok(()) };
        if self.primaries.get(&t).is_some_and(|p| p.term as i64 > revision) {
            return Ok(());
        }
        self.primaries.remove(&t);
        if self.role.is_some_and(|(mine, _)| mine == t) {
            // Our own key is gone while we live: our lease lapsed, or a
            // peer freed the task thinking us dead.
            tracing::warn!(node = self.cfg.node_id, task = t, "lost the task's key");
            return self.rejoin().await;
        }
        if self.status != JobStatus::Running {
            return Ok(());
        }
        let now = Instant::now();
        self.vacant.insert(t, Vacancy { since: now, next_look: now });
        if self.role.is_none() {
            return self.fill_vacancy(t).await;
        }
        self.neighbour_event(t, false);
        Ok(())
    }

    /// On task 0's primary, as the epoch moves on (at `revision`): compacts
    /// the coordinator's history to one period ago, off the loop.
    fn compact_as_we_go(&mut self, revision: i64) {
        let (Some(period), Some((0, _))) = (self.cfg.job.compaction, self.role) else { return };
        let compactor = self.compactor.get_or_insert_with(|| crate::coord::Compactor::new(period));
        if let Some(to) = compactor.due(Instant::now(), revision) {
            let coord = self.cfg.coord.clone();
            self.spawner.spawn(async move {
                match coord.compact(to).await {
                    Ok(()) => tracing::debug!(revision = to, "compacted the coordinator's history"),
                    Err(e) => tracing::debug!(revision = to, error = %e, "cannot compact the coordinator's history"),
                }
            });
        }
    }

    /// Tells the task a neighbour failed or restarted, once per link it is
    /// a neighbour over this epoch.
    fn neighbour_event(&mut self, t: TaskId, restarted: bool) {
        let Some((me, _)) = self.role else { return };
        if !self.entered || t == me {
            return;
        }
        let term = self.primaries.get(&t).map_or(0, |p| p.term);
        let topology = self.cfg.job.topology.clone();
        for link in topology.links().to_vec() {
            if topology.neighbours(link.id, me, self.epoch).contains(&t) {
                self.call(|task, cx| {
                    if restarted {
                        task.neighbour_restarted(cx, link, t, term)
                    } else {
                        task.neighbour_failed(cx, link, t)
                    }
                });
            }
        }
    }

    /// Whether this node holds a task (as its primary or a backup).
    fn holds_task(&self) -> bool {
        self.role.is_some() || self.backup_of.is_some()
    }

    /// Task `t` has no primary (as this node knows): this node claims it
    /// if it should, else looks again later (`retry_due`).
    ///
    /// Whoever holds the task's state takes it over: a backup of `t` that
    /// has caught up with the stream claims at once. Any other node (a
    /// spare, a backup that has not caught up) first reads the task's keys
    /// afresh, since its own view may lag: while a caught-up backup of `t`
    /// lives (its key says `ready`), it leaves the task to it, for up to
    /// two lease TTLs (then that backup is stuck, and the task must go on
    /// without its state); with no such backup, it claims at once.
    async fn fill_vacancy(&mut self, t: TaskId) -> Result<(), Exit> {
        if self.role.is_some() || self.status != JobStatus::Running || self.primaries.contains_key(&t) {
            return Ok(());
        }
        let mine = self.backup_of.is_some_and(|(b, _)| b == t);
        if self.backup_of.is_some() && !mine {
            return Ok(());
        }
        // A coordinator pause lets every lease lapse at once, this node's
        // too: then the task's own node is about to take it again, state
        // and all. Leave it that while.
        self.settle().await?;
        let settling = self.rejoined_at.is_some_and(|at| at.elapsed() < self.cfg.job.lease_ttl);
        if mine && self.stream.ready && !settling {
            return self.try_claim(t).await;
        }
        if !settling && !self.lease_alive().await? {
            self.rejoin().await?;
        }
        if let Some(at) = self.rejoined_at.filter(|at| at.elapsed() < self.cfg.job.lease_ttl) {
            if let Some(v) = self.vacant.get_mut(&t) {
                v.next_look = at + self.cfg.job.lease_ttl;
            }
            return Ok(());
        }
        let prefix = self.keys.task(t);
        let (kvs, _) = match patiently(|| self.cfg.coord.get_prefix(&prefix)).await {
            Ok(read) => read,
            Err(e) => return Err(self.coordinator_failed("read a task's keys", e)),
        };
        for kv in &kvs {
            self.learn(kv);
        }
        if self.primaries.contains_key(&t) {
            return Ok(());
        }
        let now = Instant::now();
        let vacancy = *self.vacant.entry(t).or_insert(Vacancy { since: now, next_look: now });
        let ready_elsewhere = self.backups.get(&t).is_some_and(|m| m.values().any(|b| b.ready && b.node != self.cfg.node_id));
        let patience = 2 * self.cfg.job.lease_ttl;
        if ready_elsewhere && now.duration_since(vacancy.since) < patience {
            if let Some(v) = self.vacant.get_mut(&t) {
                v.next_look = now + self.cfg.job.lease_ttl / 2;
            }
            return Ok(());
        }
        if ready_elsewhere {
            tracing::warn!(node = self.cfg.node_id, task = t, "a caught-up backup has not taken its task over: taking it without its state");
        }
        self.try_claim(t).await
    }

    /// This node as the holder of `kv`, a key it has just created.
    fn mine(&self, kv: &KeyValue) -> Primary {
        Primary { node: self.cfg.node_id, addr: self.shared.addr(), term: kv.create_revision as u64, mod_revision: kv.mod_revision, ready: false }
    }

    /// Takes in what a read of the coordinator says of a task's key.
    fn learn(&mut self, kv: &KeyValue) {
        let Some(v) = Holder::parse(&kv.value) else { return };
        let holder = Primary { node: v.node, addr: v.addr, term: kv.create_revision as u64, mod_revision: kv.mod_revision, ready: v.ready };
        if let Some((t, slot)) = self.keys.backup_slot(&kv.key) {
            self.backups.entry(t).or_default().insert(slot, holder);
        } else if let Some(t) = self.keys.primary_task(&kv.key) {
            if let std::collections::hash_map::Entry::Vacant(e) = self.primaries.entry(t) {
                // As the watch will say (then without an event: this is
                // not a restart this node has seen happen).
                e.insert(holder);
                self.vacant.remove(&t);
            }
        }
    }

    /// Follows the job's keys under `prefix` (one task's, one primary key,
    /// or every task's): reads them, then watches them from that read on.
    /// A node follows only what it acts on: its own task's keys, the
    /// primaries of the tasks it talks to (its neighbours at each epoch),
    /// and, as a spare, every task (to fill vacancies). So a job's size
    /// does not multiply every node's work and memory. A followed task
    /// without a primary is vacant from then on (see `vacancy_timeout`).
    async fn follow(&mut self, prefix: String) -> Result<(), Exit> {
        if self.followed.iter().any(|f| prefix.starts_with(f.as_str())) {
            return Ok(());
        }
        let (kvs, revision) = match patiently(|| self.cfg.coord.get_prefix(&prefix)).await {
            Ok(read) => read,
            Err(e) => return Err(self.coordinator_failed("read the job's keys", e)),
        };
        match patiently(|| self.cfg.coord.watch(&prefix, revision + 1)).await {
            Ok(watch) => forward(&self.spawner, &self.tx, watch),
            Err(e) => return Err(self.coordinator_failed("watch the job's keys", e)),
        }
        self.followed.push(prefix.clone());
        self.took_in(&prefix, &kvs);
        Ok(())
    }

    /// Follows the keys under `prefix` as `follow` does, off the loop:
    /// what the read finds comes back as `Event::Followed` (a fetch to a
    /// task whose primary is not known yet waits for it).
    fn follow_soon(&mut self, prefix: String) {
        if self.followed.iter().any(|f| prefix.starts_with(f.as_str())) {
            return;
        }
        self.followed.push(prefix.clone());
        let (coord, tx, spawner) = (self.cfg.coord.clone(), self.tx.clone(), self.spawner.clone());
        self.spawner.spawn(async move {
            let read = patiently(|| coord.get_prefix(&prefix)).await;
            let watch = match read {
                Ok((_, revision)) => patiently(|| coord.watch(&prefix, revision + 1)).await.map(Some),
                Err(_) => Ok(None),
            };
            match (read, watch) {
                (Ok((kvs, _)), Ok(Some(watch))) => {
                    // The read first, then the watch's events (newer).
                    let _ = tx.send(Event::Followed { prefix, kvs });
                    forward(&spawner, &tx, watch);
                }
                (Err(e), _) | (_, Err(e)) => {
                    let _ = tx.send(Event::CoordLost(format!("cannot follow the job's keys under {prefix}: {e}")));
                }
                (Ok(_), Ok(None)) => {}
            }
        });
    }

    /// Takes in a read of the keys under `prefix`: holders, and the
    /// vacancies of the tasks it covers.
    fn took_in(&mut self, prefix: &str, kvs: &[KeyValue]) {
        for kv in kvs {
            self.learn(kv);
        }
        let covered: Vec<TaskId> = match prefix.strip_prefix(&self.keys.tasks()).and_then(|rest| rest.split('/').next()) {
            Some("") => (0..self.cfg.job.tasks).collect(),
            Some(t) => t.parse().ok().into_iter().collect(),
            None => Vec::new(),
        };
        let now = Instant::now();
        for t in covered {
            if !self.primaries.contains_key(&t) {
                self.vacant.entry(t).or_insert(Vacancy { since: now, next_look: now });
            }
        }
    }

    /// Follows task `t`'s primary (a task this node fetches from or
    /// flags), off the loop.
    fn follow_primary(&mut self, t: TaskId) {
        if t < self.cfg.job.tasks {
            self.follow_soon(self.keys.primary(t));
        }
    }

    /// A node without a task looks for one: its preferred task (the
    /// primary, else a backup slot), else any task without a primary
    /// (see `fill_vacancy`), else any free backup slot. If there is none,
    /// it stays a spare.
    async fn find_work(&mut self) -> Result<(), Exit> {
        if self.holds_task() || self.status != JobStatus::Running {
            return Ok(());
        }
        // Right after a lapse of every lease (a coordinator pause), the
        // keys that went are their own nodes' to take again.
        self.settle().await?;
        if self.rejoined_at.is_some_and(|at| at.elapsed() < self.cfg.job.lease_ttl) {
            return Ok(());
        }
        let tasks = self.cfg.job.tasks;
        if let Some(t) = self.cfg.preferred_task.filter(|&t| t < tasks) {
            self.fill_vacancy(t).await?;
            if !self.holds_task() {
                self.try_backup(t).await?;
            }
        }
        if self.holds_task() {
            return Ok(());
        }
        // A spare: it follows every task, to fill their vacancies.
        self.follow(self.keys.tasks()).await?;
        for t in 0..tasks {
            if self.holds_task() {
                return Ok(());
            }
            if !self.primaries.contains_key(&t) && self.vacant.get(&t).is_none_or(|v| v.next_look <= Instant::now()) {
                self.fill_vacancy(t).await?;
            }
        }
        for t in 0..tasks {
            if self.holds_task() {
                return Ok(());
            }
            if self.primaries.contains_key(&t) {
                self.try_backup(t).await?;
            }
        }
        Ok(())
    }

    /// Tries to become a backup of task `t` (a free slot of `1..replicas`).
    async fn try_backup(&mut self, t: TaskId) -> Result<(), Exit> {
        for slot in 1..self.cfg.job.replicas_of(t) {
            if self.holds_task() || self.backups.get(&t).is_some_and(|m| m.contains_key(&slot)) {
                continue;
            }
            let key = self.keys.backup(t, slot);
            match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
                Ok(Ok(kv)) => {
                    tracing::info!(node = self.cfg.node_id, task = t, slot, "backup of task");
                    let me = self.mine(&kv);
                    self.backups.entry(t).or_default().insert(slot, me);
                    self.backup_of = Some((t, slot));
                    self.task = Some((self.cfg.job.factory)(t));
                    self.call_backup(|task, cx| task.init(cx));
                    let snapshots = self.task.as_ref().is_some_and(|task| task.snapshot().is_some());
                    self.stream = Stream { snapshots, ..Default::default() };
                    self.call_backup(|task, cx| task.became_backup(cx));
                    self.follow(self.keys.task(t)).await?;
                    self.watch_primary();
                }
                Ok(Err(existing)) => self.learn(&existing),
                Err(CoordError::LeaseNotFound(_)) => return self.rejoin().await,
                Err(e) => return Err(self.coordinator_failed("become a backup", e)),
            }
        }
        Ok(())
    }

    /// A backup keeps a connection to its primary: when that ends by
    /// itself, the node checks whether the primary's process is gone
    /// (and takes over at once if so), instead of waiting out its lease.
    fn watch_primary(&mut self) {
        let Some((t, _)) = self.backup_of else { return };
        let Some(p) = self.primaries.get(&t).copied() else { return };
        let (peers, tx) = (self.peers.clone(), self.tx.clone());
        self.spawner.spawn(async move {
            let result = peers.connect(p.addr).await;
            if let Err(e) = &result {
                tracing::debug!(addr = %p.addr, error = ?e, "cannot watch the primary");
            }
            let _ = tx.send(Event::Watching { refused: matches!(result, Err(FetchFailure::Refused(_))), addr: p.addr });
        });
    }

    async fn try_claim(&mut self, t: TaskId) -> Result<(), Exit> {
        if self.role.is_some() || self.status != JobStatus::Running {
            return Ok(());
        }
        if self.backup_of.is_some_and(|(b, _)| b != t) {
            return Ok(());
        }
        // The task may be free because the job ended (its primary left):
        // the status and the tasks arrive on separate watches, so ask.
        let status_key = self.keys.status();
        match patiently(|| self.cfg.coord.get(&status_key)).await {
            Ok(Some(kv)) if JobStatus::parse(&kv.value) != JobStatus::Running => return Ok(()),
            Err(e) => return Err(self.coordinator_failed("read the job's status", e)),
            _ => {}
        }
        let key = self.keys.primary(t);
        match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
            Ok(Ok(kv)) => {
                let term = kv.create_revision as u64;
                tracing::info!(node = self.cfg.node_id, task = t, term, "primary of task");
                self.role = Some((t, term));
                self.lane.set_role(self.role);
                self.shared.set_role(t as i64, term);
                self.follow(self.keys.task(t)).await?;
                let me = self.mine(&kv);
                self.primaries.insert(t, me);
                self.vacant.remove(&t);
                if let Some((_, slot)) = self.backup_of.take() {
                    self.promote(t, slot, term);
                }
                if !self.stream_is_ours(term) {
                    self.task = Some((self.cfg.job.factory)(t));
                    self.call(|task, cx| task.init(cx));
                    if self.cfg.job.replicas_of(t) > 1 {
                        let snapshot = self.task.as_ref().and_then(|task| task.snapshot());
                        let first = snapshot.map(|s| ReplicaEntry::Snapshot(Arc::new(s)));
                        self.stream = Stream::begin(term, first.is_some(), first.unwrap_or(ReplicaEntry::Start));
                    }
                }
                self.track_backups();
                self.call(|task, cx| task.became_primary(cx, term));
                self.apply_pending().await?;
                let epoch = self.epoch;
                self.entered = false;
                self.enter(epoch).await
            }
            Ok(Err(existing)) => {
                self.learn(&existing);
                Ok(())
            }
            // This node's lease lapsed too (a coordinator pause): it takes
            // its own keys again first, and looks at the task later.
            Err(CoordError::LeaseNotFound(_)) => self.rejoin().await,
            Err(e) => Err(self.coordinator_failed("claim a task", e)),
        }
    }

    /// Whether the stream is this primary's (a promoted backup's), rather
    /// than to be begun afresh.
    fn stream_is_ours(&self, term: u64) -> bool {
        self.stream.term == term
    }

    /// A backup that has just won its task: its state is the task's; the
    /// replies the old primary released this epoch are its own; it
    /// writes a new stream for the other backups.
    fn promote(&mut self, t: TaskId, slot: u32, term: u64) {
        tracing::info!(node = self.cfg.node_id, task = t, term, "a backup takes its task over");
        if let Some(m) = self.backups.get_mut(&t) {
            m.remove(&slot);
        }
        let (coord, key) = (self.cfg.coord.clone(), self.keys.backup(t, slot));
        self.spawner.spawn(async move {
            if let Err(e) = patiently(|| coord.delete(&key)).await {
                tracing::warn!(task = t, error = %e, "cannot give up the backup slot");
            }
        });
        let mut old = std::mem::take(&mut self.stream);
        if !old.ready {
            // It never caught up: it takes over as a spare would, from the
            // task's initial state (the caller builds it).
            tracing::info!(task = t, "the backup had not caught up: starting the task afresh");
            return;
        }
        self.served.clear();
        for ((edge, requester), (epoch, frame)) in std::mem::take(&mut old.served) {
            if epoch == self.epoch {
                self.served.insert((edge, requester), Served::Ready(frame));
            }
        }
        self.served_epoch = Some(self.epoch);
        self.restart_stream(t, term, old);
    }

    /// The stream of this primary's new term `term`, from the state it
    /// holds (`old` is the stream it followed or wrote before): every
    /// backup starts over from it.
    fn restart_stream(&mut self, t: TaskId, term: u64, old: Stream) {
        self.stream = if old.snapshots {
            let snapshot = self.task.as_ref().and_then(|task| task.snapshot()).unwrap_or_default();
            let mut stream = Stream::begin(term, true, ReplicaEntry::Snapshot(Arc::new(snapshot)));
            self.push_served_cache(&mut stream);
            stream
        } else {
            // Without snapshots, the stream is every entry since the
            // start: the one this node followed, now under its term.
            Stream { term, log: old.log, base: old.base, end: old.end, snapshots: false, ..Default::default() }
        };
        // Replies waiting for the old stream's backups go in the new one.
        if self.stream.snapshots {
            for (epoch, effect) in self.gate.items() {
                if let Effect::Action(Action::Reply { request, frame }) = effect {
                    self.stream.push_served(*epoch, request.edge, request.from, frame);
                }
            }
        }
        let _ = t;
        self.track_backups();
    }

    /// Appends this epoch's released replies to `stream` (after a snapshot).
    fn push_served_cache(&self, stream: &mut Stream) {
        for ((edge, requester), served) in &self.served {
            if let Served::Ready(frame) = served {
                stream.push_served(self.epoch, *edge, *requester, frame);
            }
        }
    }

    async fn set_epoch(&mut self, e: Epoch) -> Result<(), Exit> {
        if e < self.epoch || (e == self.epoch && self.entered) {
            return Ok(());
        }
        self.epoch = e;
        self.shared.set_epoch(e);
        self.stream.served.retain(|_, (epoch, _)| *epoch >= e);
        self.stream.forget_replies_before(e);
        if self.role.is_some() {
            self.enter(e).await
        } else {
            Ok(())
        }
    }

    async fn enter(&mut self, e: Epoch) -> Result<(), Exit> {
        let Some((me, _)) = self.role else { return Ok(()) };
        self.entered = true;
        // Drop the old epoch: its replies, transfers and fetches. (A backup
        // that took over keeps the replies of this epoch it was sent.)
        if self.served_epoch != Some(e) {
            let stale = Status::new(StatusKind::StaleEpoch, "the epoch is over", e, self.term());
            for (_, served) in self.served.drain() {
                if let Served::Pending(ws) = served {
                    for w in ws {
                        let _ = w.send(Err(stale.clone()));
                    }
                }
            }
            self.shared.clear_transfers();
            if self.cfg.job.replicas_of(me) > 1 && self.stream.snapshots && self.served_epoch.is_some() && self.stream.is_long() {
                // The stream restarts at a snapshot once it is long, so that
                // a backup that joins later need not replay it all. (Not at
                // every epoch: every backup would be sent the whole state
                // each time, where the updates are the change.)
                let snapshot = self.task.as_ref().and_then(|task| task.snapshot()).unwrap_or_default();
                self.stream.rebase(ReplicaEntry::Snapshot(Arc::new(snapshot)));
            } else {
                self.stream.forget_replies_before(e);
            }
            self.served_epoch = Some(e);
        }
        self.outstanding.retain(|_, o| o.epoch >= e);
        self.flags.clear();
        if let Err(why) = crate::graph::check_links(&*self.cfg.job.topology, self.cfg.job.tasks, me, e) {
            tracing::error!(%why, "topology check failed");
            self.end(Some(why));
            return Ok(());
        }
        // The primaries of this epoch's neighbours (the topology may
        // change per epoch).
        let topology = self.cfg.job.topology.clone();
        for link in topology.links() {
            for n in topology.neighbours(link.id, me, e) {
                self.follow_primary(n);
            }
        }
        self.kill_at(FaultPoint::EnterEpoch { task: me, epoch: e })?;
        self.call(|task, cx| task.enter_epoch(cx, e));
        self.apply_pending().await?;
        // Flags and requests that arrived early.
        for flag in std::mem::take(&mut self.held_flags) {
            match flag.epoch.cmp(&e) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => self.deliver_flag(flag),
                std::cmp::Ordering::Greater => self.held_flags.push(flag),
            }
        }
        self.apply_pending().await?;
        let held = std::mem::take(&mut self.held);
        for (req, respond) in held {
            if req.epoch <= e {
                Box::pin(self.on_fetch(req, respond)).await?;
            } else {
                self.held.push((req, respond));
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Calling the task.

    /// Calls a handler; its actions wait in `pending` for
    /// [`apply_pending`](Self::apply_pending).
    fn call(&mut self, f: impl FnOnce(&mut dyn Task, &mut Context<'_>)) {
        let Some((me, _)) = self.role else { return };
        let (mut actions, panic) = self.run_handler(me, f);
        if let Some(what) = panic {
            actions.push(Action::End { failure: Some(format!("task {me} panicked at epoch {}: {what}", self.epoch)) });
        }
        self.pending.extend(actions);
    }

    /// Calls a handler of the task this node is a backup of. A backup only
    /// follows: actions its handlers ask for are dropped (a panic fails
    /// the job, as on a primary).
    fn call_backup(&mut self, f: impl FnOnce(&mut dyn Task, &mut Context<'_>)) {
        let Some((t, _)) = self.backup_of else { return };
        let (actions, panic) = self.run_handler(t, f);
        if let Some(what) = panic {
            let why = format!("task {t} panicked on a backup at epoch {}: {what}", self.epoch);
            let (coord, key, value) = (self.cfg.coord.clone(), self.keys.status(), JobStatus::Failed(why).encode());
            self.spawner.spawn(async move {
                let _ = coord.compare_and_swap(&key, Expect::Value(JobStatus::Running.encode()), &value, None).await;
            });
        } else if !actions.is_empty() {
            tracing::warn!(task = t, n = actions.len(), "a backup's handler asked for actions: dropped (backups only follow)");
        }
    }

    /// Runs a handler of this node's task (as task `t`): its actions, and
    /// what it panicked with, if it did.
    fn run_handler(&mut self, t: TaskId, f: impl FnOnce(&mut dyn Task, &mut Context<'_>)) -> (Vec<Action>, Option<String>) {
        let mut actions = Vec::new();
        let Some(task) = self.task.as_mut() else { return (actions, None) };
        let topology = self.cfg.job.topology.clone();
        let mut cx = Context { task: t, epoch: self.epoch, tasks: self.cfg.job.tasks, topology: &*topology, actions: &mut actions };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(task.as_mut(), &mut cx)));
        let panic = result.err().map(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into())
        });
        (actions, panic)
    }

    // -----------------------------------------------------------------------
    // Replication.

    /// On a backup: applies a batch of its primary's stream.
    /// The answer, and whether the backup has just caught up with it.
    fn on_replicate(&mut self, batch: Replication) -> Result<((Status, u64), bool), Exit> {
        let term_now = self.term();
        let refuse = |kind, detail: String| Ok(((Status::new(kind, detail, self.epoch, term_now), 0), false));
        if batch.job != self.cfg.job.name {
            return refuse(StatusKind::WrongJob, format!("this node runs job `{}`", self.cfg.job.name));
        }
        let Some((t, _)) = self.backup_of.filter(|(t, _)| *t == batch.task) else {
            if let Some((t, term)) = self.role.filter(|(t, _)| *t == batch.task) {
                if term > batch.term {
                    return refuse(StatusKind::StaleTerm, format!("this node is task {t}'s primary with term {term}"));
                }
            }
            return refuse(StatusKind::NotPrimary, format!("node {} is not a backup of task {}", self.cfg.node_id, batch.task));
        };
        let known = self.primaries.get(&t).map_or(0, |p| p.term).max(self.stream.term);
        if batch.term < known {
            return refuse(StatusKind::StaleTerm, format!("task {t}'s term {} has ended (it is {known})", batch.term));
        }
        let resets = |e: Option<&ReplicaEntry>| matches!(e, Some(ReplicaEntry::Start | ReplicaEntry::Snapshot(_)));
        if batch.term > self.stream.term {
            // A new primary's stream: it must start afresh.
            if !resets(batch.entries.first()) {
                return Ok(((Status::ok(self.epoch, 0), 0), false));
            }
            self.stream = Stream { term: batch.term, snapshots: self.stream.snapshots, ..Default::default() };
            self.stream.restart_at(batch.first);
        }
        let applied = self.stream.end;
        if batch.first <= applied {
            // What we have already (a resend): nothing to apply.
            return Ok(self.acknowledge(t, batch.end));
        }
        if batch.first > applied + 1 {
            if !resets(batch.entries.first()) {
                // A gap: the primary resends from where we are.
                return Ok(((Status::ok(self.epoch, 0), applied), false));
            }
            self.stream.restart_at(batch.first);
        }
        for entry in batch.entries {
            if let ReplicaEntry::Update(_) = entry {
                self.kill_at(FaultPoint::BackupApplied { task: t, epoch: self.epoch })?;
            }
            self.apply_entry(t, entry);
        }
        Ok(self.acknowledge(t, batch.end))
    }

    /// On a backup: the answer to a batch of the stream that ends at `end`
    /// (a backup that holds all of it has caught up), and whether it has
    /// just caught up (then the answer waits for its key to say so).
    fn acknowledge(&mut self, t: TaskId, end: u64) -> ((Status, u64), bool) {
        let caught_up = self.stream.end >= end && !self.stream.ready;
        if caught_up {
            tracing::debug!(task = t, position = self.stream.end, "the backup has caught up");
            self.stream.ready = true;
        }
        ((Status::ok(self.epoch, 0), self.stream.end), caught_up)
    }

    /// On a backup that has caught up: marks its key `ready`, then sends
    /// `answer` (off the loop). Said in the coordinator before the
    /// acknowledgement: from that ack on, the primary syncs this backup
    /// before every effect, and whoever sees a vacancy of the task leaves
    /// it to this node.
    fn publish_ready(&mut self, answer: (Status, u64), respond: oneshot::Sender<(Status, u64)>) {
        let me = self.backup_of.and_then(|(t, slot)| Some((t, slot, self.backups.get(&t)?.get(&slot).copied()?)));
        let Some((t, slot, me)) = me.filter(|(_, _, me)| !me.ready) else {
            let _ = respond.send(answer);
            return;
        };
        let (coord, key, lease, tx) = (self.cfg.coord.clone(), self.keys.backup(t, slot), self.lease, self.tx.clone());
        let value = Holder { node: self.cfg.node_id, addr: self.shared.addr(), ready: true }.encode();
        self.spawner.spawn(async move {
            let write = patiently(|| coord.compare_and_swap(&key, Expect::ModRevision(me.mod_revision), &value, Some(lease))).await;
            let result = write.map(|w| w.map(|kv| kv.mod_revision).map_err(|_| ()));
            if matches!(result, Ok(Ok(_))) {
                let _ = respond.send(answer);
            }
            let _ = tx.send(Event::MarkedReady { task: t, slot, term: me.term, result });
        });
    }

    /// The write of `publish_ready` finished.
    fn on_marked_ready(&mut self, t: TaskId, slot: u32, term: u64, result: crate::coord::CoordResult<Result<i64, ()>>) -> Result<(), Exit> {
        // Only about the key this node holds now (not one it had before
        // it took the slot again).
        let Some(b) = self.backups.get_mut(&t).and_then(|m| m.get_mut(&slot)).filter(|b| b.term == term) else { return Ok(()) };
        if self.backup_of != Some((t, slot)) {
            return Ok(());
        }
        match result {
            Ok(Ok(mod_revision)) => {
                b.mod_revision = mod_revision;
                b.ready = true;
                Ok(())
            }
            Ok(Err(())) => {
                // Our key changed or went: this node is no longer the
                // slot's backup.
                tracing::warn!(node = self.cfg.node_id, task = t, slot, "lost the task's backup slot");
                Err(NodeExit::LostLease)
            }
            Err(e) => Err(self.coordinator_failed("mark a backup ready", e)),
        }
    }

    fn apply_entry(&mut self, t: TaskId, entry: ReplicaEntry) {
        match &entry {
            ReplicaEntry::Start => {
                self.task = Some((self.cfg.job.factory)(t));
                self.call_backup(|task, cx| task.init(cx));
                self.stream.served.clear();
                self.stream.restart_at(self.stream.end + 1);
            }
            ReplicaEntry::Snapshot(state) => {
                self.call_backup(|task, cx| task.restore(cx, state));
                self.stream.served.clear();
                self.stream.restart_at(self.stream.end + 1);
            }
            ReplicaEntry::Update(update) => self.call_backup(|task, cx| task.apply_update(cx, update)),
            ReplicaEntry::Served { epoch, edge, requester, frame, range, last } => {
                let part = &frame[range.clone()];
                let whole = match self.stream.partial.take() {
                    Some((e, g, r, mut bytes)) if (e, g, r) == (*epoch, *edge, *requester) => {
                        bytes.extend_from_slice(part);
                        bytes
                    }
                    _ => part.to_vec(),
                };
                if *last {
                    self.stream.served.insert((*edge, *requester), (*epoch, Arc::new(whole)));
                } else {
                    self.stream.partial = Some((*epoch, *edge, *requester, whole));
                }
            }
        }
        self.stream.push(entry);
    }

    /// On a primary: the backups of its task start over from the stream
    /// it writes now (every one it knows of).
    fn track_backups(&mut self) {
        self.sending = Sending::default();
        let Some((me, _)) = self.role else { return };
        for slot in self.backups.get(&me).map(|m| m.keys().copied().collect::<Vec<_>>()).unwrap_or_default() {
            self.sending.add(slot);
        }
        self.gate.restarted(self.stream.end);
    }

    /// The stream position every backup of this primary has applied
    /// (`u64::MAX` when it has none to wait for).
    fn synced(&self) -> u64 {
        match self.role {
            Some((me, _)) if self.cfg.job.replicas_of(me) > 1 => self.sending.synced(),
            _ => u64::MAX,
        }
    }

    /// On a primary: sends every backup that lacks part of the stream its
    /// next batch (one in flight each, off the loop; the answers come back
    /// as `Event::Replicated`).
    fn pump(&mut self) {
        let Some((me, term)) = self.role else { return };
        if self.cfg.job.replicas_of(me) <= 1 {
            return;
        }
        for slot in self.sending.slots() {
            let Some(b) = self.backups.get(&me).and_then(|m| m.get(&slot)).copied() else { continue };
            let Some(attempt) = self.sending.start(slot, self.stream.end) else { continue };
            let first = (self.sending.acked(slot) + 1).max(self.stream.base);
            let entries = self.stream.batch(first);
            let batch = Replication { job: self.cfg.job.name.clone(), task: me, term, first, entries, end: self.stream.end };
            let (peers, coord, tx, ttl) = (self.peers.clone(), self.cfg.coord.clone(), self.tx.clone(), self.cfg.job.lease_ttl);
            let key = self.keys.backup(me, slot);
            self.spawner.spawn(async move {
                let answer = match tokio::time::timeout(ttl, peers.replicate(b.addr, &batch)).await {
                    Ok(Ok((status, applied))) if status.kind == StatusKind::Ok => ReplicaAnswer::Applied(applied),
                    Ok(Ok((status, _))) if status.kind == StatusKind::StaleTerm => ReplicaAnswer::StaleTerm(status.detail),
                    other => {
                        // A closed port, or a lapsed lease, is gone; an
                        // answer late while the backup's key lives is slow.
                        let refused = matches!(other, Ok(Err(FetchFailure::Refused(_))));
                        let alive = !refused && matches!(coord.get(&key).await, Ok(Some(kv)) if kv.create_revision as u64 == b.term);
                        let what = format!("{:?}", other.map(|r| r.map(|(s, _)| s.kind)));
                        if alive { ReplicaAnswer::Slow } else { ReplicaAnswer::Gone(what) }
                    }
                };
                let _ = tx.send(Event::Replicated { slot, attempt, answer });
            });
        }
    }

    /// A backup answered a batch.
    async fn on_replicated(&mut self, slot: u32, attempt: u64, answer: ReplicaAnswer) -> Result<(), Exit> {
        let Some((me, _)) = self.role else { return Ok(()) };
        let patience = 4 * self.cfg.job.lease_ttl;
        let Some(next) = self.sending.answered(slot, attempt, answer, Instant::now(), patience) else { return Ok(()) };
        match next {
            ReplicaNext::Send => {}
            ReplicaNext::CheckPrimary(why) => {
                if !self.still_primary().await {
                    tracing::warn!(task = me, detail = %why, "a newer primary exists: stepping down");
                    return Err(NodeExit::LostLease);
                }
            }
            ReplicaNext::Drop(why) => {
                if let Some(b) = self.backups.get(&me).and_then(|m| m.get(&slot)).copied() {
                    tracing::warn!(task = me, slot, node = b.node, %why, "a backup is unreachable or does not follow: dropping it");
                    self.drop_backup(me, slot, b)?;
                }
            }
        }
        self.pump();
        self.release().await
    }

    /// Drops backup `b` of task `t` in `slot`: it no longer counts, and
    /// its key is deleted (off the loop; only its key: the key may have
    /// been written since, marked ready, or be another node's by now).
    fn drop_backup(&mut self, t: TaskId, slot: u32, b: Primary) -> Result<(), Exit> {
        if let Some(m) = self.backups.get_mut(&t) {
            m.remove(&slot);
        }
        self.sending.remove(slot);
        let (coord, key) = (self.cfg.coord.clone(), self.keys.backup(t, slot));
        self.spawner.spawn(async move {
            let mut revision = b.mod_revision;
            for _ in 0..3 {
                match coord.compare_and_delete(&key, revision).await {
                    Ok(true) => break,
                    Ok(false) => match coord.get(&key).await {
                        Ok(Some(kv)) if kv.create_revision as u64 == b.term => revision = kv.mod_revision,
                        _ => break,
                    },
                    Err(e) => {
                        tracing::warn!(task = t, slot, error = %e, "cannot delete a dropped backup's key");
                        break;
                    }
                }
            }
        });
        self.kill_at(FaultPoint::BackupLost { task: t, epoch: self.epoch })
    }

    /// Runs the effects whose stream position every backup holds now.
    async fn release(&mut self) -> Result<(), Exit> {
        for (epoch, effect) in self.gate.release(self.synced()) {
            match effect {
                Effect::Action(action) => self.perform(action, epoch).await?,
                Effect::Write(write) => self.lane.submit(write),
            }
        }
        Ok(())
    }

    async fn apply_pending(&mut self) -> Result<(), Exit> {
        while let Some(action) = self.pending.pop_front() {
            // Records followed by an epoch advance go in one coordinator
            // transaction: atomic, and one round trip instead of several.
            if let Action::Record { .. } = action {
                let mut records = vec![action];
                while let Some(Action::Record { .. }) = self.pending.front() {
                    records.push(self.pending.pop_front().expect("present"));
                }
                if let Some(Action::Advance { from }) = self.pending.front() {
                    let from = *from;
                    self.pending.pop_front();
                    self.record_and_advance(records, from).await?;
                } else {
                    for r in records {
                        self.apply(r).await?;
                    }
                }
                continue;
            }
            self.apply(action).await?;
        }
        // Whatever the handlers added to the stream goes to the backups.
        self.pump();
        Ok(())
    }

    /// Writes `records` and moves the epoch on from `from`, in one step.
    async fn record_and_advance(&mut self, records: Vec<Action>, from: Epoch) -> Result<(), Exit> {
        if self.role.is_none() {
            return Ok(());
        }
        let puts: Vec<(String, Vec<u8>)> = records
            .into_iter()
            .filter_map(|a| match a {
                Action::Record { name, value } => Some((self.keys.record(&name), value)),
                _ => None,
            })
            .collect();
        self.effect(Effect::Write(Write::Records { puts, advance: Some(from) })).await
    }

    /// Runs `effect` once every backup holds what the task did before it
    /// (now, if they do and nothing waits before it).
    async fn effect(&mut self, effect: Effect) -> Result<(), Exit> {
        let end = self.stream.end;
        if self.gate.must_wait(end, self.synced()) {
            self.gate.hold(end, self.epoch, effect);
            self.pump();
            return Ok(());
        }
        match effect {
            Effect::Action(action) => self.perform(action, self.epoch).await,
            Effect::Write(write) => {
                self.lane.submit(write);
                Ok(())
            }
        }
    }

    /// Runs one action of a handler: at once, or, for an effect others
    /// can see, once every backup holds what the task did before it.
    async fn apply(&mut self, action: Action) -> Result<(), Exit> {
        let Some((me, _)) = self.role else { return Ok(()) };
        match action {
            Action::Replicate { update } => {
                if self.cfg.job.replicas_of(me) > 1 {
                    self.stream.push(ReplicaEntry::Update(Arc::new(update)));
                }
                Ok(())
            }
            Action::Fetch { .. } => self.perform(action, self.epoch).await,
            Action::Reply { request, frame } => {
                if request.epoch != self.epoch {
                    return Ok(());
                }
                let key = (request.edge, request.from);
                if matches!(self.served.get(&key), Some(Served::Ready(_))) || self.replying.contains(&key) {
                    tracing::warn!(task = me, ?request, "replied twice; keeping the first reply");
                    return Ok(());
                }
                if self.cfg.job.replicas_of(me) > 1 {
                    // The backups get the reply before the requester does.
                    self.stream.push_served(request.epoch, request.edge, request.from, &frame);
                    self.replying.insert(key);
                }
                self.effect(Effect::Action(Action::Reply { request, frame })).await
            }
            Action::Flag { .. } | Action::Record { .. } | Action::Advance { .. } | Action::End { .. } => {
                self.effect(Effect::Action(action)).await
            }
        }
    }

    /// Does what `action`, asked for at `epoch`, asks for (its backups
    /// hold everything before it).
    async fn perform(&mut self, action: Action, epoch: Epoch) -> Result<(), Exit> {
        let Some((me, _)) = self.role else { return Ok(()) };
        match action {
            Action::Replicate { .. } => {}
            Action::Fetch { edge, to } => {
                self.follow_primary(to);
                let seq = self.next_seq;
                self.next_seq += 1;
                self.outstanding.insert(
                    seq,
                    Outstanding { edge, to, epoch: self.epoch, attempt: 0, in_flight: false, sent_to_term: 0, retry_at: Instant::now() },
                );
                self.send(seq);
            }
            Action::Reply { request, frame } => {
                self.replying.remove(&(request.edge, request.from));
                if request.epoch != self.epoch {
                    return Ok(());
                }
                match self.served.insert((request.edge, request.from), Served::Ready(frame.clone())) {
                    Some(Served::Pending(waiters)) => {
                        for w in waiters {
                            let _ = w.send(Ok(frame.clone()));
                        }
                    }
                    Some(Served::Ready(first)) => {
                        self.served.insert((request.edge, request.from), Served::Ready(first));
                        return Ok(());
                    }
                    None => {}
                }
                self.kill_at(FaultPoint::AfterServe { task: me, epoch: request.epoch, to: request.from, edge: request.edge })?;
            }
            // A flag of an epoch that ended while it waited is not sent.
            Action::Flag { .. } if epoch != self.epoch => {}
            Action::Flag { link, to, meta } => {
                self.follow_primary(to);
                // The receiver sees the flag over its side of the link.
                let links = self.cfg.job.topology.links();
                let link = links.get(link as usize).and_then(|l| l.inverse).unwrap_or(link);
                let flag = transport::MetaFlag {
                    job: self.cfg.job.name.clone(),
                    epoch: self.epoch,
                    from_task: me,
                    to_task: to,
                    link,
                    meta,
                    term: self.term(),
                };
                self.flags.push(SentFlag { flag, sent_to_term: 0, in_flight: false, delivered: false });
                self.send_flag(self.flags.len() - 1);
            }
            // Written off the loop, in order, while this node holds its
            // task's key (see `session`).
            Action::Record { name, value } => {
                self.lane.submit(Write::Records { puts: vec![(self.keys.record(&name), value)], advance: None });
            }
            Action::Advance { from } => self.lane.submit(Write::Records { puts: Vec::new(), advance: Some(from) }),
            Action::End { failure } => self.lane.submit(Write::End(job_status(failure))),
        }
        Ok(())
    }

    /// Ends the job (any node may: a check of the job's own failed).
    fn end(&mut self, failure: Option<String>) {
        self.lane.submit(Write::EndUnguarded(job_status(failure)));
    }

    // -----------------------------------------------------------------------
    // Serving.

    async fn on_fetch(
        &mut self,
        req: transport::FetchRequest,
        respond: Responder,
    ) -> Result<(), Exit> {
        let job = &self.cfg.job;
        let refuse = |kind, detail: String, epoch, term| Err(Status::new(kind, detail, epoch, term));
        let check: Result<(), Status> = if req.job != job.name {
            refuse(StatusKind::WrongJob, format!("this node runs job `{}`, not `{}`", job.name, req.job), self.epoch, self.term())
        } else if req.to_task >= job.tasks || req.from_task >= job.tasks {
            refuse(StatusKind::UnknownTask, format!("the job has tasks 0..{}", job.tasks), self.epoch, self.term())
        } else if !job.has_edge(req.edge) {
            refuse(StatusKind::UnknownEdge, format!("the job declares no edge {}", req.edge), self.epoch, self.term())
        } else if self.status != JobStatus::Running {
            refuse(StatusKind::ShuttingDown, "the job ended".into(), self.epoch, self.term())
        } else if self.role.map(|(t, _)| t) != Some(req.to_task) {
            refuse(StatusKind::NotPrimary, format!("node {} is not task {}'s primary", self.cfg.node_id, req.to_task), self.epoch, 0)
        } else if req.responder_term > self.term() {
            // Someone knows a newer primary of this task: this node has
            // been replaced. Refuse, then step down (below).
            refuse(StatusKind::StaleTerm, format!("this node's term {} is older than {}", self.term(), req.responder_term), self.epoch, self.term())
        } else if self.primaries.get(&req.from_task).is_some_and(|p| p.term > req.requester_term) {
            refuse(
                StatusKind::StaleTerm,
                format!("task {}'s term {} has ended (it is {} now)", req.from_task, req.requester_term, self.primaries[&req.from_task].term),
                self.epoch,
                self.term(),
            )
        } else if req.epoch < self.epoch {
            refuse(StatusKind::StaleEpoch, format!("epoch {} is over; the job is at {}", req.epoch, self.epoch), self.epoch, self.term())
        } else {
            Ok(())
        };
        if let Err(status) = check {
            let replaced = status.kind == StatusKind::StaleTerm && req.responder_term > self.term();
            let _ = respond.send(Err(status));
            // A request naming a newer term is a claim, not proof (a rogue
            // client can send anything): step down only if the coordinator
            // confirms this node no longer holds the task.
            if replaced && self.role.is_some() && !self.still_primary().await {
                tracing::warn!(node = self.cfg.node_id, "a newer primary of this task exists: stepping down");
                return Err(NodeExit::LostLease);
            }
            return Ok(());
        }
        if req.epoch > self.epoch || !self.entered {
            // Early: answer once this task enters that epoch.
            if self.held.len() >= MAX_HELD {
                let _ = respond.send(Err(Status::new(StatusKind::Internal, "too many early requests", self.epoch, self.term())));
            } else {
                self.held.push((req, respond));
            }
            return Ok(());
        }
        let key = (req.edge, req.from_task);
        match self.served.get_mut(&key) {
            Some(Served::Ready(frame)) => {
                let _ = respond.send(Ok(frame.clone()));
            }
            Some(Served::Pending(waiters)) => waiters.push(respond),
            None => {
                let me = req.to_task;
                self.served.insert(key, Served::Pending(vec![respond]));
                self.kill_at(FaultPoint::BeforeServe { task: me, epoch: req.epoch, to: req.from_task, edge: req.edge })?;
                let request = ServeRequest { from: req.from_task, edge: req.edge, epoch: req.epoch };
                self.call(|task, cx| task.serve(cx, request));
                self.apply_pending().await?;
            }
        }
        Ok(())
    }

    async fn on_flag(&mut self, flag: transport::MetaFlag, respond: oneshot::Sender<Status>) -> Result<(), Exit> {
        let ok = flag.job == self.cfg.job.name
            && self.role.map(|(t, _)| t) == Some(flag.to_task)
            && flag.from_task < self.cfg.job.tasks
            && (flag.link as usize) < self.cfg.job.topology.links().len();
        if !ok {
            let _ = respond.send(Status::new(StatusKind::BadRequest, "the flag is not for this node's task", self.epoch, self.term()));
            return Ok(());
        }
        if flag.epoch < self.epoch {
            let _ = respond.send(Status::new(StatusKind::StaleEpoch, format!("epoch {} is over", flag.epoch), self.epoch, self.term()));
            return Ok(());
        }
        let _ = respond.send(Status::ok(self.epoch, self.term()));
        if flag.epoch > self.epoch || !self.entered {
            // Early: deliver once this task enters that epoch.
            if self.held_flags.len() < MAX_HELD {
                self.held_flags.push(flag);
            }
            return Ok(());
        }
        self.deliver_flag(flag);
        Ok(())
    }

    fn deliver_flag(&mut self, flag: transport::MetaFlag) {
        let link = self.cfg.job.topology.links()[flag.link as usize];
        self.call(|task, cx| task.meta_ready(cx, flag.from_task, link, &flag.meta));
    }

    // -----------------------------------------------------------------------
    // Fetching.

    /// Sends (or resends) flag `index` of this epoch to its receiver's
    /// current primary.
    fn send_flag(&mut self, index: usize) {
        let epoch = self.epoch;
        let Some(f) = self.flags.get_mut(index) else { return };
        let Some(p) = self.primaries.get(&f.flag.to_task).copied() else { return };
        f.in_flight = true;
        f.sent_to_term = p.term;
        let (flag, peers, tx) = (f.flag.clone(), self.peers.clone(), self.tx.clone());
        self.spawner.spawn(async move {
            let result = peers.flag(p.addr, flag).await;
            if let Err(e) = &result {
                tracing::debug!(error = ?e, "flag not delivered; will retry");
            }
            let _ = tx.send(Event::FlagDone { index, epoch, term: p.term, delivered: result.is_ok() });
        });
    }

    /// Sends (or resends) fetch `seq` to its task's current primary.
    fn send(&mut self, seq: u64) {
        let Some(o) = self.outstanding.get_mut(&seq) else { return };
        let Some(p) = self.primaries.get(&o.to).copied() else {
            o.in_flight = false;
            o.retry_at = Instant::now() + RETRY_MIN;
            return;
        };
        let Some((me, my_term)) = self.role else { return };
        o.attempt += 1;
        o.in_flight = true;
        o.sent_to_term = p.term;
        let req = transport::FetchRequest {
            job: self.cfg.job.name.clone(),
            epoch: o.epoch,
            from_task: me,
            to_task: o.to,
            edge: o.edge,
            seq,
            requester_term: my_term,
            responder_term: p.term,
        };
        let attempt = o.attempt;
        let peers = self.peers.clone();
        let tx = self.tx.clone();
        self.spawner.spawn(async move {
            for result in peers.fetch(p.addr, req, attempt).await {
                let _ = tx.send(Event::FetchDone { seq, attempt, result });
            }
        });
    }

    /// Deletes task `t`'s primary key if it is still the one of term
    /// `term` (whose node is gone), so that another node takes the task
    /// over. A newer primary of the task is left alone.
    fn evict(&mut self, t: TaskId, term: u64) {
        let Some(p) = self.primaries.get(&t).copied().filter(|p| p.term == term) else { return };
        let (coord, key) = (self.cfg.coord.clone(), self.keys.primary(t));
        // Off the loop: the watch says when the key is gone.
        self.spawner.spawn(async move {
            match coord.compare_and_delete(&key, p.mod_revision).await {
                Ok(true) => tracing::info!(task = t, node = p.node, term = p.term, "evicted a dead primary"),
                Ok(false) => {}
                Err(e) => tracing::warn!(task = t, error = %e, "cannot evict a primary"),
            }
        });
    }

    /// Whether this node still holds its task's key with its term (it may
    /// have lost it while paused, before its watch says so). If the key is
    /// gone and nobody else took the task, it takes it again (`rejoin`).
    async fn still_primary(&mut self) -> bool {
        let Some((me, term)) = self.role else { return false };
        // Within the lease's certain life, and with no deletion of our key
        // seen (that makes the node rejoin at once), we hold it: no round
        // trip. Past it (this node or the coordinator was paused, say), ask.
        if Instant::now() < self.lease_sure_until.get() {
            return true;
        }
        let key = self.keys.primary(me);
        match patiently(|| self.cfg.coord.get(&key)).await {
            Ok(Some(kv)) => kv.create_revision as u64 == term,
            Ok(None) => self.rejoin().await.is_ok() && self.role.is_some(),
            Err(_) => false,
        }
    }

    /// If this node's lease is in doubt (no keep-alive has succeeded for a
    /// TTL: the coordinator, or this process, was paused), it renews it
    /// (rejoining if it lapsed) and counts as settling for a TTL from now:
    /// keys that went in the pause are their own nodes' to take again,
    /// and it takes none meanwhile. Its lease may lapse a moment after
    /// others' (etcd revokes expired leases at a bounded rate), so its
    /// own key's deletion cannot be the only sign.
    async fn settle(&mut self) -> Result<(), Exit> {
        if Instant::now() < self.lease_sure_until.get() {
            return Ok(());
        }
        if self.lease_alive().await? {
            self.lease_sure_until.set(Instant::now() + self.cfg.job.lease_ttl / 2);
            self.rejoined_at = Some(Instant::now());
            Ok(())
        } else {
            self.rejoin().await
        }
    }

    /// Whether this node's lease is alive (asking the coordinator).
    async fn lease_alive(&self) -> Result<bool, Exit> {
        match patiently(|| self.cfg.coord.keep_alive(self.lease)).await {
            Ok(()) => Ok(true),
            Err(CoordError::Unavailable(why)) => Err(self.coordinator_failed("renew its lease", CoordError::Unavailable(why))),
            Err(_) => Ok(false),
        }
    }

    async fn on_lease_news(&mut self, news: LeaseNews) -> Result<(), Exit> {
        match news {
            LeaseNews::Lost(lease) if lease == self.lease => self.rejoin().await,
            // An older lease's keeper, replaced since.
            LeaseNews::Lost(_) => Ok(()),
            LeaseNews::Unreachable(why) => {
                tracing::warn!(node = self.cfg.node_id, %why, "giving up on the coordinator");
                Err(NodeExit::CoordinatorLost(why))
            }
        }
    }

    /// This node's keys are gone while it lives: its lease lapsed (the
    /// coordinator, or this process, was paused past the TTL), or a peer
    /// freed its task. It takes them again, under a new lease if its own
    /// is gone, and keeps the task's state: a primary under a new term
    /// (its neighbours see a restart; what it sent under the old term is
    /// fenced), a backup in its slot (it catches up with its primary's
    /// stream again). If another node took the task meanwhile, this one
    /// steps down.
    async fn rejoin(&mut self) -> Result<(), Exit> {
        if !self.lease_alive().await? {
            self.renew_lease().await?;
        }
        self.rejoined_at = Some(Instant::now());
        if let Some((t, old_term)) = self.role {
            let key = self.keys.primary(t);
            match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
                Ok(Ok(kv)) => {
                    let term = kv.create_revision as u64;
                    tracing::info!(node = self.cfg.node_id, task = t, old_term, term, "took its task again, with its state, under a new term");
                    self.role = Some((t, term));
                    self.lane.set_role(self.role);
                    self.shared.set_role(t as i64, term);
                    let me = self.mine(&kv);
                    self.primaries.insert(t, me);
                    self.vacant.remove(&t);
                    if self.cfg.job.replicas_of(t) > 1 {
                        let old = std::mem::take(&mut self.stream);
                        self.restart_stream(t, term, old);
                    }
                    self.call(|task, cx| task.became_primary(cx, term));
                    Ok(())
                }
                Ok(Err(existing)) => {
                    self.learn(&existing);
                    tracing::warn!(node = self.cfg.node_id, task = t, "another node took the task while this one had lost it: stepping down");
                    Err(NodeExit::LostLease)
                }
                Err(e) => Err(self.coordinator_failed("take its task again", e)),
            }
        } else if let Some((t, slot)) = self.backup_of {
            let key = self.keys.backup(t, slot);
            match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
                Ok(Ok(kv)) => {
                    tracing::info!(node = self.cfg.node_id, task = t, slot, "took its backup slot again");
                    let me = self.mine(&kv);
                    self.backups.entry(t).or_default().insert(slot, me);
                    // Its primary did not sync it while its key was gone.
                    self.stream.ready = false;
                    Ok(())
                }
                Ok(Err(existing)) => {
                    self.learn(&existing);
                    tracing::warn!(node = self.cfg.node_id, task = t, slot, "another node took the backup slot: stopping");
                    Err(NodeExit::LostLease)
                }
                Err(e) => Err(self.coordinator_failed("take its backup slot again", e)),
            }
        } else {
            Ok(())
        }
    }

    /// A new lease (the old one is gone), its keep-alive, and this node's
    /// `nodes/<id>` key under it.
    async fn renew_lease(&mut self) -> Result<(), Exit> {
        let ttl = self.cfg.job.lease_ttl;
        let granted_at = Instant::now();
        let lease = match patiently(|| self.cfg.coord.grant(ttl)).await {
            Ok(lease) => lease,
            Err(e) => return Err(self.coordinator_failed("get a new lease", e)),
        };
        tracing::info!(node = self.cfg.node_id, old = self.lease, new = lease, "its lease had lapsed: a new one");
        self.lease = lease;
        self.lease_sure_until.set(granted_at + ttl);
        self.keeper =
            lease::keep(self.cfg.coord.clone(), lease, ttl, COORDINATOR_PATIENCE, self.lease_sure_until.clone(), self.lease_news.clone());
        let key = self.keys.node(self.cfg.node_id);
        let value = format!("addr={}", self.shared.addr()).into_bytes();
        match patiently(|| self.cfg.coord.create(&key, &value, Some(lease))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => {
                tracing::warn!(node = self.cfg.node_id, "another live node has this node's id now: stopping");
                Err(NodeExit::LostLease)
            }
            Err(e) => Err(self.coordinator_failed("register again", e)),
        }
    }

    /// Resends the fetches to task `t` that went to an older term, and
    /// those waiting for a primary.
    fn reroute(&mut self, t: TaskId) {
        let Some(p) = self.primaries.get(&t).copied() else { return };
        let due: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.to == t && (!o.in_flight || o.sent_to_term != p.term))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            self.send(seq);
        }
        let flags: Vec<usize> = (0..self.flags.len())
            .filter(|&i| self.flags[i].flag.to_task == t && self.flags[i].sent_to_term != p.term)
            .collect();
        for i in flags {
            self.send_flag(i);
        }
    }

    async fn retry_due(&mut self) -> Result<(), Exit> {
        let now = Instant::now();
        if now >= self.next_vacancy_check && !self.gave_up && self.status == JobStatus::Running {
            self.next_vacancy_check = now + Duration::from_secs(1).min(self.cfg.job.vacancy_timeout / 4);
            let limit = self.cfg.job.vacancy_timeout;
            if let Some((t, v)) = self.vacant.iter().filter(|(_, v)| now.duration_since(v.since) > limit).min_by_key(|(t, _)| **t) {
                let why = format!(
                    "task {t} has had no node for {:.1?} (its nodes died and no spare took it over; the limit is Job::vacancy_timeout, {limit:?})",
                    now.duration_since(v.since)
                );
                tracing::error!(%why, "failing the job");
                self.gave_up = true;
                self.end(Some(why));
            }
        }
        let due: Vec<u64> = self.outstanding.iter().filter(|(_, o)| !o.in_flight && o.retry_at <= now).map(|(s, _)| *s).collect();
        for seq in due {
            self.send(seq);
        }
        let flags: Vec<usize> = (0..self.flags.len()).filter(|&i| !self.flags[i].in_flight && !self.flags[i].delivered).collect();
        for i in flags {
            self.send_flag(i);
        }
        // A backup keeps its watch on its primary open (a connection can
        // end for reasons of its own; the primary may have moved).
        if let Some((t, _)) = self.backup_of {
            if self.primaries.get(&t).is_some_and(|p| !self.peers.connected(p.addr)) && !self.watching {
                self.watching = true;
                self.watch_primary();
            }
        }
        // Tasks nobody holds (a missed race, or backups that did not take
        // over): a caught-up backup of the task claims it at once; a spare,
        // or a backup that has not caught up, when no caught-up backup
        // has for a lease's time (or the task has no backup at all).
        if self.role.is_none() && self.status == JobStatus::Running {
            let now = Instant::now();
            let due: Vec<TaskId> = self.vacant.iter().filter(|(_, v)| v.next_look <= now).map(|(t, _)| *t).collect();
            for t in due {
                if let Some(v) = self.vacant.get_mut(&t) {
                    v.next_look = now + self.cfg.job.lease_ttl / 2;
                }
                self.fill_vacancy(t).await?;
            }
            if !self.holds_task() {
                self.find_work().await?;
            }
        }
        Ok(())
    }

    async fn on_fetch_done(&mut self, seq: u64, attempt: u32, result: Result<Fetched, FetchFailure>) -> Result<(), Exit> {
        let Some(o) = self.outstanding.get_mut(&seq) else {
            // Already delivered (a duplicate), or its epoch ended.
            return Ok(());
        };
        // Fencing: an answer from a node whose term has ended (a primary
        // that was replaced while it was paused, say) is not taken.
        let result = match result {
            Ok(f) if self.primaries.get(&o.to).is_some_and(|p| p.term > f.term) => Err(FetchFailure::Status(Status::new(
                StatusKind::StaleTerm,
                format!("answered by term {}, but task {} has term {} now", f.term, o.to, self.primaries[&o.to].term),
                self.epoch,
                f.term,
            ))),
            other => other,
        };
        match result {
            Ok(Fetched { frame: bytes, .. }) => {
                let o = self.outstanding.remove(&seq).expect("present");
                let Some((me, _)) = self.role else { return Ok(()) };
                if o.epoch != self.epoch {
                    return Ok(());
                }
                self.kill_at(FaultPoint::DataReceived { task: me, epoch: o.epoch, from: o.to, edge: o.edge })?;
                let received = Received { from: o.to, edge: o.edge, epoch: o.epoch, bytes, limits: self.cfg.job.limits.clone() };
                self.call(|task, cx| task.data_ready(cx, received));
                self.apply_pending().await
            }
            Err(failure) => {
                if attempt != o.attempt {
                    return Ok(());
                }
                o.in_flight = false;
                // A broken connection is retried at once the first time
                // (the reconnect tells a dead peer, by refusal, within a
                // millisecond); after that, and for other errors, back off.
                let backoff = match failure {
                    FetchFailure::Transport(_) if o.attempt <= 1 => Duration::ZERO,
                    _ => (RETRY_MIN * o.attempt.min(16)).min(RETRY_MAX),
                };
                o.retry_at = Instant::now() + backoff;
                let retry_now = backoff.is_zero();
                match failure {
                    FetchFailure::Status(s) if s.kind.is_fatal() => {
                        let reason = format!(
                            "task {} cannot fetch edge {} from task {}: {:?}: {}",
                            self.role.map_or(0, |r| r.0),
                            o.edge,
                            o.to,
                            s.kind,
                            s.detail
                        );
                        self.outstanding.remove(&seq);
                        self.end(Some(reason));
                    }
                    FetchFailure::Status(s) if s.kind == StatusKind::StaleEpoch => {
                        // The responder is ahead: this epoch is over here too
                        // once the coordinator's change arrives.
                        tracing::debug!(seq, detail = %s.detail, "stale epoch");
                    }
                    FetchFailure::Refused(why) => {
                        // Nothing listens where the task's primary was: its
                        // process is gone. Free the task now rather than
                        // after its lease (safe: terms fence a node that
                        // was only slow) — if the attempt went to the
                        // primary it still has.
                        let (to, term) = (o.to, o.sent_to_term);
                        tracing::info!(task = to, term, %why, "the task's primary is gone; freeing the task");
                        self.evict(to, term);
                    }
                    other => tracing::debug!(seq, error = ?other, "fetch attempt failed; will retry"),
                }
                if retry_now {
                    self.send(seq);
                }
                Ok(())
            }
        }
    }
}

/// The job's end state: done, or failed for `failure`.
fn job_status(failure: Option<String>) -> JobStatus {
    match failure {
        None => JobStatus::Done,
        Some(r) => JobStatus::Failed(r),
    }
}
