//! The TCP transport's server side: accepts connections and serves the
//! `Node` interface of `schemas/taskgraph.capnp` on each, turning calls
//! into [`Inbound`] requests for the node and its answers into responses
//! (a big reply's first chunk, then the rest as the client asks for it).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use capnp::capability::Promise;
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::future::LocalBoxFuture;
use futures::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::proto;
use super::{Inbound, Listener, Shared, Status, StatusKind, CHUNK_BYTES};
use crate::protocol::taskgraph_capnp::node;
use crate::spawn::Spawner;

/// A bound TCP listener.
pub(super) struct TcpListener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl TcpListener {
    pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(TcpListener { listener, addr })
    }
}

impl Listener for TcpListener {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(self: Box<Self>, inbound: mpsc::UnboundedSender<Inbound>, shared: Rc<Shared>, spawner: Spawner) -> LocalBoxFuture<'static, ()> {
        Box::pin(serve(self.listener, inbound, shared, spawner))
    }
}

/// Accepts connections and serves the `Node` interface on each.
async fn serve(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Inbound>, shared: Rc<Shared>, spawner: Spawner) {
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
            proto::receive_options(),
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
    tx: mpsc::UnboundedSender<Inbound>,
    shared: Rc<Shared>,
}

impl node::Server for NodeServer {
    fn fetch(self: capnp::capability::Rc<Self>, params: node::FetchParams, mut results: node::FetchResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let this = self.clone();
        async move {
            let request = params.get().and_then(|p| p.get_request()).and_then(proto::read_request);
            let answer = match request {
                Err(e) => Err(Status::new(StatusKind::BadRequest, format!("malformed fetch: {e}"), this.shared.epoch.get(), this.shared.term.get())),
                Ok(req) => {
                    let (otx, orx) = oneshot::channel();
                    if this.tx.send(Inbound::Fetch(req, otx)).is_err() {
                        return Err(capnp::Error::disconnected("the node is stopping".into()));
                    }
                    match orx.await {
                        Ok(answer) => answer,
                        Err(_) => return Err(capnp::Error::disconnected("the node stopped".into())),
                    }
                }
            };
            let ok = Status::ok(this.shared.epoch.get(), this.shared.term.get());
            proto::write_response(&answer, ok, |frame| this.shared.add_transfer(frame.clone()), results.get().init_response());
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
            let status = match params.get().and_then(|p| p.get_flag()).and_then(proto::read_flag) {
                Err(e) => Status::new(StatusKind::BadRequest, format!("malformed flag: {e}"), this.shared.epoch.get(), this.shared.term.get()),
                Ok(flag) => {
                    let (otx, orx) = oneshot::channel();
                    if this.tx.send(Inbound::Flag(flag, otx)).is_err() {
                        return Err(capnp::Error::disconnected("the node is stopping".into()));
                    }
                    orx.await.map_err(|_| capnp::Error::disconnected("the node stopped".into()))?
                }
            };
            proto::write_status(&status, results.get().init_status());
            Ok(())
        }
    }

    fn replicate(self: capnp::capability::Rc<Self>, params: node::ReplicateParams, mut results: node::ReplicateResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let this = self.clone();
        async move {
            let (status, applied) = match params.get().and_then(|p| p.get_batch()).and_then(proto::read_replication) {
                Err(e) => (Status::new(StatusKind::BadRequest, format!("malformed replication: {e}"), this.shared.epoch.get(), 0), 0),
                Ok(batch) => {
                    let (otx, orx) = oneshot::channel();
                    if this.tx.send(Inbound::Replicate(batch, otx)).is_err() {
                        return Err(capnp::Error::disconnected("the node is stopping".into()));
                    }
                    orx.await.map_err(|_| capnp::Error::disconnected("the node stopped".into()))?
                }
            };
            let mut r = results.get();
            proto::write_status(&status, r.reborrow().init_status());
            r.set_applied(applied);
            Ok(())
        }
    }

    fn ping(self: capnp::capability::Rc<Self>, _: node::PingParams, mut results: node::PingResults) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        proto::write_info(&self.shared, results.get().init_info());
        Promise::ok(())
    }
}
