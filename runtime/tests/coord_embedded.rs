//! The embedded coordination store: the shared conformance suite, plus
//! what only the embedded store offers or promises (compaction, `close`,
//! its expiry thread, exact revision numbers, heavy concurrency).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use taskgraph::coord::{conformance, CoordError, Coordinator, Embedded, Event, Expect, KeyValue, Revision, Watch};

/// How long a test waits for an event that must come.
const PATIENCE: Duration = Duration::from_secs(10);

async fn next(w: &mut Watch) -> Option<Result<Event, CoordError>> {
    tokio::time::timeout(PATIENCE, w.next()).await.expect("no watch item within the patience")
}

async fn next_event(w: &mut Watch) -> Event {
    match next(w).await {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The watch has nothing queued right now.
async fn assert_idle(w: &mut Watch) {
    // `timeout` polls the receiver first, so a queued item is returned.
    if let Ok(item) = tokio::time::timeout(Duration::ZERO, w.next()).await {
        panic!("unexpected watch item {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let store = Embedded::new();
    conformance::run_all(&store, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_through_dyn_arc() {
    // As the runtime holds it: `Arc<dyn Coordinator>`; and the checks'
    // futures can be spawned.
    let store: std::sync::Arc<dyn Coordinator> = std::sync::Arc::new(Embedded::new());
    let handle = tokio::spawn(async move {
        conformance::watch_resumes_without_missing(&*store).await;
        conformance::create_race_has_one_winner(&*store, 64).await;
    });
    handle.await.expect("the checks panicked");
}

#[tokio::test]
async fn revisions_are_etcds() {
    let s = Embedded::new();
    assert_eq!(s.get_prefix("").await.unwrap(), (vec![], 1), "a fresh store is at revision 1");
    let lease = s.grant(Duration::from_secs(60)).await.unwrap();
    s.keep_alive(lease).await.unwrap();
    assert_eq!(s.get_prefix("").await.unwrap().1, 1, "grant and keep_alive do not write");
    assert_eq!(s.put("a", b"1", None).await.unwrap(), 2, "the first write gets revision 2");
    assert!(!s.delete("missing").await.unwrap());
    assert_eq!(s.delete_prefix("missing/").await.unwrap(), 0);
    assert!(s.create("a", b"x", None).await.unwrap().is_err());
    assert!(s.compare_and_swap("a", Expect::Value(b"x".to_vec()), b"y", None).await.unwrap().is_err());
    assert!(!s.compare_and_delete("a", 1).await.unwrap());
    s.revoke(lease).await.unwrap();
    assert_eq!(s.get_prefix("").await.unwrap().1, 2, "writes that change nothing take no revision");

    for k in ["p/1", "p/2", "p/3"] {
        s.put(k, b"v", None).await.unwrap();
    }
    assert_eq!(s.get_prefix("").await.unwrap().1, 5);
    assert_eq!(s.delete_prefix("p/").await.unwrap(), 3);
    assert_eq!(s.get_prefix("").await.unwrap().1, 6, "delete_prefix is one revision");

    let lease = s.grant(Duration::from_secs(60)).await.unwrap();
    for k in ["l/c", "l/a", "l/b"] {
        s.put(k, b"v", Some(lease)).await.unwrap();
    }
    let mut w = s.watch("l/", 0).await.unwrap();
    s.revoke(lease).await.unwrap();
    for k in ["l/a", "l/b", "l/c"] {
        assert_eq!(next_event(&mut w).await, Event::Delete { key: k.into(), revision: 10 }, "a revoke is one revision, keys in order");
    }
    assert_eq!(s.get_prefix("").await.unwrap().1, 10);
}

#[tokio::test]
async fn empty_keys_and_the_empty_prefix() {
    let s = Embedded::new();
    let mut all = s.watch("", 1).await.unwrap();
    s.put("", b"root", None).await.unwrap();
    s.put("b", b"", None).await.unwrap();
    s.put("a", b"x", None).await.unwrap();
    assert_eq!(s.get("").await.unwrap().map(|kv| kv.value), Some(b"root".to_vec()));
    let (kvs, rev) = s.get_prefix("").await.unwrap();
    assert_eq!(kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["", "a", "b"]);
    assert_eq!(rev, 4);
    for key in ["", "b", "a"] {
        assert_eq!(next_event(&mut all).await.key(), key);
    }
    assert!(s.create("", b"again", None).await.unwrap().is_err());
    assert!(s.delete("").await.unwrap());
    assert_eq!(s.delete_prefix("").await.unwrap(), 2);
    assert_eq!(s.get_prefix("").await.unwrap().0, vec![]);
}

#[tokio::test]
async fn odd_inputs_never_panic() {
    let s = Embedded::new();
    assert!(matches!(s.grant(Duration::ZERO).await, Err(CoordError::Invalid(_))));
    assert!(matches!(s.grant(Duration::MAX).await, Err(CoordError::Invalid(_))));
    let long = s.grant(Duration::from_secs(9_000_000_000)).await.expect("etcd's longest TTL");
    s.keep_alive(long).await.unwrap();
    for id in [0, -1, i64::MIN, i64::MAX] {
        assert_eq!(s.keep_alive(id).await, Err(CoordError::LeaseNotFound(id)));
        assert_eq!(s.revoke(id).await, Ok(()));
        assert_eq!(s.put("k", b"v", Some(id)).await, Err(CoordError::LeaseNotFound(id)));
    }
    for rev in [i64::MIN, -1, 0, 1, i64::MAX] {
        assert!(!s.compare_and_delete("k", rev).await.unwrap());
        assert!(s.compare_and_swap("k", Expect::ModRevision(rev), b"v", None).await.unwrap().is_err());
    }
    // "From now" for 0 and below; a future revision is allowed (as in etcd).
    for from in [i64::MIN, -1, 0, 2, 1000, i64::MAX] {
        let mut w = s.watch("", from).await.unwrap();
        assert_idle(&mut w).await;
    }
    assert!(matches!(s.compact(i64::MAX), Err(CoordError::Invalid(_))));
    assert!(matches!(s.compact(i64::MIN), Err(CoordError::Compacted { .. })));
}

#[tokio::test]
async fn watch_from_a_future_revision_starts_there() {
    let s = Embedded::new();
    let mut w = s.watch("k", 4).await.unwrap();
    s.put("k", b"2", None).await.unwrap();
    s.put("k", b"3", None).await.unwrap();
    s.put("k", b"4", None).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), 4);
    assert_idle(&mut w).await;
}

#[tokio::test]
async fn puts_move_keys_between_leases() {
    let s = Embedded::new();
    let (a, b) = (s.grant(Duration::from_secs(60)).await.unwrap(), s.grant(Duration::from_secs(60)).await.unwrap());
    s.put("k", b"1", Some(a)).await.unwrap();
    s.put("k", b"2", Some(b)).await.unwrap();
    s.put("free", b"1", Some(a)).await.unwrap();
    s.put("free", b"2", None).await.unwrap();
    let rev = s.get_prefix("").await.unwrap().1;
    s.revoke(a).await.unwrap();
    assert_eq!(s.get_prefix("").await.unwrap().1, rev, "lease a has no keys left: revoking it writes nothing");
    assert_eq!(s.get("k").await.unwrap().and_then(|kv| kv.lease), Some(b));
    s.revoke(b).await.unwrap();
    assert_eq!(s.get("k").await.unwrap(), None);
    assert!(s.get("free").await.unwrap().is_some());
    // A failed transaction does not look at its lease (etcd checks the
    // lease only on the branch taken).
    assert!(matches!(s.create("free", b"x", Some(a)).await, Ok(Err(_))));
    assert!(matches!(s.compare_and_swap("free", Expect::Absent, b"x", Some(a)).await, Ok(Err(Some(_)))));
}

#[tokio::test]
async fn an_overdue_lease_is_expired_before_any_operation() {
    let s = Embedded::new();
    for _ in 0..10 {
        let ttl = Duration::from_millis(20);
        let lease = s.grant(ttl).await.unwrap();
        match s.put("k", b"v", Some(lease)).await {
            Ok(_) => {}
            // A very slow machine: the lease is already gone, as it must be.
            Err(CoordError::LeaseNotFound(_)) => continue,
            Err(e) => panic!("put failed: {e}"),
        }
        // Block this thread past the deadline: whether the expiry thread
        // or the next operation gets there first, the key must be gone.
        std::thread::sleep(ttl + Duration::from_millis(1));
        assert_eq!(s.get("k").await.unwrap(), None);
        assert_eq!(s.keep_alive(lease).await, Err(CoordError::LeaseNotFound(lease)));
    }
}

#[tokio::test]
async fn leases_expire_in_deadline_order_without_calls() {
    let s = Embedded::new();
    let mut w = s.watch("", 0).await.unwrap();
    // Granted longest first, so the expiry thread must re-arm for each.
    for ms in [300u64, 200, 100] {
        let lease = s.grant(Duration::from_millis(ms)).await.unwrap();
        s.put(&format!("k{ms}"), b"v", Some(lease)).await.unwrap();
    }
    for _ in 0..3 {
        next_event(&mut w).await;
    }
    let start = Instant::now();
    for key in ["k100", "k200", "k300"] {
        match next_event(&mut w).await {
            Event::Delete { key: deleted, .. } => assert_eq!(deleted, key),
            other => panic!("expected the expiry of {key}, got {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn compaction_then_reread_and_watch() {
    let s = Embedded::new();
    for i in 0..10 {
        s.put(&format!("k/{}", i % 3), i.to_string().as_bytes(), None).await.unwrap();
    }
    // Revisions 2..=11; keep 7 and later.
    s.compact(7).unwrap();
    let mut w = s.watch("k/", 6).await.unwrap();
    assert_eq!(next(&mut w).await, Some(Err(CoordError::Compacted { requested: 6, oldest: 7 })));
    assert_eq!(next(&mut w).await, None, "a compacted watch is over");
    assert_eq!(s.watcher_count(), 0);

    // Watching from the compaction revision itself still works.
    let mut w = s.watch("k/", 7).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), 7);
    drop(w);

    // The documented recovery: re-read, then watch from the read revision + 1.
    let (kvs, rev) = s.get_prefix("k/").await.unwrap();
    assert_eq!(rev, 11);
    assert_eq!(kvs.len(), 3);
    let mut w = s.watch("k/", rev + 1).await.unwrap();
    assert_idle(&mut w).await;
    s.put("k/0", b"new", None).await.unwrap();
    assert!(matches!(next_event(&mut w).await, Event::Put(KeyValue { mod_revision: 12, .. })));

    // Compacting below what is gone, or into the future, is refused.
    assert_eq!(s.compact(5), Err(CoordError::Compacted { requested: 5, oldest: 7 }));
    assert!(matches!(s.compact(13), Err(CoordError::Invalid(_))));
    assert_eq!(s.compact(7), Ok(()), "compacting at the oldest kept revision does nothing");
    assert_eq!(s.compact(12), Ok(()));
    assert!(matches!(next(&mut s.watch("", 11).await.unwrap()).await, Some(Err(CoordError::Compacted { oldest: 12, .. }))));
}

/// `Coordinator::compact` (the trait's, lenient) really drops the history
/// and gives its memory back; the inherent `Embedded::compact` stays strict.
#[tokio::test]
async fn compaction_through_the_trait_frees_the_history() {
    let s = Embedded::new();
    for i in 0..5000 {
        s.put(&format!("k/{}", i % 7), b"v", None).await.unwrap();
    }
    let (len, capacity) = s.history_size();
    assert_eq!(len, 5000);
    assert!(capacity >= 5000);
    let (_, rev) = s.get_prefix("").await.unwrap();
    Coordinator::compact(&s, rev - 1).await.unwrap();
    let (len, capacity) = s.history_size();
    assert_eq!(len, 2, "the events of the last two revisions are left");
    assert!(capacity <= 1024, "the history's memory was not given back: room for {capacity} events");

    assert_eq!(Coordinator::compact(&s, rev - 1).await, Ok(()), "again: nothing to do");
    assert_eq!(Coordinator::compact(&s, 2).await, Ok(()), "below: nothing to do");
    assert_eq!(s.compact(2), Err(CoordError::Compacted { requested: 2, oldest: rev - 1 }), "the inherent one is strict");
    assert!(matches!(Coordinator::compact(&s, rev + 1).await, Err(CoordError::Invalid(_))));
    let mut w = s.watch("k/", rev - 1).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), rev - 1);
    assert_eq!(next_event(&mut w).await.revision(), rev);
}

/// Compacting as a job goes (to the revision of one "period" ago, as
/// `Compactor` does) keeps the history at about a period's worth, however
/// long the job runs.
#[tokio::test]
async fn periodic_compaction_keeps_the_history_small() {
    let s = Embedded::new();
    let mut compactor = taskgraph::coord::Compactor::new(Duration::from_secs(1));
    let t0 = Instant::now();
    let mut most = 0;
    for i in 0..30_000u64 {
        let rev = s.put("epoch", &i.to_le_bytes(), None).await.unwrap();
        // A simulated clock: one write a millisecond, so 1 000 a period.
        let now = t0 + Duration::from_millis(i);
        compactor.compact_if_due(&s, now, rev).await.unwrap();
        most = most.max(s.history_size().0);
    }
    assert!(most <= 2001, "the history held up to {most} events");
    assert!(s.history_size().1 <= 4096, "the history's memory: room for {} events", s.history_size().1);
}

#[tokio::test]
async fn the_history_is_bounded() {
    let s = Embedded::with_history_limit(5);
    for i in 0..10 {
        s.put("k", i.to_string().as_bytes(), None).await.unwrap();
    }
    // Revisions 2..=11; the last 5 are 7..=11.
    let mut w = s.watch("", 6).await.unwrap();
    assert_eq!(next(&mut w).await, Some(Err(CoordError::Compacted { requested: 6, oldest: 7 })));
    let mut w = s.watch("", 7).await.unwrap();
    for rev in 7..=11 {
        assert_eq!(next_event(&mut w).await.revision(), rev);
    }

    // A revision bigger than the limit is kept whole.
    let lease = s.grant(Duration::from_secs(60)).await.unwrap();
    for i in 0..8 {
        s.put(&format!("l/{i}"), b"v", Some(lease)).await.unwrap();
    }
    s.revoke(lease).await.unwrap();
    let (_, rev) = s.get_prefix("").await.unwrap();
    let mut w = s.watch("l/", rev).await.unwrap();
    for _ in 0..8 {
        assert_eq!(next_event(&mut w).await.revision(), rev);
    }
    assert!(matches!(next(&mut s.watch("", rev - 1).await.unwrap()).await, Some(Err(CoordError::Compacted { .. }))));
}

#[tokio::test]
async fn close_ends_everything() {
    let s = Embedded::new();
    let other = s.clone();
    let lease = s.grant(Duration::from_secs(60)).await.unwrap();
    s.put("k", b"v", Some(lease)).await.unwrap();
    let mut w = s.watch("", 0).await.unwrap();
    s.close();
    assert_eq!(next(&mut w).await, None, "close ends open watches");
    assert_eq!(other.grant(Duration::from_secs(1)).await.err(), Some(CoordError::Closed));
    assert_eq!(other.keep_alive(lease).await.err(), Some(CoordError::Closed));
    assert_eq!(other.revoke(lease).await.err(), Some(CoordError::Closed));
    assert_eq!(other.get("k").await.err(), Some(CoordError::Closed));
    assert_eq!(other.get_prefix("").await.err(), Some(CoordError::Closed));
    assert_eq!(other.put("k", b"v", None).await.err(), Some(CoordError::Closed));
    assert_eq!(other.delete("k").await.err(), Some(CoordError::Closed));
    assert_eq!(other.delete_prefix("").await.err(), Some(CoordError::Closed));
    assert_eq!(other.create("k", b"v", None).await.err(), Some(CoordError::Closed));
    assert_eq!(other.compare_and_swap("k", Expect::Absent, b"v", None).await.err(), Some(CoordError::Closed));
    assert_eq!(other.compare_and_delete("k", 2).await.err(), Some(CoordError::Closed));
    assert_eq!(other.watch("", 0).await.map(drop).err(), Some(CoordError::Closed));
    assert_eq!(other.compact(1).err(), Some(CoordError::Closed));
    s.close();
    assert_eq!(s.get("k").await.err(), Some(CoordError::Closed), "closing twice is harmless");
}

#[tokio::test]
async fn dropping_the_last_clone_stops_the_expiry_thread() {
    let s = Embedded::new();
    let alive = s.liveness_probe();
    let clone = s.clone();
    let lease = s.grant(Duration::from_secs(60)).await.unwrap();
    s.put("k", b"v", Some(lease)).await.unwrap();
    let mut w = s.watch("", 0).await.unwrap();
    drop(s);
    assert!(alive(), "a clone still uses the store");
    assert!(clone.get("k").await.unwrap().is_some());
    drop(clone);
    // The drop joined the expiry thread, which held the last reference.
    assert!(!alive(), "the store outlived its last clone");
    assert_eq!(next(&mut w).await, None, "dropping the store ends its watches");

    // And many stores do not pile up threads.
    let before = expiry_threads();
    for _ in 0..20 {
        let s = Embedded::new();
        s.grant(Duration::from_millis(1)).await.unwrap();
    }
    let after = expiry_threads();
    // Other tests in this binary may hold a store each right now.
    assert!(after <= before + 8, "{before} expiry threads before, {after} after dropping 20 stores");
}

/// How many expiry threads this process has (0 where /proc is missing).
fn expiry_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tg-coord-expiry")
        .count()
}

#[tokio::test]
async fn dropped_watchers_are_removed() {
    let s = Embedded::new();
    let kept = s.watch("a", 0).await.unwrap();
    let dropped: Vec<Watch> = futures::future::join_all((0..5).map(|_| s.watch("", 0))).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(s.watcher_count(), 6);
    drop(dropped);
    assert_eq!(s.watcher_count(), 1);
    s.put("b", b"v", None).await.unwrap();
    drop(kept);
    assert_eq!(s.watcher_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_creators_have_one_winner() {
    let s = Embedded::new();
    for round in 0..20 {
        let key = format!("leader/{round}");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (s, key) = (s.clone(), key.clone());
                tokio::spawn(async move { s.create(&key, &[i], None).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap().is_ok());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

/// Many writers on several threads (puts, deletes, prefix deletes, lease
/// revokes and expiries), and watchers started at different times: every
/// watcher sees exactly the history from its start, with no gap and no
/// duplicate, and replaying the history gives the final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_watchers() {
    const WRITERS: usize = 4;
    const OPS: usize = 400;
    let s = Embedded::new();
    let mut from_start = s.watch("load/", 1).await.unwrap();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut lease = s.grant(Duration::from_secs(60)).await.unwrap();
                for i in 0..OPS {
                    let key = format!("load/{w}/{}", i % 10);
                    match i % 25 {
                        7 => {
                            s.delete(&key).await.unwrap();
                        }
                        13 => {
                            s.put(&key, b"leased", Some(lease)).await.unwrap();
                        }
                        19 => {
                            s.revoke(lease).await.unwrap();
                            lease = s.grant(Duration::from_secs(60)).await.unwrap();
                        }
                        24 => {
                            s.delete_prefix(&format!("load/{w}/")).await.unwrap();
                        }
                        _ => {
                            s.put(&key, i.to_string().as_bytes(), None).await.unwrap();
                        }
                    }
                    if i % 50 == 0 {
                        let short = s.grant(Duration::from_millis(20)).await.unwrap();
                        s.put(&format!("load/{w}/short"), b"s", Some(short)).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();

    // Watchers joining mid-way: from now, from the beginning, and from a
    // revision just read.
    let mut late = Vec::new();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let from = match i % 3 {
            0 => 0,
            1 => 1,
            _ => s.get_prefix("load/").await.unwrap().1 + 1,
        };
        late.push((from, s.watch("load/", from).await.unwrap()));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Let the short leases expire, then mark the end.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let end = s.put("load/end", b"", None).await.unwrap();

    async fn collect(w: &mut Watch, end: Revision) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let event = next_event(w).await;
            let revision = event.revision();
            events.push(event);
            if revision == end {
                return events;
            }
        }
    }
    let all = collect(&mut from_start, end).await;
    let revisions: Vec<Revision> = all.iter().map(Event::revision).collect();
    assert!(revisions.windows(2).all(|p| p[0] <= p[1]), "out of order");
    let mut distinct = revisions.clone();
    distinct.dedup();
    assert_eq!(distinct, (2..=end).collect::<Vec<_>>(), "every revision once, no gap");

    // Replaying the history gives the final state.
    let mut state = BTreeMap::new();
    for event in &all {
        match event {
            Event::Put(kv) => {
                state.insert(kv.key.clone(), kv.clone());
            }
            Event::Delete { key, .. } => {
                assert!(state.remove(key).is_some(), "deleted a missing key {key}");
            }
        }
    }
    let (kvs, rev) = s.get_prefix("load/").await.unwrap();
    assert_eq!(rev, end);
    assert_eq!(kvs, state.into_values().collect::<Vec<_>>());

    for (from, mut w) in late {
        let seen = collect(&mut w, end).await;
        let first = seen[0].revision();
        if from > 0 {
            assert_eq!(first, from.max(2), "a watch from {from}");
        }
        let at = all.iter().position(|e| e.revision() == first).unwrap();
        assert_eq!(seen, all[at..], "a watch from {from} (first revision {first})");
        assert_idle(&mut w).await;
    }
}
