//! Failover: a spare or a backup takes a task (claim, backup slot, promote),
//! a dead primary is evicted, and a node whose lease lapsed takes its keys
//! again (rejoin) or steps down.

use super::*;

impl Loop {
    /// Whether this node holds a task (as its primary or a backup).
    pub(super) fn holds_task(&self) -> bool {
        self.role != Role::Spare
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
    /// without its state); with no such backup, it claims at once.
    pub(super) async fn fill_vacancy(&mut self, t: TaskId) -> Result<(), Exit> {
        if self.role.primary().is_some() || self.status != JobStatus::Running || self.primaries.contains_key(&t) {
            return Ok(());
        }
        let mine = self.role.backup().is_some_and(|(b, _)| b == t);
        if self.role.backup().is_some() && !mine {
            return Ok(());
        }
        // A coordinator pause lets every lease lapse at once, this node's
        // too: then the task's own node is about to take it again, state
        // and all. Leave it that while.
        self.settle().await?;
        let settling = self.rejoined_at.is_some_and(|at| at.elapsed() < self.cfg.job.lease_ttl);
        if mine && self.stream.ready && !settling {
            return self.try_claim(t).await;
        }
        if !settling && !self.lease_alive().await? {
            self.rejoin().await?;
        }
        if let Some(at) = self.rejoined_at.filter(|at| at.elapsed() < self.cfg.job.lease_ttl) {
            if let Some(v) = self.vacant.get_mut(&t) {
                v.next_look = at + self.cfg.job.lease_ttl;
            }
            return Ok(());
        }
        let prefix = self.keys.task(t);
        let (kvs, _) = match patiently(|| self.cfg.coord.get_prefix(&prefix)).await {
            Ok(read) => read,
            Err(e) => return Err(self.coordinator_failed("read a task's keys", e)),
        };
        for kv in &kvs {
            self.learn(kv);
        }
        if self.primaries.contains_key(&t) {
            return Ok(());
        }
        let now = Instant::now();
        let vacancy = *self.vacant.entry(t).or_insert(Vacancy { since: now, next_look: now });
        let ready_elsewhere = self.backups.get(&t).is_some_and(|m| m.values().any(|b| b.ready && b.node != self.cfg.node_id));
        let patience = 2 * self.cfg.job.lease_ttl;
        if ready_elsewhere && now.duration_since(vacancy.since) < patience {
            if let Some(v) = self.vacant.get_mut(&t) {
                v.next_look = now + self.cfg.job.lease_ttl / 2;
            }
            return Ok(());
        }
        if ready_elsewhere {
            tracing::warn!(node = self.cfg.node_id, task = t, "a caught-up backup has not taken its task over: taking it without its state");
        }
        self.try_claim(t).await
    }

    /// A node without a task looks for one: its preferred task (the
    /// primary, else a backup slot), else any task without a primary
    /// (see `fill_vacancy`), else any free backup slot. If there is none,
    /// it stays a spare.
    pub(super) async fn find_work(&mut self) -> Result<(), Exit> {
        if self.holds_task() || self.status != JobStatus::Running {
            return Ok(());
        }
        // Right after a lapse of every lease (a coordinator pause), the
        // keys that went are their own nodes' to take again.
        self.settle().await?;
        if self.rejoined_at.is_some_and(|at| at.elapsed() < self.cfg.job.lease_ttl) {
            return Ok(());
        }
        let tasks = self.cfg.job.tasks;
        if let Some(t) = self.cfg.preferred_task.filter(|&t| t < tasks) {
            self.fill_vacancy(t).await?;
            if !self.holds_task() {
                self.try_backup(t).await?;
            }
        }
        if self.holds_task() {
            return Ok(());
        }
        // A spare: it follows every task, to fill their vacancies.
        self.follow(self.keys.tasks()).await?;
        for t in 0..tasks {
            if self.holds_task() {
                return Ok(());
            }
            if !self.primaries.contains_key(&t) && self.vacant.get(&t).is_none_or(|v| v.next_look <= Instant::now()) {
                self.fill_vacancy(t).await?;
            }
        }
        for t in 0..tasks {
            if self.holds_task() {
                return Ok(());
            }
            if self.primaries.contains_key(&t) {
                self.try_backup(t).await?;
            }
        }
        Ok(())
    }

    /// Tries to become a backup of task `t` (a free slot of `1..replicas`).
    pub(super) async fn try_backup(&mut self, t: TaskId) -> Result<(), Exit> {
        for slot in 1..self.cfg.job.replicas_of(t) {
            if self.holds_task() || self.backups.get(&t).is_some_and(|m| m.contains_key(&slot)) {
                continue;
            }
            let key = self.keys.backup(t, slot);
            match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
                Ok(Ok(kv)) => {
                    tracing::info!(node = self.cfg.node_id, task = t, slot, "backup of task");
                    let me = self.mine(&kv);
                    self.backups.entry(t).or_default().insert(slot, me);
                    self.role = Role::Backup { task: t, slot };
                    self.task = Some((self.cfg.job.factory)(t));
                    self.call_backup(|task, cx| task.init(cx));
                    let snapshots = self.task.as_ref().is_some_and(|task| task.snapshot().is_some());
                    self.stream = Stream { snapshots, ..Default::default() };
                    self.call_backup(|task, cx| task.became_backup(cx));
                    self.follow(self.keys.task(t)).await?;
                    self.watch_primary();
                }
                Ok(Err(existing)) => self.learn(&existing),
                Err(CoordError::LeaseNotFound(_)) => return self.rejoin().await,
                Err(e) => return Err(self.coordinator_failed("become a backup", e)),
            }
        }
        Ok(())
    }

    /// A backup keeps a connection to its primary: when that ends by
    /// itself, the node checks whether the primary's process is gone
    /// (and takes over at once if so), instead of waiting out its lease.
    pub(super) fn watch_primary(&mut self) {
        let Some((t, _)) = self.role.backup() else { return };
        let Some(p) = self.primaries.get(&t).copied() else { return };
        let (peers, tx) = (self.peers.clone(), self.tx.clone());
        self.spawner.spawn(async move {
            let result = peers.connect(p.addr).await;
            if let Err(e) = &result {
                tracing::debug!(addr = %p.addr, error = ?e, "cannot watch the primary");
            }
            let _ = tx.send(Event::Watching { refused: matches!(result, Err(CallFailure::Refused(_))), addr: p.addr });
        });
    }

    pub(super) async fn try_claim(&mut self, t: TaskId) -> Result<(), Exit> {
        if self.role.primary().is_some() || self.status != JobStatus::Running {
            return Ok(());
        }
        if self.role.backup().is_some_and(|(b, _)| b != t) {
            return Ok(());
        }
        // The task may be free because the job ended (its primary left):
        // the status and the tasks arrive on separate watches, so ask.
        let status_key = self.keys.status();
        match patiently(|| self.cfg.coord.get(&status_key)).await {
            Ok(Some(kv)) if JobStatus::parse(&kv.value) != JobStatus::Running => return Ok(()),
            Err(e) => return Err(self.coordinator_failed("read the job's status", e)),
            _ => {}
        }
        let key = self.keys.primary(t);
        match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
            Ok(Ok(kv)) => {
                let term = kv.create_revision as u64;
                tracing::info!(node = self.cfg.node_id, task = t, term, "primary of task");
                let was_backup = self.role.backup();
                self.role = Role::Primary { task: t, term };
                self.lane.set_role(self.role.primary());
                self.shared.set_role(t as i64, term);
                self.follow(self.keys.task(t)).await?;
                let me = self.mine(&kv);
                self.primaries.insert(t, me);
                self.vacant.remove(&t);
                if let Some((_, slot)) = was_backup {
                    self.promote(t, slot, term);
                }
                if !self.stream_is_ours(term) {
                    self.task = Some((self.cfg.job.factory)(t));
                    self.call(|task, cx| task.init(cx));
                    if self.cfg.job.replicas_of(t) > 1 {
                        let snapshot = self.task.as_ref().and_then(|task| task.snapshot());
                        let first = snapshot.map(|s| ReplicaEntry::Snapshot(Arc::new(s)));
                        self.stream = Stream::begin(term, first.is_some(), first.unwrap_or(ReplicaEntry::Start));
                    }
                }
                self.track_backups();
                self.call(|task, cx| task.became_primary(cx, term));
                self.apply_pending().await?;
                let epoch = self.epoch;
                self.entered = false;
                self.enter(epoch).await
            }
            Ok(Err(existing)) => {
                self.learn(&existing);
                Ok(())
            }
            // This node's lease lapsed too (a coordinator pause): it takes
            // its own keys again first, and looks at the task later.
            Err(CoordError::LeaseNotFound(_)) => self.rejoin().await,
            Err(e) => Err(self.coordinator_failed("claim a task", e)),
        }
    }

    /// Whether the stream is this primary's (a promoted backup's), rather
    /// than to be begun afresh.
    pub(super) fn stream_is_ours(&self, term: u64) -> bool {
        self.stream.term == term
    }

    /// A backup that has just won its task: its state is the task's; the
    /// replies the old primary released this epoch are its own; it
    /// writes a new stream for the other backups.
    pub(super) fn promote(&mut self, t: TaskId, slot: u32, term: u64) {
        tracing::info!(node = self.cfg.node_id, task = t, term, "a backup takes its task over");
        if let Some(m) = self.backups.get_mut(&t) {
            m.remove(&slot);
        }
        let (coord, key) = (self.cfg.coord.clone(), self.keys.backup(t, slot));
        self.spawner.spawn(async move {
            if let Err(e) = patiently(|| coord.delete(&key)).await {
                tracing::warn!(task = t, error = %e, "cannot give up the backup slot");
            }
        });
        let mut old = std::mem::take(&mut self.stream);
        if !old.ready {
            // It never caught up: it takes over as a spare would, from the
            // task's initial state (the caller builds it).
            tracing::info!(task = t, "the backup had not caught up: starting the task afresh");
            return;
        }
        let epoch = self.epoch;
        let kept = std::mem::take(&mut old.served).into_iter().filter(|(_, (e, _))| *e == epoch).map(|(k, (_, frame))| (k, frame));
        self.replies.adopt(epoch, kept);
        self.restart_stream(term, old);
    }

    /// The stream of this primary's new term `term`, from the state it
    /// holds (`old` is the stream it followed or wrote before): every
    /// backup starts over from it.
    pub(super) fn restart_stream(&mut self, term: u64, old: Stream) {
        self.stream = if old.snapshots {
            let snapshot = self.task.as_ref().and_then(|task| task.snapshot()).unwrap_or_default();
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
        let Some(p) = self.primaries.get(&t).copied().filter(|p| p.term == term) else { return };
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

    /// If this node's lease is in doubt (no keep-alive has succeeded for a
    /// TTL: the coordinator, or this process, was paused), it renews it
    /// (rejoining if it lapsed) and counts as settling for a TTL from now:
    /// keys that went in the pause are their own nodes' to take again,
    /// and it takes none meanwhile. Its lease may lapse a moment after
    /// others' (etcd revokes expired leases at a bounded rate), so its
    /// own key's deletion cannot be the only sign.
    pub(super) async fn settle(&mut self) -> Result<(), Exit> {
        if Instant::now() < self.lease_sure_until.get() {
            return Ok(());
        }
        if self.lease_alive().await? {
            self.lease_sure_until.set(Instant::now() + self.cfg.job.lease_ttl / 2);
            self.rejoined_at = Some(Instant::now());
            Ok(())
        } else {
            self.rejoin().await
        }
    }

    /// Whether this node's lease is alive (asking the coordinator).
    pub(super) async fn lease_alive(&self) -> Result<bool, Exit> {
        match patiently(|| self.cfg.coord.keep_alive(self.lease)).await {
            Ok(()) => Ok(true),
            Err(CoordError::Unavailable(why)) => Err(self.coordinator_failed("renew its lease", CoordError::Unavailable(why))),
            Err(_) => Ok(false),
        }
    }

    pub(super) async fn on_lease_news(&mut self, news: LeaseNews) -> Result<(), Exit> {
        match news {
            LeaseNews::Lost(lease) if lease == self.lease => self.rejoin().await,
            // An older lease's keeper, replaced since.
            LeaseNews::Lost(_) => Ok(()),
            LeaseNews::Unreachable(why) => {
                tracing::warn!(node = self.cfg.node_id, %why, "giving up on the coordinator");
                Err(NodeExit::CoordinatorLost(why))
            }
        }
    }

    /// This node's keys are gone while it lives: its lease lapsed (the
    /// coordinator, or this process, was paused past the TTL), or a peer
    /// freed its task. It takes them again, under a new lease if its own
    /// is gone, and keeps the task's state: a primary under a new term
    /// (its neighbours see a restart; what it sent under the old term is
    /// fenced), a backup in its slot (it catches up with its primary's
    /// stream again). If another node took the task meanwhile, this one
    /// steps down.
    pub(super) async fn rejoin(&mut self) -> Result<(), Exit> {
        if !self.lease_alive().await? {
            self.renew_lease().await?;
        }
        self.rejoined_at = Some(Instant::now());
        if let Some((t, old_term)) = self.role.primary() {
            let key = self.keys.primary(t);
            match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
                Ok(Ok(kv)) => {
                    let term = kv.create_revision as u64;
                    tracing::info!(node = self.cfg.node_id, task = t, old_term, term, "took its task again, with its state, under a new term");
                    self.role = Role::Primary { task: t, term };
                    self.lane.set_role(self.role.primary());
                    self.shared.set_role(t as i64, term);
                    let me = self.mine(&kv);
                    self.primaries.insert(t, me);
                    self.vacant.remove(&t);
                    if self.cfg.job.replicas_of(t) > 1 {
                        let old = std::mem::take(&mut self.stream);
                        self.restart_stream(term, old);
                    }
                    self.call(|task, cx| task.became_primary(cx, term));
                    Ok(())
                }
                Ok(Err(existing)) => {
                    self.learn(&existing);
                    tracing::warn!(node = self.cfg.node_id, task = t, "another node took the task while this one had lost it: stepping down");
                    Err(NodeExit::Replaced { task: t })
                }
                Err(e) => Err(self.coordinator_failed("take its task again", e)),
            }
        } else if let Some((t, slot)) = self.role.backup() {
            let key = self.keys.backup(t, slot);
            match patiently(|| self.cfg.coord.create(&key, &self.value, Some(self.lease))).await {
                Ok(Ok(kv)) => {
                    tracing::info!(node = self.cfg.node_id, task = t, slot, "took its backup slot again");
                    let me = self.mine(&kv);
                    self.backups.entry(t).or_default().insert(slot, me);
                    // Its primary did not sync it while its key was gone.
                    self.stream.ready = false;
                    Ok(())
                }
                Ok(Err(existing)) => {
                    self.learn(&existing);
                    tracing::warn!(node = self.cfg.node_id, task = t, slot, "another node took the backup slot: stopping");
                    Err(NodeExit::BackupDropped { task: t })
                }
                Err(e) => Err(self.coordinator_failed("take its backup slot again", e)),
            }
        } else {
            Ok(())
        }
    }

    /// A new lease (the old one is gone), its keep-alive, and this node's
    /// `nodes/<id>` key under it.
    pub(super) async fn renew_lease(&mut self) -> Result<(), Exit> {
        let ttl = self.cfg.job.lease_ttl;
        let granted_at = Instant::now();
        let lease = match patiently(|| self.cfg.coord.grant(ttl)).await {
            Ok(lease) => lease,
            Err(e) => return Err(self.coordinator_failed("get a new lease", e)),
        };
        tracing::info!(node = self.cfg.node_id, old = self.lease, new = lease, "its lease had lapsed: a new one");
        self.lease = lease;
        self.lease_sure_until.set(granted_at + ttl);
        self.keeper =
            lease::keep(self.cfg.coord.clone(), lease, ttl, COORDINATOR_PATIENCE, self.lease_sure_until.clone(), self.lease_news.clone());
        let key = self.keys.node(self.cfg.node_id);
        let value = format!("addr={}", self.shared.addr()).into_bytes();
        match patiently(|| self.cfg.coord.create(&key, &value, Some(lease))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => {
                tracing::warn!(node = self.cfg.node_id, "another live node has this node's id now: stopping");
                Err(NodeExit::IdTaken)
            }
            Err(e) => Err(self.coordinator_failed("register again", e)),
        }
    }
}
