//! The node-to-node transport: capnp-rpc over TCP, `schemas/taskgraph.capnp`.
//!
//! The server side turns calls into [`Event`]s for the node's loop and
//! waits for its answer; the client side keeps one connection per peer
//! node and turns answers (and broken connections) into results for the
//! loop. Neither knows anything about tasks beyond the request fields.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use capnp::capability::Promise;
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::Event;
use crate::spawn::Spawner;
use crate::message::Limits;
use crate::protocol::taskgraph_capnp::{node, StatusKind as WireKind};

/// The most a single RPC message carries of a payload: bulk frames travel
/// in chunks of this size, far below capnp's 64 MiB message limit.
pub(crate) const CHUNK_BYTES: usize = 8 << 20;

/// The receive limit of every connection: a chunk plus headers, and no
/// more (a peer cannot make this node read an arbitrarily large message).
const RECEIVE_LIMIT_WORDS: usize = (CHUNK_BYTES + (1 << 20)) / 8;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Chunk requests of one transfer in flight at once.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Whether nothing listens at `addr` any more: a fresh connection is
/// refused (the process that listened there is gone). A timeout or any
/// other error is no proof of anything.
pub(crate) async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

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

    fn to_wire(self) -> WireKind {
        use WireKind as W;
        match self {
            StatusKind::Ok => W::Ok,
            StatusKind::WrongJob => W::WrongJob,
            StatusKind::StaleEpoch => W::StaleEpoch,
            StatusKind::UnknownTask => W::UnknownTask,
            StatusKind::NotPrimary => W::NotPrimary,
            StatusKind::StaleTerm => W::StaleTerm,
            StatusKind::UnknownEdge => W::UnknownEdge,
            StatusKind::TooLarge => W::TooLarge,
            StatusKind::ShuttingDown => W::ShuttingDown,
            StatusKind::BadRequest => W::BadRequest,
            StatusKind::Internal => W::Internal,
        }
    }

    fn from_wire(w: WireKind) -> Self {
        use WireKind as W;
        match w {
            W::Ok => StatusKind::Ok,
            W::WrongJob => StatusKind::WrongJob,
            W::StaleEpoch => StatusKind::StaleEpoch,
            W::UnknownTask => StatusKind::UnknownTask,
            W::NotPrimary => StatusKind::NotPrimary,
            W::StaleTerm => StatusKind::StaleTerm,
            W::UnknownEdge => StatusKind::UnknownEdge,
            W::TooLarge => StatusKind::TooLarge,
            W::ShuttingDown => StatusKind::ShuttingDown,
            W::BadRequest => StatusKind::BadRequest,
            W::Internal => StatusKind::Internal,
        }
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
    fn write(&self, mut b: crate::protocol::taskgraph_capnp::status::Builder<'_>) {
        b.set_kind(self.kind.to_wire());
        b.set_detail(self.detail.as_str());
        b.set_epoch(self.epoch);
        b.set_term(self.term);
    }
    fn read(r: crate::protocol::taskgraph_capnp::status::Reader<'_>) -> capnp::Result<Self> {
        Ok(Status {
            kind: StatusKind::from_wire(r.get_kind()?),
            detail: r.get_detail()?.to_string().unwrap_or_default(),
            epoch: r.get_epoch(),
            term: r.get_term(),
        })
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

/// The most payload one replication batch carries (a reply larger than
/// this travels in parts, one per entry).
pub(crate) const REPLICA_BATCH_BYTES: usize = CHUNK_BYTES;

/// Why one attempt of a fetch failed (the texts are for logs).
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub(crate) enum FetchFailure {
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

/// Faults the client side injects, to test exactly-once delivery.
#[derive(Clone, Debug, Default)]
pub struct TransportFaults {
    /// Send every n-th fetch twice (0: never).
    pub duplicate_every: u64,
    /// Drop the connection under every n-th fetch after sending it
    /// (0: never). Only first attempts are cut: the connection carries
    /// every fetch in flight to that peer, so cutting retries too would
    /// never let a busy peer's fetches through.
    pub disconnect_every: u64,
}

/// What the server side shares with the loop.
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

// ---------------------------------------------------------------------------
// Server side.

fn receive_options() -> capnp::message::ReaderOptions {
    let mut options = capnp::message::ReaderOptions::new();
    options.traversal_limit_in_words(Some(RECEIVE_LIMIT_WORDS)).nesting_limit(16);
    options
}

/// Accepts connections and serves the `Node` interface on each.
pub(crate) async fn serve(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Event>, shared: Rc<Shared>, spawner: Spawner) {
    let server = NodeServer { tx, shared };
    let bootstrap: node::Client = capnp_rpc::new_client(server);
    // Out of file descriptors (say), accepting again at once only spins:
    // back off, up to a second, and say so once per streak of failures.
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => {
                backoff = Duration::ZERO;
                s
            }
            Err(e) => {
                if backoff.is_zero() {
                    tracing::warn!(error = %e, "accept failed; backing off");
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.compat().split();
        let network = twoparty::VatNetwork::new(
            futures::io::BufReader::new(reader),
            futures::io::BufWriter::new(writer),
            Side::Server,
            receive_options(),
        );
        let rpc = RpcSystem::new(Box::new(network), Some(bootstrap.clone().client));
        spawner.spawn(async move {
            // A broken or malformed connection ends here, not the node.
            if let Err(e) = rpc.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

struct NodeServer {
    tx: mpsc::UnboundedSender<Event>,
    shared: Rc<Shared>,
}

fn read_request(r: crate::protocol::taskgraph_capnp::fetch_request::Reader<'_>) -> capnp::Result<FetchRequest> {
    Ok(FetchRequest {
        job: r.get_job()?.to_string()?,
        epoch: r.get_epoch(),
        from_task: r.get_from_task(),
        to_task: r.get_to_task(),
        edge: r.get_edge(),
        seq: r.get_seq(),
        requester_term: r.get_requester_term(),
        responder_term: r.get_responder_term(),
    })
}

fn read_replication(r: crate::protocol::taskgraph_capnp::replication::Reader<'_>) -> capnp::Result<Replication> {
    use crate::protocol::taskgraph_capnp::replica_entry::Which;
    let mut entries = Vec::new();
    for e in r.get_entries()?.iter() {
        entries.push(match e.which()? {
            Which::Start(()) => ReplicaEntry::Start,
            Which::Snapshot(d) => ReplicaEntry::Snapshot(Arc::new(d?.to_vec())),
            Which::Update(d) => ReplicaEntry::Update(Arc::new(d?.to_vec())),
            Which::Served(g) => {
                let part = g.get_part()?.to_vec();
                let len = part.len();
                ReplicaEntry::Served {
                    epoch: g.get_epoch(),
                    edge: g.get_edge(),
                    requester: g.get_requester(),
                    frame: Arc::new(part),
                    range: 0..len,
                    last: g.get_last(),
                }
            }
        });
    }
    Ok(Replication { job: r.get_job()?.to_string()?, task: r.get_task(), term: r.get_term(), first: r.get_first(), entries, end: r.get_end() })
}

impl node::Server for NodeServer {
    fn fetch(self: capnp::capability::Rc<Self>, params: node::FetchParams, mut results: node::FetchResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let this = self.clone();
        async move {
            let request = params.get().and_then(|p| p.get_request()).and_then(read_request);
            let answer = match request {
                Err(e) => Err(Status::new(StatusKind::BadRequest, format!("malformed fetch: {e}"), this.shared.epoch.get(), this.shared.term.get())),
                Ok(req) => {
                    let (otx, orx) = oneshot::channel();
                    if this.tx.send(Event::Fetch(req, otx)).is_err() {
                        return Err(capnp::Error::disconnected("the node is stopping".into()));
                    }
                    match orx.await {
                        Ok(answer) => answer,
                        Err(_) => return Err(capnp::Error::disconnected("the node stopped".into())),
                    }
                }
            };
            let mut response = results.get().init_response();
            match answer {
                Err(status) => status.write(response.init_status()),
                Ok(frame) => {
                    Status::ok(this.shared.epoch.get(), this.shared.term.get()).write(response.reborrow().init_status());
                    let chunks = frame.len().div_ceil(CHUNK_BYTES).max(1);
                    response.set_total_bytes(frame.len() as u64);
                    response.set_chunks(chunks as u32);
                    response.set_payload(&frame[..frame.len().min(CHUNK_BYTES)]);
                    if chunks > 1 {
                        response.set_transfer(this.shared.add_transfer(frame));
                    }
                }
            }
            Ok(())
        }
    }

    fn chunk(self: capnp::capability::Rc<Self>, params: node::ChunkParams, mut results: node::ChunkResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let this = self.clone();
        async move {
            let p = params.get()?;
            let (transfer, index) = (p.get_transfer(), p.get_index() as usize);
            let frame = this.shared.transfers.borrow().get(&transfer).cloned();
            let Some(frame) = frame else {
                return Err(capnp::Error::failed(format!("no transfer {transfer} (its epoch may be over)")));
            };
            let start = index.saturating_mul(CHUNK_BYTES);
            if index == 0 || start >= frame.len() {
                return Err(capnp::Error::failed(format!("transfer {transfer} has no chunk {index}")));
            }
            let end = (start + CHUNK_BYTES).min(frame.len());
            results.get().set_data(&frame[start..end]);
            if end == frame.len() {
                this.shared.transfers.borrow_mut().remove(&transfer);
            }
            Ok(())
        }
    }

    fn flag(self: capnp::capability::Rc<Self>, params: node::FlagParams, mut results: node::FlagResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let this = self.clone();
        async move {
            let read = |p: node::FlagParams| -> capnp::Result<MetaFlag> {
                let f = p.get()?.get_flag()?;
                Ok(MetaFlag {
                    job: f.get_job()?.to_string()?,
                    epoch: f.get_epoch(),
                    from_task: f.get_from_task(),
                    to_task: f.get_to_task(),
                    link: f.get_link(),
                    meta: f.get_meta()?.to_vec(),
                    term: f.get_term(),
                })
            };
            let status = match read(params) {
                Err(e) => Status::new(StatusKind::BadRequest, format!("malformed flag: {e}"), this.shared.epoch.get(), this.shared.term.get()),
                Ok(flag) => {
                    let (otx, orx) = oneshot::channel();
                    if this.tx.send(Event::Flag(flag, otx)).is_err() {
                        return Err(capnp::Error::disconnected("the node is stopping".into()));
                    }
                    orx.await.map_err(|_| capnp::Error::disconnected("the node stopped".into()))?
                }
            };
            status.write(results.get().init_status());
            Ok(())
        }
    }

    fn replicate(self: capnp::capability::Rc<Self>, params: node::ReplicateParams, mut results: node::ReplicateResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let this = self.clone();
        async move {
            let (status, applied) = match params.get().and_then(|p| p.get_batch()).and_then(read_replication) {
                Err(e) => (Status::new(StatusKind::BadRequest, format!("malformed replication: {e}"), this.shared.epoch.get(), 0), 0),
                Ok(batch) => {
                    let (otx, orx) = oneshot::channel();
                    if this.tx.send(Event::Replicate(batch, otx)).is_err() {
                        return Err(capnp::Error::disconnected("the node is stopping".into()));
                    }
                    orx.await.map_err(|_| capnp::Error::disconnected("the node stopped".into()))?
                }
            };
            let mut r = results.get();
            status.write(r.reborrow().init_status());
            r.set_applied(applied);
            Ok(())
        }
    }

    fn ping(self: capnp::capability::Rc<Self>, _: node::PingParams, mut results: node::PingResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let shared = self.shared.clone();
        let mut info = results.get().init_info();
        info.set_node_id(shared.node_id);
        info.set_job(shared.job.as_str());
        info.set_task(shared.task.get());
        info.set_term(shared.term.get());
        info.set_epoch(shared.epoch.get());
        Promise::ok(())
    }
}

// ---------------------------------------------------------------------------
// Client side.

/// A fetched message, and the term of the node that served it.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) frame: Arc<Vec<u8>>,
    pub(crate) term: u64,
}

/// The first part of a fetch's answer.
struct FirstChunk {
    term: u64,
    frame: Vec<u8>,
    total: u64,
    chunks: u32,
    transfer: u64,
}

struct Connection {
    client: node::Client,
    /// Set when this side closes the connection on purpose (so its end is
    /// no news about the peer).
    closed_by_us: Rc<Cell<bool>>,
    /// Ends the connection cleanly: calls in flight fail as disconnected
    /// (aborting the RPC system's task instead would leave them hanging).
    disconnector: Option<capnp_rpc::Disconnector<Side>>,
    /// Whether the RPC system has stopped (the peer went away).
    ended: Rc<Cell<bool>>,
}

/// The connections of one node to its peers.
pub(crate) struct Peers {
    spawner: Spawner,
    /// Where to report a connection that ended by itself (the peer may
    /// be gone).
    events: mpsc::UnboundedSender<Event>,
    connections: RefCell<HashMap<SocketAddr, Connection>>,
    /// One connection attempt at a time, so that concurrent fetches to a
    /// new peer share one connection instead of racing to make several.
    connecting: tokio::sync::Mutex<()>,
    limits: Limits,
    faults: TransportFaults,
    fetches: Cell<u64>,
}

impl Peers {
    pub(crate) fn new(limits: Limits, faults: TransportFaults, spawner: Spawner, events: mpsc::UnboundedSender<Event>) -> Self {
        Peers {
            spawner,
            events, connections: RefCell::new(HashMap::new()), connecting: tokio::sync::Mutex::new(()), limits, faults, fetches: Cell::new(0) }
    }

    fn live_client(&self, addr: SocketAddr) -> Option<node::Client> {
        let connections = self.connections.borrow();
        let c = connections.get(&addr)?;
        (!c.ended.get()).then(|| c.client.clone())
    }

    async fn client(&self, addr: SocketAddr) -> Result<node::Client, FetchFailure> {
        if let Some(client) = self.live_client(addr) {
            return Ok(client);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(client) = self.live_client(addr) {
            return Ok(client);
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| FetchFailure::Transport(format!("connecting to {addr} timed out")))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => FetchFailure::Refused(format!("{addr} refused the connection")),
                _ => FetchFailure::Transport(format!("cannot connect to {addr}: {e}")),
            })?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.compat().split();
        let network = twoparty::VatNetwork::new(
            futures::io::BufReader::new(reader),
            futures::io::BufWriter::new(writer),
            Side::Client,
            receive_options(),
        );
        let mut rpc = RpcSystem::new(Box::new(network), None);
        let client: node::Client = rpc.bootstrap(Side::Server);
        let disconnector = rpc.get_disconnector();
        let ended = Rc::new(Cell::new(false));
        let closed_by_us = Rc::new(Cell::new(false));
        let (ended_flag, ours, events) = (ended.clone(), closed_by_us.clone(), self.events.clone());
        self.spawner.spawn(async move {
            if let Err(e) = rpc.await {
                tracing::debug!(%addr, error = %e, "connection to peer ended");
            }
            ended_flag.set(true);
            if !ours.get() {
                let _ = events.send(Event::PeerGone(addr));
            }
        });
        let old = self
            .connections
            .borrow_mut()
            .insert(addr, Connection { client: client.clone(), closed_by_us, disconnector: Some(disconnector), ended });
        if let Some(old) = old {
            self.close(old);
        }
        Ok(client)
    }

    fn close(&self, mut c: Connection) {
        c.closed_by_us.set(true);
        if let Some(d) = c.disconnector.take() {
            self.spawner.spawn(async move {
                let _ = d.await;
            });
        }
    }

    fn disconnect(&self, addr: SocketAddr) {
        let c = self.connections.borrow_mut().remove(&addr);
        if let Some(c) = c {
            self.close(c);
        }
    }

    /// Fetches once (twice, with duplicate injection): one result per
    /// send.
    pub(crate) async fn fetch(&self, addr: SocketAddr, req: FetchRequest, attempt: u32) -> Vec<Result<Fetched, FetchFailure>> {
        let n = self.fetches.get() + 1;
        self.fetches.set(n);
        let every = |k: u64| k != 0 && n % k == 0;
        if every(self.faults.duplicate_every) {
            let (a, b) = futures::join!(self.fetch_once(addr, &req, false), self.fetch_once(addr, &req, false));
            return vec![a, b];
        }
        let cut = attempt == 1 && every(self.faults.disconnect_every);
        vec![self.fetch_once(addr, &req, cut).await]
    }

    async fn fetch_once(&self, addr: SocketAddr, req: &FetchRequest, cut: bool) -> Result<Fetched, FetchFailure> {
        let client = self.client(addr).await?;
        let mut call = client.fetch_request();
        {
            let mut r = call.get().init_request();
            r.set_job(req.job.as_str());
            r.set_epoch(req.epoch);
            r.set_from_task(req.from_task);
            r.set_to_task(req.to_task);
            r.set_edge(req.edge);
            r.set_seq(req.seq);
            r.set_requester_term(req.requester_term);
            r.set_responder_term(req.responder_term);
        }
        let promise = call.send().promise;
        if cut {
            // Injected fault: the connection drops with the request out.
            tokio::task::yield_now().await;
            self.disconnect(addr);
        }
        let response = match promise.await {
            Ok(r) => r,
            Err(e) => {
                self.disconnect(addr);
                return Err(FetchFailure::Transport(e.to_string()));
            }
        };
        let read = || -> capnp::Result<Result<FirstChunk, Status>> {
            let r = response.get()?.get_response()?;
            let status = Status::read(r.get_status()?)?;
            if status.kind != StatusKind::Ok {
                return Ok(Err(status));
            }
            Ok(Ok(FirstChunk {
                term: status.term,
                frame: r.get_payload()?.to_vec(),
                total: r.get_total_bytes(),
                chunks: r.get_chunks(),
                transfer: r.get_transfer(),
            }))
        };
        let FirstChunk { mut frame, total, chunks, transfer, term } = match read() {
            Ok(Ok(first)) => first,
            Ok(Err(status)) => return Err(FetchFailure::Status(status)),
            Err(e) => return Err(FetchFailure::Invalid(e.to_string())),
        };
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if total > self.limits.max_bytes {
            return Err(FetchFailure::Status(Status::new(
                StatusKind::TooLarge,
                format!("a {total}-byte message exceeds the limit of {} bytes (raise Job::limits)", self.limits.max_bytes),
                req.epoch,
                0,
            )));
        }
        if chunks as usize != total.div_ceil(CHUNK_BYTES).max(1) || frame.len() != total.min(CHUNK_BYTES) {
            return Err(FetchFailure::Invalid(format!("inconsistent sizes: {total} bytes in {chunks} chunks, first {}", frame.len())));
        }
        frame.reserve_exact(total - frame.len());
        // The rest, up to CHUNKS_IN_FLIGHT requests at a time, so that the
        // server prepares one chunk while another is on the wire.
        let mut pending = futures::stream::FuturesOrdered::new();
        let mut next = 1;
        loop {
            while next < chunks && pending.len() < CHUNKS_IN_FLIGHT {
                let mut call = client.chunk_request();
                call.get().set_transfer(transfer);
                call.get().set_index(next);
                pending.push_back(call.send().promise);
                next += 1;
            }
            let Some(response) = futures::StreamExt::next(&mut pending).await else { break };
            let response = response.map_err(|e| {
                self.disconnect(addr);
                FetchFailure::Transport(e.to_string())
            })?;
            let data = response.get().and_then(|r| r.get_data()).map_err(|e| FetchFailure::Invalid(e.to_string()))?;
            frame.extend_from_slice(data);
        }
        if frame.len() != total {
            return Err(FetchFailure::Invalid(format!("got {} bytes of {total}", frame.len())));
        }
        Ok(Fetched { frame: Arc::new(frame), term })
    }

    /// Whether a live connection to `addr` is open.
    pub(crate) fn connected(&self, addr: SocketAddr) -> bool {
        self.live_client(addr).is_some()
    }

    /// Opens (or keeps) a connection to `addr`: its ending by itself is
    /// then reported as `PeerGone`.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<(), FetchFailure> {
        self.client(addr).await.map(|_| ())
    }

    /// Sends a batch of a replication stream to a backup; its status and
    /// the position it has applied up to.
    pub(crate) async fn replicate(&self, addr: SocketAddr, batch: &Replication) -> Result<(Status, u64), FetchFailure> {
        let client = self.client(addr).await?;
        let mut call = client.replicate_request();
        {
            let mut b = call.get().init_batch();
            b.set_job(batch.job.as_str());
            b.set_task(batch.task);
            b.set_term(batch.term);
            b.set_first(batch.first);
            b.set_end(batch.end);
            let mut list = b.init_entries(batch.entries.len() as u32);
            for (i, e) in batch.entries.iter().enumerate() {
                let mut w = list.reborrow().get(i as u32);
                match e {
                    ReplicaEntry::Start => w.set_start(()),
                    ReplicaEntry::Snapshot(d) => w.set_snapshot(d),
                    ReplicaEntry::Update(d) => w.set_update(d),
                    ReplicaEntry::Served { epoch, edge, requester, frame, range, last } => {
                        let mut g = w.init_served();
                        g.set_epoch(*epoch);
                        g.set_edge(*edge);
                        g.set_requester(*requester);
                        g.set_part(&frame[range.clone()]);
                        g.set_last(*last);
                    }
                }
            }
        }
        let response = call.send().promise.await.map_err(|e| FetchFailure::Transport(e.to_string()))?;
        let r = response.get().map_err(|e| FetchFailure::Invalid(e.to_string()))?;
        let status = r.get_status().and_then(Status::read).map_err(|e| FetchFailure::Invalid(e.to_string()))?;
        Ok((status, r.get_applied()))
    }

    /// Sends a meta flag.
    pub(crate) async fn flag(&self, addr: SocketAddr, flag: MetaFlag) -> Result<(), FetchFailure> {
        let client = self.client(addr).await?;
        let mut call = client.flag_request();
        {
            let mut f = call.get().init_flag();
            f.set_job(flag.job.as_str());
            f.set_epoch(flag.epoch);
            f.set_from_task(flag.from_task);
            f.set_to_task(flag.to_task);
            f.set_link(flag.link);
            f.set_meta(&flag.meta);
            f.set_term(flag.term);
        }
        let response = call.send().promise.await.map_err(|e| FetchFailure::Transport(e.to_string()))?;
        let status = response
            .get()
            .and_then(|r| r.get_status())
            .and_then(Status::read)
            .map_err(|e| FetchFailure::Invalid(e.to_string()))?;
        if status.kind == StatusKind::Ok {
            Ok(())
        } else {
            Err(FetchFailure::Status(status))
        }
    }
}
