//! The TCP transport's client side: one capnp-rpc connection per peer
//! node, made on first use (one attempt at a time, within
//! `CONNECT_TIMEOUT`), remade after it breaks; a connection that ends by
//! itself is reported as [`Inbound::PeerGone`]. A big reply comes in
//! chunks, a few requested at a time.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::future::LocalBoxFuture;
use futures::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::faults::Injector;
use super::proto::{self, FirstChunk};
use super::{CallFailure, FetchRequest, Fetched, Inbound, MetaFlag, Replication, Status, StatusKind, Transport, TransportFaults, CHUNK_BYTES};
use crate::message::Limits;
use crate::protocol::taskgraph_capnp::node;
use crate::spawn::Spawner;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Chunk requests of one transfer in flight at once.
const CHUNKS_IN_FLIGHT: usize = 4;

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
pub(super) struct Peers {
    spawner: Spawner,
    /// Where to report a connection that ended by itself (the peer may
    /// be gone).
    events: mpsc::UnboundedSender<Inbound>,
    connections: RefCell<HashMap<SocketAddr, Connection>>,
    /// One connection attempt at a time, so that concurrent fetches to a
    /// new peer share one connection instead of racing to make several.
    connecting: tokio::sync::Mutex<()>,
    limits: Limits,
    faults: Injector,
}

impl Peers {
    pub(super) fn new(limits: Limits, faults: TransportFaults, spawner: Spawner, events: mpsc::UnboundedSender<Inbound>) -> Self {
        Peers {
            spawner,
            events,
            connections: RefCell::new(HashMap::new()),
            connecting: tokio::sync::Mutex::new(()),
            limits,
            faults: Injector::new(faults),
        }
    }

    fn live_client(&self, addr: SocketAddr) -> Option<node::Client> {
        let connections = self.connections.borrow();
        let c = connections.get(&addr)?;
        (!c.ended.get()).then(|| c.client.clone())
    }

    async fn client(&self, addr: SocketAddr) -> Result<node::Client, CallFailure> {
        if let Some(client) = self.live_client(addr) {
            return Ok(client);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(client) = self.live_client(addr) {
            return Ok(client);
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| CallFailure::Transport(format!("connecting to {addr} timed out")))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => CallFailure::Refused(format!("{addr} refused the connection")),
                _ => CallFailure::Transport(format!("cannot connect to {addr}: {e}")),
            })?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.compat().split();
        let network = twoparty::VatNetwork::new(
            futures::io::BufReader::new(reader),
            futures::io::BufWriter::new(writer),
            Side::Client,
            proto::receive_options(),
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
                let _ = events.send(Inbound::PeerGone(addr));
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

    async fn fetch_once(&self, addr: SocketAddr, req: &FetchRequest, cut: bool) -> Result<Fetched, CallFailure> {
        let client = self.client(addr).await?;
        let mut call = client.fetch_request();
        proto::write_request(req, call.get().init_request());
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
                return Err(CallFailure::Transport(e.to_string()));
            }
        };
        let FirstChunk { mut frame, total, chunks, transfer, term } = match response.get().and_then(|r| r.get_response()).and_then(proto::read_response) {
            Ok(Ok(first)) => first,
            Ok(Err(status)) => return Err(CallFailure::Status(status)),
            Err(e) => return Err(CallFailure::Invalid(e.to_string())),
        };
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if total > self.limits.max_bytes {
            return Err(too_large(total, &self.limits, req));
        }
        if chunks as usize != total.div_ceil(CHUNK_BYTES).max(1) || frame.len() != total.min(CHUNK_BYTES) {
            return Err(CallFailure::Invalid(format!("inconsistent sizes: {total} bytes in {chunks} chunks, first {}", frame.len())));
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
                CallFailure::Transport(e.to_string())
            })?;
            let data = response.get().and_then(|r| r.get_data()).map_err(|e| CallFailure::Invalid(e.to_string()))?;
            frame.extend_from_slice(data);
        }
        if frame.len() != total {
            return Err(CallFailure::Invalid(format!("got {} bytes of {total}", frame.len())));
        }
        Ok(Fetched { frame: Arc::new(frame), term })
    }

    async fn replicate_once(&self, addr: SocketAddr, batch: &Replication) -> Result<(Status, u64), CallFailure> {
        let client = self.client(addr).await?;
        let mut call = client.replicate_request();
        proto::write_replication(batch, call.get().init_batch());
        let response = call.send().promise.await.map_err(|e| CallFailure::Transport(e.to_string()))?;
        let r = response.get().map_err(|e| CallFailure::Invalid(e.to_string()))?;
        let status = r.get_status().and_then(proto::read_status).map_err(|e| CallFailure::Invalid(e.to_string()))?;
        Ok((status, r.get_applied()))
    }

    async fn flag_once(&self, addr: SocketAddr, flag: MetaFlag) -> Result<(), CallFailure> {
        let client = self.client(addr).await?;
        let mut call = client.flag_request();
        proto::write_flag(&flag, call.get().init_flag());
        let response = call.send().promise.await.map_err(|e| CallFailure::Transport(e.to_string()))?;
        let status = response
            .get()
            .and_then(|r| r.get_status())
            .and_then(proto::read_status)
            .map_err(|e| CallFailure::Invalid(e.to_string()))?;
        if status.kind == StatusKind::Ok {
            Ok(())
        } else {
            Err(CallFailure::Status(status))
        }
    }
}

/// How a client refuses a reply larger than its limits allow (any
/// transport).
pub(super) fn too_large(total: usize, limits: &Limits, req: &FetchRequest) -> CallFailure {
    CallFailure::Status(Status::new(
        StatusKind::TooLarge,
        format!("a {total}-byte message exceeds the limit of {} bytes (raise Job::limits)", limits.max_bytes),
        req.epoch,
        0,
    ))
}

impl Transport for Peers {
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
        Box::pin(async move { self.client(addr).await.map(|_| ()) })
    }

    fn connected(&self, addr: SocketAddr) -> bool {
        self.live_client(addr).is_some()
    }

    fn refused(&self, addr: SocketAddr) -> LocalBoxFuture<'static, bool> {
        Box::pin(async move {
            matches!(
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        })
    }
}
