//! A rogue client on a node's port: garbage, truncated and oversized
//! frames, wrong jobs, unknown tasks and edges, stale epochs and terms,
//! replication streams from pretended primaries.
//! Every request gets a typed error, and the node keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::AsyncReadExt;
use taskgraph::coord::{Coordinator, Embedded, Event, Expect};
use taskgraph::keys::{Holder, Keys};
use taskgraph::prelude::*;
use taskgraph::protocol::taskgraph_capnp::{node, StatusKind};
use tokio::io::AsyncWriteExt;
use tokio_util::compat::TokioAsyncReadCompatExt;

use taskgraph_tests::jobs;

const JOB: &str = "rogue";

/// Waits (through a watch, bounded) until tasks 0 and 1 have primaries and
/// the job is at epoch 1; returns task 1's node address and term, and task
/// 0's term.
async fn wait_for_task_1(coord: &Embedded) -> (SocketAddr, u64, u64) {
    let keys = Keys::new(JOB);
    let (_, rev) = coord.get_prefix(keys.root()).await.unwrap();
    let mut watch = coord.watch(keys.root(), rev + 1).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut primary = None;
    let mut epoch_one = false;
    let mut term_0 = None;
    loop {
        if let Some(kv) = coord.get(&keys.primary(0)).await.unwrap() {
            term_0 = Some(kv.create_revision as u64);
        }
        // Check the current state first: the events may all be past.
        if let Some(kv) = coord.get(&keys.primary(1)).await.unwrap() {
            let addr = Holder::parse(&kv.value).expect("a holder").addr;
            primary = Some((addr, kv.create_revision as u64));
        }
        if let Some(kv) = coord.get(&keys.epoch()).await.unwrap() {
            epoch_one = kv.value == b"1";
        }
        if let (Some((addr, term)), Some(t0), true) = (primary, term_0, epoch_one) {
            return (addr, term, t0);
        }
        let event = tokio::time::timeout_at(deadline, watch.next()).await.expect("the job did not start in time");
        assert!(matches!(event, Some(Ok(Event::Put(_) | Event::Delete { .. }))), "{event:?}");
    }
}

async fn connect(addr: SocketAddr) -> node::Client {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, w) = stream.compat().split();
    let network = twoparty::VatNetwork::new(
        futures::io::BufReader::new(r),
        futures::io::BufWriter::new(w),
        Side::Client,
        Default::default(),
    );
    let mut rpc = RpcSystem::new(Box::new(network), None);
    let client: node::Client = rpc.bootstrap(Side::Server);
    tokio::task::spawn_local(rpc);
    client
}

struct Fetch {
    job: &'static str,
    epoch: u64,
    from: u64,
    to: u64,
    edge: u32,
    requester_term: u64,
    responder_term: u64,
}

thread_local! {
    /// Task 0's term: a real requester sends its own.
    static TERM_0: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Default for Fetch {
    fn default() -> Self {
        Fetch { job: JOB, epoch: 1, from: 0, to: 1, edge: jobs::NUM.id, requester_term: TERM_0.get(), responder_term: 0 }
    }
}

/// Sends a fetch; its status kind, the status epoch, and the payload.
async fn fetch(client: &node::Client, f: Fetch) -> (StatusKind, u64, Vec<u8>) {
    let mut call = client.fetch_request();
    {
        let mut r = call.get().init_request();
        r.set_job(f.job);
        r.set_epoch(f.epoch);
        r.set_from_task(f.from);
        r.set_to_task(f.to);
        r.set_edge(f.edge);
        r.set_seq(1);
        r.set_requester_term(f.requester_term);
        r.set_responder_term(f.responder_term);
    }
    let response = call.send().promise.await.expect("the node answers");
    let r = response.get().unwrap().get_response().unwrap();
    let status = r.get_status().unwrap();
    (status.get_kind().unwrap(), status.get_epoch(), r.get_payload().unwrap().to_vec())
}

async fn raw(addr: SocketAddr, bytes: &[u8]) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The node may close on us mid-write: that is a fine answer too.
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
}

#[test]
fn a_rogue_client_gets_errors_and_the_node_keeps_serving() {
    let coord = Embedded::new();
    let cluster_coord: Arc<dyn Coordinator> = Arc::new(coord.clone());
    let cluster = std::thread::spawn(move || {
        LocalCluster::new(jobs::idle_job(JOB, 4)).coordinator(cluster_coord).timeout(Duration::from_secs(60)).run()
    });

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let (addr, term, term_0) = wait_for_task_1(&coord).await;
        TERM_0.set(term_0);

        // Garbage, bogus segment tables, an oversized frame, a cut-off
        // message, and a pile of connections that just close.
        raw(addr, &[0xAB; 4096]).await;
        raw(addr, &[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]).await; // 2^31 segments
        let mut huge = 0u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&(200u32 << 20).to_le_bytes()); // one segment of 1.6 GB
        huge.extend_from_slice(&[0; 64]);
        raw(addr, &huge).await;
        let mut cut = 0u32.to_le_bytes().to_vec();
        cut.extend_from_slice(&100u32.to_le_bytes());
        cut.extend_from_slice(&[1; 40]);
        raw(addr, &cut).await;
        for _ in 0..50 {
            drop(tokio::net::TcpStream::connect(addr).await.unwrap());
        }

        let client = connect(addr).await;
        let kind = |f: Fetch| {
            let client = client.clone();
            async move { fetch(&client, f).await.0 }
        };
        assert_eq!(kind(Fetch { job: "another", ..Fetch::default() }).await, StatusKind::WrongJob);
        assert_eq!(kind(Fetch { to: 99, ..Fetch::default() }).await, StatusKind::UnknownTask);
        assert_eq!(kind(Fetch { from: 99, ..Fetch::default() }).await, StatusKind::UnknownTask);
        assert_eq!(kind(Fetch { edge: 77, ..Fetch::default() }).await, StatusKind::UnknownEdge);
        assert_eq!(kind(Fetch { to: 0, ..Fetch::default() }).await, StatusKind::NotPrimary);
        // A claim of a newer term for task 1 is refused (and the node, which
        // the coordinator says still holds task 1, stays).
        assert_eq!(kind(Fetch { responder_term: term + 1_000, ..Fetch::default() }).await, StatusKind::StaleTerm);
        // A requester whose term has ended (a replaced primary) is fenced.
        assert_eq!(kind(Fetch { requester_term: term_0 - 1, ..Fetch::default() }).await, StatusKind::StaleTerm);
        // A task that is no neighbour of task 1 (on this ring, task 3) gets
        // nothing of it, whatever it names.
        assert_eq!(kind(Fetch { from: 3, ..Fetch::default() }).await, StatusKind::BadRequest);
        assert_eq!(kind(Fetch { from: 3, epoch: 2, ..Fetch::default() }).await, StatusKind::BadRequest);
        // Requests far ahead are refused at once (the requester may retry),
        // not held until an epoch that never comes.
        for epoch in [100, 1 << 63, u64::MAX] {
            assert_eq!(kind(Fetch { epoch, ..Fetch::default() }).await, StatusKind::Internal, "epoch {epoch}");
        }
        // Refusals name no live term, and repeat little of what they got.
        let mut call = client.fetch_request();
        {
            let mut r = call.get().init_request();
            r.set_job(&"x".repeat(4 << 20));
            r.set_to_task(1);
        }
        let response = call.send().promise.await.expect("the node answers");
        let status = response.get().unwrap().get_response().unwrap().get_status().unwrap();
        assert_eq!(status.get_kind().unwrap(), StatusKind::WrongJob);
        assert!(status.get_detail().unwrap().len() < 200, "{} bytes of detail", status.get_detail().unwrap().len());
        let mut call = client.fetch_request();
        {
            let mut r = call.get().init_request();
            r.set_job(JOB);
            r.set_epoch(1);
            r.set_to_task(1);
            r.set_edge(jobs::NUM.id);
            r.set_requester_term(1);
            r.set_responder_term(term + 1);
        }
        let response = call.send().promise.await.expect("the node answers");
        let status = response.get().unwrap().get_response().unwrap().get_status().unwrap();
        assert_eq!(status.get_kind().unwrap(), StatusKind::StaleTerm);
        assert_eq!(status.get_term(), 0, "a refusal names no term");
        let detail = status.get_detail().unwrap().to_string().unwrap();
        assert!(!detail.contains(&term.to_string()), "the live term leaks: {detail}");
        let (stale, epoch, payload) = fetch(&client, Fetch { epoch: 0, ..Fetch::default() }).await;
        assert_eq!((stale, epoch), (StatusKind::StaleEpoch, 1), "a stale epoch is refused, and the current one named");
        assert!(payload.is_empty(), "nothing is served for a stale epoch");

        // A chunk of a transfer that does not exist: an RPC error.
        let mut call = client.chunk_request();
        call.get().set_transfer(12345);
        call.get().set_index(1);
        assert!(call.send().promise.await.is_err());

        // Flags for another node's task, for an epoch that is over, from a
        // task that is no neighbour over the link, and far ahead.
        for (from, to, epoch, expected) in [
            (0, 0, 1, StatusKind::BadRequest),
            (0, 1, 0, StatusKind::StaleEpoch),
            (3, 1, 1, StatusKind::BadRequest),
            (0, 1, 1 << 62, StatusKind::Internal),
        ] {
            let mut call = client.flag_request();
            {
                let mut f = call.get().init_flag();
                f.set_job(JOB);
                f.set_epoch(epoch);
                f.set_from_task(from);
                f.set_to_task(to);
                // Task 0 is task 1's predecessor: `prev` (link 1) from 1's side.
                f.set_link(1);
            }
            let response = call.send().promise.await.unwrap();
            assert_eq!(response.get().unwrap().get_status().unwrap().get_kind().unwrap(), expected);
        }

        // Replication streams to a node that is no backup (task 1's
        // primary), from a pretended primary of task 1 with an older term,
        // of another job, and with entries that are not what they say.
        for (job, task, term, expected) in [
            (JOB, 1, term - 1, StatusKind::StaleTerm),
            (JOB, 3, 99, StatusKind::NotPrimary),
            ("other", 1, term, StatusKind::WrongJob),
        ] {
            let mut call = client.replicate_request();
            {
                let mut b = call.get().init_batch();
                b.set_job(job);
                b.set_task(task);
                b.set_term(term);
                b.set_first(1);
                let mut entries = b.init_entries(2);
                entries.reborrow().get(0).set_start(());
                entries.reborrow().get(1).set_update(b"garbage");
            }
            let response = call.send().promise.await.unwrap();
            let r = response.get().unwrap();
            assert_eq!(r.get_status().unwrap().get_kind().unwrap(), expected, "{job} task {task} term {term}");
            assert_eq!(r.get_applied(), 0);
        }

        // After all that, the node still answers, right.
        let info = client.ping_request().send().promise.await.unwrap();
        let info = info.get().unwrap().get_info().unwrap();
        assert_eq!((info.get_task(), info.get_epoch()), (1, 1));
        let (ok, _, payload) = fetch(&client, Fetch::default()).await;
        assert_eq!(ok, StatusKind::Ok);
        assert_eq!(jobs::Num::decode(&payload).unwrap(), jobs::Num { task: 1, epoch: 1 });
        // And a fresh connection works too.
        let (ok, _, _) = fetch(&connect(addr).await, Fetch::default()).await;
        assert_eq!(ok, StatusKind::Ok);

        // Ends the job as a task's `end_job` would: from running, by compare-and-swap.
        let (running, done) = (Expect::Value(JobStatus::Running.encode()), JobStatus::Done.encode());
        coord.compare_and_swap(&Keys::new(JOB).status(), running, &done, None).await.unwrap().unwrap();
    });
    let result = cluster.join().unwrap().unwrap();
    assert_eq!(result.status, JobStatus::Done);
    assert_eq!(result.kills, 0);
}
