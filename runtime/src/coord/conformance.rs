//! The conformance suite every [`Coordinator`] implementation must pass.
//!
//! Run [`run_all`] against a fresh or shared coordinator (the embedded
//! store, or a real etcd), or call the individual checks. They use only the
//! [`Coordinator`] trait, panic with a message naming the check on the
//! first violation, and work on a coordinator that other clients use at
//! the same time:
//!
//! * each check works under its own key prefix,
//!   `/conformance/<check>/<unique>/`, and deletes it at the end when it
//!   passes;
//! * no check assumes that revisions grow by exactly one between its own
//!   writes (someone else may write in between), only that they grow;
//! * waits are bounded by generous timeouts that fail the check, never
//!   bare sleeps that hope something happened.
//!
//! One check, [`compaction_drops_older_history`], compacts the whole
//! store's history up to one of its own writes: other clients are
//! unaffected unless they watch from a revision older than that.
//!
//! Lease checks take the TTL to use: the shortest the implementation
//! grants (a fraction of a second for the embedded store; 1–2 s for etcd,
//! which rounds TTLs up to whole seconds and checks expiry every 500 ms).
//! The whole suite takes a little over `4 × ttl`, plus up to `ttl` more
//! when the implementation expires leases late (etcd: up to 0.5 s late).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{CoordError, CoordResult, Coordinator, Event, Expect, KeyValue, Revision, Watch};

/// How long a check waits for an event that must come (other than a lease
/// expiry, which waits longer).
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every conformance check against `c`, with leases of `ttl` (use the
/// shortest the implementation grants). Panics with a clear message on the
/// first violation.
pub async fn run_all(c: &dyn Coordinator, ttl: Duration) {
    revisions_and_get(c).await;
    put_get_delete(c).await;
    prefixes_are_sorted_and_scoped(c).await;
    create_is_exclusive(c).await;
    create_race_has_one_winner(c, 16).await;
    compare_and_swap_semantics(c).await;
    compare_and_delete_only_by_holder(c).await;
    compare_and_swap_all_is_all_or_nothing(c).await;
    watch_replays_from_revision(c).await;
    watch_sees_live_events_in_order(c).await;
    watch_resumes_without_missing(c).await;
    watch_scoped_to_prefix(c).await;
    compaction_drops_older_history(c).await;
    invalid_ttl_is_refused(c).await;
    gone_lease_is_an_error(c, ttl).await;
    lease_keys_vanish_on_revoke(c, ttl).await;
    // Not side by side: the expiry check needs nobody else calling `c`
    // (an implementation that expires leases only when called must fail).
    lease_expires_without_keepalive(c, ttl).await;
    keepalive_keeps_lease(c, ttl).await;
}

/// Writes bump the revision, `get` reports `create_revision` and
/// `mod_revision` correctly, and `get_prefix` reports a revision no older
/// than the last write.
pub async fn revisions_and_get(c: &dyn Coordinator) {
    let t = Check::new(c, "revisions_and_get");
    let (empty, r0) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);
    assert!(empty.is_empty(), "{t}: a fresh prefix holds {empty:?}");
    assert!(r0 >= 1, "{t}: the store's revision is {r0}, but it starts at 1");
    assert_eq!(t.ok("get", c.get(&t.key("missing")).await), None, "{t}: get of a missing key");

    let a = t.key("a");
    let r1 = t.ok("put", c.put(&a, b"1", None).await);
    assert!(r1 > r0, "{t}: put returned revision {r1}, not after the earlier {r0}");
    let kv = t.ok("get", c.get(&a).await).unwrap_or_else(|| panic!("{t}: {a} missing right after its put"));
    assert_eq!(
        kv,
        KeyValue {
            key: a.clone(),
            value: b"1".to_vec(),
            create_revision: r1,
            mod_revision: r1,
            lease: None
        },
        "{t}: a new key"
    );

    let r2 = t.ok("put", c.put(&a, b"2", None).await);
    assert!(r2 > r1, "{t}: the second put returned revision {r2}, not after {r1}");
    let kv = t.ok("get", c.get(&a).await).unwrap_or_else(|| panic!("{t}: {a} missing after its second put"));
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], r1, r2),
        "{t}: (value, create_revision, mod_revision) after a second put"
    );

    let b = t.key("b");
    let r3 = t.ok("put", c.put(&b, b"x", None).await);
    assert!(r3 > r2, "{t}: put returned revision {r3}, not after {r2}");
    let kv = t.ok("get", c.get(&a).await).unwrap_or_else(|| panic!("{t}: {a} vanished"));
    assert_eq!(kv.mod_revision, r2, "{t}: writing {b} changed {a}'s mod_revision");
    let (_, r) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);
    assert!(r >= r3, "{t}: get_prefix reports revision {r}, older than the last write {r3}");
    t.cleanup().await;
}

/// Keys can be written, read back exactly (empty and binary values too)
/// and deleted; `delete` reports whether the key existed; a key created
/// again after a delete gets a newer `create_revision`.
pub async fn put_get_delete(c: &dyn Coordinator) {
    let t = Check::new(c, "put_get_delete");
    let binary: Vec<u8> = (0..=255).collect();
    let cases: [(String, &[u8]); 3] = [
        (t.key("empty value"), b""),
        (t.key("binary"), &binary),
        (t.key("ünïcode key/with spaces"), b"text"),
    ];
    for (key, value) in &cases {
        let r = t.ok("put", c.put(key, value, None).await);
        let kv = t.ok("get", c.get(key).await).unwrap_or_else(|| panic!("{t}: {key:?} missing after put"));
        assert_eq!((kv.key.as_str(), kv.value.as_slice(), kv.mod_revision), (key.as_str(), *value, r), "{t}: read back {key:?}");
    }

    let key = &cases[0].0;
    let first = t.ok("get", c.get(key).await).unwrap_or_else(|| panic!("{t}: {key:?} missing"));
    assert!(t.ok("delete", c.delete(key).await), "{t}: delete of an existing key returned false");
    assert_eq!(t.ok("get", c.get(key).await), None, "{t}: {key:?} still there after delete");
    assert!(!t.ok("delete", c.delete(key).await), "{t}: delete of a deleted key returned true");
    assert!(!t.ok("delete", c.delete(&t.key("never")).await), "{t}: delete of a missing key returned true");

    let r = t.ok("put", c.put(key, b"again", None).await);
    let again = t.ok("get", c.get(key).await).unwrap_or_else(|| panic!("{t}: {key:?} missing after re-put"));
    assert!(
        again.create_revision == r && again.create_revision > first.create_revision,
        "{t}: a key re-created at revision {r} has create_revision {} (the first incarnation had {})",
        again.create_revision,
        first.create_revision
    );

    assert_eq!(t.ok("delete_prefix", c.delete_prefix(&t.prefix).await), 3, "{t}: delete_prefix count");
    assert_eq!(t.ok("delete_prefix", c.delete_prefix(&t.prefix).await), 0, "{t}: delete_prefix of nothing");
    for (key, _) in &cases {
        assert_eq!(t.ok("get", c.get(key).await), None, "{t}: {key:?} survived delete_prefix");
    }
    t.cleanup().await;
}

/// `get_prefix` returns exactly the keys starting with the prefix (a plain
/// string prefix), sorted bytewise; `delete_prefix` deletes exactly those.
pub async fn prefixes_are_sorted_and_scoped(c: &dyn Coordinator) {
    let t = Check::new(c, "prefixes_are_sorted_and_scoped");
    let names = ["b", "a/x", "c", "a", "A", "a0", "sub/1", "sub2/1", "a/y/z"];
    for name in names {
        t.ok("put", c.put(&t.key(name), name.as_bytes(), None).await);
    }
    // A key's name under the check's prefix (the whole key if it is not
    // under it, which the comparison then reports).
    let name = |kv: &KeyValue| kv.key.strip_prefix(&t.prefix).unwrap_or(&kv.key).to_owned();
    let check = |under: &str, kvs: &[KeyValue], expected: &[&str]| {
        assert_eq!(kvs.iter().map(name).collect::<Vec<_>>(), expected, "{t}: get_prefix({:?})", t.key(under));
        for kv in kvs {
            assert_eq!(kv.value, name(kv).as_bytes(), "{t}: value of {}", kv.key);
        }
    };

    let (all, _) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);
    check("", &all, &["A", "a", "a/x", "a/y/z", "a0", "b", "c", "sub/1", "sub2/1"]);
    let (kvs, _) = t.ok("get_prefix", c.get_prefix(&t.key("a")).await);
    check("a", &kvs, &["a", "a/x", "a/y/z", "a0"]);
    let (kvs, _) = t.ok("get_prefix", c.get_prefix(&t.key("a/")).await);
    check("a/", &kvs, &["a/x", "a/y/z"]);
    let (kvs, _) = t.ok("get_prefix", c.get_prefix(&t.key("sub/")).await);
    check("sub/", &kvs, &["sub/1"]);
    let (kvs, _) = t.ok("get_prefix", c.get_prefix(&t.key("zzz")).await);
    check("zzz", &kvs, &[]);
    let (kvs, _) = t.ok("get_prefix", c.get_prefix(&t.key("a/x")).await);
    check("a/x", &kvs, &["a/x"]);

    assert_eq!(t.ok("delete_prefix", c.delete_prefix(&t.key("sub/")).await), 1, "{t}: delete_prefix(sub/)");
    assert_eq!(t.ok("delete_prefix", c.delete_prefix(&t.key("a/")).await), 2, "{t}: delete_prefix(a/)");
    let (rest, _) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);
    check("", &rest, &["A", "a", "a0", "b", "c", "sub2/1"]);
    t.cleanup().await;
}

/// `create` creates a missing key (with `create_revision == mod_revision`)
/// and otherwise returns the existing key unchanged, without writing.
pub async fn create_is_exclusive(c: &dyn Coordinator) {
    let t = Check::new(c, "create_is_exclusive");
    let key = t.key("leader");
    let won = match t.ok("create", c.create(&key, b"first", None).await) {
        Ok(kv) => kv,
        Err(existing) => panic!("{t}: create of a missing key found {existing:?}"),
    };
    assert_eq!(
        (won.key.as_str(), won.value.as_slice(), won.lease),
        (key.as_str(), &b"first"[..], None),
        "{t}: the created key"
    );
    assert_eq!(won.create_revision, won.mod_revision, "{t}: a created key's create and mod revisions differ");
    assert_eq!(t.ok("get", c.get(&key).await).as_ref(), Some(&won), "{t}: get after create");

    match t.ok("create", c.create(&key, b"second", None).await) {
        Ok(kv) => panic!("{t}: a second create of {key} succeeded: {kv:?}"),
        Err(existing) => assert_eq!(existing, won, "{t}: the failed create's report of the existing key"),
    }
    assert_eq!(t.ok("get", c.get(&key).await).as_ref(), Some(&won), "{t}: a failed create changed the key");

    assert!(t.ok("delete", c.delete(&key).await), "{t}: delete returned false");
    match t.ok("create", c.create(&key, b"third", None).await) {
        Ok(kv) => assert!(
            kv.create_revision > won.create_revision,
            "{t}: the re-created key's create_revision {} is not after the first's {}",
            kv.create_revision,
            won.create_revision
        ),
        Err(existing) => panic!("{t}: create after delete found {existing:?}"),
    }
    t.cleanup().await;
}

/// `n` concurrent `create`s of one key (all in flight at once): exactly one
/// wins, and every loser is shown the winner's key-value.
pub async fn create_race_has_one_winner(c: &dyn Coordinator, n: usize) {
    let t = Check::new(c, "create_race_has_one_winner");
    let key = t.key("leader");
    let results = futures::future::join_all((0..n).map(|i| {
        let key = &key;
        async move { (i, c.create(key, i.to_string().as_bytes(), None).await) }
    }))
    .await;
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for (i, result) in results {
        match t.ok("create", result) {
            Ok(kv) => winners.push((i, kv)),
            Err(existing) => losers.push((i, existing)),
        }
    }
    assert_eq!(winners.len(), 1, "{t}: {} of {n} concurrent creates won: {winners:?}", winners.len());
    let (i, won) = &winners[0];
    assert_eq!(won.value, i.to_string().as_bytes(), "{t}: the winner's value");
    for (loser, existing) in &losers {
        assert_eq!(existing, won, "{t}: creator {loser} was shown another key than the winner's");
    }
    assert_eq!(t.ok("get", c.get(&key).await).as_ref(), Some(won), "{t}: the key after the race");
    t.cleanup().await;
}

/// `compare_and_swap` with [`Expect::Absent`], [`Expect::Value`] and
/// [`Expect::ModRevision`]: writes when the expectation holds (keeping
/// `create_revision`), and otherwise returns the current state and writes
/// nothing.
pub async fn compare_and_swap_semantics(c: &dyn Coordinator) {
    let t = Check::new(c, "compare_and_swap_semantics");
    let key = t.key("epoch");
    let (check, key_ref) = (&t, &key);
    let cas = |expect: Expect, value: &'static [u8]| async move {
        check.ok("compare_and_swap", c.compare_and_swap(key_ref, expect, value, None).await)
    };

    // On a missing key only `Absent` holds.
    for expect in [Expect::Value(b"0".to_vec()), Expect::Value(Vec::new()), Expect::ModRevision(1), Expect::ModRevision(0)] {
        match cas(expect.clone(), b"x").await {
            Ok(kv) => panic!("{t}: {expect:?} held on a missing key, writing {kv:?}"),
            Err(current) => assert_eq!(current, None, "{t}: {expect:?} on a missing key reported a current value"),
        }
    }
    assert_eq!(t.ok("get", c.get(&key).await), None, "{t}: a failed compare_and_swap wrote");
    let v1 = match cas(Expect::Absent, b"1").await {
        Ok(kv) => kv,
        Err(current) => panic!("{t}: Absent failed on a missing key, current {current:?}"),
    };
    assert_eq!(
        (v1.value.as_slice(), v1.create_revision, v1.lease),
        (&b"1"[..], v1.mod_revision, None),
        "{t}: the key created by Absent"
    );
    assert_eq!(t.ok("get", c.get(&key).await).as_ref(), Some(&v1), "{t}: get after compare_and_swap");

    // Failures report the current key and change nothing.
    let stale = v1.mod_revision - 1;
    for expect in [Expect::Absent, Expect::Value(b"0".to_vec()), Expect::Value(Vec::new()), Expect::ModRevision(stale), Expect::ModRevision(v1.mod_revision + 1000)] {
        match cas(expect.clone(), b"x").await {
            Ok(kv) => panic!("{t}: {expect:?} held against {v1:?}, writing {kv:?}"),
            Err(current) => assert_eq!(current.as_ref(), Some(&v1), "{t}: {expect:?} failed but reported another current state"),
        }
    }
    assert_eq!(t.ok("get", c.get(&key).await).as_ref(), Some(&v1), "{t}: a failed compare_and_swap wrote");

    // Value holds.
    let v2 = match cas(Expect::Value(b"1".to_vec()), b"2").await {
        Ok(kv) => kv,
        Err(current) => panic!("{t}: Value(1) failed against {current:?}"),
    };
    assert!(v2.mod_revision > v1.mod_revision, "{t}: a swap did not advance mod_revision");
    assert_eq!((v2.value.as_slice(), v2.create_revision), (&b"2"[..], v1.create_revision), "{t}: after Value(1) → 2");

    // ModRevision holds; the stale one no longer does.
    match cas(Expect::ModRevision(v1.mod_revision), b"x").await {
        Ok(kv) => panic!("{t}: a stale ModRevision held, writing {kv:?}"),
        Err(current) => assert_eq!(current.as_ref(), Some(&v2), "{t}: stale ModRevision reported another state"),
    }
    let v3 = match cas(Expect::ModRevision(v2.mod_revision), b"3").await {
        Ok(kv) => kv,
        Err(current) => panic!("{t}: ModRevision({}) failed against {current:?}", v2.mod_revision),
    };
    assert!(v3.mod_revision > v2.mod_revision, "{t}: a swap did not advance mod_revision");
    assert_eq!((v3.value.as_slice(), v3.create_revision), (&b"3"[..], v1.create_revision), "{t}: after ModRevision → 3");
    assert_eq!(t.ok("get", c.get(&key).await).as_ref(), Some(&v3), "{t}: get after the swaps");

    // An empty value is a value.
    let v4 = match cas(Expect::Value(b"3".to_vec()), b"").await {
        Ok(kv) => kv,
        Err(current) => panic!("{t}: Value(3) failed against {current:?}"),
    };
    match cas(Expect::Value(Vec::new()), b"5").await {
        Ok(kv) => assert_eq!(kv.value, b"5", "{t}: after Value([]) → 5"),
        Err(current) => panic!("{t}: Value([]) failed against {current:?} (expected {v4:?})"),
    }
    t.cleanup().await;
}

/// `compare_and_delete` deletes only at the key's current `mod_revision`.
pub async fn compare_and_delete_only_by_holder(c: &dyn Coordinator) {
    let t = Check::new(c, "compare_and_delete_only_by_holder");
    let key = t.key("leader");
    assert!(
        !t.ok("compare_and_delete", c.compare_and_delete(&key, 0).await),
        "{t}: compare_and_delete(_, 0) of a missing key returned true"
    );
    let held = match t.ok("create", c.create(&key, b"me", None).await) {
        Ok(kv) => kv,
        Err(existing) => panic!("{t}: create found {existing:?}"),
    };
    let r = t.ok("put", c.put(&key, b"me, later", None).await);
    for stale in [held.mod_revision, 0, r + 1000] {
        assert!(
            !t.ok("compare_and_delete", c.compare_and_delete(&key, stale).await),
            "{t}: compare_and_delete at {stale} deleted a key last written at {r}"
        );
        assert!(t.ok("get", c.get(&key).await).is_some(), "{t}: the key vanished after a failed compare_and_delete");
    }
    assert!(t.ok("compare_and_delete", c.compare_and_delete(&key, r).await), "{t}: the holder's compare_and_delete returned false");
    assert_eq!(t.ok("get", c.get(&key).await), None, "{t}: the key survived its holder's compare_and_delete");
    assert!(
        !t.ok("compare_and_delete", c.compare_and_delete(&key, r).await),
        "{t}: a second compare_and_delete returned true"
    );
    t.cleanup().await;
}

/// `compare_and_swap_all` writes the swapped key and every other key in
/// one revision when the expectation holds, and nothing when it does not.
pub async fn compare_and_swap_all_is_all_or_nothing(c: &dyn Coordinator) {
    let t = Check::new(c, "compare_and_swap_all_is_all_or_nothing");
    let (epoch, a, b) = (t.key("epoch"), t.key("a"), t.key("b"));
    t.ok("put", c.put(&epoch, b"1", None).await);
    let puts = vec![(a.clone(), b"x".to_vec()), (b.clone(), b"y".to_vec())];
    // Wrong expectation: nothing written.
    assert!(
        !t.ok("compare_and_swap_all", c.compare_and_swap_all(&epoch, Expect::Value(b"0".to_vec()), b"2", &puts).await),
        "{t}: compare_and_swap_all wrote despite a wrong expectation"
    );
    assert_eq!(t.ok("get", c.get(&a).await), None, "{t}: a failed compare_and_swap_all wrote another key");
    assert_eq!(t.ok("get", c.get(&epoch).await).map(|kv| kv.value), Some(b"1".to_vec()));
    // Right expectation: everything written, in one revision.
    assert!(
        t.ok("compare_and_swap_all", c.compare_and_swap_all(&epoch, Expect::Value(b"1".to_vec()), b"2", &puts).await),
        "{t}: compare_and_swap_all did not write though the expectation held"
    );
    let (e, x, y) = (
        t.ok("get", c.get(&epoch).await).expect("the swapped key"),
        t.ok("get", c.get(&a).await).expect("a"),
        t.ok("get", c.get(&b).await).expect("b"),
    );
    assert_eq!((e.value.as_slice(), x.value.as_slice(), y.value.as_slice()), (&b"2"[..], &b"x"[..], &b"y"[..]), "{t}");
    assert!(e.mod_revision == x.mod_revision && x.mod_revision == y.mod_revision, "{t}: the writes took several revisions");
    // Absent works too.
    let fresh = t.key("fresh");
    assert!(t.ok("compare_and_swap_all", c.compare_and_swap_all(&fresh, Expect::Absent, b"v", &[]).await), "{t}: Absent");
    t.cleanup().await;
}

/// A watch from a past revision replays exactly the changes at and after
/// it, in order, then continues live without repeating any.
pub async fn watch_replays_from_revision(c: &dyn Coordinator) {
    let t = Check::new(c, "watch_replays_from_revision");
    let (a, b, d) = (t.key("a"), t.key("b"), t.key("d"));
    let ra = t.ok("put", c.put(&a, b"a1", None).await);
    let rb = t.ok("put", c.put(&b, b"b1", None).await);
    let (_, noted) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);

    let r1 = t.ok("put", c.put(&a, b"a2", None).await);
    assert!(t.ok("delete", c.delete(&b).await), "{t}: delete returned false");
    let r3 = t.ok("put", c.put(&d, b"d1", None).await);
    let later = [
        Shape::put(&a, b"a2", r1),
        Shape::delete(&b),
        Shape::put(&d, b"d1", r3),
    ];

    let mut after_noted = t.ok("watch", c.watch(&t.prefix, noted + 1).await);
    t.expect_events(&mut after_noted, &later).await;

    let mut from_rb = t.ok("watch", c.watch(&t.prefix, rb).await);
    let mut from_b = vec![Shape::put(&b, b"b1", rb)];
    from_b.extend(later.iter().cloned());
    t.expect_events(&mut from_rb, &from_b).await;

    let mut from_ra = t.ok("watch", c.watch(&t.prefix, ra).await);
    let mut from_a = vec![Shape::put(&a, b"a1", ra)];
    from_a.extend(from_b);
    t.expect_events(&mut from_ra, &from_a).await;

    t.expect_nothing_more(&mut [&mut after_noted, &mut from_rb, &mut from_ra]).await;
    t.cleanup().await;
}

/// [`Coordinator::compact`]: after compacting to revision `r`, a watch from
/// before `r` gets `Compacted { requested, oldest }` (`oldest >= r`) as its
/// only item and ends; watches from `r` and after replay exactly what they
/// did before; a watch that had caught up before it goes on; current values
/// are unaffected; compacting to `r` again, or below it, is `Ok`; compacting
/// past the current revision is `Invalid`.
pub async fn compaction_drops_older_history(c: &dyn Coordinator) {
    let t = Check::new(c, "compaction_drops_older_history");
    let (key, other) = (t.key("k"), t.key("other"));
    let r0 = t.ok("put", c.put(&other, b"o", None).await);
    let mut open_before = t.ok("watch", c.watch(&t.prefix, r0).await);
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(t.ok("put", c.put(&key, format!("v{i}").as_bytes(), None).await));
    }
    let shapes: Vec<Shape> = revisions.iter().enumerate().map(|(i, r)| Shape::put(&key, format!("v{i}").as_bytes(), *r)).collect();
    let cut = revisions[2];
    // A watch that has caught up is not cut off by the compaction (one
    // still replaying from before the compaction point may be: etcd).
    let mut before = vec![Shape::put(&other, b"o", r0)];
    before.extend(shapes.iter().cloned());
    t.expect_events(&mut open_before, &before).await;
    t.ok("compact", c.compact(cut).await);

    for from in [r0, revisions[1], cut - 1] {
        let mut w = t.ok("watch", c.watch(&t.prefix, from).await);
        match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(Some(Err(CoordError::Compacted { requested, oldest }))) => {
                assert_eq!(requested, from, "{t}: the Compacted error of a watch from {from} names another revision");
                assert!(oldest >= cut, "{t}: after compacting to {cut}, a watch from {from} reports {oldest} as the oldest kept");
            }
            other => panic!("{t}: a watch from {from}, before the compaction to {cut}, gave {other:?}, expected Compacted"),
        }
        match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(None) => {}
            other => panic!("{t}: a compacted watch went on with {other:?}"),
        }
    }
    let mut from_cut = t.ok("watch", c.watch(&t.prefix, cut).await);
    t.expect_events(&mut from_cut, &shapes[2..]).await;
    let mut after_cut = t.ok("watch", c.watch(&t.prefix, revisions[3]).await);
    t.expect_events(&mut after_cut, &shapes[3..]).await;
    t.expect_nothing_more(&mut [&mut from_cut, &mut after_cut, &mut open_before]).await;

    let kv = t.ok("get", c.get(&other).await).unwrap_or_else(|| panic!("{t}: {other} vanished in the compaction"));
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"o"[..], r0), "{t}: a key last written before the compaction");

    t.ok("compact (again, to the same revision)", c.compact(cut).await);
    t.ok("compact (below the last compaction)", c.compact(revisions[0]).await);
    t.ok("compact (to revision 1)", c.compact(1).await);
    let mut w = t.ok("watch", c.watch(&t.prefix, revisions[1]).await);
    assert!(
        matches!(tokio::time::timeout(EVENT_TIMEOUT, w.next()).await, Ok(Some(Err(CoordError::Compacted { .. })))),
        "{t}: compacting below the last compaction brought history back"
    );
    let (_, now) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);
    match c.compact(now + 1_000_000).await {
        Err(CoordError::Invalid(_)) => {}
        other => panic!("{t}: compacting past the current revision {now} gave {other:?}, expected Invalid"),
    }
    t.cleanup().await;
}

/// A watch from `0` ("now") sees only later changes, each write's events
/// in revision order with the revisions the writes reported, including
/// those of transactions and of `delete_prefix` (one revision for all the
/// keys it deletes).
pub async fn watch_sees_live_events_in_order(c: &dyn Coordinator) {
    let t = Check::new(c, "watch_sees_live_events_in_order");
    let (a, b, k) = (t.key("a"), t.key("b"), t.key("k"));
    t.ok("put", c.put(&t.key("before"), b"old", None).await);
    let mut w = t.ok("watch", c.watch(&t.prefix, 0).await);

    let mut expected = Vec::new();
    let r = t.ok("put", c.put(&a, b"1", None).await);
    expected.push(Shape::put(&a, b"1", r));
    let r = t.ok("put", c.put(&b, b"1", None).await);
    expected.push(Shape::put(&b, b"1", r));
    let r = t.ok("put", c.put(&a, b"2", None).await);
    expected.push(Shape::put(&a, b"2", r));
    assert!(t.ok("delete", c.delete(&b).await), "{t}: delete returned false");
    expected.push(Shape::delete(&b));
    let created = match t.ok("create", c.create(&k, b"c", None).await) {
        Ok(kv) => kv,
        Err(existing) => panic!("{t}: create found {existing:?}"),
    };
    expected.push(Shape::put(&k, b"c", created.mod_revision));
    let swapped = match t.ok("compare_and_swap", c.compare_and_swap(&a, Expect::Value(b"2".to_vec()), b"3", None).await) {
        Ok(kv) => kv,
        Err(current) => panic!("{t}: compare_and_swap failed against {current:?}"),
    };
    expected.push(Shape::put(&a, b"3", swapped.mod_revision));
    assert!(
        t.ok("compare_and_delete", c.compare_and_delete(&k, created.mod_revision).await),
        "{t}: compare_and_delete returned false"
    );
    expected.push(Shape::delete(&k));
    let r = t.ok("put", c.put(&b, b"2", None).await);
    expected.push(Shape::put(&b, b"2", r));
    // Deletes "a", "b" and "before", in one revision.
    assert_eq!(t.ok("delete_prefix", c.delete_prefix(&t.prefix).await), 3, "{t}: delete_prefix count");
    let batch_start = expected.len();
    expected.push(Shape::delete(&a));
    expected.push(Shape::delete(&b));
    expected.push(Shape::delete(&t.key("before")));

    let events = t.expect_events(&mut w, &expected).await;
    let batch = &events[batch_start..];
    assert!(
        batch.iter().all(|e| e.revision() == batch[0].revision()),
        "{t}: delete_prefix's deletions have different revisions: {batch:?}"
    );
    assert!(
        events[..batch_start].windows(2).all(|p| p[0].revision() < p[1].revision()),
        "{t}: separate writes share a revision: {events:?}"
    );
    t.expect_nothing_more(&mut [&mut w]).await;
    t.cleanup().await;
}

/// A reader that drops its watch now and then and watches again from the
/// last revision it saw + 1, while a writer keeps writing, sees every
/// change exactly once, in order.
pub async fn watch_resumes_without_missing(c: &dyn Coordinator) {
    let t = Check::new(c, "watch_resumes_without_missing");
    const WRITES: usize = 60;
    let (_, start) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);

    let writer = async {
        let mut written = Vec::with_capacity(WRITES);
        for i in 0..WRITES {
            let key = t.key(&format!("k{}", i % 7));
            let value = i.to_string().into_bytes();
            let r = t.ok("put", c.put(&key, &value, None).await);
            written.push(Shape::put(&key, &value, r));
            if i % 4 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        written
    };
    let reader = async {
        let mut seen: Vec<Event> = Vec::with_capacity(WRITES);
        let mut from = start + 1;
        let mut watches = 0;
        while seen.len() < WRITES {
            let mut w = t.ok("watch", c.watch(&t.prefix, from).await);
            watches += 1;
            // Read a few (1, 2, ... 9) events, then drop the watch.
            for _ in 0..(watches % 9 + 1) {
                if seen.len() == WRITES {
                    break;
                }
                let event = t.next_event(&mut w, EVENT_TIMEOUT).await;
                from = event.revision() + 1;
                seen.push(event);
            }
        }
        (seen, watches)
    };
    let (written, (seen, watches)) = futures::join!(writer, reader);
    assert!(watches > 5, "{t}: the reader re-watched only {watches} times");
    assert_eq!(seen.len(), written.len(), "{t}: event count");
    for (i, (event, shape)) in seen.iter().zip(&written).enumerate() {
        assert!(shape.matches(event), "{t}: event {i} is {event:?}, expected {shape:?} (all seen: {seen:?})");
    }
    t.cleanup().await;
}

/// A watch sees only keys under its prefix (a plain string prefix:
/// `…/a/` does not match `…/ab/`), both when replaying and live.
pub async fn watch_scoped_to_prefix(c: &dyn Coordinator) {
    let t = Check::new(c, "watch_scoped_to_prefix");
    let inside = t.key("a/");
    let (_, start) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);
    let mut live = t.ok("watch", c.watch(&inside, 0).await);

    let mut expected = Vec::new();
    for (name, value) in [("a/1", "x"), ("ab/1", "no"), ("a", "no"), ("b/a/1", "no"), ("a/2", "y"), ("a/1", "z")] {
        let key = t.key(name);
        let r = t.ok("put", c.put(&key, value.as_bytes(), None).await);
        if name.starts_with("a/") {
            expected.push(Shape::put(&key, value.as_bytes(), r));
        }
    }
    for name in ["ab/1", "a/2"] {
        assert!(t.ok("delete", c.delete(&t.key(name)).await), "{t}: delete returned false");
        if name.starts_with("a/") {
            expected.push(Shape::delete(&t.key(name)));
        }
    }
    t.expect_events(&mut live, &expected).await;

    let mut replayed = t.ok("watch", c.watch(&inside, start + 1).await);
    t.expect_events(&mut replayed, &expected).await;

    // Nothing else arrives: a write outside, then one inside, which must
    // be the next event on both watches.
    t.ok("put", c.put(&t.key("ab/2"), b"no", None).await);
    let marker = t.key("a/marker");
    let r = t.ok("put", c.put(&marker, b"m", None).await);
    for w in [&mut live, &mut replayed] {
        t.expect_events(w, &[Shape::put(&marker, b"m", r)]).await;
    }
    t.cleanup().await;
}

/// A lease TTL of zero is refused with [`CoordError::Invalid`].
pub async fn invalid_ttl_is_refused(c: &dyn Coordinator) {
    let t = Check::new(c, "invalid_ttl_is_refused");
    match c.grant(Duration::ZERO).await {
        Err(CoordError::Invalid(_)) => {}
        other => panic!("{t}: grant(0) returned {other:?}, expected Invalid"),
    }
    t.cleanup().await;
}

/// A revoked lease is gone: `keep_alive` and every write with it
/// (`put`, a `create` or `compare_and_swap` that would write) fail with
/// [`CoordError::LeaseNotFound`] and write nothing; revoking it again is
/// not an error.
pub async fn gone_lease_is_an_error(c: &dyn Coordinator, ttl: Duration) {
    let t = Check::new(c, "gone_lease_is_an_error");
    let lease = t.ok("grant", c.grant(ttl * 20).await);
    t.ok("revoke", c.revoke(lease).await);
    let not_found = |what: &str, result: CoordResult<()>| match result {
        Err(CoordError::LeaseNotFound(id)) if id == lease => {}
        other => panic!("{t}: {what} with the revoked lease {lease} returned {other:?}, expected LeaseNotFound({lease})"),
    };
    not_found("keep_alive", c.keep_alive(lease).await);
    let key = t.key("k");
    not_found("put", c.put(&key, b"v", Some(lease)).await.map(drop));
    not_found("create", c.create(&key, b"v", Some(lease)).await.map(drop));
    not_found("compare_and_swap", c.compare_and_swap(&key, Expect::Absent, b"v", Some(lease)).await.map(drop));
    let (kvs, _) = t.ok("get_prefix", c.get_prefix(&t.prefix).await);
    assert!(kvs.is_empty(), "{t}: writes with a revoked lease left {kvs:?}");
    t.ok("revoke (again)", c.revoke(lease).await);
    t.cleanup().await;
}

/// Revoking a lease deletes exactly its keys, in one revision (one
/// `Delete` event per key, as etcd does), and a key that a later put moved
/// off the lease survives.
pub async fn lease_keys_vanish_on_revoke(c: &dyn Coordinator, ttl: Duration) {
    let t = Check::new(c, "lease_keys_vanish_on_revoke");
    // Long enough not to expire before the revoke.
    let lease = t.ok("grant", c.grant(ttl * 20).await);
    let (k1, k2, moved, free) = (t.key("k1"), t.key("k2"), t.key("moved"), t.key("free"));
    for key in [&k2, &k1, &moved] {
        t.ok("put", c.put(key, b"v", Some(lease)).await);
    }
    t.ok("put", c.put(&free, b"v", None).await);
    let r = t.ok("put", c.put(&moved, b"v2", None).await);
    let kv = t.ok("get", c.get(&k1).await).unwrap_or_else(|| panic!("{t}: {k1} missing"));
    assert_eq!(kv.lease, Some(lease), "{t}: a key put with a lease does not report it");
    let kv = t.ok("get", c.get(&moved).await).unwrap_or_else(|| panic!("{t}: {moved} missing"));
    assert_eq!(kv.lease, None, "{t}: a put without a lease left the key on its old lease");

    let mut w = t.ok("watch", c.watch(&t.prefix, r + 1).await);
    t.ok("revoke", c.revoke(lease).await);
    let events = t.expect_events_unordered(&mut w, &[Shape::delete(&k1), Shape::delete(&k2)]).await;
    assert_eq!(
        events[0].revision(),
        events[1].revision(),
        "{t}: one revoke deleted its keys in different revisions: {events:?}"
    );
    for key in [&k1, &k2] {
        assert_eq!(t.ok("get", c.get(key).await), None, "{t}: {key} survived its lease's revoke");
    }
    for key in [&moved, &free] {
        assert!(t.ok("get", c.get(key).await).is_some(), "{t}: {key}, not on the lease, vanished with it");
    }
    t.expect_nothing_more(&mut [&mut w]).await;
    t.cleanup().await;
}

/// A lease that is not kept alive expires on its own, no sooner than its
/// TTL: its keys are deleted (in one revision; seen through a watch, with
/// nobody else calling the coordinator), and the lease is gone.
pub async fn lease_expires_without_keepalive(c: &dyn Coordinator, ttl: Duration) {
    let t = Check::new(c, "lease_expires_without_keepalive");
    let (k1, k2, free) = (t.key("k1"), t.key("k2"), t.key("free"));
    let granted_at = Instant::now();
    let lease = t.ok("grant", c.grant(ttl).await);
    t.ok("put", c.put(&k1, b"v", Some(lease)).await);
    t.ok("put", c.put(&free, b"v", None).await);
    let r = t.ok("put", c.put(&k2, b"v", Some(lease)).await);
    let mut w = t.ok("watch", c.watch(&t.prefix, r + 1).await);

    let patience = ttl * 3 + EVENT_TIMEOUT;
    let first = t.next_event(&mut w, patience).await;
    let expired_after = granted_at.elapsed();
    let second = t.next_event(&mut w, EVENT_TIMEOUT).await;
    let events = [first, second];
    let mut deleted: Vec<&str> = events.iter().map(Event::key).collect();
    deleted.sort_unstable();
    assert!(
        events.iter().all(|e| matches!(e, Event::Delete { .. })) && deleted == [k1.as_str(), k2.as_str()],
        "{t}: expected the deletion of {k1} and {k2}, got {events:?}"
    );
    assert_eq!(events[0].revision(), events[1].revision(), "{t}: one expiry deleted its keys in different revisions");
    assert!(expired_after >= ttl, "{t}: a lease with a TTL of {ttl:?} expired after {expired_after:?}");

    for key in [&k1, &k2] {
        assert_eq!(t.ok("get", c.get(key).await), None, "{t}: {key} survived its lease's expiry");
    }
    assert!(t.ok("get", c.get(&free).await).is_some(), "{t}: {free}, not on the lease, vanished with it");
    match c.keep_alive(lease).await {
        Err(CoordError::LeaseNotFound(id)) if id == lease => {}
        other => panic!("{t}: keep_alive of an expired lease returned {other:?}"),
    }
    match c.put(&k1, b"v", Some(lease)).await {
        Err(CoordError::LeaseNotFound(id)) if id == lease => {}
        other => panic!("{t}: put with an expired lease returned {other:?}"),
    }
    t.cleanup().await;
}

/// A lease kept alive (every `ttl / 5`) outlives its TTL several times
/// over, with its key untouched.
pub async fn keepalive_keeps_lease(c: &dyn Coordinator, ttl: Duration) {
    let t = Check::new(c, "keepalive_keeps_lease");
    let key = t.key("k");
    let lease = t.ok("grant", c.grant(ttl).await);
    let r = t.ok("put", c.put(&key, b"v", Some(lease)).await);
    let mut w = t.ok("watch", c.watch(&t.prefix, r + 1).await);
    let start = Instant::now();
    while start.elapsed() < ttl * 3 {
        tokio::time::sleep(ttl / 5).await;
        t.ok("keep_alive", c.keep_alive(lease).await);
    }
    let kv = t.ok("get", c.get(&key).await).unwrap_or_else(|| panic!("{t}: the key of a lease kept alive for {:?} vanished", start.elapsed()));
    assert_eq!((kv.mod_revision, kv.lease), (r, Some(lease)), "{t}: the key of a lease kept alive changed");
    t.ok("revoke", c.revoke(lease).await);
    // The first event after all that must be the revoke's.
    t.expect_events(&mut w, &[Shape::delete(&key)]).await;
    t.cleanup().await;
}

// ---- helpers ---------------------------------------------------------

/// One check's context: its name and unique key prefix.
struct Check<'a> {
    c: &'a dyn Coordinator,
    name: &'static str,
    prefix: String,
}

impl std::fmt::Display for Check<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conformance check `{}` (under {})", self.name, self.prefix)
    }
}

impl<'a> Check<'a> {
    fn new(c: &'a dyn Coordinator, name: &'static str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let prefix = format!("/conformance/{name}/{:x}-{nanos:x}-{n}/", std::process::id());
        Check { c, name, prefix }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn ok<T>(&self, what: &str, result: CoordResult<T>) -> T {
        result.unwrap_or_else(|e| panic!("{self}: {what} failed: {e} ({e:?})"))
    }

    /// The watch's next event, within `timeout`.
    async fn next_event(&self, w: &mut Watch, timeout: Duration) -> Event {
        match tokio::time::timeout(timeout, w.next()).await {
            Err(_) => panic!("{self}: no event within {timeout:?}"),
            Ok(None) => panic!("{self}: the watch ended unexpectedly"),
            Ok(Some(Err(e))) => panic!("{self}: the watch failed: {e} ({e:?})"),
            Ok(Some(Ok(event))) => event,
        }
    }

    /// The next events are exactly `expected`, in order, in non-decreasing
    /// revisions.
    async fn expect_events(&self, w: &mut Watch, expected: &[Shape]) -> Vec<Event> {
        let mut seen = Vec::with_capacity(expected.len());
        for (i, shape) in expected.iter().enumerate() {
            let event = self.next_event(w, EVENT_TIMEOUT).await;
            assert!(
                shape.matches(&event),
                "{self}: event {i} is {event:?}, expected {shape:?} (seen before: {seen:?})"
            );
            if let Some(last) = seen.last().map(Event::revision) {
                assert!(event.revision() >= last, "{self}: event {i} ({event:?}) goes back in revision after {seen:?}");
            }
            seen.push(event);
        }
        seen
    }

    /// The next events are `expected` in some order (sorted by key in the
    /// result).
    async fn expect_events_unordered(&self, w: &mut Watch, expected: &[Shape]) -> Vec<Event> {
        let mut seen = Vec::with_capacity(expected.len());
        for _ in expected {
            seen.push(self.next_event(w, EVENT_TIMEOUT).await);
        }
        seen.sort_by(|a, b| a.key().cmp(b.key()));
        let mut wanted = expected.to_vec();
        wanted.sort_by(|a, b| a.key.cmp(&b.key));
        let matched = seen.iter().zip(&wanted).all(|(event, shape)| shape.matches(event));
        assert!(matched, "{self}: expected {wanted:?} in any order, got {seen:?}");
        let distinct: BTreeSet<&str> = seen.iter().map(Event::key).collect();
        assert_eq!(distinct.len(), seen.len(), "{self}: repeated events: {seen:?}");
        seen
    }

    /// Nothing more is queued on the watches (which must cover the check's
    /// whole prefix): a marker written now is the next event on each.
    async fn expect_nothing_more(&self, watches: &mut [&mut Watch]) {
        static MARKERS: AtomicU64 = AtomicU64::new(0);
        let marker = self.key(&format!("~marker{}", MARKERS.fetch_add(1, Ordering::Relaxed)));
        let r = self.ok("put (marker)", self.c.put(&marker, b"marker", None).await);
        for w in watches {
            let event = self.next_event(w, EVENT_TIMEOUT).await;
            assert!(
                Shape::put(&marker, b"marker", r).matches(&event),
                "{self}: an unexpected event {event:?} arrived before the marker written at revision {r}"
            );
        }
    }

    /// Deletes the check's keys.
    async fn cleanup(&self) {
        self.ok("delete_prefix (cleanup)", self.c.delete_prefix(&self.prefix).await);
    }
}

/// What an expected event looks like: a put of a value at a known
/// revision, or a delete at whatever revision.
#[derive(Clone, Debug)]
struct Shape {
    key: String,
    /// `Some((value, revision))` for a put.
    put: Option<(Vec<u8>, Revision)>,
}

impl Shape {
    fn put(key: &str, value: &[u8], revision: Revision) -> Self {
        Shape {
            key: key.to_owned(),
            put: Some((value.to_vec(), revision)),
        }
    }

    fn delete(key: &str) -> Self {
        Shape {
            key: key.to_owned(),
            put: None,
        }
    }

    fn matches(&self, event: &Event) -> bool {
        match (event, &self.put) {
            (Event::Put(kv), Some((value, revision))) => kv.key == self.key && kv.value == *value && kv.mod_revision == *revision,
            (Event::Delete { key, .. }, None) => *key == self.key,
            _ => false,
        }
    }
}
