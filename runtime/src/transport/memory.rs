//! An in-process transport: the nodes on one [`MemoryNetwork`] (in one
//! process, on any of its threads) reach one another through channels
//! instead of sockets. It behaves like the TCP transport wherever a node
//! can tell:
//!
//! * requests pass through capnp ([`proto::through_wire`]): a node
//!   receives what TCP would deliver, a malformed one is answered
//!   `BadRequest`, and one that TCP's receiver would refuse for its size
//!   is refused the same way (the call fails, the connection breaks);
//! * a reply is handed over whole (TCP sends a big one in chunks), and one
//!   larger than the client's limits is refused as `TooLarge`;
//! * one connection per peer address: when its listener goes (its node
//!   stops) or a test cuts it ([`MemoryNetwork::cut`]), calls in flight
//!   fail as `CallFailure::Transport` and the client's node hears
//!   `Inbound::PeerGone`; nobody listening is `CallFailure::Refused`;
//! * faults are injected by the same [`Injector`] as for TCP.
//!
//! Addresses are made up: the requested one, or for port 0 the next port
//! not in use (in order, so reused only after all others). It reads no
//! clock and starts no thread, so that a deterministic simulator can
//! run nodes on it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::LocalBoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::client::too_large;
use super::faults::Injector;
use super::proto;
use super::{CallFailure, FetchRequest, Fetched, Inbound, Listener, MetaFlag, Reply, Replication, Shared, Status, StatusKind};
use super::{Transport, TransportFaults};
use crate::message::Limits;
use crate::protocol::taskgraph_capnp::{fetch_request, meta_flag, replication};
use crate::spawn::Spawner;

/// The listeners of one in-process network, by address.
#[derive(Clone, Default)]
pub(crate) struct MemoryNetwork {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").field("listeners", &self.registry().listeners.len()).finish()
    }
}

#[derive(Default)]
struct Registry {
    last_port: u16,
    listeners: BTreeMap<SocketAddr, Entry>,
}

struct Entry {
    calls: mpsc::UnboundedSender<Call>,
    /// Cancelled when the listener goes or its connections are cut: every
    /// connection to it is a child of the link it was made on.
    link: CancellationToken,
}

/// A call on one connection, as its listener receives it.
struct Call {
    connection: CancellationToken,
    request: Request,
}

/// What a call returns: its result, or the text of its exception.
type Return<T> = oneshot::Sender<Result<T, String>>;

/// A request as the server reads it (an `Err` is malformed).
enum Request {
    Fetch(Result<FetchRequest, String>, Return<Result<Fetched, Status>>),
    Flag(Result<MetaFlag, String>, Return<Status>),
    Replicate(Result<Replication, String>, Return<(Status, u64)>),
}

// Nothing in the crate makes a network yet but the tests (the
// deterministic simulator is to come): `new` and `cut` are theirs.
impl MemoryNetwork {
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn new() -> Self {
        MemoryNetwork::default()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Binds `addr`, or for port 0 the next free port of its address.
    pub(crate) fn listen(&self, addr: SocketAddr) -> std::io::Result<MemoryListener> {
        let mut registry = self.registry();
        let addr = if addr.port() != 0 {
            if registry.listeners.contains_key(&addr) {
                return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("{addr} is in use")));
            }
            addr
        } else {
            let mut free = None;
            for _ in 0..u16::MAX {
                registry.last_port = registry.last_port.checked_add(1).unwrap_or(1);
                let candidate = SocketAddr::new(addr.ip(), registry.last_port);
                if !registry.listeners.contains_key(&candidate) {
                    free = Some(candidate);
                    break;
                }
            }
            free.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, format!("no free port at {}", addr.ip())))?
        };
        let (calls, rx) = mpsc::unbounded_channel();
        registry.listeners.insert(addr, Entry { calls, link: CancellationToken::new() });
        Ok(MemoryListener { addr, calls: rx, registration: Registration { network: self.clone(), addr } })
    }

    /// Ends every connection to the listener at `addr`, as a network
    /// failure would (it keeps listening): calls in flight on them fail,
    /// their clients hear `PeerGone`. Whether anything listens there.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn cut(&self, addr: SocketAddr) -> bool {
        let old = match self.registry().listeners.get_mut(&addr) {
            Some(entry) => std::mem::take(&mut entry.link),
            None => return false,
        };
        old.cancel();
        true
    }

    /// Whether a listener is bound at `addr`.
    pub(crate) fn listening(&self, addr: SocketAddr) -> bool {
        self.registry().listeners.contains_key(&addr)
    }

    fn open(&self, addr: SocketAddr) -> Result<(mpsc::UnboundedSender<Call>, CancellationToken), CallFailure> {
        match self.registry().listeners.get(&addr) {
            Some(entry) => Ok((entry.calls.clone(), entry.link.child_token())),
            None => Err(CallFailure::Refused(format!("{addr} refused the connection"))),
        }
    }

    /// A node's client side on this network.
    pub(crate) fn transport(&self, limits: Limits, faults: TransportFaults, spawner: Spawner, events: mpsc::UnboundedSender<Inbound>) -> MemoryPeers {
        MemoryPeers { network: self.clone(), spawner, events, connections: RefCell::new(BTreeMap::new()), limits, faults: Injector::new(faults) }
    }
}

/// Unbinds its address when dropped, ending every connection to it.
struct Registration {
    network: MemoryNetwork,
    addr: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let entry = self.network.registry().listeners.remove(&self.addr);
        if let Some(entry) = entry {
            entry.link.cancel();
        }
    }
}

/// A bound address of a [`MemoryNetwork`]; calls wait until it serves.
pub(crate) struct MemoryListener {
    addr: SocketAddr,
    calls: mpsc::UnboundedReceiver<Call>,
    registration: Registration,
}

impl Listener for MemoryListener {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(self: Box<Self>, inbound: mpsc::UnboundedSender<Inbound>, shared: Rc<Shared>, spawner: Spawner) -> LocalBoxFuture<'static, ()> {
        let MemoryListener { mut calls, registration, .. } = *self;
        Box::pin(async move {
            let _bound = registration;
            while let Some(Call { connection, request }) = calls.recv().await {
                let (inbound, shared) = (inbound.clone(), shared.clone());
                // Calls are served side by side; a call whose connection
                // ends is dropped (its client is told by the connection).
                spawner.spawn(async move {
                    tokio::select! {
                        _ = connection.cancelled() => {}
                        _ = answer(request, &inbound, &shared) => {}
                    }
                });
            }
        })
    }
}

/// Serves one call, as the TCP server does.
async fn answer(request: Request, inbound: &mpsc::UnboundedSender<Inbound>, shared: &Shared) {
    let bad = |what: &str, e: String, term: u64| Status::new(StatusKind::BadRequest, format!("malformed {what}: {e}"), shared.epoch.get(), term);
    match request {
        Request::Fetch(req, ret) => {
            let result = match req {
                Err(e) => Ok(Err(bad("fetch", e, shared.term.get()))),
                Ok(req) => ask(inbound, |reply| Inbound::Fetch(req, reply)).await,
            };
            let _ = ret.send(result.map(|answer| answer.map(|frame| Fetched { frame, term: shared.term.get() })));
        }
        Request::Flag(flag, ret) => {
            let result = match flag {
                Err(e) => Ok(bad("flag", e, shared.term.get())),
                Ok(flag) => ask(inbound, |reply| Inbound::Flag(flag, reply)).await,
            };
            let _ = ret.send(result);
        }
        Request::Replicate(batch, ret) => {
            let result = match batch {
                Err(e) => Ok((bad("replication", e, 0), 0)),
                Ok(batch) => ask(inbound, |reply| Inbound::Replicate(batch, reply)).await,
            };
            let _ = ret.send(result);
        }
    }
}

/// Hands a request to the node and waits for its answer.
async fn ask<T>(inbound: &mpsc::UnboundedSender<Inbound>, request: impl FnOnce(Reply<T>) -> Inbound) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    inbound.send(request(reply)).map_err(|_| "the node is stopping".to_owned())?;
    answer.await.map_err(|_| "the node stopped".to_owned())
}

struct Connection {
    calls: mpsc::UnboundedSender<Call>,
    /// Cancelled when the connection ends, whoever ends it.
    ended: CancellationToken,
    /// Set when this side ends it, before anything else did (so its end is
    /// no news about the peer).
    closed_by_us: Rc<Cell<bool>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing a connection that has ended already changes nothing:
        // its end was news (as over TCP, where it is reported at once).
        if !self.ended.is_cancelled() {
            self.closed_by_us.set(true);
        }
        self.ended.cancel();
    }
}

/// The connections of one node to its peers on a [`MemoryNetwork`].
pub(crate) struct MemoryPeers {
    network: MemoryNetwork,
    spawner: Spawner,
    /// Where to report a connection that ended by itself.
    events: mpsc::UnboundedSender<Inbound>,
    connections: RefCell<BTreeMap<SocketAddr, Connection>>,
    limits: Limits,
    faults: Injector,
}

impl MemoryPeers {
    fn live(&self, addr: SocketAddr) -> Option<(mpsc::UnboundedSender<Call>, CancellationToken)> {
        let connections = self.connections.borrow();
        let c = connections.get(&addr)?;
        (!c.ended.is_cancelled()).then(|| (c.calls.clone(), c.ended.clone()))
    }

    fn connection(&self, addr: SocketAddr) -> Result<(mpsc::UnboundedSender<Call>, CancellationToken), CallFailure> {
        if let Some(live) = self.live(addr) {
            return Ok(live);
        }
        let (calls, ended) = self.network.open(addr)?;
        let closed_by_us = Rc::new(Cell::new(false));
        let (watch, ours, events) = (ended.clone(), closed_by_us.clone(), self.events.clone());
        self.spawner.spawn(async move {
            watch.cancelled().await;
            if !ours.get() {
                let _ = events.send(Inbound::PeerGone(addr));
            }
        });
        let connection = Connection { calls: calls.clone(), ended: ended.clone(), closed_by_us };
        let old = self.connections.borrow_mut().insert(addr, connection);
        drop(old);
        Ok((calls, ended))
    }

    fn disconnect(&self, addr: SocketAddr) {
        let c = self.connections.borrow_mut().remove(&addr);
        drop(c);
    }

    /// Makes one call: `request` writes it (an `Err`: too large to
    /// receive), `cut` drops the connection once it is out.
    async fn call<T>(&self, addr: SocketAddr, cut: bool, request: impl FnOnce(Return<T>) -> Result<Request, capnp::Error>) -> Result<T, CallFailure> {
        let (calls, ended) = self.connection(addr)?;
        let (ret, result) = oneshot::channel();
        match request(ret) {
            Ok(request) => {
                let _ = calls.send(Call { connection: ended.clone(), request });
            }
            Err(refused) => {
                // The receiver refuses the message, and the connection
                // that brought it: it ends by itself, as far as we know.
                ended.cancel();
                return Err(CallFailure::Transport(refused.to_string()));
            }
        }
        if cut {
            // Injected fault: the connection drops with the request out.
            tokio::task::yield_now().await;
            self.disconnect(addr);
        }
        tokio::select! {
            biased;
            _ = ended.cancelled() => Err(CallFailure::Transport(format!("the connection to {addr} ended"))),
            result = result => match result {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(exception)) => Err(CallFailure::Transport(exception)),
                Err(_) => Err(CallFailure::Transport(format!("the connection to {addr} ended"))),
            },
        }
    }

    async fn fetch_once(&self, addr: SocketAddr, req: &FetchRequest, cut: bool) -> Result<Fetched, CallFailure> {
        let request = |ret| {
            let req = proto::through_wire::<fetch_request::Owned, _>(|b| proto::write_request(req, b), proto::read_request)?;
            Ok(Request::Fetch(req.map_err(|e| e.to_string()), ret))
        };
        match self.call(addr, cut, request).await {
            Ok(Ok(fetched)) if fetched.frame.len() > self.limits.max_bytes => Err(too_large(fetched.frame.len(), &self.limits, req)),
            Ok(Ok(fetched)) => Ok(fetched),
            Ok(Err(status)) => Err(CallFailure::Status(status)),
            Err(CallFailure::Transport(e)) => {
                self.disconnect(addr);
                Err(CallFailure::Transport(e))
            }
            Err(other) => Err(other),
        }
    }

    async fn flag_once(&self, addr: SocketAddr, flag: MetaFlag) -> Result<(), CallFailure> {
        let request = |ret| {
            let flag = proto::through_wire::<meta_flag::Owned, _>(|b| proto::write_flag(&flag, b), proto::read_flag)?;
            Ok(Request::Flag(flag.map_err(|e| e.to_string()), ret))
        };
        let status = self.call(addr, false, request).await?;
        if status.kind == StatusKind::Ok {
            Ok(())
        } else {
            Err(CallFailure::Status(status))
        }
    }

    async fn replicate_once(&self, addr: SocketAddr, batch: &Replication) -> Result<(Status, u64), CallFailure> {
        let request = |ret| {
            let batch = proto::through_wire::<replication::Owned, _>(|b| proto::write_replication(batch, b), proto::read_replication)?;
            Ok(Request::Replicate(batch.map_err(|e| e.to_string()), ret))
        };
        self.call(addr, false, request).await
    }
}

impl Transport for MemoryPeers {
    fn fetch(&self, addr: SocketAddr, req: FetchRequest, attempt: u32) -> LocalBoxFuture<'_, Vec<Result<Fetched, CallFailure>>> {
        Box::pin(async move {
            let req = &req;
            self.faults.fetch(attempt, |cut| self.fetch_once(addr, req, cut)).await
        })
    }

    fn flag(&self, addr: SocketAddr, flag: MetaFlag) -> LocalBoxFuture<'_, Result<(), CallFailure>> {
        Box::pin(self.flag_once(addr, flag))
    }

    fn replicate<'a>(&'a self, addr: SocketAddr, batch: &'a Replication) -> LocalBoxFuture<'a, Result<(Status, u64), CallFailure>> {
        Box::pin(self.replicate_once(addr, batch))
    }

    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<'_, Result<(), CallFailure>> {
        Box::pin(async move { self.connection(addr).map(|_| ()) })
    }

    fn connected(&self, addr: SocketAddr) -> bool {
        self.live(addr).is_some()
    }

    fn refused(&self, addr: SocketAddr) -> LocalBoxFuture<'static, bool> {
        let network = self.network.clone();
        Box::pin(async move { !network.listening(addr) })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::conformance::{brief, frame, only, request, End};
    use super::super::{CallFailure, Inbound, Network};
    use super::MemoryNetwork;

    fn run(check: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        tokio::task::LocalSet::new().block_on(&rt, check);
    }

    #[test]
    fn addresses_are_unique_until_freed() {
        let network = MemoryNetwork::new();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let a = network.listen(any).unwrap();
        let b = network.listen(any).unwrap();
        assert_ne!(a.addr, b.addr);
        assert_eq!(network.listen(a.addr).err().map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
        let (addr, fixed) = (SocketAddr::from(([10, 0, 0, 1], 4000)), network.listen(SocketAddr::from(([10, 0, 0, 1], 4000))).unwrap());
        assert_eq!(fixed.addr, addr);
        let freed = a.addr;
        drop(a);
        assert!(!network.listening(freed) && network.listening(b.addr) && network.listening(addr));
        // Port 0 moves on: a freed port is not handed out again at once.
        let c = network.listen(any).unwrap();
        assert!(c.addr.port() > b.addr.port(), "{} after {}", c.addr, b.addr);
    }

    #[test]
    fn a_cut_ends_the_connections_but_not_the_listener() {
        run(async {
            let check = "a_cut_ends_the_connections_but_not_the_listener";
            let network = MemoryNetwork::new();
            let net = Network::Memory(network.clone());
            let mut a = End::plain(check, &net).await;
            let mut b = End::plain(check, &net).await;
            let (results, held) = tokio::join!(a.peers.fetch(b.addr, request(1), 1), async {
                let Inbound::Fetch(_, reply) = b.next().await else { panic!("not a fetch") };
                assert!(network.cut(b.addr));
                reply
            });
            drop(held);
            let failed = only(check, results);
            assert!(matches!(failed, Err(CallFailure::Transport(_))), "a fetch in flight across a cut gave {}", brief(&failed));
            assert!(matches!(a.next().await, Inbound::PeerGone(addr) if addr == b.addr));
            assert!(!a.peers.connected(b.addr) && !a.peers.refused(b.addr).await);
            let sent = frame(10);
            let (results, ()) = tokio::join!(a.peers.fetch(b.addr, request(2), 1), async {
                let Inbound::Fetch(_, reply) = b.next().await else { panic!("not a fetch") };
                reply.send(Ok(sent.clone())).unwrap();
            });
            assert!(matches!(only(check, results), Ok(f) if f.frame == sent));
            assert!(!network.cut(SocketAddr::from(([127, 0, 0, 9], 9))));
        });
    }

    #[test]
    fn a_dropped_client_ends_its_calls_on_the_server() {
        run(async {
            let check = "a_dropped_client_ends_its_calls_on_the_server";
            let net = Network::Memory(MemoryNetwork::new());
            let a = End::plain(check, &net).await;
            let mut b = End::plain(check, &net).await;
            let b_addr = b.addr;
            let fetch = tokio::task::spawn_local(async move {
                let _ = a.peers.fetch(b_addr, request(1), 1).await;
            });
            let Inbound::Fetch(_, mut reply) = b.next().await else { panic!("not a fetch") };
            fetch.abort();
            let _ = fetch.await;
            // The client (its whole end) is gone: so is the call it made.
            tokio::time::timeout(std::time::Duration::from_secs(10), reply.closed()).await.expect("the call outlived its client");
        });
    }
}
