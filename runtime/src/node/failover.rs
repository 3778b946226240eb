//! Failover: a spare or a backup takes a task (claim, backup slot,
//! promote), a dead primary is evicted, and a node whose lease lapsed
//! takes its keys again (rejoin) or steps down. The decisions are made
//! here, on the loop; the coordinator work of taking a task runs off it
//! (`takeover.rs`) and comes back as `Event::Took`, handled by `on_took`.

use super::*;
use super::event_loop::{Backup, Primary};
use super::takeover::{self, Claimant, LeaseCheck, Took};

impl Loop {
    /// Whether this node holds a task (as its primary or a backup).
    pub(super) fn holds_task(&self) -> bool {
        !matches!(self.role, Role::Spare)
    }

    /// What an attempt to take a task needs of this node.
    pub(super) fn claimant(&self) -> Claimant {
        Claimant {
            coord: self.cfg.coord.clone(),
            keys: self.keys.clone(),
            node_id: self.cfg.node_id,
            value: self.value.clone(),
            lease: self.lease,
            lease_ttl: self.cfg.job.lease_ttl,
        }
    }

    /// Whether this node took its keys again (or found its lease in doubt
    /// and alive) less than a TTL ago: then it takes no other task.
    fn settling(&self) -> bool {
        self.rejoined_at.is_some_and(|at| at.elapsed() < self.cfg.job.lease_ttl)
    }

    /// Whether no keep-alive of this node's lease has succeeded for a TTL
    /// (the coordinator, or this process, was paused). Its lease may lapse
    /// a moment after others' (etcd revokes expired leases at a bounded
    /// rate), so its own key's deletion cannot be the only sign.
    fn lease_in_doubt(&self) -> bool {
        Instant::now() >= self.lease_sure_until.get()
    }

    /// Starts an attempt to take a task off the loop (a claim of task
    /// `claiming`, or another), unless one is in flight; its outcome comes
    /// back as `Event::Took`.
    pub(super) fn attempt(&mut self, claiming: Option<TaskId>, work: impl std::future::Future<Output = Took> + 'static) -> bool {
        if !self.taking.start(claiming) {
            return false;
        }
        let tx = self.tx.clone();
        self.spawner.spawn(async move {
            let _ = tx.send(Event::Took(work.await));
        });
        true
    }

    /// Task `t` has no primary (as this node knows): this node claims it
    /// if it should, else looks again later (`retry_due`).
    ///
    /// Whoever holds the task's state takes it over: a backup of `t` that
    /// has caught up with the stream claims at once. Any other node (a
    /// spare, a backup that has not caught up) first reads the task's keys
    /// afresh, since its own view may lag: while a caught-up backup of `t`
    /// lives (its key says `ready`), it leaves the task to it, for up to
    /// two lease TTLs (then that backup is stuck, and the task must go on
    /// without its state); with no such backup, it claims at once (see
    /// `takeover::look`).
    pub(super) fn fill_vacancy(&mut self, t: TaskId) {
        if self.role.primary().is_some() || self.status != JobStatus::Running || self.members.primaries.contains_key(&t) {
            return;
        }
        let mine = self.role.backup().is_some_and(|(b, _)| b == t);
        if (self.role.backup().is_some() && !mine) || self.taking.busy() {
            return;
        }
        // A coordinator pause lets every lease lapse at once, this node's
        // too: then the task's own node is about to take it again, state
        // and all. Leave it that while.
        if self.settling() {
            if let (Some(at), Some(v)) = (self.rejoined_at, self.members.vacant.get_mut(&t)) {
                v.next_look = at + self.cfg.job.lease_ttl;
            }
            return;
        }
        let ready = mine && self.role.caught_up();
        let check = match (self.lease_in_doubt(), ready) {
            (true, _) => LeaseCheck::InDoubt,
            (false, false) => LeaseCheck::Alive,
            (false, true) => LeaseCheck::No,
        };
        let now = Instant::now();
        let v = self.members.vacant.entry(t).or_insert(Vacancy { since: now, next_look: now });
        v.next_look = now + self.cfg.job.lease_ttl / 2;
        let vacant_for = now.duration_since(v.since);
        self.attempt(Some(t), takeover::claim(self.claimant(), t, check, ready, vacant_for));
    }

    /// A node without a task looks for one: its preferred task (the
    /// primary, else a backup slot), else any task without a primary
    /// (see `fill_vacancy`), else any free backup slot. If there is none,
    /// it stays a spare. One attempt at a time: each outcome looks again.
    pub(super) fn find_work(&mut self) {
        if self.holds_task() || self.status != JobStatus::Running || self.taking.busy() {
            return;
        }
        // Right after a lapse of every lease (a coordinator pause), the
        // keys that went are their own nodes' to take again.
        if self.settling() {
            return;
        }
        let tasks = self.cfg.job.tasks;
        let now = Instant::now();
        let due = |l: &Loop, t: TaskId| !l.members.primaries.contains_key(&t) && l.members.vacant.get(&t).is_none_or(|v| v.next_look <= now);
        if let Some(t) = self.cfg.preferred_task.filter(|&t| t < tasks) {
            if due(self, t) {
                return self.fill_vacancy(t);
            }
            if self.try_backup(t) {
                return;
            }
        }
        // A spare: it follows every task, to fill their vacancies (the
        // read comes back as `Event::Followed`, which looks again).
        let all = self.keys.tasks();
        if !self.members.follows(&all) {
            return self.follow_soon(all);
        }
        if let Some(t) = (0..tasks).find(|&t| due(self, t)) {
            return self.fill_vacancy(t);
        }
        for t in 0..tasks {
            if self.members.primaries.contains_key(&t) && self.try_backup(t) {
                return;
            }
        }
    }

    /// Tries to become a backup of task `t` (a free slot of `1..replicas`):
    /// whether an attempt started.
    pub(super) fn try_backup(&mut self, t: TaskId) -> bool {
        let held = self.members.backups.get(&t);
        let free: Vec<u32> = (1..self.cfg.job.replicas_of(t)).filter(|slot| held.is_none_or(|m| !m.contains_key(slot))).collect();
        if free.is_empty() || self.holds_task() {
            return false;
        }
        let check = if self.lease_in_doubt() { LeaseCheck::InDoubt } else { LeaseCheck::No };
        self.attempt(None, takeover::back(self.claimant(), t, free, check))
    }

    /// What an attempt to take a task found.
    pub(super) async fn on_took(&mut self, took: Took) -> Result<(), Exit> {
        let claimed = self.taking.claiming();
        let waiting_rejoin = self.taking.finished();
        self.took(took).await?;
        if claimed.is_some_and(|t| self.role.primary().map(|(p, _)| p) != Some(t)) {
            // Fetches that waited for the claim: this node is not the
            // task's primary after all. Admission answers them now.
            for (req, respond) in self.replies.take_held(Epoch::MAX) {
                Box::pin(self.on_fetch(req, respond)).await?;
            }
        }
        if let Some(gone) = waiting_rejoin {
            // It waited for the attempt; what it is about may have changed.
            self.rejoin(gone.filter(|_| self.role.backup().is_some()));
        }
        if self.status == JobStatus::Running && self.role.primary().is_none() {
            if self.holds_task() {
                if let Some(t) = self.role.backup().map(|(t, _)| t).filter(|t| self.members.vacant.contains_key(t)) {
                    self.fill_vacancy(t);
                }
            } else {
                self.find_work();
            }
        }
        Ok(())
    }

    async fn took(&mut self, took: Took) -> Result<(), Exit> {
        match took {
            Took::Settle => {
                self.lease_sure_until.set(Instant::now() + self.cfg.job.lease_ttl / 2);
                self.rejoined_at = Some(Instant::now());
                Ok(())
            }
            Took::LeaseGone => {
                self.rejoin(None);
                Ok(())
            }
            Took::Left { task, kvs, wait } => {
                for kv in &kvs {
                    self.learn(kv);
                }
                if wait {
                    if let Some(v) = self.members.vacant.get_mut(&task) {
                        v.next_look = Instant::now() + self.cfg.job.lease_ttl / 2;
                    }
                }
                Ok(())
            }
            Took::JobOver => Ok(()),
            Took::NoSlot { kvs } => {
                for kv in &kvs {
                    self.learn(kv);
                }
                Ok(())
            }
            Took::Claimed { task, kv, kvs } => {
                for kv in &kvs {
                    self.learn(kv);
                }
                self.become_primary(task, &kv).await
            }
            Took::Backed { task, slot, kv } => {
                self.become_backup(task, slot, &kv);
                Ok(())
            }
            Took::Rejoined(retaken) => self.retaken(retaken),
            Took::Exit(exit) => Err(exit),
            Took::Failed { what, error } => Err(self.coordinator_failed(what, error)),
        }
    }

    /// This node holds backup slot `slot` of task `t` now (its key `kv`).
    fn become_backup(&mut self, t: TaskId, slot: u32, kv: &KeyValue) {
        if self.holds_task() || self.status != JobStatus::Running {
            // (Cannot happen: one attempt at a time. The slot lapses with
            // this node's lease, or goes when the job ends.)
            return;
        }
        tracing::info!(node = self.cfg.node_id, task = t, slot, "backup of task");
        let me = self.mine(kv);
        self.members.backups.entry(t).or_default().insert(slot, me);
        let app = (self.cfg.job.factory)(t);
        self.role = Role::Backup(Backup { task: t, slot, app, caught_up: false, watching: false });
        self.call_backup(|task, cx| task.init(cx));
        let snapshots = self.role.app().is_some_and(|task| task.snapshot().is_some());
        self.stream = Stream { snapshots, ..Default::default() };
        self.call_backup(|task, cx| task.became_backup(cx));
        // Its primary (to watch) comes with the read, if not known yet.
        self.follow_soon(self.keys.task(t));
        self.watch_primary();
    }

    /// A backup keeps a connection to its primary: when that ends by
    /// itself, the node checks whether the primary's process is gone
    /// (and takes over at once if so), instead of waiting out its lease.
    pub(super) fn watch_primary(&mut self) {
        let Some((t, _)) = self.role.backup() else { return };
        let Some(p) = self.members.primaries.get(&t).copied() else { return };
        let (peers, tx) = (self.peers.clone(), self.tx.clone());
        self.spawner.spawn(async move {
            let result = peers.connect(p.addr).await;
            if let Err(e) = &result {
                tracing::debug!(addr = %p.addr, error = ?e, "cannot watch the primary");
            }
            let _ = tx.send(Event::Watching { refused: matches!(result, Err(CallFailure::Refused(_))), addr: p.addr });
        });
    }

    /// This node holds task `t`'s primary key `kv` now: it runs the task,
    /// with the state it holds if it was a caught-up backup of it.
    async fn become_primary(&mut self, t: TaskId, kv: &KeyValue) -> Result<(), Exit> {
        let term = kv.create_revision as u64;
        tracing::info!(node = self.cfg.node_id, task = t, term, "primary of task");
        let kept = match std::mem::replace(&mut self.role, Role::Spare) {
            Role::Backup(b) if self.promote(t, b.slot, b.caught_up) => Some(b.app),
            _ => None,
        };
        let fresh = kept.is_none();
        let app = kept.unwrap_or_else(|| (self.cfg.job.factory)(t));
        self.role = Role::Primary(Primary { task: t, term, app, entered: false });
        self.lane.hold(t, term);
        self.shared.set_role(t as i64, term);
        // Its backups come with the read (see `Event::Followed`).
        self.follow_soon(self.keys.task(t));
        let me = self.mine(kv);
        self.members.primaries.insert(t, me);
        self.members.vacant.remove(&t);
        if fresh {
            self.call(|task, cx| task.init(cx));
            self.stream = Stream::default();
            if self.cfg.job.replicas_of(t) > 1 {
                let snapshot = self.role.app().and_then(|task| task.snapshot());
                let first = snapshot.map(|s| ReplicaEntry::Snapshot(Arc::new(s)));
                self.stream = Stream::begin(term, first.is_some(), first.unwrap_or(ReplicaEntry::Start));
            }
        } else {
            let old = std::mem::take(&mut self.stream);
            self.restart_stream(term, old);
        }
        self.track_backups();
        self.call(|task, cx| task.became_primary(cx, term));
        self.apply_pending().await?;
        let epoch = self.epoch;
        self.enter(epoch).await
    }

    /// A backup (of slot `slot`) that has just won its task gives up its
    /// slot. If it had caught up (`caught_up`), its state is the task's
    /// and the replies the old primary released this epoch are its own:
    /// it keeps them (`true`), and writes a new stream for the other
    /// backups. Else it takes over as a spare would, from the task's
    /// initial state (`false`).
    pub(super) fn promote(&mut self, t: TaskId, slot: u32, caught_up: bool) -> bool {
        tracing::info!(node = self.cfg.node_id, task = t, "a backup takes its task over");
        if let Some(m) = self.members.backups.get_mut(&t) {
            m.remove(&slot);
        }
        let (coord, key) = (self.cfg.coord.clone(), self.keys.backup(t, slot));
        self.spawner.spawn(async move {
            if let Err(e) = patiently(|| coord.delete(&key)).await {
                tracing::warn!(task = t, error = %e, "cannot give up the backup slot");
            }
        });
        if !caught_up {
            tracing::info!(task = t, "the backup had not caught up: starting the task afresh");
            return false;
        }
        let epoch = self.epoch;
        let kept = std::mem::take(&mut self.stream.served).into_iter().filter(|(_, (e, _))| *e == epoch).map(|(k, (_, frame))| (k, frame));
        self.replies.adopt(epoch, kept);
        true
    }

    /// The stream of this primary's new term `term`, from the state it
    /// holds (`old` is the stream it followed or wrote before): every
    /// backup starts over from it.
    pub(super) fn restart_stream(&mut self, term: u64, old: Stream) {
        self.stream = if old.snapshots {
            let snapshot = self.role.app().and_then(|task| task.snapshot()).unwrap_or_default();
            let mut stream = Stream::begin(term, true, ReplicaEntry::Snapshot(Arc::new(snapshot)));
            self.push_served_cache(&mut stream);
            stream
        } else {
            // Without snapshots, the stream is every entry since the
            // start: the one this node followed, now under its term.
            Stream { term, log: old.log, base: old.base, end: old.end, snapshots: false, ..Default::default() }
        };
        // Replies waiting for the old stream's backups go in the new one.
        if self.stream.snapshots {
            for (epoch, effect) in self.gate.items() {
                if let Effect::Action(Action::Reply { request, frame }) = effect {
                    self.stream.push_served(*epoch, request.edge, request.from, frame);
                }
            }
        }
        self.track_backups();
    }

    /// Appends this epoch's released replies to `stream` (after a snapshot).
    pub(super) fn push_served_cache(&self, stream: &mut Stream) {
        for ((edge, requester), frame) in self.replies.released() {
            stream.push_served(self.epoch, edge, requester, frame);
        }
    }

    /// Deletes task `t`'s primary key if it is still the one of term
    /// `term` (whose node is gone), so that another node takes the task
    /// over. A newer primary of the task is left alone.
    pub(super) fn evict(&mut self, t: TaskId, term: u64) {
        let Some(p) = self.members.primaries.get(&t).copied().filter(|p| p.term == term) else { return };
        let (coord, key) = (self.cfg.coord.clone(), self.keys.primary(t));
        // Off the loop: the watch says when the key is gone.
        self.spawner.spawn(async move {
            match coord.compare_and_delete(&key, p.mod_revision).await {
                Ok(true) => tracing::info!(task = t, node = p.node, term = p.term, "evicted a dead primary"),
                Ok(false) => {}
                Err(e) => tracing::warn!(task = t, error = %e, "cannot evict a primary"),
            }
        });
    }

    /// Has the lane check that this node still holds its task's key (it
    /// may have lost it while paused, before its watch says so): if not,
    /// the loop hears `Written::NotPrimary` and steps down, or
    /// `KeyGone` and takes it again. At most one check per 100 ms (a
    /// stranger may name a newer term in every request).
    pub(super) fn check_primary(&mut self) {
        if self.role.primary().is_none() || self.last_check.is_some_and(|at| at.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last_check = Some(Instant::now());
        self.lane.submit(Write::Check);
    }
}
