//! The event loop: one `select!` over the node's events, and their dispatch.
//! This is the node's state machine on one screen (`handle`); each event's
//! work lives with the part it belongs to. No handler awaits a backup or,
//! for a primary's writes, the coordinator (see `session` and
//! `replication::primary`); see `README.md` beside this file for the states
//! and transitions.

use super::*;

/// An event for the loop.
pub(super) enum Event {
    /// A peer fetches from this node's task.
    Fetch(transport::FetchRequest, oneshot::Sender<Answer>),
    /// A peer flags this node's task.
    Flag(transport::MetaFlag, oneshot::Sender<Status>),
    /// A task's primary sends this backup its replication stream.
    Replicate(Replication, oneshot::Sender<(Status, u64)>),
    /// One attempt to deliver a flag of this epoch finished.
    FlagDone { index: usize, epoch: Epoch, term: u64, delivered: bool },
    /// One of this node's fetches finished (one attempt of it).
    FetchDone { seq: u64, attempt: u32, result: Result<Fetched, CallFailure> },
    /// A connection to the node at this address ended by itself.
    PeerGone(SocketAddr),
    /// A backup's attempt to watch its primary at `addr` finished
    /// (`refused`: nothing listens there any more).
    Watching { refused: bool, addr: SocketAddr },
    /// Nothing listens where task `task`'s primary (as of `mod_revision`)
    /// was: its process is gone.
    PrimaryGone { task: TaskId, mod_revision: i64 },
    /// The coordinator changed.
    Coord(CoordEvent),
    /// The coordinator watch or keep-alive failed.
    CoordLost(String),
    /// A write of the coordinator lane did not simply succeed.
    Written(Written),
    /// A read of the keys under `prefix` (see `follow_soon`).
    Followed { prefix: String, kvs: Vec<KeyValue> },
    /// On a backup: its key now says `ready` (or could not be written).
    MarkedReady { task: TaskId, slot: u32, term: u64, result: crate::coord::CoordResult<Result<i64, ()>> },
    /// A dropped backup's key is deleted (or could not be).
    BackupDropped { task: TaskId, slot: u32, term: u64 },
    /// A backup answered attempt `attempt` of a batch of the stream.
    Replicated { slot: u32, attempt: u64, answer: ReplicaAnswer },
    /// An attempt to take a task (or this node's keys again) finished.
    Took(super::takeover::Took),
}

/// Something others see, in the order the task asked for it: waits for the
/// backups (see `replication::primary`).
#[derive(Debug)]
pub(super) enum Effect {
    Action(Action),
    Write(Write),
}

impl Effect {
    /// Whether this is the reply to the fetch of (edge, requester) `key`.
    pub(super) fn replies_to(&self, key: (u32, TaskId)) -> bool {
        matches!(self, Effect::Action(Action::Reply { request, .. }) if (request.edge, request.from) == key)
    }
}

/// The node holding one of a task's keys (its primary key or a backup
/// slot), as this node knows it.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyHolder {
    /// The node's id (for logs).
    pub(super) node: u64,
    pub(super) addr: SocketAddr,
    pub(super) term: u64,
    /// The revision of the key's last write (to delete exactly this one).
    pub(super) mod_revision: i64,
    /// A backup that has caught up with its primary (see `Holder`).
    pub(super) ready: bool,
    /// The lease the key lives under (it goes with it).
    pub(super) lease: Option<LeaseId>,
}

impl KeyHolder {
    /// The holder of `kv`, whose value reads `value`; its term is the
    /// key's creation revision.
    pub(super) fn of(kv: &KeyValue, value: &Holder) -> Self {
        KeyHolder { node: value.node, addr: value.addr, term: kv.create_revision as u64, mod_revision: kv.mod_revision, ready: value.ready, lease: kv.lease }
    }
}

/// A task without a primary, as this node knows it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Vacancy {
    /// Since when.
    pub(super) since: Instant,
    /// When this node looks at it again (if it can claim it).
    pub(super) next_look: Instant,
}

/// What this node is to the job: exactly one of these at a time, each
/// holding only what that role needs (a spare holds no task object, only
/// a primary enters epochs, only a backup catches up).
pub(super) enum Role {
    /// Holds no task: waits for a vacancy or a free backup slot.
    Spare,
    /// Follows the primary of a task from a backup slot.
    Backup(Backup),
    /// Runs a task.
    Primary(Primary),
}

/// A backup of `task` in slot `slot`.
pub(super) struct Backup {
    pub(super) task: TaskId,
    pub(super) slot: u32,
    /// The task, as its primary's stream has built it.
    pub(super) app: Box<dyn Task>,
    /// It has applied all of the stream its primary has sent it (then its
    /// key says `ready`, and it is the one to take the task over).
    pub(super) caught_up: bool,
    /// Its watch of its primary is being set up.
    pub(super) watching: bool,
}

/// The primary of `task` under `term` (the creation revision of its key).
pub(super) struct Primary {
    pub(super) task: TaskId,
    pub(super) term: u64,
    /// The task.
    pub(super) app: Box<dyn Task>,
    /// It has entered the current epoch (`enter_epoch` ran).
    pub(super) entered: bool,
}

/// A role without what it holds: the key it is about, for work done off
/// the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seat {
    Spare,
    Backup { task: TaskId, slot: u32 },
    Primary { task: TaskId, term: u64 },
}

impl Role {
    pub(super) fn seat(&self) -> Seat {
        match self {
            Role::Spare => Seat::Spare,
            Role::Backup(b) => Seat::Backup { task: b.task, slot: b.slot },
            Role::Primary(p) => Seat::Primary { task: p.task, term: p.term },
        }
    }

    /// The task this node is primary of, and its term.
    pub(super) fn primary(&self) -> Option<(TaskId, u64)> {
        match self {
            Role::Primary(p) => Some((p.task, p.term)),
            _ => None,
        }
    }

    /// The task this node is a backup of, and its slot.
    pub(super) fn backup(&self) -> Option<(TaskId, u32)> {
        match self {
            Role::Backup(b) => Some((b.task, b.slot)),
            _ => None,
        }
    }

    /// The task object, on a primary or a backup.
    pub(super) fn app(&self) -> Option<&dyn Task> {
        match self {
            Role::Spare => None,
            Role::Backup(b) => Some(&*b.app),
            Role::Primary(p) => Some(&*p.app),
        }
    }

    /// Whether this node is a primary that has entered the current epoch.
    pub(super) fn entered(&self) -> bool {
        matches!(self, Role::Primary(p) if p.entered)
    }

    /// Whether this node is a backup that has caught up with its primary.
    pub(super) fn caught_up(&self) -> bool {
        matches!(self, Role::Backup(b) if b.caught_up)
    }
}

pub(super) struct Loop {
    pub(super) cfg: NodeConfig,
    pub(super) keys: Keys,
    pub(super) lease: LeaseId,
    /// Until when the lease is certainly alive (see `lease`).
    pub(super) lease_sure_until: SureUntil,
    /// The keep-alive loop of `lease`, and where it reports.
    pub(super) keeper: Keeper,
    pub(super) lease_news: mpsc::UnboundedSender<LeaseNews>,
    /// When this node last took its keys again after losing its lease.
    pub(super) rejoined_at: Option<Instant>,
    /// When to look for tasks vacant for too long next (see
    /// `Job::vacancy_timeout`), and whether this node has failed the job
    /// for one already.
    pub(super) next_vacancy_check: Instant,
    pub(super) gave_up: bool,
    /// On task 0's primary: when to compact the coordinator's history.
    pub(super) compactor: Option<crate::coord::Compactor>,
    pub(super) value: Vec<u8>,
    pub(super) tx: mpsc::UnboundedSender<Event>,
    pub(super) spawner: Spawner,
    pub(super) peers: Rc<dyn Transport>,
    pub(super) shared: Rc<Shared>,
    /// Spare, backup of a task, or primary of a task.
    pub(super) role: Role,
    /// Who holds the tasks' keys, as this node knows (see `membership`).
    pub(super) members: Members,
    /// The replication stream this node writes (primary) or follows (backup).
    pub(super) stream: Stream,
    pub(super) epoch: Epoch,
    pub(super) status: JobStatus,
    /// This task's fetches, and the flags it sent this epoch: retried
    /// until delivered, and sent again to a receiver's new node.
    pub(super) outbox: Outbox,
    /// The epoch's replies, and requests and flags that came early.
    pub(super) replies: Replies,
    /// When this node last had the lane check it still holds its key.
    pub(super) last_check: Option<Instant>,
    /// On a primary that has entered its epoch: its neighbours in it, by
    /// link (see `epoch::enter`).
    pub(super) neighbours: std::collections::HashSet<(u32, TaskId)>,
    /// The attempt to take a task in flight, if any (see `takeover`).
    pub(super) taking: super::takeover::Taking,
    /// Actions of handlers, run in order by `apply_pending`.
    pub(super) pending: std::collections::VecDeque<Action>,
    /// Records, epoch advances and the job's end, written in order off
    /// the loop (see `session`).
    pub(super) lane: Lane,
    /// On a primary: its backups' progress, and the effects waiting for them.
    pub(super) sending: Sending,
    pub(super) gate: Gate<Effect>,
}

impl Loop {
    pub(super) async fn main(
        &mut self,
        snapshot: Vec<KeyValue>,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut lease_rx: mpsc::UnboundedReceiver<LeaseNews>,
    ) -> NodeExit {
        for kv in snapshot {
            if let Some(exit) = self.on_put(kv).await {
                return exit;
            }
        }
        if let JobStatus::Done | JobStatus::Failed(_) = self.status {
            return NodeExit::JobEnded(self.status.clone());
        }
        self.find_work();
        let mut tick = tokio::time::interval(RETRY_MIN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut result = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => Err(NodeExit::CoordinatorError("the node's event channel closed".into())),
                },
                Some(news) = lease_rx.recv() => self.on_lease_news(news),
                _ = tick.tick() => self.retry_due().await,
            };
            if result.is_ok() {
                result = self.apply_pending().await;
            }
            if let Err(exit) = result {
                self.shutdown(&exit);
                return exit;
            }
        }
    }

    pub(super) fn shutdown(&mut self, exit: &NodeExit) {
        if let NodeExit::JobEnded(_) = exit {
            // Peers still waiting on this node get a clear answer.
            let status = Status::new(StatusKind::ShuttingDown, "the job ended", self.epoch, self.term());
            self.replies.shut(&status);
        }
    }

    /// What a coordinator error means for this node: it gave up on an
    /// unreachable coordinator, or it lost its lease.
    pub(super) fn coordinator_failed(&self, what: &str, e: CoordError) -> Exit {
        tracing::warn!(node = self.cfg.node_id, error = %e, "cannot {what}");
        match e {
            CoordError::Unavailable(why) => NodeExit::CoordinatorLost(format!("cannot {what}: {why}")),
            other => NodeExit::CoordinatorError(format!("cannot {what}: {other}")),
        }
    }

    pub(super) fn term(&self) -> u64 {
        self.role.primary().map_or(0, |(_, term)| term)
    }

    pub(super) fn kill_at(&self, point: FaultPoint) -> Result<(), Exit> {
        match &self.cfg.faults {
            Some(hook) if hook.kill(&point) => {
                tracing::info!(node = self.cfg.node_id, ?point, "fault injected: node dies");
                Err(NodeExit::Killed)
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn handle(&mut self, event: Event) -> Result<(), Exit> {
        match event {
            Event::Fetch(req, respond) => self.on_fetch(req, respond).await,
            Event::Flag(flag, respond) => self.on_flag(flag, respond),
            Event::Replicate(batch, respond) => {
                match self.on_replicate(batch)? {
                    (answer, true) => self.publish_ready(answer, respond),
                    (answer, false) => {
                        let _ = respond.send(answer);
                    }
                }
                Ok(())
            }
            Event::MarkedReady { task, slot, term, result } => self.on_marked_ready(task, slot, term, result),
            Event::FetchDone { seq, attempt, result } => self.on_fetch_done(seq, attempt, result).await,
            Event::FlagDone { index, epoch, term, delivered } => {
                if epoch == self.epoch {
                    self.outbox.flag_done(index, term, delivered);
                }
                Ok(())
            }
            Event::Watching { refused, addr } => {
                if let Role::Backup(b) = &mut self.role {
                    b.watching = false;
                }
                if refused {
                    // The primary's process is gone (its port is closed).
                    let _ = self.tx.send(Event::PeerGone(addr));
                }
                Ok(())
            }
            Event::PeerGone(addr) => {
                // Its process may have died: check the tasks it held now,
                // rather than when their leases run out.
                let held: Vec<(TaskId, i64)> =
                    self.members.primaries.iter().filter(|(_, p)| p.addr == addr).map(|(t, p)| (*t, p.mod_revision)).collect();
                if !held.is_empty() {
                    let (tx, refused) = (self.tx.clone(), self.peers.refused(addr));
                    self.spawner.spawn(async move {
                        if refused.await {
                            for (task, mod_revision) in held {
                                let _ = tx.send(Event::PrimaryGone { task, mod_revision });
                            }
                        }
                    });
                }
                Ok(())
            }
            Event::PrimaryGone { task, mod_revision } => {
                if let Some(p) = self.members.primaries.get(&task).filter(|p| p.mod_revision == mod_revision) {
                    tracing::info!(task, "the task's primary is gone (its connection ended, its port is closed); freeing the task");
                    self.evict(task, p.term);
                }
                Ok(())
            }
            Event::Coord(CoordEvent::Put(kv)) => match self.on_put(kv).await {
                Some(exit) => Err(exit),
                None => Ok(()),
            },
            Event::Coord(CoordEvent::Delete { key, revision }) => self.on_delete(&key, revision).await,
            Event::CoordLost(why) => {
                tracing::warn!(node = self.cfg.node_id, %why, "lost the coordinator");
                Err(NodeExit::CoordinatorLost(why))
            }
            Event::Written(written) => self.on_written(written),
            Event::Followed { prefix, kvs } => {
                self.on_followed(&prefix, &kvs);
                Ok(())
            }
            Event::Took(took) => self.on_took(took).await,
            Event::Replicated { slot, attempt, answer } => self.on_replicated(slot, attempt, answer).await,
            Event::BackupDropped { task, slot, term } => self.on_backup_dropped(task, slot, term).await,
        }
    }

    /// A write of the lane did not simply succeed.
    pub(super) fn on_written(&mut self, written: Written) -> Result<(), Exit> {
        match written {
            // The lane found this node's key gone (before the watch said
            // so): take it again, unless done already.
            Written::KeyGone { term } if self.term() == term => {
                self.rejoin(None);
                Ok(())
            }
            Written::KeyGone { .. } => Ok(()),
            Written::NotPrimary => {
                tracing::warn!(node = self.cfg.node_id, "no longer the task's primary: stepping down");
                Err(NodeExit::Replaced { task: self.role.primary().map_or(0, |(t, _)| t) })
            }
            Written::Failed { records: true, error } => Err(self.coordinator_failed("record results or advance the epoch", error)),
            Written::Failed { records: false, error } => {
                tracing::warn!(%error, "cannot end the job");
                Ok(())
            }
        }
    }

    pub(super) async fn retry_due(&mut self) -> Result<(), Exit> {
        let now = Instant::now();
        if now >= self.next_vacancy_check && !self.gave_up && self.status == JobStatus::Running {
            self.next_vacancy_check = now + Duration::from_secs(1).min(self.cfg.job.vacancy_timeout / 4);
            let limit = self.cfg.job.vacancy_timeout;
            if let Some((t, v)) = self.members.vacant.iter().filter(|(_, v)| now.duration_since(v.since) > limit).min_by_key(|(t, _)| **t) {
                let why = format!(
                    "task {t} has had no node for {:.1?} (its nodes died and no spare took it over; the limit is Job::vacancy_timeout, {limit:?})",
                    now.duration_since(v.since)
                );
                tracing::error!(%why, "failing the job");
                self.gave_up = true;
                self.end(Some(why));
            }
        }
        self.resend_due();
        // A backup keeps its watch on its primary open (a connection can
        // end for reasons of its own; the primary may have moved).
        if let Role::Backup(b) = &mut self.role {
            if self.members.primaries.get(&b.task).is_some_and(|p| !self.peers.connected(p.addr)) && !b.watching {
                b.watching = true;
                self.watch_primary();
            }
        }
        // Tasks nobody holds (a missed race, or backups that did not take
        // over): a caught-up backup of the task claims it at once; a spare,
        // or a backup that has not caught up, when no caught-up backup
        // has for a lease's time (or the task has no backup at all).
        if self.role.primary().is_none() && self.status == JobStatus::Running && !self.taking.busy() {
            let now = Instant::now();
            let mut due: Vec<TaskId> = self.members.vacant.iter().filter(|(_, v)| v.next_look <= now).map(|(t, _)| *t).collect();
            due.sort_unstable();
            for t in due {
                // (One attempt at a time: the first that starts one.)
                self.fill_vacancy(t);
            }
            self.find_work();
        }
        Ok(())
    }

    /// Calls a handler; its actions wait in `pending` for
    /// [`apply_pending`](Self::apply_pending).
    pub(super) fn call(&mut self, f: impl FnOnce(&mut dyn Task, &mut Context<'_>)) {
        let Some((me, _)) = self.role.primary() else { return };
        let (mut actions, panic) = self.run_handler(me, f);
        if let Some(what) = panic {
            actions.push(Action::End { failure: Some(format!("task {me} panicked at epoch {}: {what}", self.epoch)) });
        }
        self.pending.extend(actions);
    }

    /// Calls a handler of the task this node is a backup of. A backup only
    /// follows: actions its handlers ask for are dropped (a panic fails
    /// the job, as on a primary).
    pub(super) fn call_backup(&mut self, f: impl FnOnce(&mut dyn Task, &mut Context<'_>)) {
        let Some((t, _)) = self.role.backup() else { return };
        let (actions, panic) = self.run_handler(t, f);
        if let Some(what) = panic {
            let why = format!("task {t} panicked on a backup at epoch {}: {what}", self.epoch);
            let (coord, key, value) = (self.cfg.coord.clone(), self.keys.status(), JobStatus::Failed(why).encode());
            self.spawner.spawn(async move {
                let _ = coord.compare_and_swap(&key, Expect::Value(JobStatus::Running.encode()), &value, None).await;
            });
        } else if !actions.is_empty() {
            tracing::warn!(task = t, n = actions.len(), "a backup's handler asked for actions: dropped (backups only follow)");
        }
    }

    /// Runs a handler of this node's task (as task `t`): its actions, and
    /// what it panicked with, if it did.
    pub(super) fn run_handler(&mut self, t: TaskId, f: impl FnOnce(&mut dyn Task, &mut Context<'_>)) -> (Vec<Action>, Option<String>) {
        let mut actions = Vec::new();
        let task = match &mut self.role {
            Role::Spare => return (actions, None),
            Role::Backup(b) => &mut b.app,
            Role::Primary(p) => &mut p.app,
        };
        let topology = self.cfg.job.topology.clone();
        let mut cx = Context { task: t, epoch: self.epoch, tasks: self.cfg.job.tasks, topology: &*topology, actions: &mut actions };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(task.as_mut(), &mut cx)));
        let panic = result.err().map(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into())
        });
        (actions, panic)
    }
}
