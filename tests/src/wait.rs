//! Waiting for a job's progress in tests: through the coordinator's
//! watches, bounded, never by sleeping.

use std::time::Duration;

use taskgraph::coord::Coordinator;
use taskgraph::keys::Keys;

/// Job `job`'s epoch now (0 if it has none yet).
pub async fn epoch_of(coord: &dyn Coordinator, job: &str) -> u64 {
    match coord.get(&Keys::new(job).epoch()).await.unwrap() {
        Some(kv) => String::from_utf8_lossy(&kv.value).parse().unwrap_or(0),
        None => 0,
    }
}

/// Waits (through a watch; at most 60 s without a change) until job
/// `job`'s epoch is at least `at_least`; the epoch then.
pub async fn epoch_reaches(coord: &dyn Coordinator, job: &str, at_least: u64) -> u64 {
    let key = Keys::new(job).epoch();
    let mut watch = coord.watch(&key, 0).await.unwrap();
    loop {
        let e = epoch_of(coord, job).await;
        if e >= at_least {
            return e;
        }
        let next = tokio::time::timeout(Duration::from_secs(60), watch.next()).await;
        assert!(matches!(next, Ok(Some(Ok(_)))), "job {job} stopped advancing at epoch {e}: {next:?}");
    }
}

/// Waits (through a watch of `prefix`; at most `limit` in all) until
/// `done` holds for the keys under it.
pub async fn keys_until(
    coord: &dyn Coordinator,
    prefix: &str,
    limit: Duration,
    mut done: impl FnMut(&[taskgraph::coord::KeyValue]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    let (mut kvs, revision) = coord.get_prefix(prefix).await.unwrap();
    let mut watch = coord.watch(prefix, revision + 1).await.unwrap();
    while !done(&kvs) {
        let next = tokio::time::timeout_at(deadline, watch.next()).await;
        assert!(matches!(next, Ok(Some(Ok(_)))), "the keys under {prefix} never got there: {next:?}");
        kvs = coord.get_prefix(prefix).await.unwrap().0;
    }
}
