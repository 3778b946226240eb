//! The node-to-node transport: how a node's requests reach other nodes,
//! and how theirs reach it. It knows no node: only the requests' fields
//! and the little the server side tells peers about its node
//! ([`Shared`]).
//!
//! * The vocabulary ([`FetchRequest`], [`MetaFlag`], [`Replication`],
//!   [`Status`], [`CallFailure`], ...) is the node's view of
//!   `schemas/taskgraph.capnp`; [`proto`] maps it to capnp and back, both
//!   directions, in one place.
//! * [`Transport`] is a node's client side: one connection per peer
//!   address, the fetch, flag and replicate calls, and whether a peer's
//!   process is gone ([`Transport::refused`]).
//! * [`Listener`] is its server side: it turns peers' calls into
//!   [`Inbound`] requests on a channel the node owns, each with a one-shot
//!   [`Reply`] that the node answers through. The same channel carries
//!   [`Inbound::PeerGone`]: a connection the node opened ended by itself.
//! * [`Network`] picks the implementation: TCP with capnp-rpc (`client`,
//!   `server`: what nodes use), or [`memory`], in-process. Both pass one
//!   conformance suite (`conformance.rs`, run by the unit tests).
//! * [`faults`]: duplicates and cuts injected into fetches, decided the
//!   same way for either implementation.
//!
//! Everything runs on the current thread's `LocalSet` (capnp-rpc is
//! `!Send`): the traits are object-safe and return boxed local futures.

mod client;
#[cfg(test)]
mod conformance;
mod faults;
pub(crate) mod memory;
mod proto;
mod server;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::message::Limits;
use crate::spawn::Spawner;

pub use faults::TransportFaults;

/// The most a single RPC message carries of a payload: bulk frames travel
/// in chunks of this size, far below capnp's 64 MiB message limit.
pub(crate) const CHUNK_BYTES: usize = 8 << 20;

/// The receive limit of every connection: a chunk plus headers, and no
/// more (a peer cannot make a node read an arbitrarily large message).
const RECEIVE_LIMIT_WORDS: usize = (CHUNK_BYTES + (1 << 20)) / 8;

/// The most payload one replication batch carries (a reply larger than
/// this travels in parts, one per entry).
pub(crate) const REPLICA_BATCH_BYTES: usize = CHUNK_BYTES;

/// The kinds of [`Status`] (the protocol's `StatusKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusKind {
    Ok,
    WrongJob,
    StaleEpoch,
    UnknownTask,
    NotPrimary,
    StaleTerm,
    UnknownEdge,
    TooLarge,
    ShuttingDown,
    BadRequest,
    Internal,
}

impl StatusKind {
    /// Errors that retrying cannot fix: the requester has a bug, or talks
    /// to the wrong job.
    pub(crate) fn is_fatal(self) -> bool {
        matches!(self, StatusKind::WrongJob | StatusKind::UnknownTask | StatusKind::UnknownEdge | StatusKind::BadRequest | StatusKind::TooLarge)
    }
}

/// An answer's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) kind: StatusKind,
    pub(crate) detail: String,
    pub(crate) epoch: u64,
    pub(crate) term: u64,
}

impl Status {
    pub(crate) fn new(kind: StatusKind, detail: impl Into<String>, epoch: u64, term: u64) -> Self {
        Status { kind, detail: detail.into(), epoch, term }
    }
    pub(crate) fn ok(epoch: u64, term: u64) -> Self {
        Status::new(StatusKind::Ok, "", epoch, term)
    }
}

/// A fetch, as the loop sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FetchRequest {
    pub(crate) job: String,
    pub(crate) epoch: u64,
    pub(crate) from_task: u64,
    pub(crate) to_task: u64,
    pub(crate) edge: u32,
    pub(crate) seq: u64,
    pub(crate) requester_term: u64,
    pub(crate) responder_term: u64,
}

/// A meta flag, as the loop sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MetaFlag {
    pub(crate) job: String,
    pub(crate) epoch: u64,
    pub(crate) from_task: u64,
    pub(crate) to_task: u64,
    pub(crate) link: u32,
    pub(crate) meta: Vec<u8>,
    pub(crate) term: u64,
}

/// One entry of a task's replication stream (primary to backups).
#[derive(Clone, Debug)]
pub(crate) enum ReplicaEntry {
    /// The stream starts from the task's initial state.
    Start,
    /// The task's whole state, replacing everything before.
    Snapshot(Arc<Vec<u8>>),
    /// An update the primary's task made.
    Update(Arc<Vec<u8>>),
    /// A reply the primary released: `frame[range]` is this part of it.
    Served { epoch: u64, edge: u32, requester: u64, frame: Arc<Vec<u8>>, range: std::ops::Range<usize>, last: bool },
}

impl ReplicaEntry {
    /// About how many bytes it takes on the wire.
    pub(crate) fn size(&self) -> usize {
        32 + match self {
            ReplicaEntry::Start => 0,
            ReplicaEntry::Snapshot(b) | ReplicaEntry::Update(b) => b.len(),
            ReplicaEntry::Served { range, .. } => range.len(),
        }
    }
}

/// A batch of a replication stream, as the loop sees it.
#[derive(Clone, Debug)]
pub(crate) struct Replication {
    pub(crate) job: String,
    pub(crate) task: u64,
    pub(crate) term: u64,
    /// The stream position of the first entry (positions count from 1).
    pub(crate) first: u64,
    pub(crate) entries: Vec<ReplicaEntry>,
    /// The position the stream has reached on the primary: a backup that
    /// has applied up to it is caught up (and may take the task over).
    pub(crate) end: u64,
}

/// Why one attempt of a call (a fetch, a flag, a replication batch)
/// failed (the texts are for logs).
#[derive(Clone, Debug)]
// The texts are read only through `Debug` (in logs), which dead-code
// analysis does not count.
#[allow(dead_code)]
pub(crate) enum CallFailure {
    /// The connection broke or could not be made.
    Transport(String),
    /// Nothing listens at the node's address: its process is gone (strong
    /// evidence of death, unlike a timeout).
    Refused(String),
    /// The responder answered with an error.
    Status(Status),
    /// The responder's answer made no sense.
    Invalid(String),
}

/// A fetched message, and the term of the node that served it.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) frame: Arc<Vec<u8>>,
    pub(crate) term: u64,
}

/// What a serving node answers a fetch with: the message frame, or why not.
pub(crate) type Answer = Result<Arc<Vec<u8>>, Status>;

/// Where the node sends its answer to one inbound request.
pub(crate) type Reply<T> = oneshot::Sender<T>;

/// What the transport delivers to its node.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A peer fetches from the node's task.
    Fetch(FetchRequest, Reply<Answer>),
    /// A peer flags the node's task.
    Flag(MetaFlag, Reply<Status>),
    /// A task's primary sends the node (its backup) its replication
    /// stream; the answer carries the position applied up to.
    Replicate(Replication, Reply<(Status, u64)>),
    /// A connection the node opened to this address ended by itself (not
    /// closed by the node): the peer may be gone.
    PeerGone(SocketAddr),
}

/// What the server side knows of its node, kept current by the node: for
/// statuses it makes up itself (a malformed request), for `ping`, and the
/// big replies it hands out in chunks.
#[derive(Debug)]
pub(crate) struct Shared {
    node_id: u64,
    job: String,
    addr: SocketAddr,
    task: Cell<i64>,
    term: Cell<u64>,
    epoch: Cell<u64>,
    transfers: RefCell<HashMap<u64, Arc<Vec<u8>>>>,
    next_transfer: Cell<u64>,
}

impl Shared {
    pub(crate) fn new(node_id: u64, job: &str, addr: SocketAddr) -> Self {
        Shared {
            node_id,
            job: job.to_owned(),
            addr,
            task: Cell::new(-1),
            term: Cell::new(0),
            epoch: Cell::new(0),
            transfers: RefCell::new(HashMap::new()),
            next_transfer: Cell::new(1),
        }
    }
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub(crate) fn set_role(&self, task: i64, term: u64) {
        self.task.set(task);
        self.term.set(term);
    }
    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.set(epoch);
    }
    pub(crate) fn clear_transfers(&self) {
        self.transfers.borrow_mut().clear();
    }
    fn add_transfer(&self, frame: Arc<Vec<u8>>) -> u64 {
        let id = self.next_transfer.get();
        self.next_transfer.set(id + 1);
        self.transfers.borrow_mut().insert(id, frame);
        id
    }
}

/// A node's client side: its connections to its peers, one per address,
/// made on first use and remade after they break.
pub(crate) trait Transport {
    /// Fetches once (twice, with duplicate injection): one result per
    /// send. `attempt` counts from 1 (only first attempts are cut).
    fn fetch(&self, addr: SocketAddr, req: FetchRequest, attempt: u32) -> LocalBoxFuture<'_, Vec<Result<Fetched, CallFailure>>>;

    /// Sends a meta flag: `Ok` once the peer took it.
    fn flag(&self, addr: SocketAddr, flag: MetaFlag) -> LocalBoxFuture<'_, Result<(), CallFailure>>;

    /// Sends a batch of a replication stream to a backup; its status and
    /// the position it has applied up to.
    fn replicate<'a>(&'a self, addr: SocketAddr, batch: &'a Replication) -> LocalBoxFuture<'a, Result<(Status, u64), CallFailure>>;

    /// Opens (or keeps) a connection to `addr`: its ending by itself is
    /// then reported as [`Inbound::PeerGone`].
    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<'_, Result<(), CallFailure>>;

    /// Whether a live connection to `addr` is open.
    fn connected(&self, addr: SocketAddr) -> bool;

    /// Whether nothing listens at `addr` any more: a fresh connection is
    /// refused (the process that listened there is gone). A timeout or
    /// any other error is no proof of anything.
    fn refused(&self, addr: SocketAddr) -> LocalBoxFuture<'static, bool>;
}

/// A node's server side, bound to its address but not serving yet (peers
/// that connect meanwhile wait, as in a TCP listener's backlog).
pub(crate) trait Listener {
    /// The address peers reach it at.
    fn addr(&self) -> SocketAddr;

    /// Serves peers' calls until dropped: each becomes an [`Inbound`] on
    /// `inbound`. Its connections are spawned with `spawner` (they end
    /// with the node).
    fn serve(self: Box<Self>, inbound: mpsc::UnboundedSender<Inbound>, shared: Rc<Shared>, spawner: Spawner) -> LocalBoxFuture<'static, ()>;
}

/// Which transport a node uses. `Send`, so that a node's configuration
/// can travel to the thread it runs on; the transport itself is made
/// there.
#[derive(Clone, Debug, Default)]
pub(crate) enum Network {
    /// capnp-rpc over TCP.
    #[default]
    Tcp,
    /// In-process, among the nodes on this network.
    #[cfg_attr(not(test), allow(dead_code))]
    Memory(memory::MemoryNetwork),
}

impl Network {
    /// Binds a listener at `addr` (port 0: any free port).
    pub(crate) async fn listen(&self, addr: SocketAddr) -> std::io::Result<Box<dyn Listener>> {
        Ok(match self {
            Network::Tcp => Box::new(server::TcpListener::bind(addr).await?),
            Network::Memory(network) => Box::new(network.listen(addr)?),
        })
    }

    /// A node's client side: fetches limited to `limits`, `faults`
    /// injected, connections spawned with `spawner`, and the ends of
    /// connections reported on `inbound`.
    pub(crate) fn transport(&self, limits: Limits, faults: TransportFaults, spawner: Spawner, inbound: mpsc::UnboundedSender<Inbound>) -> Rc<dyn Transport> {
        match self {
            Network::Tcp => Rc::new(client::Peers::new(limits, faults, spawner, inbound)),
            Network::Memory(network) => Rc::new(network.transport(limits, faults, spawner, inbound)),
        }
    }
}
