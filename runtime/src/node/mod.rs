//! A node: one thread running one event loop, hosting one task as its
//! primary, or waiting as a spare to take over a task whose node died.
//!
//! Everything of a node lives on its thread (capnp-rpc is `!Send`): a
//! current-thread tokio runtime with a `LocalSet` runs the RPC server, the
//! connections to peers, the coordinator watch and the event loop, which
//! owns the task and calls its handlers one at a time.
//!
//! The event loop (`event_loop.rs`) is a state machine fed by one channel:
//! requests from peers, answers to this node's fetches and replication
//! batches, coordinator changes and writes, and a retry tick. Handlers'
//! actions run in order after each handler. Each concept has its file:
//!
//! | file | what |
//! |---|---|
//! | `event_loop.rs` | the events, the loop's state, the dispatch |
//! | `membership.rs` | what the node knows of the job's keys; following them |
//! | `failover.rs` | deciding to claim a task or a backup slot, and acting on the outcome; promotion, eviction |
//! | `takeover.rs` | the coordinator work of taking a task or this node's keys again, off the loop, one attempt at a time |
//! | `rejoin.rs` | taking this node's keys again after its lease lapsed, or stepping down |
//! | `epoch.rs` | entering an epoch; running the handlers' actions |
//! | `admission.rs` | whether a peer's fetch or flag is let in, held for its epoch, or refused |
//! | `serve.rs` | acting on admission: early requests, the reply cache, calling `serve` and `meta_ready` |
//! | `outbox.rs` | fetch and flag delivery: retry, fencing, back-off, reroute |
//! | `replication/` | the stream (`mod.rs`), backups' progress and the gate (`progress.rs`), the primary's and the backup's sides (`primary.rs`, `follower.rs`) |
//! | `session.rs` | the lane: records, advances and the job's end, written in order off the loop |
//! | `lease.rs` | the node's lease, kept alive on its own thread |
//!
//! `README.md` beside this file draws the states and transitions.

mod admission;
mod epoch;
mod event_loop;
mod failover;
mod lease;
mod membership;
mod outbox;
mod rejoin;
mod replication;
mod serve;
mod session;
mod takeover;

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
pub(crate) use crate::transport::{Answer, CallFailure, Fetched, ReplicaEntry, Replication, Status, StatusKind};
use lease::{Keeper, LeaseNews, SureUntil};
use replication::progress::{Answer as ReplicaAnswer, Gate, Next as ReplicaNext, Sending};
use replication::Stream;
use event_loop::{Effect, Event, KeyHolder, Loop, Role, Seat, Vacancy};
use membership::Members;
use outbox::{Outbox, RETRY_MIN};
use serve::Replies;
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
#[non_exhaustive]
pub enum NodeExit {
    /// The job ended.
    JobEnded(JobStatus),
    /// A fault hook killed it.
    Killed,
    /// Another node holds this node's task now (it took the task over
    /// while this one was paused, cut off, or had lost its lease): this
    /// one stepped down.
    Replaced {
        /// The task.
        task: TaskId,
    },
    /// As a backup of `task`: its primary dropped it (it did not follow
    /// the stream in time), or another node took its backup slot.
    BackupDropped {
        /// The task.
        task: TaskId,
    },
    /// Another live node registered this node's id while this one's lease
    /// had lapsed.
    IdTaken,
    /// The coordinator refused what the node needed (not unreachable:
    /// that is [`CoordinatorLost`](Self::CoordinatorLost)).
    CoordinatorError(String),
    /// No longer returned: what it covered has a variant per reason now
    /// (`Replaced`, `BackupDropped`, `IdTaken`, `CoordinatorError`).
    #[deprecated(note = "no longer returned: see Replaced, BackupDropped, IdTaken, CoordinatorError")]
    LostLease,
    /// It gave up on the coordinator: unreachable for longer than the
    /// node waits it out. A supervisor should not just restart it: the
    /// next node would find the coordinator gone too (see
    /// [`crate::launch::EXIT_COORDINATOR_LOST`]).
    CoordinatorLost(String),
}

impl NodeExit {
    /// Whether the node stepped down or was stopped while the job goes on
    /// (a supervisor starts a replacement at once): killed, replaced,
    /// dropped as a backup, its id taken, or refused by the coordinator.
    #[allow(deprecated)] // `LostLease` still counts, for exits made elsewhere.
    pub fn stepped_down(&self) -> bool {
        matches!(
            self,
            NodeExit::Killed
                | NodeExit::Replaced { .. }
                | NodeExit::BackupDropped { .. }
                | NodeExit::IdTaken
                | NodeExit::CoordinatorError(_)
                | NodeExit::LostLease
        )
    }
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
        value,
        tx,
        spawner,
        peers,
        shared,
        role: Role::Spare,
        members: Members::default(),
        stream: Stream::default(),
        epoch: 0,
        status: JobStatus::Running,
        outbox: Outbox::default(),
        replies: Replies::default(),
        last_check: None,
        taking: Default::default(),
        neighbours: Default::default(),
        pending: Default::default(),
        lane,
        sending: Sending::default(),
        gate: Gate::default(),
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


/// The job's end state: done, or failed for `failure`.
fn job_status(failure: Option<String>) -> JobStatus {
    match failure {
        None => JobStatus::Done,
        Some(r) => JobStatus::Failed(r),
    }
}
