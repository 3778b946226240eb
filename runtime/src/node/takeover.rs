//! Taking a task: the coordinator work of claiming a vacant task's primary
//! key, taking a free backup slot, or taking this node's own keys again
//! after its lease lapsed (rejoin). It runs off the loop, one attempt at a
//! time (`Taking`); what an attempt found comes back as `Event::Took`, and
//! `failover.rs` acts on it. Meanwhile the loop goes on answering its
//! neighbours, however long the coordinator takes.
//!
//! Whether to claim a vacancy, wait for a caught-up backup, or leave the
//! task alone is decided from a fresh read of the task's keys by [`look`],
//! a plain function with unit tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::coord::{CoordError, Coordinator, KeyValue, LeaseId};
use crate::graph::TaskId;
use crate::keys::{Holder, JobStatus, Keys};

use super::event_loop::Seat;
use super::session::patiently;
use super::NodeExit;

/// What an attempt needs of its node.
#[derive(Clone)]
pub(super) struct Claimant {
    pub(super) coord: Arc<dyn Coordinator>,
    pub(super) keys: Keys,
    pub(super) node_id: u64,
    /// This node's value for a key it holds (`Holder`, not ready).
    pub(super) value: Vec<u8>,
    pub(super) lease: LeaseId,
    pub(super) lease_ttl: Duration,
}

/// Whether an attempt asks the coordinator about this node's lease first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LeaseCheck {
    /// No: the lease is certainly alive, and the attempt needs no more.
    No,
    /// Yes: a node taking a task without its state makes sure its own
    /// lease lives (else its keys are its own to take again first).
    Alive,
    /// Yes, and the lease was in doubt (no keep-alive succeeded for a
    /// TTL: a pause): if it lives, the node settles for a TTL and takes
    /// nothing meanwhile (the keys that went in the pause are their own
    /// nodes' to take again).
    InDoubt,
}

/// What an attempt found.
#[derive(Debug)]
pub(super) enum Took {
    /// The lease was in doubt and lives: the node settles for a TTL.
    Settle,
    /// This node's lease is gone: it takes its keys again first.
    LeaseGone,
    /// Task `task` is left alone for now (`wait`: a caught-up backup of
    /// it lives, whose task it is to take it over); `kvs` is what was read
    /// of its keys.
    Left { task: TaskId, kvs: Vec<KeyValue>, wait: bool },
    /// The job no longer runs.
    JobOver,
    /// This node created task `task`'s primary key `kv` (`kvs`: what it
    /// read of the task's keys before).
    Claimed { task: TaskId, kv: KeyValue, kvs: Vec<KeyValue> },
    /// This node created backup slot `slot` of task `task`.
    Backed { task: TaskId, slot: u32, kv: KeyValue },
    /// No slot was free: `kvs` are their holders.
    NoSlot { kvs: Vec<KeyValue> },
    /// This node took its keys again (see [`Retaken`]).
    Rejoined(Retaken),
    /// The node stops.
    Exit(NodeExit),
    /// A coordinator call failed for good (`what` the node was doing).
    Failed { what: &'static str, error: CoordError },
}

/// What a rejoin did.
#[derive(Debug)]
pub(super) struct Retaken {
    /// A new lease, if the old one had lapsed, and when it was granted
    /// (this node's `nodes/<id>` key is under it already).
    pub(super) lease: Option<(LeaseId, Instant)>,
    /// Its role's key, created again (`Ok`), or held by another node
    /// (`Err`); `None` for a spare.
    pub(super) key: Option<Result<KeyValue, KeyValue>>,
}

/// One attempt at a time, and a rejoin asked for meanwhile.
#[derive(Debug, Default)]
pub(super) struct Taking {
    busy: bool,
    /// The task the attempt in flight claims, if it is a claim.
    claiming: Option<TaskId>,
    /// A rejoin waits for the attempt in flight (`Some(gone)`, see
    /// `Loop::rejoin`).
    rejoin: Option<Option<LeaseId>>,
}

impl Taking {
    /// Whether an attempt is in flight.
    pub(super) fn busy(&self) -> bool {
        self.busy
    }

    /// Starts an attempt (a claim of task `claiming`, or another), if
    /// none is in flight.
    pub(super) fn start(&mut self, claiming: Option<TaskId>) -> bool {
        if std::mem::replace(&mut self.busy, true) {
            return false;
        }
        self.claiming = claiming;
        true
    }

    /// The task the attempt in flight claims.
    pub(super) fn claiming(&self) -> Option<TaskId> {
        self.claiming
    }

    /// A rejoin is wanted while an attempt is in flight: it runs after.
    pub(super) fn rejoin_later(&mut self, gone: Option<LeaseId>) {
        self.rejoin = Some(gone.or(self.rejoin.flatten()));
    }

    /// The attempt in flight finished: a rejoin that waited for it, if any.
    pub(super) fn finished(&mut self) -> Option<Option<LeaseId>> {
        self.busy = false;
        self.claiming = None;
        self.rejoin.take()
    }
}

/// What to do about a vacancy, from a fresh read of the task's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Look {
    /// Another node holds the task.
    Held,
    /// A caught-up backup on another node lives: the task is its to take
    /// over, with its state; look again later.
    Wait,
    /// Claim it; `without_state`: a caught-up backup exists but has not
    /// taken the task within `patience` (it is stuck), so the task goes on
    /// from its initial state.
    Claim { without_state: bool },
}

/// Decides about vacant task `task` from `kvs`, its keys as just read, for
/// node `me`; the task has been vacant for `vacant_for`.
pub(super) fn look(keys: &Keys, task: TaskId, kvs: &[KeyValue], me: u64, vacant_for: Duration, patience: Duration) -> Look {
    if kvs.iter().any(|kv| keys.primary_task(&kv.key) == Some(task)) {
        return Look::Held;
    }
    let ready_elsewhere = kvs.iter().any(|kv| {
        keys.backup_slot(&kv.key).is_some_and(|(t, _)| t == task)
            && Holder::parse(&kv.value).is_some_and(|h| h.ready && h.node != me)
    });
    match (ready_elsewhere, vacant_for < patience) {
        (true, true) => Look::Wait,
        (without_state, _) => Look::Claim { without_state },
    }
}

/// Asks about the lease as `check` says: `Err` is what the attempt found
/// instead of going on.
async fn check_lease(c: &Claimant, check: LeaseCheck) -> Result<(), Took> {
    if check == LeaseCheck::No {
        return Ok(());
    }
    match patiently(|| c.coord.keep_alive(c.lease)).await {
        Ok(()) if check == LeaseCheck::InDoubt => Err(Took::Settle),
        Ok(()) => Ok(()),
        Err(error @ CoordError::Unavailable(_)) => Err(Took::Failed { what: "renew its lease", error }),
        Err(_) => Err(Took::LeaseGone),
    }
}

/// Claims vacant task `task`. `ready`: this node is a caught-up backup
/// of it, and claims at once; any other node reads the task's keys first
/// and decides by [`look`].
pub(super) async fn claim(c: Claimant, task: TaskId, check: LeaseCheck, ready: bool, vacant_for: Duration) -> Took {
    if let Err(took) = check_lease(&c, check).await {
        return took;
    }
    let mut kvs = Vec::new();
    if !ready {
        let prefix = c.keys.task(task);
        kvs = match patiently(|| c.coord.get_prefix(&prefix)).await {
            Ok((kvs, _)) => kvs,
            Err(error) => return Took::Failed { what: "read a task's keys", error },
        };
        match look(&c.keys, task, &kvs, c.node_id, vacant_for, 2 * c.lease_ttl) {
            Look::Held => return Took::Left { task, kvs, wait: false },
            Look::Wait => return Took::Left { task, kvs, wait: true },
            Look::Claim { without_state: true } => {
                tracing::warn!(node = c.node_id, task, "a caught-up backup has not taken its task over: taking it without its state");
            }
            Look::Claim { without_state: false } => {}
        }
    }
    // The task may be free because the job ended (its primary left): the
    // status and the tasks arrive on separate watches, so ask.
    let status = c.keys.status();
    match patiently(|| c.coord.get(&status)).await {
        Ok(Some(kv)) if JobStatus::parse(&kv.value) != JobStatus::Running => return Took::JobOver,
        Err(error) => return Took::Failed { what: "read the job's status", error },
        _ => {}
    }
    let key = c.keys.primary(task);
    match patiently(|| c.coord.create(&key, &c.value, Some(c.lease))).await {
        Ok(Ok(kv)) => Took::Claimed { task, kv, kvs },
        Ok(Err(existing)) => Took::Left { task, kvs: vec![existing], wait: false },
        // This node's lease lapsed too (a coordinator pause): it takes its
        // own keys again first, and looks at the task later.
        Err(CoordError::LeaseNotFound(_)) => Took::LeaseGone,
        Err(error) => Took::Failed { what: "claim a task", error },
    }
}

/// Takes the first free one of task `task`'s backup slots `slots`.
pub(super) async fn back(c: Claimant, task: TaskId, slots: Vec<u32>, check: LeaseCheck) -> Took {
    if let Err(took) = check_lease(&c, check).await {
        return took;
    }
    let mut kvs = Vec::new();
    for slot in slots {
        let key = c.keys.backup(task, slot);
        match patiently(|| c.coord.create(&key, &c.value, Some(c.lease))).await {
            Ok(Ok(kv)) => return Took::Backed { task, slot, kv },
            Ok(Err(existing)) => kvs.push(existing),
            Err(CoordError::LeaseNotFound(_)) => return Took::LeaseGone,
            Err(error) => return Took::Failed { what: "become a backup", error },
        }
    }
    Took::NoSlot { kvs }
}

/// This node's keys are gone while it lives (see `Loop::rejoin`): takes
/// them again, under a new lease if its own lapsed. `gone`: the key that
/// went is this backup's slot, held under that lease; if it is this
/// node's lease and it lives, its primary dropped it, and it stops.
pub(super) async fn rejoin(c: Claimant, role: Seat, gone: Option<LeaseId>) -> Took {
    let alive = match patiently(|| c.coord.keep_alive(c.lease)).await {
        Ok(()) => true,
        Err(error @ CoordError::Unavailable(_)) => return Took::Failed { what: "renew its lease", error },
        Err(_) => false,
    };
    if let (true, true, Seat::Backup { task, slot }) = (alive, gone == Some(c.lease), role) {
        tracing::warn!(node = c.node_id, task, slot, "dropped by the task's primary: stopping");
        return Took::Exit(NodeExit::BackupDropped { task });
    }
    let mut lease = c.lease;
    let mut renewed = None;
    if !alive {
        let granted_at = Instant::now();
        lease = match patiently(|| c.coord.grant(c.lease_ttl)).await {
            Ok(lease) => lease,
            Err(error) => return Took::Failed { what: "get a new lease", error },
        };
        tracing::info!(node = c.node_id, old = c.lease, new = lease, "its lease had lapsed: a new one");
        renewed = Some((lease, granted_at));
        let addr = Holder::parse(&c.value).map(|h| h.addr.to_string()).unwrap_or_default();
        let (key, value) = (c.keys.node(c.node_id), format!("addr={addr}").into_bytes());
        match patiently(|| c.coord.create(&key, &value, Some(lease))).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                tracing::warn!(node = c.node_id, "another live node has this node's id now: stopping");
                return Took::Exit(NodeExit::IdTaken);
            }
            Err(error) => return Took::Failed { what: "register again", error },
        }
    }
    let key = match role {
        Seat::Spare => None,
        Seat::Primary { task, .. } => Some(c.keys.primary(task)),
        Seat::Backup { task, slot } => Some(c.keys.backup(task, slot)),
    };
    let key = match key {
        None => None,
        Some(key) => match patiently(|| c.coord.create(&key, &c.value, Some(lease))).await {
            Ok(created) => Some(created),
            Err(error) => return Took::Failed { what: "take its keys again", error },
        },
    };
    Took::Rejoined(Retaken { lease: renewed, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: String, value: Holder) -> KeyValue {
        KeyValue { key, value: value.encode(), create_revision: 5, mod_revision: 5, lease: None }
    }

    fn holder(node: u64, ready: bool) -> Holder {
        Holder { node, addr: "127.0.0.1:1".parse().unwrap(), ready }
    }

    const TTL: Duration = Duration::from_millis(300);

    #[test]
    fn a_task_with_a_primary_is_left_alone() {
        let keys = Keys::new("j");
        let kvs = [kv(keys.primary(3), holder(1, false)), kv(keys.backup(3, 1), holder(2, true))];
        assert_eq!(look(&keys, 3, &kvs, 9, Duration::ZERO, 2 * TTL), Look::Held);
        // Another task's primary does not hold this one.
        let kvs = [kv(keys.primary(4), holder(1, false))];
        assert_eq!(look(&keys, 3, &kvs, 9, Duration::ZERO, 2 * TTL), Look::Claim { without_state: false });
    }

    #[test]
    fn a_caught_up_backup_elsewhere_is_waited_for_then_passed_over() {
        let keys = Keys::new("j");
        let kvs = [kv(keys.backup(3, 1), holder(2, true))];
        assert_eq!(look(&keys, 3, &kvs, 9, TTL, 2 * TTL), Look::Wait);
        assert_eq!(look(&keys, 3, &kvs, 9, 2 * TTL, 2 * TTL), Look::Claim { without_state: true });
    }

    #[test]
    fn backups_that_have_not_caught_up_or_are_this_node_do_not_hold_a_task_back() {
        let keys = Keys::new("j");
        let kvs = [kv(keys.backup(3, 1), holder(2, false)), kv(keys.backup(3, 2), holder(9, true)), kv(keys.backup(4, 1), holder(5, true))];
        assert_eq!(look(&keys, 3, &kvs, 9, Duration::ZERO, 2 * TTL), Look::Claim { without_state: false });
    }

    #[test]
    fn one_attempt_at_a_time_and_a_rejoin_waits_for_it() {
        let mut taking = Taking::default();
        assert!(taking.start(Some(3)));
        assert!(!taking.start(None));
        assert_eq!(taking.claiming(), Some(3), "the one in flight still counts");
        taking.rejoin_later(None);
        taking.rejoin_later(Some(7));
        taking.rejoin_later(None);
        assert_eq!(taking.finished(), Some(Some(7)));
        assert_eq!(taking.claiming(), None);
        assert!(!taking.busy());
        assert_eq!(taking.finished(), None);
        assert!(taking.start(None));
    }
}
