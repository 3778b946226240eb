//! Coordination: the small, strongly consistent key-value store that
//! taskgraph's fault tolerance stands on (etcd in a cluster, the embedded
//! [`Embedded`] store in one process).
//!
//! The operations are etcd's, reduced to what taskgraph needs:
//!
//! * **leases** ([`grant`](Coordinator::grant),
//!   [`keep_alive`](Coordinator::keep_alive), [`revoke`](Coordinator::revoke)):
//!   a lease lives for its TTL after the last keep-alive; when it expires
//!   or is revoked, every key attached to it is deleted (that deletion is
//!   how the death of a node becomes visible);
//! * **keys** ([`get`](Coordinator::get), [`get_prefix`](Coordinator::get_prefix),
//!   [`put`](Coordinator::put), [`delete`](Coordinator::delete)), each
//!   write bumping the store's single **revision** counter;
//! * **transactions**: [`create`](Coordinator::create) (create-if-absent,
//!   the basis of elections) and [`compare_and_swap`](Coordinator::compare_and_swap)
//!   (the global epoch);
//! * **watches** ([`watch`](Coordinator::watch)) of a key prefix from a
//!   given revision: every change at or after that revision, in revision
//!   order, none missed, even across reconnects; a revision that has been
//!   compacted away is a [`CoordError::Compacted`] error, after which the
//!   caller re-reads the prefix and watches from the revision it read at;
//! * **compaction** ([`compact`](Coordinator::compact)): dropping the
//!   history before a revision, so that the store does not grow with every
//!   write forever; [`Compactor`] is the policy (keep at least one period of
//!   history, as Kubernetes' API server does with etcd).
//!
//! Every implementation passes the same conformance suite
//! (`taskgraph::coord::conformance`).

use std::time::Duration;

use async_trait::async_trait;

mod compactor;
mod embedded;
pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd;

pub use compactor::Compactor;
pub use embedded::Embedded;
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdOptions};

/// A lease's id.
pub type LeaseId = i64;

/// A revision of the store: every write increments it.
pub type Revision = i64;

/// A key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created this key (since its last deletion). It
    /// grows with every creation, so it serves as a fencing token: the
    /// newer of two holders of an election key has the larger one.
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key was created or written.
    Put(KeyValue),
    /// A key was deleted (explicitly, or by its lease's expiry).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
    },
}

impl Event {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// What [`Coordinator::compare_and_swap`] expects to find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key exists with exactly this value.
    Value(Vec<u8>),
    /// The key exists and was last written at this revision.
    ModRevision(Revision),
}

/// What can go wrong talking to a coordinator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The lease expired, was revoked, or never existed.
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A watch asked for history that is no longer kept.
    #[error("revision {requested} has been compacted (the oldest kept is {oldest}); re-read and watch again")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still available.
        oldest: Revision,
    },
    /// The coordinator cannot be reached (for now).
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    /// The coordinator was shut down.
    #[error("coordinator closed")]
    Closed,
    /// The request was refused as invalid (e.g. a TTL of zero).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// `Result<T, CoordError>`.
pub type CoordResult<T> = Result<T, CoordError>;

/// A stream of changes under a prefix; see [`Coordinator::watch`].
#[derive(Debug)]
pub struct Watch {
    events: tokio::sync::mpsc::UnboundedReceiver<CoordResult<Event>>,
}

impl Watch {
    /// A watch fed by `events` (for implementations).
    pub fn new(events: tokio::sync::mpsc::UnboundedReceiver<CoordResult<Event>>) -> Self {
        Watch { events }
    }

    /// The next change, or an error (after which the watch is over), or
    /// `None` when the coordinator is gone.
    pub async fn next(&mut self) -> Option<CoordResult<Event>> {
        self.events.recv().await
    }
}

/// The coordination operations taskgraph needs. All methods are safe to
/// call from any thread; every future is `Send`.
#[async_trait]
pub trait Coordinator: Send + Sync + std::fmt::Debug + 'static {
    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant(&self, ttl: Duration) -> CoordResult<LeaseId>;
    /// Renews a lease for its full TTL; `LeaseNotFound` if it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> CoordResult<()>;
    /// Ends a lease now, deleting its keys. Revoking a lease that is
    /// already gone is not an error.
    async fn revoke(&self, lease: LeaseId) -> CoordResult<()>;

    /// The key's current value.
    async fn get(&self, key: &str) -> CoordResult<Option<KeyValue>>;
    /// Every key under `prefix`, sorted by key, and the revision at which
    /// this snapshot was taken (watch from `revision + 1` to follow it).
    async fn get_prefix(&self, prefix: &str) -> CoordResult<(Vec<KeyValue>, Revision)>;
    /// Writes a key (attached to `lease`, if given); the new revision.
    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Revision>;
    /// Deletes a key; whether it existed.
    async fn delete(&self, key: &str) -> CoordResult<bool>;
    /// Deletes every key under `prefix`; how many there were.
    async fn delete_prefix(&self, prefix: &str) -> CoordResult<usize>;

    /// Creates `key` if it does not exist: `Ok(Ok(kv))` with the new
    /// key-value, or `Ok(Err(existing))`.
    async fn create(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Result<KeyValue, KeyValue>>;
    /// Writes `key` if its current state matches `expect`: `Ok(Ok(kv))`
    /// with the new key-value, or `Ok(Err(current))` (`None`: absent).
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> CoordResult<Result<KeyValue, Option<KeyValue>>>;
    /// Like [`compare_and_swap`](Self::compare_and_swap) (with no lease),
    /// and in the same revision also writes every `(key, value)` of
    /// `puts`: all of it or nothing. Whether it wrote. (A task records its
    /// epoch's results and advances the epoch in one step this way.)
    async fn compare_and_swap_all(&self, key: &str, expect: Expect, value: &[u8], puts: &[(String, Vec<u8>)]) -> CoordResult<bool>;

    /// Deletes `key` if it was last written at `mod_revision` (so that
    /// only the holder of an election key resigns it); whether it did.
    async fn compare_and_delete(&self, key: &str, mod_revision: Revision) -> CoordResult<bool>;

    /// Every change to keys under `prefix` with revision `>= from`, in
    /// revision order, then live changes as they happen.
    async fn watch(&self, prefix: &str, from: Revision) -> CoordResult<Watch>;

    /// Drops the store's history before `revision` (etcd's compaction):
    /// after it, a watch from an older revision gets
    /// [`CoordError::Compacted`] (its only item), while watches from
    /// `revision` on, and every key's current value, are unaffected. Watches
    /// already open keep going. Compacting to a revision at or below one
    /// already compacted is not an error (it does nothing), so several
    /// compactors, or a retried one, need no coordination; a `revision`
    /// after the current one is [`CoordError::Invalid`].
    ///
    /// A long job calls this as it goes ([`Compactor`] says when, and to
    /// what revision), or the store's history grows without bound (etcd:
    /// its database; the embedded store: up to its history limit).
    ///
    /// (The concrete types also have an inherent, stricter `compact`, which
    /// refuses a revision below the last compaction with `Compacted`:
    /// `store.compact(r)` on an [`Embedded`] or `Etcd` value calls that
    /// one; through `dyn Coordinator`, or as `Coordinator::compact(&store,
    /// r)`, this one.)
    ///
    /// The default implementation, for coordinators written before this
    /// method existed, compacts nothing and returns [`CoordError::Invalid`]
    /// ("not supported"), which tells a caller to stop trying.
    async fn compact(&self, revision: Revision) -> CoordResult<()> {
        Err(CoordError::Invalid(format!(
            "this coordinator cannot compact its history (asked to compact to revision {revision})"
        )))
    }
}
