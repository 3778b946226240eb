//! The conformance suite every transport implementation must pass, run
//! by the unit tests against TCP (real sockets on 127.0.0.1) and against
//! the in-memory network alike (see the bottom of this file).
//!
//! Each check sets up nodes' ends of the transport the way a node does
//! ([`Network::listen`], [`Network::transport`], [`Listener::serve`]),
//! plays the serving node by hand on the inbound channel, and panics with
//! a message naming the check on the first violation. Waits for something
//! that must happen are bounded by generous timeouts that fail the check;
//! "nothing happens" is checked over a short while.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{CallFailure, FetchRequest, Fetched, Inbound, MetaFlag, Network, ReplicaEntry, Replication, Shared, Status, StatusKind};
use super::{Transport, TransportFaults, CHUNK_BYTES, REPLICA_BATCH_BYTES};
use crate::message::Limits;
use crate::spawn::Spawner;

/// How long a check waits for what must come.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a check watches for what must not come.
const QUIET: Duration = Duration::from_millis(300);

/// One node's end of the transport under test.
pub(super) struct End {
    check: &'static str,
    pub(super) addr: SocketAddr,
    pub(super) peers: Rc<dyn Transport>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    pub(super) shared: Rc<Shared>,
    /// Dropping it stops the end, as a node's end stops with the node.
    running: Option<tokio_util::sync::DropGuard>,
}

impl End {
    pub(super) async fn new(check: &'static str, network: &Network, limits: Limits, faults: TransportFaults) -> End {
        let listener = network.listen(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap_or_else(|e| panic!("{check}: cannot listen: {e}"));
        let addr = listener.addr();
        let spawner = Spawner::new();
        let running = Some(spawner.guard());
        let (tx, inbound) = mpsc::unbounded_channel();
        let shared = Rc::new(Shared::new(7, "job", addr));
        let peers = network.transport(limits, faults, spawner.clone(), tx.clone());
        spawner.spawn(listener.serve(tx, shared.clone(), spawner.clone()));
        End { check, addr, peers, inbound, shared, running }
    }

    pub(super) async fn plain(check: &'static str, network: &Network) -> End {
        End::new(check, network, Limits::default(), TransportFaults::default()).await
    }

    /// The next thing delivered to this end's node.
    pub(super) async fn next(&mut self) -> Inbound {
        match tokio::time::timeout(TIMEOUT, self.inbound.recv()).await {
            Ok(Some(inbound)) => inbound,
            Ok(None) => panic!("{}: the inbound channel closed", self.check),
            Err(_) => panic!("{}: nothing delivered within {TIMEOUT:?}", self.check),
        }
    }

    /// Whether anything is delivered within [`QUIET`].
    pub(super) async fn quiet(&mut self) -> Option<Inbound> {
        tokio::time::timeout(QUIET, self.inbound.recv()).await.ok().flatten()
    }

    /// Answers every fetch with `frame`, every flag and batch with `Ok`,
    /// until the end stops; counts the requests.
    pub(super) fn answer_all(self, frame: Arc<Vec<u8>>) -> Rc<std::cell::Cell<u32>> {
        let count = Rc::new(std::cell::Cell::new(0));
        let n = count.clone();
        let End { mut inbound, running, .. } = self;
        tokio::task::spawn_local(async move {
            let _running = running;
            while let Some(inbound) = inbound.recv().await {
                n.set(n.get() + 1);
                match inbound {
                    Inbound::Fetch(_, reply) => drop(reply.send(Ok(frame.clone()))),
                    Inbound::Flag(_, reply) => drop(reply.send(Status::ok(1, 1))),
                    Inbound::Replicate(batch, reply) => drop(reply.send((Status::ok(1, 1), batch.end))),
                    Inbound::PeerGone(_) => {}
                }
            }
        });
        count
    }

    pub(super) fn stop(&mut self) {
        self.running.take();
    }
}

pub(super) fn request(seq: u64) -> FetchRequest {
    FetchRequest { job: "job".into(), epoch: 3, from_task: 1, to_task: 2, edge: 5, seq, requester_term: 11, responder_term: 12 }
}

fn flag(meta: Vec<u8>) -> MetaFlag {
    MetaFlag { job: "job".into(), epoch: 3, from_task: 1, to_task: 2, link: 4, meta, term: 11 }
}

fn batch(entries: Vec<ReplicaEntry>) -> Replication {
    Replication { job: "job".into(), task: 2, term: 9, first: 5, end: 5 + entries.len() as u64, entries }
}

pub(super) fn frame(len: usize) -> Arc<Vec<u8>> {
    Arc::new((0..len).map(|i| (i % 251) as u8).collect())
}

/// A replication entry as the receiver can tell it: its kind and bytes.
fn content(e: &ReplicaEntry) -> (u8, Vec<u8>, u64, bool) {
    match e {
        ReplicaEntry::Start => (0, Vec::new(), 0, false),
        ReplicaEntry::Snapshot(d) => (1, d.to_vec(), 0, false),
        ReplicaEntry::Update(d) => (2, d.to_vec(), 0, false),
        ReplicaEntry::Served { epoch, edge, requester, frame, range, last } => {
            (3, frame[range.clone()].to_vec(), epoch * 1_000_000 + u64::from(*edge) * 1000 + requester, *last)
        }
    }
}

pub(super) fn only(check: &str, mut results: Vec<Result<Fetched, CallFailure>>) -> Result<Fetched, CallFailure> {
    assert_eq!(results.len(), 1, "{check}: one fetch without faults gave {} results", results.len());
    results.remove(0)
}

/// A fetch reaches the serving node as sent; its answer (a frame, with
/// the server's term, or an error status) comes back.
pub(super) async fn fetch_is_delivered(network: Network) {
    let check = "fetch_is_delivered";
    let a = End::plain(check, &network).await;
    let mut b = End::plain(check, &network).await;
    b.shared.set_role(2, 12);
    let sent = frame(1000);
    let (results, ()) = tokio::join!(a.peers.fetch(b.addr, request(1), 1), async {
        let Inbound::Fetch(got, reply) = b.next().await else { panic!("{check}: not a fetch") };
        assert_eq!(got, request(1), "{check}: the request arrived changed");
        reply.send(Ok(sent.clone())).unwrap();
    });
    let fetched = only(check, results).unwrap_or_else(|e| panic!("{check}: {e:?}"));
    assert_eq!((&fetched.frame, fetched.term), (&sent, 12), "{check}: the answer arrived changed");
    assert!(a.peers.connected(b.addr), "{check}: no connection after a fetch");
    assert!(!a.peers.refused(b.addr).await, "{check}: a listening peer counts as refused");

    let stale = Status::new(StatusKind::StaleEpoch, "epoch 3 is over", 4, 12);
    let (results, ()) = tokio::join!(a.peers.fetch(b.addr, request(2), 1), async {
        let Inbound::Fetch(_, reply) = b.next().await else { panic!("{check}: not a fetch") };
        reply.send(Err(stale.clone())).unwrap();
    });
    match only(check, results) {
        Err(CallFailure::Status(s)) => assert_eq!(s, stale, "{check}: the status arrived changed"),
        other => panic!("{check}: an error status came back as {}", brief(&other)),
    }
}

/// A flag reaches the serving node as sent; `Ok` or its error status
/// comes back.
pub(super) async fn flag_is_delivered(network: Network) {
    let check = "flag_is_delivered";
    let a = End::plain(check, &network).await;
    let mut b = End::plain(check, &network).await;
    let (result, ()) = tokio::join!(a.peers.flag(b.addr, flag(vec![1, 2, 3])), async {
        let Inbound::Flag(got, reply) = b.next().await else { panic!("{check}: not a flag") };
        assert_eq!(got, flag(vec![1, 2, 3]), "{check}: the flag arrived changed");
        reply.send(Status::ok(3, 1)).unwrap();
    });
    assert!(result.is_ok(), "{check}: a taken flag failed: {result:?}");
    let refused = Status::new(StatusKind::WrongJob, "another job", 3, 1);
    let (result, ()) = tokio::join!(a.peers.flag(b.addr, flag(Vec::new())), async {
        let Inbound::Flag(_, reply) = b.next().await else { panic!("{check}: not a flag") };
        reply.send(refused.clone()).unwrap();
    });
    assert!(matches!(&result, Err(CallFailure::Status(s)) if *s == refused), "{check}: a refused flag gave {result:?}");
}

/// A replication batch reaches the backup with every entry's content (a
/// served part as a frame of its own); its status and position come back.
pub(super) async fn replicate_is_delivered(network: Network) {
    let check = "replicate_is_delivered";
    let a = End::plain(check, &network).await;
    let mut b = End::plain(check, &network).await;
    let reply = frame(100);
    let sent = batch(vec![
        ReplicaEntry::Start,
        ReplicaEntry::Snapshot(frame(10)),
        ReplicaEntry::Update(frame(20)),
        ReplicaEntry::Served { epoch: 3, edge: 5, requester: 1, frame: reply.clone(), range: 40..90, last: true },
    ]);
    let (result, ()) = tokio::join!(a.peers.replicate(b.addr, &sent), async {
        let Inbound::Replicate(got, reply) = b.next().await else { panic!("{check}: not a batch") };
        assert_eq!((&got.job, got.task, got.term, got.first, got.end), (&sent.job, sent.task, sent.term, sent.first, sent.end), "{check}: the batch arrived changed");
        let (want, got): (Vec<_>, Vec<_>) = (sent.entries.iter().map(content).collect(), got.entries.iter().map(content).collect());
        assert!(want == got, "{check}: the entries arrived changed");
        reply.send((Status::ok(3, 9), 42)).unwrap();
    });
    match result {
        Ok((status, 42)) if status == Status::ok(3, 9) => {}
        other => panic!("{check}: the backup's answer came back as {other:?}"),
    }
}

/// A reply of several chunks (over 8 MiB) arrives whole, and so does a
/// batch of a full replication batch's bytes.
pub(super) async fn big_frames_arrive_whole(network: Network) {
    let check = "big_frames_arrive_whole";
    let a = End::plain(check, &network).await;
    let mut b = End::plain(check, &network).await;
    let big = frame(2 * CHUNK_BYTES + 12345);
    let (results, ()) = tokio::join!(a.peers.fetch(b.addr, request(1), 1), async {
        let Inbound::Fetch(_, reply) = b.next().await else { panic!("{check}: not a fetch") };
        reply.send(Ok(big.clone())).unwrap();
    });
    let fetched = only(check, results).unwrap_or_else(|e| panic!("{check}: a {}-byte reply failed: {e:?}", big.len()));
    assert!(fetched.frame == big, "{check}: a {}-byte reply arrived as {} other bytes", big.len(), fetched.frame.len());

    let part = frame(REPLICA_BATCH_BYTES);
    let sent = batch(vec![ReplicaEntry::Served { epoch: 3, edge: 5, requester: 1, frame: part.clone(), range: 0..part.len(), last: true }]);
    let (result, ()) = tokio::join!(a.peers.replicate(b.addr, &sent), async {
        let Inbound::Replicate(got, reply) = b.next().await else { panic!("{check}: not a batch") };
        assert!(content(&got.entries[0]) == content(&sent.entries[0]), "{check}: a full batch arrived changed");
        reply.send((Status::ok(3, 9), sent.end)).unwrap();
    });
    assert!(matches!(result, Ok((_, end)) if end == sent.end), "{check}: a full batch failed: {result:?}");
}

/// Frame sizes are enforced: a reply over the client's limit is refused
/// as `TooLarge` (not read); a request over the receiver's limit fails as
/// a transport error, is not delivered, and the receiver drops the
/// connection (`PeerGone`). Nothing panics, and the next calls work.
pub(super) async fn limits_are_enforced(network: Network) {
    let check = "limits_are_enforced";
    let mut a = End::new(check, &network, Limits::max_bytes(1 << 20), TransportFaults::default()).await;
    let b = End::plain(check, &network).await;
    let b_addr = b.addr;
    let served = b.answer_all(frame((1 << 20) + 1));
    match only(check, a.peers.fetch(b_addr, request(1), 1).await) {
        Err(CallFailure::Status(s)) if s.kind == StatusKind::TooLarge && s.detail.contains("limit") => {}
        other => panic!("{check}: a reply over the limit gave {}", brief(&other)),
    }
    assert!(a.quiet().await.is_none(), "{check}: a refused reply broke the connection");
    let huge = vec![7u8; CHUNK_BYTES + (1 << 20)];
    let before = served.get();
    let result = a.peers.flag(b_addr, flag(huge.clone())).await;
    assert!(
        matches!(&result, Err(CallFailure::Transport(e)) if e.contains("too large")),
        "{check}: a flag over the receive limit gave {result:?}"
    );
    assert!(matches!(a.next().await, Inbound::PeerGone(addr) if addr == b_addr), "{check}: no PeerGone after an oversized flag");
    let result = a.peers.replicate(b_addr, &batch(vec![ReplicaEntry::Update(Arc::new(huge))])).await;
    assert!(
        matches!(&result, Err(CallFailure::Transport(e)) if e.contains("too large")),
        "{check}: a batch over the receive limit gave {result:?}"
    );
    assert!(matches!(a.next().await, Inbound::PeerGone(addr) if addr == b_addr), "{check}: no PeerGone after an oversized batch");
    assert_eq!(served.get(), before, "{check}: a request over the receive limit was delivered");
    let result = a.peers.flag(b_addr, flag(vec![1])).await;
    assert!(result.is_ok(), "{check}: a flag after refused ones failed: {result:?}");
}

/// When the serving end stops, the calls in flight to it fail as
/// transport errors, the client hears `PeerGone` (once), and the peer is
/// then refused.
pub(super) async fn stopped_peer_is_gone(network: Network) {
    let check = "stopped_peer_is_gone";
    let mut a = End::plain(check, &network).await;
    let mut b = End::plain(check, &network).await;
    let (results, held) = tokio::join!(a.peers.fetch(b.addr, request(1), 1), async {
        let Inbound::Fetch(_, reply) = b.next().await else { panic!("{check}: not a fetch") };
        b.stop();
        reply
    });
    drop(held);
    match only(check, results) {
        Err(CallFailure::Transport(_)) => {}
        other => panic!("{check}: a fetch in flight to a stopped peer gave {}", brief(&other)),
    }
    match a.next().await {
        Inbound::PeerGone(addr) => assert_eq!(addr, b.addr, "{check}: PeerGone for another address"),
        other => panic!("{check}: {other:?} instead of PeerGone"),
    }
    assert!(!a.peers.connected(b.addr), "{check}: still connected to a stopped peer");
    assert!(a.peers.refused(b.addr).await, "{check}: a stopped peer is not refused");
    let result = a.peers.connect(b.addr).await;
    assert!(matches!(result, Err(CallFailure::Refused(_))), "{check}: connecting to a stopped peer gave {result:?}");
    assert!(a.quiet().await.is_none(), "{check}: more news after PeerGone");
}

/// Nothing listening: every call fails as `Refused`, and `refused` says so.
pub(super) async fn nothing_listening_is_refused(network: Network) {
    let check = "nothing_listening_is_refused";
    let a = End::plain(check, &network).await;
    let gone = network.listen(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("listen").addr();
    assert!(a.peers.refused(gone).await, "{check}: an address nobody listens at is not refused");
    let fetch = only(check, a.peers.fetch(gone, request(1), 1).await);
    assert!(matches!(fetch, Err(CallFailure::Refused(_))), "{check}: a fetch gave {}", brief(&fetch));
    let flagged = a.peers.flag(gone, flag(Vec::new())).await;
    assert!(matches!(flagged, Err(CallFailure::Refused(_))), "{check}: a flag gave {flagged:?}");
    let replicated = a.peers.replicate(gone, &batch(Vec::new())).await;
    assert!(matches!(replicated, Err(CallFailure::Refused(_))), "{check}: a batch gave {replicated:?}");
    assert!(!a.peers.connected(gone), "{check}: connected to nobody");
}

/// With duplicates injected, one fetch is sent twice: two deliveries,
/// two results.
pub(super) async fn duplicates_are_injected(network: Network) {
    let check = "duplicates_are_injected";
    let faults = TransportFaults { duplicate_every: 2, disconnect_every: 0 };
    let a = End::new(check, &network, Limits::default(), faults).await;
    let b = End::plain(check, &network).await;
    let b_addr = b.addr;
    let sent = frame(3000);
    let served = b.answer_all(sent.clone());
    let first = a.peers.fetch(b_addr, request(1), 1).await;
    assert_eq!(first.len(), 1, "{check}: fetch 1 of duplicate_every 2 gave {} results", first.len());
    let second = a.peers.fetch(b_addr, request(2), 1).await;
    assert_eq!(second.len(), 2, "{check}: fetch 2 of duplicate_every 2 gave {} results", second.len());
    for r in first.iter().chain(&second) {
        assert!(matches!(r, Ok(f) if f.frame == sent), "{check}: a duplicated fetch gave {}", brief(r));
    }
    assert_eq!(served.get(), 3, "{check}: the server saw {} fetches, not 3", served.get());
}

/// With cuts injected, a first attempt loses its connection under it:
/// a transport error (the server holds its answer until then), and no
/// `PeerGone` (this side cut it). A retry is not cut: it goes through on a
/// new connection.
pub(super) async fn cuts_are_injected(network: Network) {
    let check = "cuts_are_injected";
    let faults = TransportFaults { duplicate_every: 0, disconnect_every: 1 };
    let mut a = End::new(check, &network, Limits::default(), faults).await;
    let mut b = End::plain(check, &network).await;
    a.peers.connect(b.addr).await.unwrap_or_else(|e| panic!("{check}: cannot connect: {e:?}"));
    let (cut, held) = tokio::join!(a.peers.fetch(b.addr, request(1), 1), b.quiet());
    drop(held);
    let cut = only(check, cut);
    assert!(matches!(cut, Err(CallFailure::Transport(_))), "{check}: a cut fetch gave {}", brief(&cut));
    assert!(!a.peers.connected(b.addr), "{check}: still connected after a cut");
    let sent = frame(3000);
    let (retry, ()) = tokio::join!(a.peers.fetch(b.addr, request(1), 2), async {
        let Inbound::Fetch(_, reply) = b.next().await else { panic!("{check}: not a fetch") };
        reply.send(Ok(sent.clone())).unwrap();
    });
    let retry = only(check, retry);
    assert!(matches!(&retry, Ok(f) if f.frame == sent), "{check}: the retry gave {}", brief(&retry));
    if let Some(news) = a.quiet().await {
        panic!("{check}: a cut this side made was reported: {news:?}");
    }
}

/// A fetch's result, without its bytes.
pub(super) fn brief(r: &Result<Fetched, CallFailure>) -> String {
    match r {
        Ok(f) => format!("Ok({} bytes, term {})", f.frame.len(), f.term),
        Err(e) => format!("{e:?}"),
    }
}

// The suite, for each implementation (this whole file is `cfg(test)`).
mod tests {
    use std::future::Future;

    use super::super::memory::MemoryNetwork;
    use super::Network;

    fn run<F: Future<Output = ()>>(network: Network, check: impl FnOnce(Network) -> F) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        tokio::task::LocalSet::new().block_on(&rt, check(network));
    }

    macro_rules! suite {
        ($($check:ident),* $(,)?) => {
            mod tcp {
                $(#[test] fn $check() { super::run(super::Network::Tcp, super::super::$check) })*
            }
            mod memory {
                $(#[test] fn $check() { super::run(super::Network::Memory(super::MemoryNetwork::new()), super::super::$check) })*
            }
        };
    }

    suite!(
        fetch_is_delivered,
        flag_is_delivered,
        replicate_is_delivered,
        big_frames_arrive_whole,
        limits_are_enforced,
        stopped_peer_is_gone,
        nothing_listening_is_refused,
        duplicates_are_injected,
        cuts_are_injected,
    );
}
