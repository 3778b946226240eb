//! The epoch protocol and the task's actions: entering an epoch, and
//! running what the handlers asked for (fetch, reply, flag, replicate,
//! record, advance, end), effects others see only once the backups hold
//! everything before them.

use super::*;

impl Loop {
    pub(super) async fn set_epoch(&mut self, e: Epoch) -> Result<(), Exit> {
        if e < self.epoch || (e == self.epoch && self.role.entered()) {
            return Ok(());
        }
        self.epoch = e;
        self.shared.set_epoch(e);
        self.stream.served.retain(|_, (epoch, _)| *epoch >= e);
        self.stream.forget_replies_before(e);
        if self.role.primary().is_some() {
            self.enter(e).await
        } else {
            Ok(())
        }
    }

    pub(super) async fn enter(&mut self, e: Epoch) -> Result<(), Exit> {
        let Role::Primary(p) = &mut self.role else { return Ok(()) };
        p.entered = true;
        let me = p.task;
        // Drop the old epoch: its replies, transfers and fetches. (A backup
        // that took over keeps the replies of this epoch it was sent.)
        if self.replies.epoch() != Some(e) {
            let stale = Status::new(StatusKind::StaleEpoch, "the epoch is over", e, self.term());
            let first = self.replies.epoch().is_none();
            self.replies.start_epoch(e, &stale);
            self.shared.clear_transfers();
            if self.cfg.job.replicas_of(me) > 1 && self.stream.snapshots && !first && self.stream.is_long() {
                // The stream restarts at a snapshot once it is long, so that
                // a backup that joins later need not replay it all. (Not at
                // every epoch: every backup would be sent the whole state
                // each time, where the updates are the change.)
                let snapshot = self.role.app().and_then(|task| task.snapshot()).unwrap_or_default();
                self.stream.rebase(ReplicaEntry::Snapshot(Arc::new(snapshot)));
            } else {
                self.stream.forget_replies_before(e);
            }
        }
        self.outbox.entered(e);
        if let Err(why) = crate::graph::check_links(&*self.cfg.job.topology, self.cfg.job.tasks, me, e) {
            tracing::error!(%why, "topology check failed");
            self.end(Some(why));
            return Ok(());
        }
        // The primaries of this epoch's neighbours (the topology may
        // change per epoch).
        // Kept for admission, which checks every request against them.
        let topology = self.cfg.job.topology.clone();
        self.neighbours.clear();
        for link in topology.links() {
            for n in topology.neighbours(link.id, me, e) {
                self.neighbours.insert((link.id, n));
                self.follow_primary(n);
            }
        }
        self.kill_at(FaultPoint::EnterEpoch { task: me, epoch: e })?;
        self.call(|task, cx| task.enter_epoch(cx, e));
        self.apply_pending().await?;
        // Flags and requests that arrived early.
        for flag in self.replies.take_flags(e) {
            self.deliver_flag(flag);
        }
        self.apply_pending().await?;
        for (req, respond) in self.replies.take_held(e) {
            Box::pin(self.on_fetch(req, respond)).await?;
        }
        Ok(())
    }

    pub(super) async fn apply_pending(&mut self) -> Result<(), Exit> {
        while let Some(action) = self.pending.pop_front() {
            // Records followed by an epoch advance go in one coordinator
            // transaction: atomic, and one round trip instead of several.
            if let Action::Record { .. } = action {
                let mut records = vec![action];
                while let Some(Action::Record { .. }) = self.pending.front() {
                    records.push(self.pending.pop_front().expect("present"));
                }
                if let Some(Action::Advance { from }) = self.pending.front() {
                    let from = *from;
                    self.pending.pop_front();
                    self.record_and_advance(records, from).await?;
                } else {
                    for r in records {
                        self.apply(r).await?;
                    }
                }
                continue;
            }
            self.apply(action).await?;
        }
        // Whatever the handlers added to the stream goes to the backups.
        self.pump();
        Ok(())
    }

    /// Writes `records` and moves the epoch on from `from`, in one step.
    pub(super) async fn record_and_advance(&mut self, records: Vec<Action>, from: Epoch) -> Result<(), Exit> {
        if self.role.primary().is_none() {
            return Ok(());
        }
        let puts = self.record_puts(records);
        self.effect(Effect::Write(Write::Records { puts, advance: Some(from) })).await
    }

    /// The coordinator writes of the `Record`s among `actions` (the others
    /// are dropped).
    pub(super) fn record_puts(&self, actions: impl IntoIterator<Item = Action>) -> Vec<(String, Vec<u8>)> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Record { name, value } => Some((self.keys.record(&name), value)),
                _ => None,
            })
            .collect()
    }

    /// Runs `effect` once every backup holds what the task did before it
    /// (now, if they do and nothing waits before it).
    pub(super) async fn effect(&mut self, effect: Effect) -> Result<(), Exit> {
        let end = self.stream.end;
        if self.gate.must_wait(end, self.synced()) {
            self.gate.hold(end, self.epoch, effect);
            self.pump();
            return Ok(());
        }
        self.run_effect(effect, self.epoch).await
    }

    /// Does `effect`, asked for at `epoch`, now.
    pub(super) async fn run_effect(&mut self, effect: Effect, epoch: Epoch) -> Result<(), Exit> {
        match effect {
            Effect::Action(action) => self.perform(action, epoch).await,
            Effect::Write(write) => {
                self.lane.submit(write);
                Ok(())
            }
        }
    }

    /// Runs one action of a handler: at once, or, for an effect others
    /// can see, once every backup holds what the task did before it.
    pub(super) async fn apply(&mut self, action: Action) -> Result<(), Exit> {
        let Some((me, _)) = self.role.primary() else { return Ok(()) };
        match action {
            Action::Replicate { update } => {
                if self.cfg.job.replicas_of(me) > 1 {
                    self.stream.push(ReplicaEntry::Update(Arc::new(update)));
                }
                Ok(())
            }
            Action::Fetch { .. } => self.perform(action, self.epoch).await,
            Action::Reply { request, frame } => {
                if request.epoch != self.epoch {
                    return Ok(());
                }
                let key = (request.edge, request.from);
                if self.replies.is_ready(key) || self.gate.items().any(|(_, e)| e.replies_to(key)) {
                    tracing::warn!(task = me, ?request, "replied twice; keeping the first reply");
                    return Ok(());
                }
                if self.cfg.job.replicas_of(me) > 1 {
                    // The backups get the reply before the requester does.
                    self.stream.push_served(request.epoch, request.edge, request.from, &frame);
                }
                self.effect(Effect::Action(Action::Reply { request, frame })).await
            }
            Action::Flag { .. } | Action::Record { .. } | Action::Advance { .. } | Action::End { .. } => {
                self.effect(Effect::Action(action)).await
            }
        }
    }

    /// Does what `action`, asked for at `epoch`, asks for (its backups
    /// hold everything before it).
    pub(super) async fn perform(&mut self, action: Action, epoch: Epoch) -> Result<(), Exit> {
        let Some((me, _)) = self.role.primary() else { return Ok(()) };
        match action {
            Action::Replicate { .. } => {}
            Action::Fetch { edge, to } => {
                self.follow_primary(to);
                let seq = self.outbox.fetch(edge, to, self.epoch, Instant::now());
                self.send(seq);
            }
            Action::Reply { request, frame } => {
                if request.epoch != self.epoch {
                    return Ok(());
                }
                if !self.replies.release((request.edge, request.from), frame) {
                    return Ok(());
                }
                self.kill_at(FaultPoint::AfterServe { task: me, epoch: request.epoch, to: request.from, edge: request.edge })?;
            }
            // A flag of an epoch that ended while it waited is not sent.
            Action::Flag { .. } if epoch != self.epoch => {}
            Action::Flag { link, to, meta } => {
                self.follow_primary(to);
                // The receiver sees the flag over its side of the link.
                let links = self.cfg.job.topology.links();
                let link = links.get(link as usize).and_then(|l| l.inverse).unwrap_or(link);
                let flag = transport::MetaFlag {
                    job: self.cfg.job.name.clone(),
                    epoch: self.epoch,
                    from_task: me,
                    to_task: to,
                    link,
                    meta,
                    term: self.term(),
                };
                let index = self.outbox.flag(flag);
                self.send_flag(index);
            }
            // Written off the loop, in order, while this node holds its
            // task's key (see `session`).
            Action::Record { name, value } => {
                let puts = self.record_puts([Action::Record { name, value }]);
                self.lane.submit(Write::Records { puts, advance: None });
            }
            Action::Advance { from } => self.lane.submit(Write::Records { puts: Vec::new(), advance: Some(from) }),
            Action::End { failure } => self.lane.submit(Write::End(job_status(failure))),
        }
        Ok(())
    }

    /// Ends the job (any node may: a check of the job's own failed).
    pub(super) fn end(&mut self, failure: Option<String>) {
        self.lane.submit(Write::EndUnguarded(job_status(failure)));
    }
}
