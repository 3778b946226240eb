//! The embedded coordination store: etcd's semantics in one process (see
//! [`Embedded`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{CoordError, CoordResult, Coordinator, Event, Expect, KeyValue, LeaseId, Revision, Watch};

/// The longest TTL a lease may have: etcd's `MaxLeaseTTL` (about 285 years).
const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The expiry thread's name (Linux shows the first 15 bytes).
const EXPIRY_THREAD_NAME: &str = "tg-coord-expiry";

/// An in-process coordination store with etcd's semantics: the default
/// coordinator for local runs and tests.
///
/// The store keeps everything in memory behind one [`std::sync::Mutex`]
/// and mirrors what etcd does wherever taskgraph can observe it:
///
/// * **Revisions.** The store starts at revision 1 with no keys, as a fresh
///   etcd does, so the first write gets revision 2. Every write that changes
///   something bumps the revision by exactly one: a put, a delete that
///   deleted a key, a `delete_prefix` that deleted at least one key (one
///   revision for all of them), a `create` that created, a successful
///   compare-and-swap or compare-and-delete, and a lease revocation or
///   expiry that deleted keys (one revision, one `Delete` event per key, in
///   key order). Writes that change nothing (deleting an absent key,
///   revoking a lease without keys, a failed transaction) and lease grants
///   and keep-alives do not bump it.
/// * **Keys** keep their `create_revision` across puts; `mod_revision` is
///   the revision of the last write. A put moves a key to the lease it
///   names (or detaches it, when it names none), as in etcd.
/// * **Leases** expire their TTL after the last grant or keep-alive,
///   measured with [`Instant`] (real time). A background thread sleeps
///   until the next deadline, so expiry happens even if nobody calls the
///   store; every operation also expires overdue leases before it runs, so
///   no operation can observe a lease after its deadline. A transaction
///   whose comparison fails does not look at its lease (etcd checks the
///   lease only on the branch it takes).
/// * **Watches** replay from a bounded history (the last
///   [`Embedded::DEFAULT_HISTORY_LIMIT`] events by default, always whole
///   revisions) and then receive live events. Events are sent to watchers
///   while the store lock is held, through unbounded channels, so every
///   watcher sees every matching change once, in revision order, even with
///   concurrent writers. Watching from a revision older than the history
///   kept yields [`CoordError::Compacted`] as the watch's only item.
///   Watching from `0` (or below) means "from now"; watching from a future
///   revision is allowed, as in etcd, and delivers changes from that
///   revision on. [`Coordinator::compact`] drops the history before a
///   revision at once (and its memory), as etcd's compaction does.
///
/// Differences from etcd: TTLs are not rounded to whole seconds and have no
/// minimum (any non-zero [`Duration`] works), expiry is exact rather than
/// checked every 500 ms, and lease ids are small consecutive numbers.
///
/// Cloning is cheap and every clone is the same store. When the last clone
/// is dropped, the store's expiry thread stops (the drop waits for it) and
/// every open [`Watch`] ends.
#[derive(Clone)]
pub struct Embedded {
    handle: Arc<Handle>,
}

/// Owned by the clones of one [`Embedded`]: dropping the last clone stops
/// the expiry thread.
struct Handle {
    shared: Arc<Shared>,
    expiry: Option<JoinHandle<()>>,
}

/// What the clones and the expiry thread share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the expiry thread: a new earliest deadline, close, or drop.
    wake: Condvar,
}

impl Shared {
    /// Locks the state. Nothing panics while holding the lock, so poisoning
    /// means a bug in this module.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("coordination store lock poisoned by an earlier panic")
    }
}

impl Embedded {
    /// How many events the store keeps for watches to replay, unless told
    /// otherwise ([`with_history_limit`](Self::with_history_limit)).
    pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

    /// An empty store at revision 1, keeping the last
    /// [`DEFAULT_HISTORY_LIMIT`](Self::DEFAULT_HISTORY_LIMIT) events.
    pub fn new() -> Self {
        Self::with_history_limit(Self::DEFAULT_HISTORY_LIMIT)
    }

    /// An empty store at revision 1 whose watch history keeps about `limit`
    /// events: the oldest revisions are dropped while more than `limit`
    /// events are kept, but the latest revision is always kept whole (a
    /// lease expiry can delete many keys in one revision).
    pub fn with_history_limit(limit: usize) -> Self {
        Self::build(limit, true)
    }

    /// A store, with or without its expiry thread (without: only for
    /// tests of the expiry that every operation does first).
    fn build(limit: usize, expiry_thread: bool) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(limit)),
            wake: Condvar::new(),
        });
        let expiry = if expiry_thread {
            let for_thread = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(EXPIRY_THREAD_NAME.to_owned())
                .spawn(move || run_expiry(for_thread));
            match spawned {
                Ok(thread) => Some(thread),
                Err(error) => {
                    // Still correct, only lazier: every operation expires
                    // overdue leases before it runs.
                    tracing::warn!(%error, "cannot start the coordination store's lease expiry thread; leases expire only when the store is used");
                    None
                }
            }
        } else {
            None
        };
        Embedded {
            handle: Arc::new(Handle { shared, expiry }),
        }
    }

    /// Drops the watch history before `revision` (like etcd's compaction):
    /// watches from an older revision then fail with
    /// [`CoordError::Compacted`]. `revision` may be at most the current
    /// revision ([`CoordError::Invalid`] otherwise), and compacting below
    /// what has already been dropped is [`CoordError::Compacted`];
    /// compacting at exactly the oldest kept revision does nothing.
    ///
    /// [`Coordinator::compact`] (through the trait) is the lenient form:
    /// compacting at or below the oldest kept revision is `Ok`. Both free
    /// the dropped events' memory.
    pub fn compact(&self, revision: Revision) -> CoordResult<()> {
        self.begin()?.compact(revision)
    }

    /// Shuts the store down: every later call (on any clone) returns
    /// [`CoordError::Closed`], every open [`Watch`] ends (`None`), and the
    /// keys, leases and history are dropped. Closing again does nothing.
    pub fn close(&self) {
        let mut state = self.shared().lock();
        state.close();
        drop(state);
        self.shared().wake.notify_all();
    }

    /// How many events the watch history holds, and how many it has room
    /// for without allocating (test hook; not a stable API).
    #[doc(hidden)]
    pub fn history_size(&self) -> (usize, usize) {
        let state = self.shared().lock();
        (state.history.len(), state.history.capacity())
    }

    /// How many watches are registered (test hook; not a stable API).
    #[doc(hidden)]
    pub fn watcher_count(&self) -> usize {
        let mut state = self.shared().lock();
        state.watchers.retain(|w| !w.events.is_closed());
        state.watchers.len()
    }

    /// A function telling whether the store's memory is still in use by
    /// anything: a clone or the expiry thread (test hook; not a stable
    /// API). It returns `false` once the last clone is dropped, because
    /// that drop waits for the expiry thread to end.
    #[doc(hidden)]
    pub fn liveness_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let weak: Weak<Shared> = Arc::downgrade(self.shared());
        move || weak.strong_count() > 0
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Locks the store for one operation: `Closed` if it is closed, else
    /// the state with every overdue lease expired.
    fn begin(&self) -> CoordResult<MutexGuard<'_, State>> {
        let mut state = self.shared().lock();
        if state.closed {
            return Err(CoordError::Closed);
        }
        state.expire(Instant::now());
        Ok(state)
    }
}

impl Default for Embedded {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Embedded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Embedded");
        match self.shared().state.try_lock() {
            Ok(state) => s
                .field("revision", &state.revision)
                .field("keys", &state.keys.len())
                .field("leases", &state.leases.len())
                .field("watchers", &state.watchers.len())
                .field("oldest_kept", &state.oldest)
                .field("closed", &state.closed)
                .finish(),
            Err(_) => s.finish_non_exhaustive(),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Runs once, when the last `Embedded` clone goes. Never panic here:
        // a poisoned lock is still good enough to set a flag.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopped = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.expiry.take() {
            // The thread holds no `Handle`, so this is never a self-join;
            // it exits as soon as it sees `stopped`.
            let _ = thread.join();
        }
    }
}

/// The expiry thread: expires leases at their deadlines until the store is
/// closed or its last clone dropped.
fn run_expiry(shared: Arc<Shared>) {
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if state.stopped || state.closed {
            return;
        }
        let now = Instant::now();
        state.expire(now);
        state = match state.next_deadline() {
            None => shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                shared
                    .wake
                    .wait_timeout(state, deadline.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

/// A granted lease.
#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    /// The keys attached to it, in key order (the order etcd deletes them).
    keys: BTreeSet<String>,
}

/// A registered watch.
#[derive(Debug)]
struct Watcher {
    prefix: String,
    /// Only events at or after this revision (a watch may start in the
    /// future).
    from: Revision,
    events: mpsc::UnboundedSender<CoordResult<Event>>,
}

/// The store proper; every method runs under the lock.
#[derive(Debug)]
struct State {
    /// The current revision: that of the last write (1 before any).
    revision: Revision,
    keys: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    /// Every lease's deadline, earliest first.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    next_lease: LeaseId,
    /// Every event of the revisions `oldest..=revision`, in order.
    history: VecDeque<Event>,
    history_limit: usize,
    /// The oldest revision a watch may start from.
    oldest: Revision,
    watchers: Vec<Watcher>,
    /// `close()` was called.
    closed: bool,
    /// The last clone was dropped: the expiry thread must exit.
    stopped: bool,
}

impl State {
    fn new(history_limit: usize) -> Self {
        State {
            revision: 1,
            keys: BTreeMap::new(),
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_lease: 1,
            history: VecDeque::new(),
            history_limit,
            oldest: 1,
            watchers: Vec::new(),
            closed: false,
            stopped: false,
        }
    }

    // ---- leases ------------------------------------------------------

    /// Grants a lease; also returns whether its deadline is now the
    /// earliest (so the expiry thread must be woken).
    fn grant(&mut self, ttl: Duration) -> CoordResult<(LeaseId, bool)> {
        if ttl.is_zero() {
            return Err(CoordError::Invalid("a lease's TTL must be greater than zero".into()));
        }
        if ttl > MAX_TTL {
            return Err(CoordError::Invalid(format!(
                "a lease's TTL may be at most {} s, not {ttl:?}",
                MAX_TTL.as_secs()
            )));
        }
        let deadline = deadline_after(Instant::now(), ttl)?;
        let id = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.insert((deadline, id));
        let earliest = self.deadlines.first() == Some(&(deadline, id));
        Ok((id, earliest))
    }

    fn keep_alive(&mut self, id: LeaseId) -> CoordResult<()> {
        let lease = self.leases.get_mut(&id).ok_or(CoordError::LeaseNotFound(id))?;
        // A keep-alive only ever moves a deadline later, so the expiry
        // thread (sleeping until the earliest one) need not be woken.
        let deadline = deadline_after(Instant::now(), lease.ttl)?;
        let old = std::mem::replace(&mut lease.deadline, deadline);
        self.deadlines.remove(&(old, id));
        self.deadlines.insert((deadline, id));
        Ok(())
    }

    /// `LeaseNotFound` unless `lease` is none or alive.
    fn check_lease(&self, lease: Option<LeaseId>) -> CoordResult<()> {
        match lease {
            Some(id) if !self.leases.contains_key(&id) => Err(CoordError::LeaseNotFound(id)),
            _ => Ok(()),
        }
    }

    /// Ends a lease (if it still exists), deleting its keys in one
    /// revision.
    fn revoke(&mut self, id: LeaseId) {
        let Some(lease) = self.leases.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(lease.deadline, id));
        let revision = self.revision + 1;
        let events: Vec<Event> = lease
            .keys
            .iter()
            .filter_map(|key| self.remove_key(revision, key))
            .collect();
        self.commit(revision, events);
    }

    /// Revokes every lease whose deadline is at or before `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.revoke(id);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    // ---- keys --------------------------------------------------------

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.keys.get(key).cloned()
    }

    /// The keys under `prefix`, in key order.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    fn get_prefix(&self, prefix: &str) -> (Vec<KeyValue>, Revision) {
        (self.under(prefix).cloned().collect(), self.revision)
    }

    fn put(&mut self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Revision> {
        self.check_lease(lease)?;
        let revision = self.revision + 1;
        let kv = self.write_key(revision, key, value, lease);
        self.commit(revision, vec![Event::Put(kv)]);
        Ok(revision)
    }

    fn delete(&mut self, key: &str) -> bool {
        let revision = self.revision + 1;
        match self.remove_key(revision, key) {
            Some(event) => {
                self.commit(revision, vec![event]);
                true
            }
            None => false,
        }
    }

    fn delete_prefix(&mut self, prefix: &str) -> usize {
        let keys: Vec<String> = self.under(prefix).map(|kv| kv.key.clone()).collect();
        let revision = self.revision + 1;
        let events: Vec<Event> = keys.iter().filter_map(|key| self.remove_key(revision, key)).collect();
        let deleted = events.len();
        self.commit(revision, events);
        deleted
    }

    fn create(&mut self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Result<KeyValue, KeyValue>> {
        if let Some(existing) = self.keys.get(key) {
            return Ok(Err(existing.clone()));
        }
        self.check_lease(lease)?;
        let revision = self.revision + 1;
        let kv = self.write_key(revision, key, value, lease);
        self.commit(revision, vec![Event::Put(kv.clone())]);
        Ok(Ok(kv))
    }

    fn compare_and_swap(
        &mut self,
        key: &str,
        expect: &Expect,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> CoordResult<Result<KeyValue, Option<KeyValue>>> {
        let current = self.keys.get(key);
        let matches = expected(expect, current);
        if !matches {
            return Ok(Err(current.cloned()));
        }
        self.check_lease(lease)?;
        let revision = self.revision + 1;
        let kv = self.write_key(revision, key, value, lease);
        self.commit(revision, vec![Event::Put(kv.clone())]);
        Ok(Ok(kv))
    }

    fn compare_and_swap_all(&mut self, key: &str, expect: &Expect, value: &[u8], puts: &[(String, Vec<u8>)]) -> bool {
        let current = self.keys.get(key);
        let matches = expected(expect, current);
        if !matches {
            return false;
        }
        // One revision for every write, as an etcd transaction.
        let revision = self.revision + 1;
        let mut events: Vec<Event> = puts.iter().map(|(k, v)| Event::Put(self.write_key(revision, k, v, None))).collect();
        events.push(Event::Put(self.write_key(revision, key, value, None)));
        self.commit(revision, events);
        true
    }

    fn compare_and_delete(&mut self, key: &str, mod_revision: Revision) -> bool {
        let held = self.keys.get(key).is_some_and(|kv| kv.mod_revision == mod_revision);
        held && self.delete(key)
    }

    /// Writes `key` at `revision` (not yet committed), moving it to `lease`.
    fn write_key(&mut self, revision: Revision, key: &str, value: &[u8], lease: Option<LeaseId>) -> KeyValue {
        let create_revision = match self.keys.get(key) {
            Some(old) => {
                if old.lease != lease {
                    if let Some(lease) = old.lease.and_then(|id| self.leases.get_mut(&id)) {
                        lease.keys.remove(key);
                    }
                }
                old.create_revision
            }
            None => revision,
        };
        if let Some(lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.insert(key.to_owned());
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
            lease,
        };
        self.keys.insert(key.to_owned(), kv.clone());
        kv
    }

    /// Deletes `key` at `revision` (not yet committed), if it exists.
    fn remove_key(&mut self, revision: Revision, key: &str) -> Option<Event> {
        let kv = self.keys.remove(key)?;
        if let Some(lease) = kv.lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
        Some(Event::Delete { key: kv.key, revision })
    }

    /// Makes `revision` current if it changed anything: records its events
    /// and sends them to the watchers (under the lock, so in order).
    fn commit(&mut self, revision: Revision, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        debug_assert_eq!(revision, self.revision + 1);
        self.revision = revision;
        self.watchers.retain(|w| !w.events.is_closed());
        for watcher in &self.watchers {
            if revision < watcher.from {
                continue;
            }
            for event in events.iter().filter(|e| e.key().starts_with(&watcher.prefix)) {
                // A receiver dropped since the `retain` is removed next time.
                let _ = watcher.events.send(Ok(event.clone()));
            }
        }
        self.history.extend(events);
        self.trim();
    }

    // ---- history and watches -----------------------------------------

    /// Drops the oldest revisions while the history is over its limit,
    /// keeping the latest revision whole.
    fn trim(&mut self) {
        while self.history.len() > self.history_limit {
            let Some(front) = self.history.front().map(Event::revision) else {
                break;
            };
            if front == self.revision {
                break;
            }
            self.drop_history_before(front + 1);
        }
    }

    fn drop_history_before(&mut self, revision: Revision) {
        while self.history.front().is_some_and(|e| e.revision() < revision) {
            self.history.pop_front();
        }
        self.oldest = self.oldest.max(revision);
        // Give the memory back too once most of it is unused (a compaction
        // can drop nearly everything at once); trimming to the limit drops
        // a revision at a time and stays near the capacity it needs.
        if self.history.capacity() > 1024 && self.history.capacity() > 4 * self.history.len() {
            self.history.shrink_to(2 * self.history.len());
        }
    }

    fn compact(&mut self, revision: Revision) -> CoordResult<()> {
        if revision > self.revision {
            return Err(CoordError::Invalid(format!(
                "cannot compact at revision {revision}: it is in the future (the current revision is {})",
                self.revision
            )));
        }
        if revision < self.oldest {
            return Err(CoordError::Compacted {
                requested: revision,
                oldest: self.oldest,
            });
        }
        self.drop_history_before(revision);
        Ok(())
    }

    /// [`Coordinator::compact`]: like [`compact`](Self::compact), but a
    /// revision at or below the oldest kept one does nothing.
    fn compact_at_least(&mut self, revision: Revision) -> CoordResult<()> {
        // (`oldest` is never after the current revision.)
        if revision <= self.oldest {
            return Ok(());
        }
        self.compact(revision)
    }

    fn watch(&mut self, prefix: &str, from: Revision) -> Watch {
        let (tx, rx) = mpsc::unbounded_channel();
        let start = if from <= 0 { self.revision + 1 } else { from };
        if start < self.oldest {
            // The watch's only item; dropping `tx` then ends it.
            let _ = tx.send(Err(CoordError::Compacted {
                requested: from,
                oldest: self.oldest,
            }));
            return Watch::new(rx);
        }
        // The history holds every event of `oldest..=revision`, so this
        // replays everything from `start` on; live events follow, sent by
        // `commit` under the same lock, so nothing is missed or repeated.
        let first = self.history.partition_point(|e| e.revision() < start);
        for event in self.history.range(first..).filter(|e| e.key().starts_with(prefix)) {
            let _ = tx.send(Ok(event.clone()));
        }
        self.watchers.retain(|w| !w.events.is_closed());
        self.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            from: start,
            events: tx,
        });
        Watch::new(rx)
    }

    fn close(&mut self) {
        self.closed = true;
        // Dropping the senders ends every watch.
        self.watchers.clear();
        self.keys.clear();
        self.leases.clear();
        self.deadlines.clear();
        self.history.clear();
    }
}

/// `now + ttl`, or `Invalid` if that is past what [`Instant`] can hold.
fn deadline_after(now: Instant, ttl: Duration) -> CoordResult<Instant> {
    now.checked_add(ttl)
        .ok_or_else(|| CoordError::Invalid(format!("a lease's TTL of {ttl:?} is too long")))
}

/// Whether `current` (a key's state) is what `expect` describes.
fn expected(expect: &Expect, current: Option<&KeyValue>) -> bool {
    match (expect, current) {
        (Expect::Absent, None) => true,
        (Expect::Value(v), Some(kv)) => kv.value == *v,
        (Expect::ModRevision(r), Some(kv)) => kv.mod_revision == *r,
        _ => false,
    }
}

#[async_trait]
impl Coordinator for Embedded {
    async fn grant(&self, ttl: Duration) -> CoordResult<LeaseId> {
        let (id, earliest) = self.begin()?.grant(ttl)?;
        if earliest {
            self.shared().wake.notify_all();
        }
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> CoordResult<()> {
        self.begin()?.keep_alive(lease)
    }

    async fn revoke(&self, lease: LeaseId) -> CoordResult<()> {
        self.begin()?.revoke(lease);
        Ok(())
    }

    async fn get(&self, key: &str) -> CoordResult<Option<KeyValue>> {
        Ok(self.begin()?.get(key))
    }

    async fn get_prefix(&self, prefix: &str) -> CoordResult<(Vec<KeyValue>, Revision)> {
        Ok(self.begin()?.get_prefix(prefix))
    }

    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Revision> {
        self.begin()?.put(key, value, lease)
    }

    async fn delete(&self, key: &str) -> CoordResult<bool> {
        Ok(self.begin()?.delete(key))
    }

    async fn delete_prefix(&self, prefix: &str) -> CoordResult<usize> {
        Ok(self.begin()?.delete_prefix(prefix))
    }

    async fn create(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Result<KeyValue, KeyValue>> {
        self.begin()?.create(key, value, lease)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> CoordResult<Result<KeyValue, Option<KeyValue>>> {
        self.begin()?.compare_and_swap(key, &expect, value, lease)
    }

    async fn compare_and_swap_all(&self, key: &str, expect: Expect, value: &[u8], puts: &[(String, Vec<u8>)]) -> CoordResult<bool> {
        Ok(self.begin()?.compare_and_swap_all(key, &expect, value, puts))
    }

    async fn compare_and_delete(&self, key: &str, mod_revision: Revision) -> CoordResult<bool> {
        Ok(self.begin()?.compare_and_delete(key, mod_revision))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> CoordResult<Watch> {
        Ok(self.begin()?.watch(prefix, from))
    }

    async fn compact(&self, revision: Revision) -> CoordResult<()> {
        self.begin()?.compact_at_least(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation expires overdue leases first, even with no expiry
    /// thread to do it.
    #[tokio::test]
    async fn operations_expire_overdue_leases_first() {
        let store = Embedded::build(Embedded::DEFAULT_HISTORY_LIMIT, false);
        let mut w = store.watch("", 0).await.unwrap();
        let lease = store.grant(Duration::from_millis(10)).await.unwrap();
        store.put("a", b"v", Some(lease)).await.unwrap();
        store.put("b", b"v", Some(lease)).await.unwrap();
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(store.get("a").await.unwrap(), None);
        assert_eq!(store.keep_alive(lease).await, Err(CoordError::LeaseNotFound(lease)));
        let events: Vec<_> = std::iter::from_fn(|| w_try_next(&mut w)).collect();
        assert_eq!(
            events,
            [
                Event::Put(store_kv("a", 2, lease)),
                Event::Put(store_kv("b", 3, lease)),
                Event::Delete { key: "a".into(), revision: 4 },
                Event::Delete { key: "b".into(), revision: 4 },
            ]
        );
    }

    fn store_kv(key: &str, revision: Revision, lease: LeaseId) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: b"v".to_vec(),
            create_revision: revision,
            mod_revision: revision,
            lease: Some(lease),
        }
    }

    /// The next queued watch event, if any (without waiting).
    fn w_try_next(w: &mut Watch) -> Option<Event> {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut next = std::pin::pin!(w.next());
        match next.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Some(Ok(event))) => Some(event),
            _ => None,
        }
    }

    /// Random operations keep the state's invariants.
    #[test]
    fn random_operations_keep_the_invariants() {
        let mut state = State::new(50);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let start = Instant::now();
        let mut leases = Vec::new();
        for step in 0..20_000 {
            let key = format!("k{}", next(12));
            // Mostly one of the last few leases (likely alive), sometimes
            // none or one that never existed.
            let lease = match next(4) {
                0 => None,
                1 => Some(-7),
                _ => leases.iter().rev().nth(next(4) as usize).copied(),
            };
            let before = state.revision;
            let op = next(11);
            match op {
                0 => {
                    let ttl = Duration::from_millis(next(5) + 1);
                    leases.push(state.grant(ttl).unwrap().0);
                }
                1 => {
                    let _ = state.keep_alive(lease.unwrap_or(-1));
                }
                2 => {
                    if let Some(id) = lease {
                        state.revoke(id);
                    }
                }
                3 => {
                    state.delete(&key);
                }
                4 => {
                    state.delete_prefix(&key[..next(3) as usize]);
                }
                5 => {
                    let _ = state.create(&key, b"c", lease);
                }
                6 => {
                    let expect = match next(3) {
                        0 => Expect::Absent,
                        1 => Expect::Value(b"p".to_vec()),
                        _ => Expect::ModRevision(state.revision - next(3) as i64),
                    };
                    let _ = state.compare_and_swap(&key, &expect, b"s", lease);
                }
                7 => {
                    state.compare_and_delete(&key, state.revision - next(3) as i64);
                }
                8 => {
                    // Simulated time: expire as if `step` µs had passed.
                    state.expire(start + Duration::from_micros(step * 50));
                }
                _ => {
                    let _ = state.put(&key, b"p", lease);
                }
            }
            // (Expiring several leases is one revision per lease.)
            assert!(op == 8 || state.revision <= before + 1, "step {step}: one write, one revision");
            check_invariants(&state, step);
        }
    }

    fn check_invariants(state: &State, step: u64) {
        // Keys and leases agree.
        for (key, kv) in &state.keys {
            assert_eq!(&kv.key, key);
            assert!(kv.create_revision <= kv.mod_revision && kv.mod_revision <= state.revision);
            if let Some(id) = kv.lease {
                let lease = state.leases.get(&id).unwrap_or_else(|| panic!("step {step}: {key} on a gone lease"));
                assert!(lease.keys.contains(key), "step {step}: lease {id} does not list {key}");
            }
        }
        for (id, lease) in &state.leases {
            for key in &lease.keys {
                assert_eq!(state.keys.get(key).and_then(|kv| kv.lease), Some(*id), "step {step}: lease {id} lists {key}");
            }
            assert!(state.deadlines.contains(&(lease.deadline, *id)));
        }
        assert_eq!(state.deadlines.len(), state.leases.len(), "step {step}: stray deadlines");
        // The history holds exactly the revisions oldest..=revision.
        let mut revisions: Vec<Revision> = state.history.iter().map(Event::revision).collect();
        assert!(revisions.windows(2).all(|p| p[0] <= p[1]));
        revisions.dedup();
        let expected: Vec<Revision> = (state.oldest.max(2)..=state.revision).collect();
        assert_eq!(revisions, expected, "step {step}: history revisions");
        assert!(state.history.len() <= state.history_limit || revisions.len() == 1);
    }
}
