//! The etcd coordinator (`taskgraph::coord::Etcd`) against a real etcd
//! started by [`EtcdServer`]: the shared conformance suite, then what only
//! a real etcd can show (restarts, compaction, lease expiry of a dead
//! holder, an unreachable etcd).
//!
//! Needs `etcd` on PATH (scripts/install-deps); every test starts its own
//! etcd on free loopback ports and kills it at the end, also on failure.

use std::future::Future;
use std::time::{Duration, Instant};

use taskgraph::coord::{conformance, CoordError, Coordinator, Etcd, EtcdOptions, Event, Revision, Watch};
use taskgraph_tests::etcd::EtcdServer;

/// The shortest lease etcd grants with the test flags (see EtcdServer).
const TTL: Duration = Duration::from_secs(1);

/// Fails a test that hangs instead of letting it block the run.
async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// The watch's next event, within 10 s.
async fn next_event(w: &mut Watch) -> Event {
    match within(Duration::from_secs(10), "the next watch event", w.next()).await {
        Some(Ok(event)) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// Retries `get` until etcd answers again (after a restart the client's
/// first requests may fail while it reconnects). Reads only, so retrying
/// writes nothing twice.
async fn wait_until_answering(etcd: &Etcd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match etcd.get("/probe").await {
            Ok(_) => return,
            Err(CoordError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("etcd not answering yet: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("etcd does not answer again: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes() {
    let server = EtcdServer::start();
    let etcd = server.connect().await;
    let started = Instant::now();
    within(Duration::from_secs(40), "the conformance suite", conformance::run_all(&etcd, TTL)).await;
    eprintln!("conformance suite against etcd: {:?}", started.elapsed());
}

/// A watch whose stream breaks because etcd is killed (SIGKILL) and
/// restarted re-registers from where it was: it sees every change once,
/// in order, both those before the restart and those after, which are
/// written before it has re-registered (etcd stays down for 0.3 s, so the
/// watch is in its retry backoff then). A watch "from now" that saw
/// nothing before the restart resumes from the revision it was created at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_restart() {
    let mut server = EtcdServer::start();
    let etcd = server.connect().await;
    let prefix = "/restart/";
    let (_, start) = etcd.get_prefix(prefix).await.unwrap();
    let mut from_start = etcd.watch(prefix, start + 1).await.unwrap();
    let mut from_now = etcd.watch(prefix, 0).await.unwrap();
    let quiet_prefix = "/restart-quiet/";
    let mut quiet = etcd.watch(quiet_prefix, 0).await.unwrap();

    let mut written: Vec<(String, Vec<u8>, Revision)> = Vec::new();
    for i in 0..5 {
        let (key, value) = (format!("{prefix}k{}", i % 3), format!("before {i}").into_bytes());
        let r = etcd.put(&key, &value, None).await.unwrap();
        written.push((key, value, r));
    }
    // Read only some before the restart; the rest are delivered later.
    let mut seen = vec![next_event(&mut from_start).await, next_event(&mut from_start).await];

    let old_pid = server.pid();
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    assert_ne!(server.pid(), old_pid, "etcd was not restarted");
    wait_until_answering(&etcd).await;
    for i in 0..5 {
        let (key, value) = (format!("{prefix}k{}", i % 3), format!("after {i}").into_bytes());
        let r = etcd.put(&key, &value, None).await.unwrap();
        written.push((key, value, r));
    }
    let deleted_at = {
        assert!(etcd.delete(&format!("{prefix}k0")).await.unwrap());
        let (_, r) = etcd.get_prefix(prefix).await.unwrap();
        r
    };
    let quiet_at = etcd.put(&format!("{quiet_prefix}k"), b"q", None).await.unwrap();
    // Informative (timing decides it): whether the writes above happened
    // before the watches re-registered, so that they were replayed.
    let registered = server.metric("etcd_debugging_mvcc_watcher_total");
    eprintln!("watchers registered in the restarted etcd right after the writes: {registered:?} (of 3)");

    while seen.len() < written.len() + 1 {
        seen.push(next_event(&mut from_start).await);
    }
    let mut seen_now = Vec::new();
    while seen_now.len() < written.len() + 1 {
        seen_now.push(next_event(&mut from_now).await);
    }
    for (name, seen) in [("from start", &seen), ("from now", &seen_now)] {
        for (i, (key, value, r)) in written.iter().enumerate() {
            match &seen[i] {
                Event::Put(kv) => assert_eq!(
                    (&kv.key, &kv.value, kv.mod_revision),
                    (key, value, *r),
                    "{name}: event {i} (all: {seen:?})"
                ),
                other => panic!("{name}: event {i} is {other:?}, expected a put of {key} (all: {seen:?})"),
            }
        }
        assert_eq!(
            seen[written.len()],
            Event::Delete {
                key: format!("{prefix}k0"),
                revision: deleted_at
            },
            "{name}: the last event"
        );
    }

    assert_eq!(next_event(&mut quiet).await.revision(), quiet_at, "the quiet watch's first event");

    // Nothing more (no repeats): a marker is the next event on each.
    let r = etcd.put(&format!("{prefix}marker"), b"m", None).await.unwrap();
    let quiet_r = etcd.put(&format!("{quiet_prefix}marker"), b"m", None).await.unwrap();
    for w in [&mut from_start, &mut from_now] {
        assert_eq!(next_event(w).await.revision(), r, "an event arrived before the marker");
    }
    assert_eq!(next_event(&mut quiet).await.revision(), quiet_r, "an event arrived before the quiet marker");
}

/// A watch from a compacted revision delivers `Compacted { requested,
/// oldest }` and ends; re-reading and watching from the revision read works;
/// watching from exactly the oldest kept revision replays from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_ends_watch_then_reread_and_rewatch_work() {
    let server = EtcdServer::start();
    let etcd = server.connect().await;
    let prefix = "/compaction/";
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(etcd.put(&format!("{prefix}k"), format!("v{i}").as_bytes(), None).await.unwrap());
    }
    let oldest = revisions[3];
    etcd.compact(oldest).await.unwrap();

    let mut stale = etcd.watch(prefix, revisions[1]).await.unwrap();
    match within(Duration::from_secs(10), "the compacted watch", stale.next()).await {
        Some(Err(CoordError::Compacted { requested, oldest: o })) => {
            assert_eq!((requested, o), (revisions[1], oldest), "the Compacted error");
        }
        other => panic!("a watch from a compacted revision gave {other:?}, expected Compacted"),
    }
    assert!(
        within(Duration::from_secs(10), "the end of the compacted watch", stale.next()).await.is_none(),
        "the watch went on after Compacted"
    );

    // The recovery the contract prescribes: re-read, watch from there.
    let (kvs, at) = etcd.get_prefix(prefix).await.unwrap();
    assert_eq!(kvs.len(), 1);
    assert_eq!((kvs[0].value.as_slice(), kvs[0].mod_revision), (&b"v4"[..], revisions[4]));
    let mut fresh = etcd.watch(prefix, at + 1).await.unwrap();
    let r = etcd.put(&format!("{prefix}k"), b"v5", None).await.unwrap();
    assert_eq!(next_event(&mut fresh).await.revision(), r, "the re-watch's first event");

    // The oldest kept revision is still there.
    let mut from_oldest = etcd.watch(prefix, oldest).await.unwrap();
    for expected in [revisions[3], revisions[4], r] {
        assert_eq!(next_event(&mut from_oldest).await.revision(), expected, "replay from the oldest kept revision");
    }

    // compact() mirrors Embedded::compact.
    etcd.compact(oldest).await.expect("compacting at the oldest kept revision again does nothing");
    match etcd.compact(revisions[2]).await {
        Err(CoordError::Compacted { requested, oldest: o }) => assert_eq!((requested, o), (revisions[2], oldest)),
        other => panic!("compacting below the last compaction gave {other:?}"),
    }
    match etcd.compact(r + 100).await {
        Err(CoordError::Invalid(_)) => {}
        other => panic!("compacting in the future gave {other:?}"),
    }
}

/// `Coordinator::compact` against a real etcd: the old revisions are gone
/// (a read at one, with etcd's own client, and a watch from one both fail
/// as compacted), the compaction revision and later are kept, and
/// compacting again, or below, is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_through_the_trait_drops_old_revisions() {
    let server = EtcdServer::start();
    let etcd = server.connect().await;
    let coord: &dyn Coordinator = &etcd;
    let key = "/trait-compaction/epoch";
    let mut revisions = Vec::new();
    for e in 0..10 {
        revisions.push(coord.put(key, format!("{e}").as_bytes(), None).await.unwrap());
    }
    let cut = revisions[5];
    within(Duration::from_secs(10), "compact", coord.compact(cut)).await.unwrap();

    let mut raw = etcd_client::Client::connect([server.endpoint()], None).await.unwrap();
    let at = |r: Revision| Some(etcd_client::GetOptions::new().with_revision(r));
    match raw.get(key, at(revisions[2])).await {
        Err(e) => assert!(e.to_string().contains("compacted"), "a read at a compacted revision failed otherwise: {e}"),
        Ok(got) => panic!("a read at the compacted revision {} still answers {:?}", revisions[2], got.kvs()),
    }
    let got = raw.get(key, at(cut)).await.expect("a read at the compaction revision");
    assert_eq!(got.kvs()[0].value(), b"5", "the value at the compaction revision");

    let mut stale = coord.watch("/trait-compaction/", revisions[4]).await.unwrap();
    match within(Duration::from_secs(10), "the compacted watch", stale.next()).await {
        Some(Err(CoordError::Compacted { requested, oldest })) => assert_eq!((requested, oldest), (revisions[4], cut)),
        other => panic!("a watch from a compacted revision gave {other:?}"),
    }
    let mut kept = coord.watch("/trait-compaction/", cut).await.unwrap();
    for r in &revisions[5..] {
        assert_eq!(next_event(&mut kept).await.revision(), *r, "replay from the compaction revision");
    }

    // Again, and below: nothing to do, no error (the inherent
    // `Etcd::compact` refuses the latter).
    coord.compact(cut).await.expect("compacting to the same revision again");
    coord.compact(revisions[1]).await.expect("compacting below the last compaction");
    assert!(matches!(etcd.compact(revisions[1]).await, Err(CoordError::Compacted { .. })));
    assert!(matches!(coord.compact(revisions[9] + 1000).await, Err(CoordError::Invalid(_))));
}

/// etcd's database over many epoch-like writes (the epoch key
/// compare-and-swapped, as the root's node does), without compaction and
/// with a `Compactor` (simulated clock: one epoch a millisecond, a period of
/// 500 epochs). Without, the space in use grows with every epoch's history;
/// with, it stays at about a period's worth. Also printed (not checked):
/// the same with one record per epoch in the same transaction, as W1
/// writes. Records are live keys, which compaction keeps; and bbolt does
/// not give back pages that the dropped history only thinned out, so there
/// the database grows about as fast with compaction as without (only
/// `etcdctl defrag` repacks it). `TASKGRAPH_COMPACTION_EPOCHS` sets the
/// number of epochs (default 4000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_the_database_growth() {
    let epochs: u64 = std::env::var("TASKGRAPH_COMPACTION_EPOCHS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000).max(1500);
    let mut grown = Vec::new();
    for (records, compacting) in [(false, false), (false, true), (true, false), (true, true)] {
        grown.push(database_growth(epochs, records, compacting).await);
    }
    assert!(grown[1] < grown[0] * 0.5, "compaction did not bound the growth of the epoch key's history: {grown:?} B");
}

/// How much etcd's database in use grew over `epochs` epoch-like writes.
async fn database_growth(epochs: u64, records: bool, compacting: bool) -> f64 {
    let server = EtcdServer::start();
    let etcd = server.connect().await;
    let in_use = || server.metric("etcd_mvcc_db_total_size_in_use_in_bytes").expect("etcd's db size metric");
    let before = in_use();
    let mut compactor = taskgraph::coord::Compactor::new(Duration::from_millis(500));
    let t0 = Instant::now();
    let layout = taskgraph::keys::Keys::new("w1");
    let key = &layout.epoch();
    let mut last = None;
    let mut revisions = Vec::new();
    let mut compactions = 0;
    for e in 0..epochs {
        let next = e.to_string().into_bytes();
        let expect = last.map_or(taskgraph::coord::Expect::Absent, taskgraph::coord::Expect::Value);
        let puts: Vec<(String, Vec<u8>)> =
            if records { vec![(layout.record(&format!("root/{e:06}")), format!("{}", 105 * e).into_bytes())] } else { vec![] };
        assert!(etcd.compare_and_swap_all(key, expect, &next, &puts).await.unwrap());
        let revision = etcd.get(key).await.unwrap().expect("the epoch key").mod_revision;
        revisions.push(revision);
        last = Some(next);
        if compacting {
            let now = t0 + Duration::from_millis(e);
            if compactor.compact_if_due(&etcd, now, revision).await.unwrap().is_some() {
                compactions += 1;
            }
        }
    }
    if compacting {
        // Wait for the background part of the compactions (etcd runs them
        // in order): one more, as the policy's next would be (one period of
        // history kept), waiting for its physical part.
        etcd.compact(revisions[revisions.len() - 500]).await.unwrap();
    }
    let after = in_use();
    let total = server.metric("etcd_mvcc_db_total_size_in_bytes").unwrap_or(f64::NAN);
    eprintln!(
        "{epochs} epochs, {}, {}: db in use {before} -> {after} B ({:.0} B/epoch), db file {total} B",
        if records { "the epoch key and a record each" } else { "the epoch key only" },
        if compacting { format!("{compactions} compactions") } else { "no compaction".to_owned() },
        (after - before) / epochs as f64
    );
    after - before
}

/// The keys of a holder that dies (keeps its lease alive, then stops, as a
/// killed process does: its connection is gone too) vanish no sooner than
/// the TTL after its last keep-alive, and within TTL + 1 s of it (etcd
/// checks for expired leases every 500 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holders_lease_keys_vanish_within_ttl() {
    let server = EtcdServer::start();
    let observer = server.connect().await;
    let holder = server.connect().await;
    let prefix = "/holders/";
    let key = format!("{prefix}primary");
    let lease = holder.grant(TTL).await.unwrap();
    holder.put(&key, b"me", Some(lease)).await.unwrap();
    let r = observer.put(&format!("{prefix}other"), b"stays", None).await.unwrap();
    let mut w = observer.watch(prefix, r + 1).await.unwrap();

    // Alive for a while (longer than the TTL)...
    let alive_since = Instant::now();
    while alive_since.elapsed() < TTL * 3 / 2 {
        tokio::time::sleep(TTL / 4).await;
        holder.keep_alive(lease).await.unwrap();
        assert!(observer.get(&key).await.unwrap().is_some(), "the key of a lease kept alive vanished");
    }
    holder.keep_alive(lease).await.unwrap();
    let last_keep_alive = Instant::now();
    // ... then killed: no more keep-alives, connection closed.
    drop(holder);

    // The first event after the writes is the deletion.
    let event = within(TTL * 5, "the deletion of the dead holder's key", w.next()).await;
    let vanished_after = last_keep_alive.elapsed();
    match event {
        Some(Ok(Event::Delete { key: k, .. })) => assert_eq!(k, key),
        other => panic!("expected the deletion of {key}, got {other:?}"),
    }
    eprintln!("the dead holder's key vanished {vanished_after:?} after its last keep-alive");
    assert!(
        vanished_after >= TTL - Duration::from_millis(50),
        "the key vanished {vanished_after:?} after the last keep-alive, before the TTL of {TTL:?}"
    );
    assert!(
        vanished_after <= TTL + Duration::from_secs(1),
        "the key vanished only {vanished_after:?} after the last keep-alive (TTL {TTL:?})"
    );
    assert!(observer.get(&format!("{prefix}other")).await.unwrap().is_some(), "a key without the lease vanished");
    match observer.keep_alive(lease).await {
        Err(CoordError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("keep_alive of the expired lease gave {other:?}"),
    }
}

/// Dropping a `Watch` cancels its etcd watch (no watcher leaks in etcd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_are_cancelled_in_etcd() {
    const WATCHER_TOTAL: &str = "etcd_debugging_mvcc_watcher_total";
    let server = EtcdServer::start();
    let etcd = server.connect().await;
    let watchers = || server.metric(WATCHER_TOTAL).unwrap_or_else(|| panic!("etcd reports no {WATCHER_TOTAL}"));
    let wait_for = |expected: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while watchers() != expected {
            assert!(Instant::now() < deadline, "etcd has {} watchers, expected {expected}", watchers());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let baseline = watchers();
    let mut open = Vec::new();
    for i in 0..10 {
        open.push(etcd.watch(&format!("/leak/{i}/"), 0).await.unwrap());
    }
    wait_for(baseline + 10.0).await;
    drop(open);
    wait_for(baseline).await;
    // Dropping the last handle ends the watches too.
    let mut w = etcd.watch("/leak/", 0).await.unwrap();
    wait_for(baseline + 1.0).await;
    drop(etcd);
    assert!(within(Duration::from_secs(5), "the end of the watch", w.next()).await.is_none());
    wait_for(baseline).await;
}

/// If etcd stays away longer than the watch retry limit, the watch
/// delivers `Unavailable` and ends; operations fail with `Unavailable`
/// (not a hang, not a panic); after etcd is back they work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gives_up_when_etcd_stays_away() {
    let mut server = EtcdServer::start();
    let mut options = EtcdOptions::default();
    options.watch_retry_limit = Duration::from_millis(800);
    options.request_timeout = Duration::from_millis(500);
    let etcd = server.connect_with(options).await;
    let mut w = etcd.watch("/away/", 0).await.unwrap();

    // The clock starts before the kill: the watch may see the connection
    // end before `kill` has reaped the process and returned.
    let killed = Instant::now();
    server.kill();
    match within(Duration::from_secs(10), "the watch's Unavailable", w.next()).await {
        Some(Err(CoordError::Unavailable(_))) => {}
        other => panic!("a watch of a dead etcd gave {other:?}, expected Unavailable"),
    }
    let gave_up_after = killed.elapsed();
    assert!(within(Duration::from_secs(1), "the end of the watch", w.next()).await.is_none(), "the watch went on");
    assert!(
        gave_up_after >= Duration::from_millis(800) && gave_up_after < Duration::from_secs(5),
        "the watch gave up {gave_up_after:?} after etcd died (retry limit 800 ms)"
    );
    match within(Duration::from_secs(5), "a put to a dead etcd", etcd.put("/away/k", b"v", None)).await {
        Err(CoordError::Unavailable(_)) => {}
        other => panic!("a put to a dead etcd gave {other:?}"),
    }

    server.restart();
    wait_until_answering(&etcd).await;
    etcd.put("/away/k", b"v", None).await.unwrap();
}

/// Connecting to an address where no etcd listens fails with
/// `Unavailable` within the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_is_unavailable() {
    // A port that was free a moment ago (nothing listens on it).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut options = EtcdOptions::default();
    options.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    match Etcd::connect(&[format!("127.0.0.1:{port}")], options).await {
        Err(CoordError::Unavailable(_)) => {}
        other => panic!("connecting to nothing gave {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "connect took {:?}", started.elapsed());
    assert!(matches!(Etcd::connect(&[], EtcdOptions::default()).await, Err(CoordError::Invalid(_))));
}

/// The handle works the way a node uses it: from a current-thread runtime
/// on another thread (with a LocalSet), and from a future that is not on
/// tokio at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_a_current_thread_runtime_and_any_executor() {
    let server = EtcdServer::start();
    let etcd = server.connect().await;
    let node = {
        let etcd = etcd.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let mut w = etcd.watch("/node/", 0).await.unwrap();
                let r = etcd.put("/node/k", b"v", None).await.unwrap();
                let event = tokio::time::timeout(Duration::from_secs(10), w.next()).await.unwrap();
                assert!(matches!(event, Some(Ok(Event::Put(kv))) if kv.mod_revision == r));
            });
        })
    };
    tokio::task::spawn_blocking(move || node.join())
        .await
        .unwrap()
        .expect("the node thread panicked");
    let other = etcd.clone();
    let got = tokio::task::spawn_blocking(move || block_on(other.get("/node/k")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.map(|kv| kv.value), Some(b"v".to_vec()));
}

/// Runs a future to completion on this thread, without tokio.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(output) = f.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
