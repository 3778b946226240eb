//! The task API: the handlers a task implements and the context through
//! which it acts.
//!
//! A task is a plain Rust value that lives on its node's thread; handlers
//! take `&mut self`, so it needs no locks and need not be `Send`. The
//! runtime calls one handler at a time. A handler acts by asking its
//! [`Context`]: fetch a message from a neighbour, reply to a neighbour's
//! fetch (now or in a later handler), flag a neighbour, record a result,
//! advance the epoch, end the job. The actions run after the handler
//! returns, in the order asked.
//!
//! # What the runtime guarantees
//!
//! * **Epochs.** A task enters epoch `e` (`enter_epoch`) once every task's
//!   primary has seen the job's epoch reach `e`; the epoch advances when a
//!   task calls [`Context::advance_epoch`] at `e` (compare-and-swap: one of
//!   many concurrent calls wins). Nothing of epoch `e - 1` reaches a task
//!   after it entered `e`: late data is dropped, and a fetch of an older
//!   epoch is answered with a stale-epoch error, never with newer data.
//! * **Fetches** are exactly-once: each [`Context::fetch`] leads to exactly
//!   one `data_ready` (unless the epoch ends first), however many times the
//!   runtime had to resend it (disconnects, timeouts, a neighbour's node
//!   replaced by a spare).
//! * **Serving.** For one epoch, edge and requesting task, `serve` is
//!   called once; the reply is kept for the epoch and every retry of that
//!   request, from the same node or a replacement, gets the same bytes.
//! * **Failover.** When a task's node dies, a spare node takes the task
//!   over: it builds the task anew (`init`), enters the current epoch and
//!   redoes that epoch's work; neighbours get `neighbour_restarted`, and
//!   their outstanding fetches move to the new node by themselves.
//! * **Hot standby.** With `Job::replicas(n)`, a task also has backups that
//!   follow its replication stream ([`Context::replicate`],
//!   [`Task::apply_update`]); one of them takes the task over instead of a
//!   spare, holding every update the primary made before anything it did
//!   became visible to other tasks, and the replies it released this epoch.

use std::fmt;
use std::sync::Arc;

use crate::graph::{Edge, Epoch, LinkType, TaskId, Topology};
use crate::message::{Encoded, Frame, Limits, Message};

/// The handlers of a task. Only `enter_epoch`, `data_ready` and `serve`
/// must be written; the rest default to doing nothing.
pub trait Task: 'static {
    /// The task has just been created on this node (at the start of the
    /// job, or when this node takes the task over from a dead one).
    fn init(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// The job entered `epoch` (`cx.epoch()` says the same).
    fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch);

    /// A message this task fetched has arrived.
    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received);

    /// A neighbour fetches a message from this task: answer with
    /// [`Context::reply`], now or in a later handler of the same epoch.
    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest);

    /// A neighbour flagged this task over `link`.
    fn meta_ready(&mut self, cx: &mut Context<'_>, from: TaskId, link: LinkType, meta: &[u8]) {
        let _ = (cx, from, link, meta);
    }

    /// A neighbour's node is gone and no node holds the task now.
    fn neighbour_failed(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId) {
        let _ = (cx, link, task);
    }

    /// A neighbour has a new primary node, with `term` (a spare or a hot
    /// backup took it over). Outstanding fetches to it are resent by the
    /// runtime.
    fn neighbour_restarted(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId, term: u64) {
        let _ = (cx, link, task, term);
    }

    /// The job is over: the last chance to save work.
    fn exit(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    // -----------------------------------------------------------------
    // Hot standby (a job with `replicas > 1`).

    /// This node holds the task as a backup: it follows the primary's
    /// replication stream (`apply_update`, `restore`) and takes the task
    /// over if the primary dies. A backup's handlers only read: actions
    /// they ask for are dropped.
    fn became_backup(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// This node is now the task's primary, with `term` (a backup that
    /// took over, or the first primary of the task when `replicas > 1`).
    /// `enter_epoch` for the current epoch follows.
    fn became_primary(&mut self, cx: &mut Context<'_>, term: u64) {
        let _ = (cx, term);
    }

    /// On a backup: an update the primary made with
    /// [`Context::replicate`], in the order it made them.
    fn apply_update(&mut self, cx: &mut Context<'_>, update: &[u8]) {
        let _ = (cx, update);
    }

    /// The task's whole state, to bring a new backup up to date (one that
    /// joins after the primary made updates, to replace a dead backup).
    /// `None` (the default): the primary keeps every update since the
    /// start and replays them to a new backup instead.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// On a backup: replaces the task's state with a [`snapshot`](Task::snapshot).
    fn restore(&mut self, cx: &mut Context<'_>, snapshot: &[u8]) {
        let _ = (cx, snapshot);
    }
}

/// A neighbour's fetch, to be answered with [`Context::reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServeRequest {
    /// The task asking.
    pub from: TaskId,
    /// The edge asked for.
    pub edge: u32,
    /// The epoch it is for.
    pub epoch: Epoch,
}

impl ServeRequest {
    /// Whether this asks for `edge`.
    pub fn is<M>(&self, edge: Edge<M>) -> bool {
        self.edge == edge.id
    }
}

/// A fetched message, as it arrived.
pub struct Received {
    pub(crate) from: TaskId,
    pub(crate) edge: u32,
    pub(crate) epoch: Epoch,
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) limits: Limits,
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("from", &self.from)
            .field("edge", &self.edge)
            .field("epoch", &self.epoch)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Received {
    /// The task it came from.
    pub fn from(&self) -> TaskId {
        self.from
    }
    /// The edge it came over.
    pub fn edge(&self) -> u32 {
        self.edge
    }
    /// The epoch it belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// Whether it came over `edge`.
    pub fn is<M>(&self, edge: Edge<M>) -> bool {
        self.edge == edge.id
    }
    /// The message, decoded (an error if it came over another edge or is
    /// not a valid `M`).
    pub fn decode<M: Message>(&self, edge: Edge<M>) -> crate::Result<M> {
        self.check(edge)?;
        M::decode_with(&self.bytes, &self.limits)
    }
    /// The message as a checked frame, to read through a view without
    /// copying.
    pub fn frame<M: Message>(&self, edge: Edge<M>) -> crate::Result<Frame<'_, M>> {
        self.check(edge)?;
        Frame::with_limits(&self.bytes, &self.limits)
    }
    /// The message as it came, to forward to others without decoding and
    /// encoding it again (its frame is checked first).
    pub fn encoded<M: Message>(&self, edge: Edge<M>) -> crate::Result<Encoded<M>> {
        self.frame(edge)?;
        Ok(Encoded::from_checked(self.bytes.clone()))
    }
    /// The raw frame.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn check<M>(&self, edge: Edge<M>) -> crate::Result<()> {
        if self.edge != edge.id {
            return Err(crate::Error::WrongEdge { expected: edge.name, got: self.edge });
        }
        Ok(())
    }
}

/// What a handler asked for, run after it returns.
#[derive(Debug)]
pub(crate) enum Action {
    Fetch { edge: u32, to: TaskId },
    Reply { request: ServeRequest, frame: Arc<Vec<u8>> },
    Flag { link: u32, to: TaskId, meta: Vec<u8> },
    Record { name: String, value: Vec<u8> },
    Replicate { update: Vec<u8> },
    Advance { from: Epoch },
    End { failure: Option<String> },
}

/// What a handler can see and do.
pub struct Context<'a> {
    pub(crate) task: TaskId,
    pub(crate) epoch: Epoch,
    pub(crate) tasks: u64,
    pub(crate) topology: &'a dyn Topology,
    pub(crate) actions: &'a mut Vec<Action>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("task", &self.task).field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The same context for a shorter borrow.
    pub(crate) fn reborrow(&mut self) -> Context<'_> {
        Context { task: self.task, epoch: self.epoch, tasks: self.tasks, topology: self.topology, actions: &mut *self.actions }
    }

    /// This task's id.
    pub fn task(&self) -> TaskId {
        self.task
    }
    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// How many tasks the job has.
    pub fn tasks(&self) -> u64 {
        self.tasks
    }
    /// This task's neighbours over `link` at the current epoch.
    pub fn neighbours(&self, link: LinkType) -> Vec<TaskId> {
        self.topology.neighbours(link.id, self.task, self.epoch)
    }
    /// The link types of the topology.
    pub fn links(&self) -> &[LinkType] {
        self.topology.links()
    }

    /// Fetches message `M` over `edge` from task `from`, for the current
    /// epoch: `data_ready` follows exactly once (unless the epoch ends).
    pub fn fetch<M: Message>(&mut self, edge: Edge<M>, from: TaskId) {
        self.actions.push(Action::Fetch { edge: edge.id, to: from });
    }

    /// Answers `request` with `message`. Answering a request of an epoch
    /// that is over does nothing.
    ///
    /// # Panics
    ///
    /// If `request` asked for another edge: that is a bug in the task.
    pub fn reply<M: Message>(&mut self, edge: Edge<M>, request: ServeRequest, message: &M) {
        self.reply_encoded(edge, request, &Encoded::new(message));
    }

    /// Answers `request` with a message encoded beforehand (one encoding
    /// for many receivers, or a received message forwarded as it came).
    ///
    /// # Panics
    ///
    /// If `request` asked for another edge: that is a bug in the task.
    pub fn reply_encoded<M: Message>(&mut self, edge: Edge<M>, request: ServeRequest, message: &Encoded<M>) {
        assert!(
            request.edge == edge.id,
            "task {} replied to a request for edge {} over edge `{}` ({})",
            self.task,
            request.edge,
            edge.name,
            edge.id
        );
        self.actions.push(Action::Reply { request, frame: message.frame.clone() });
    }

    /// Flags every neighbour over `link` with a small `meta` payload.
    pub fn flag(&mut self, link: LinkType, meta: &[u8]) {
        for to in self.neighbours(link) {
            self.actions.push(Action::Flag { link: link.id, to, meta: meta.to_vec() });
        }
    }

    /// Records a named result of the job (kept by the coordinator; a
    /// replacement node that records the same name overwrites it).
    pub fn record(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.actions.push(Action::Record { name: name.into(), value: value.into() });
    }

    /// Sends `update` to the task's backups (a job with `replicas > 1`;
    /// otherwise it does nothing), which apply it in `apply_update`, in
    /// order. Everything a task replicates reaches every live backup
    /// before anything it does after it becomes visible to others (a
    /// reply, a flag, a record, an epoch advance).
    pub fn replicate(&mut self, update: impl Into<Vec<u8>>) {
        self.actions.push(Action::Replicate { update: update.into() });
    }

    /// Moves the job to the next epoch (if it still is at this one).
    pub fn advance_epoch(&mut self) {
        self.actions.push(Action::Advance { from: self.epoch });
    }

    /// Ends the job: every task gets `exit`, and the job succeeds.
    pub fn end_job(&mut self) {
        self.actions.push(Action::End { failure: None });
    }

    /// Ends the job as failed, with a reason.
    pub fn fail_job(&mut self, reason: impl Into<String>) {
        self.actions.push(Action::End { failure: Some(reason.into()) });
    }
}
