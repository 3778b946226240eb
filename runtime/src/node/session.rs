//! The node's writes to the coordinator that must happen in order: a
//! task's records, its epoch advances and the job's end. They run one
//! after the other on their own task (the *lane*), never on the event
//! loop: while the coordinator is slow or unreachable (an etcd restart or
//! pause), the loop goes on answering neighbours' fetches and flags, and
//! the writes are made, in the order asked, once the coordinator answers.
//!
//! A primary's writes are made only while it holds its task's key: before
//! each one the lane checks that (without a round trip while the node's
//! lease is certainly alive, see `lease::SureUntil`). If the key went (the
//! lease lapsed in a pause), the lane tells the loop, which takes the key
//! again (`rejoin`), and waits for the new term before it goes on.
//!
//! Records are not a barrier for replies and flags: a reply asked for
//! after a record may reach its neighbour before the record is written.
//! Records asked for just before an advance are written with it, in one
//! transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::coord::{CoordError, CoordResult, Coordinator, Expect};
use crate::graph::{Epoch, TaskId};
use crate::keys::{Holder, JobStatus, Keys};

use super::lease::SureUntil;

/// How long a node waits out an unreachable coordinator before it gives
/// up its task.
pub(crate) const COORDINATOR_PATIENCE: Duration = Duration::from_secs(30);

/// Runs a coordinator call, retrying while the coordinator is unreachable
/// (for up to `COORDINATOR_PATIENCE`); other errors come back at once.
pub(super) async fn patiently<T, F, Fut>(mut call: F) -> CoordResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CoordResult<T>>,
{
    let start = Instant::now();
    let mut wait = Duration::from_millis(20);
    loop {
        match call().await {
            Err(CoordError::Unavailable(why)) if start.elapsed() < COORDINATOR_PATIENCE => {
                tracing::debug!(%why, "coordinator unreachable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// One write of the lane.
#[derive(Debug)]
pub(super) enum Write {
    /// A primary's records (key, value), and the epoch moved on from
    /// `advance` if it is given: in one transaction. If another task moved
    /// the epoch on first, the records are still written.
    Records { puts: Vec<(String, Vec<u8>)>, advance: Option<Epoch> },
    /// A primary ends the job (compare-and-swap from `running`).
    End(JobStatus),
    /// Any node ends the job (a check failed): no key needed.
    EndUnguarded(JobStatus),
    /// Nothing to write: only the check that this node still holds its
    /// key (someone named a newer term of its task). If it does not, the
    /// loop hears `NotPrimary` (or `KeyGone`).
    Check,
}

/// What became of a write, as the loop hears of it.
#[derive(Debug)]
pub(crate) enum Written {
    /// The node's key of term `term` is gone: the loop should take it
    /// again; the lane waits for the new term.
    KeyGone { term: u64 },
    /// Another node holds the task now: this one must step down.
    NotPrimary,
    /// A write failed for good (after waiting out an unreachable
    /// coordinator): `records` says whether it carried records or an
    /// advance (then the node gives up) or only the job's end.
    Failed { records: bool, error: CoordError },
}

enum Op {
    Write(Write),
    /// Answered once every write before it is done.
    Flush(oneshot::Sender<()>),
}

/// The handle the loop submits writes with.
pub(super) struct Lane {
    ops: mpsc::UnboundedSender<Op>,
    role: watch::Sender<Holding>,
}

/// The key a primary's writes are made under, as the lane knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holding {
    /// None: this node is no primary (its writes are dropped).
    Nothing,
    /// Task `task`'s primary key, of term `term`.
    Key { task: TaskId, term: u64 },
    /// The key went: the loop is taking it again (writes wait).
    Retaking,
}

/// What the lane needs to know of its node.
pub(super) struct LaneSetup {
    pub(super) coord: Arc<dyn Coordinator>,
    pub(super) keys: Keys,
    pub(super) node_id: u64,
    pub(super) sure_until: SureUntil,
}

impl Lane {
    /// Starts the lane on `spawner`; what becomes of writes that do not
    /// simply succeed goes to `report`.
    pub(super) fn start(
        spawner: &crate::spawn::Spawner,
        setup: LaneSetup,
        report: impl Fn(Written) + 'static,
    ) -> Lane {
        let (ops, rx) = mpsc::unbounded_channel();
        let (role, role_rx) = watch::channel(Holding::Nothing);
        spawner.spawn(run(setup, rx, role_rx, report));
        Lane { ops, role }
    }

    /// This node is task `task`'s primary under `term` now: its writes are
    /// made under that key.
    pub(super) fn hold(&self, task: TaskId, term: u64) {
        self.role.send_replace(Holding::Key { task, term });
    }

    /// This primary's key went, and the loop is taking it again: writes
    /// wait for [`hold`](Self::hold).
    pub(super) fn retake(&self) {
        self.role.send_replace(Holding::Retaking);
    }

    /// Queues a write after every write asked for before it.
    pub(super) fn submit(&self, write: Write) {
        let _ = self.ops.send(Op::Write(write));
    }

    /// Resolves once every write submitted so far is done (or dropped).
    pub(super) fn flush(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.ops.send(Op::Flush(tx));
        rx
    }
}

async fn run(
    setup: LaneSetup,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut role: watch::Receiver<Holding>,
    report: impl Fn(Written),
) {
    while let Some(op) = ops.recv().await {
        let write = match op {
            Op::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Op::Write(w) => w,
        };
        if !matches!(write, Write::EndUnguarded(_)) {
            match hold_key(&setup, &mut role, &report).await {
                Ok(()) => {}
                Err(Some(outcome)) => {
                    report(outcome);
                    continue;
                }
                // Not a primary any more (or the loop is gone): drop it.
                Err(None) => continue,
            }
        }
        let records = matches!(write, Write::Records { .. });
        if let Err(error) = perform(&*setup.coord, &setup.keys, write).await {
            tracing::warn!(node = setup.node_id, %error, "a write to the coordinator failed");
            report(Written::Failed { records, error });
        }
    }
}

/// Waits until this node certainly holds its task's key under the term it
/// knows. `Err(None)`: it holds no task (the write is dropped).
async fn hold_key(
    setup: &LaneSetup,
    role: &mut watch::Receiver<Holding>,
    report: &impl Fn(Written),
) -> Result<(), Option<Written>> {
    loop {
        let holding = *role.borrow_and_update();
        let (task, term) = match holding {
            Holding::Nothing => return Err(None),
            Holding::Key { task, term } => (task, term),
            Holding::Retaking => {
                if role.changed().await.is_err() {
                    return Err(None);
                }
                continue;
            }
        };
        // Within the lease's certain life, and with no deletion of the key
        // seen (the loop takes it again at once), it holds it.
        if Instant::now() < setup.sure_until.get() {
            return Ok(());
        }
        let key = setup.keys.primary(task);
        match patiently(|| setup.coord.get(&key)).await {
            Ok(Some(kv)) if kv.create_revision as u64 == term => return Ok(()),
            // Its own key under a newer term (the loop took it again and
            // is about to say so): wait for the new term.
            Ok(Some(kv)) if Holder::parse(&kv.value).is_some_and(|h| h.node == setup.node_id) => {}
            Ok(Some(_)) => return Err(Some(Written::NotPrimary)),
            Ok(None) => report(Written::KeyGone { term }),
            Err(error) => return Err(Some(Written::Failed { records: true, error })),
        }
        if role.changed().await.is_err() {
            return Err(None);
        }
    }
}

async fn perform(coord: &dyn Coordinator, keys: &Keys, write: Write) -> CoordResult<()> {
    match write {
        Write::Records { puts, advance: Some(from) } => {
            let (key, expect, next) = (keys.epoch(), from.to_string().into_bytes(), (from + 1).to_string());
            let swapped = if puts.is_empty() {
                patiently(|| coord.compare_and_swap(&key, Expect::Value(expect.clone()), next.as_bytes(), None)).await?.is_ok()
            } else {
                patiently(|| coord.compare_and_swap_all(&key, Expect::Value(expect.clone()), next.as_bytes(), &puts)).await?
            };
            if !swapped {
                // Another task moved the epoch on first: the records still
                // stand, as they would have without the advance.
                for (key, value) in &puts {
                    patiently(|| coord.put(key, value, None)).await?;
                }
            }
            Ok(())
        }
        Write::Records { puts, advance: None } => {
            for (key, value) in &puts {
                patiently(|| coord.put(key, value, None)).await?;
            }
            Ok(())
        }
        Write::Check => Ok(()),
        Write::End(status) | Write::EndUnguarded(status) => {
            let (key, value) = (keys.status(), status.encode());
            // Not swapped: the job had ended already.
            patiently(|| coord.compare_and_swap(&key, Expect::Value(JobStatus::Running.encode()), &value, None)).await.map(|_| ())
        }
    }
}
