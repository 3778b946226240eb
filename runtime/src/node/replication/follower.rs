//! The backup's side of replication: applying its primary's stream and
//! acknowledging it; marking its key `ready` once caught up.

use super::super::*;

impl Loop {
    /// On a backup: applies a batch of its primary's stream.
    /// The answer, and whether the backup has just caught up with it.
    pub(in crate::node) fn on_replicate(&mut self, batch: Replication) -> Result<((Status, u64), bool), Exit> {
        let term_now = self.term();
        let refuse = |kind, detail: String| Ok(((Status::new(kind, detail, self.epoch, term_now), 0), false));
        if batch.job != self.cfg.job.name {
            return refuse(StatusKind::WrongJob, format!("this node runs job `{}`", self.cfg.job.name));
        }
        let Some((t, _)) = self.role.backup().filter(|(t, _)| *t == batch.task) else {
            if let Some((t, term)) = self.role.primary().filter(|(t, _)| *t == batch.task) {
                if term > batch.term {
                    return refuse(StatusKind::StaleTerm, format!("this node is task {t}'s primary with term {term}"));
                }
            }
            return refuse(StatusKind::NotPrimary, format!("node {} is not a backup of task {}", self.cfg.node_id, batch.task));
        };
        let known = self.members.primaries.get(&t).map_or(0, |p| p.term).max(self.stream.term);
        if batch.term < known {
            return refuse(StatusKind::StaleTerm, format!("task {t}'s term {} has ended (it is {known})", batch.term));
        }
        let resets = |e: Option<&ReplicaEntry>| matches!(e, Some(ReplicaEntry::Start | ReplicaEntry::Snapshot(_)));
        if batch.term > self.stream.term {
            // A new primary's stream: it must start afresh.
            if !resets(batch.entries.first()) {
                return Ok(((Status::ok(self.epoch, 0), 0), false));
            }
            self.stream = Stream { term: batch.term, snapshots: self.stream.snapshots, ..Default::default() };
            // It has caught up with no stream of this term yet.
            if let Role::Backup(b) = &mut self.role {
                b.caught_up = false;
            }
            self.stream.restart_at(batch.first);
        }
        let applied = self.stream.end;
        if batch.first <= applied {
            // What we have already (a resend): nothing to apply.
            return Ok(self.acknowledge(t, batch.end));
        }
        if batch.first > applied + 1 {
            if !resets(batch.entries.first()) {
                // A gap: the primary resends from where we are.
                return Ok(((Status::ok(self.epoch, 0), applied), false));
            }
            self.stream.restart_at(batch.first);
        }
        for entry in batch.entries {
            if let ReplicaEntry::Update(_) = entry {
                self.kill_at(FaultPoint::BackupApplied { task: t, epoch: self.epoch })?;
            }
            self.apply_entry(t, entry);
        }
        Ok(self.acknowledge(t, batch.end))
    }

    /// On a backup: the answer to a batch of the stream that ends at `end`
    /// (a backup that holds all of it has caught up), and whether it has
    /// just caught up (then the answer waits for its key to say so).
    pub(in crate::node) fn acknowledge(&mut self, t: TaskId, end: u64) -> ((Status, u64), bool) {
        let Role::Backup(b) = &mut self.role else { return ((Status::ok(self.epoch, 0), self.stream.end), false) };
        let caught_up = self.stream.end >= end && !b.caught_up;
        if caught_up {
            tracing::debug!(task = t, position = self.stream.end, "the backup has caught up");
            b.caught_up = true;
        }
        ((Status::ok(self.epoch, 0), self.stream.end), caught_up)
    }

    /// On a backup that has caught up: marks its key `ready`, then sends
    /// `answer` (off the loop). Said in the coordinator before the
    /// acknowledgement: from that ack on, the primary syncs this backup
    /// before every effect, and whoever sees a vacancy of the task leaves
    /// it to this node.
    pub(in crate::node) fn publish_ready(&mut self, answer: (Status, u64), respond: oneshot::Sender<(Status, u64)>) {
        let me = self.role.backup().and_then(|(t, slot)| Some((t, slot, self.members.backups.get(&t)?.get(&slot).copied()?)));
        let Some((t, slot, me)) = me.filter(|(_, _, me)| !me.ready) else {
            let _ = respond.send(answer);
            return;
        };
        let (coord, key, lease, tx) = (self.cfg.coord.clone(), self.keys.backup(t, slot), self.lease, self.tx.clone());
        let value = Holder { node: self.cfg.node_id, addr: self.shared.addr(), ready: true }.encode();
        self.spawner.spawn(async move {
            let write = patiently(|| coord.compare_and_swap(&key, Expect::ModRevision(me.mod_revision), &value, Some(lease))).await;
            let result = write.map(|w| w.map(|kv| kv.mod_revision).map_err(|_| ()));
            if matches!(result, Ok(Ok(_))) {
                let _ = respond.send(answer);
            }
            let _ = tx.send(Event::MarkedReady { task: t, slot, term: me.term, result });
        });
    }

    /// The write of `publish_ready` finished.
    pub(in crate::node) fn on_marked_ready(&mut self, t: TaskId, slot: u32, term: u64, result: crate::coord::CoordResult<Result<i64, ()>>) -> Result<(), Exit> {
        // Only about the key this node holds now (not one it had before
        // it took the slot again).
        let Some(b) = self.members.backups.get_mut(&t).and_then(|m| m.get_mut(&slot)).filter(|b| b.term == term) else { return Ok(()) };
        if self.role.backup() != Some((t, slot)) {
            return Ok(());
        }
        match result {
            Ok(Ok(mod_revision)) => {
                b.mod_revision = mod_revision;
                b.ready = true;
                Ok(())
            }
            Ok(Err(())) => {
                // Our key changed or went: this node is no longer the
                // slot's backup.
                tracing::warn!(node = self.cfg.node_id, task = t, slot, "lost the task's backup slot");
                Err(NodeExit::BackupDropped { task: t })
            }
            // Its lease lapsed (a pause): the slot goes with it, and this
            // node takes it again.
            Err(CoordError::LeaseNotFound(_)) => {
                self.rejoin(None);
                Ok(())
            }
            Err(e) => Err(self.coordinator_failed("mark a backup ready", e)),
        }
    }

    pub(in crate::node) fn apply_entry(&mut self, t: TaskId, entry: ReplicaEntry) {
        match &entry {
            ReplicaEntry::Start => {
                if let Role::Backup(b) = &mut self.role {
                    b.app = (self.cfg.job.factory)(t);
                }
                self.call_backup(|task, cx| task.init(cx));
                self.stream.served.clear();
                self.stream.restart_at(self.stream.end + 1);
            }
            ReplicaEntry::Snapshot(state) => {
                self.call_backup(|task, cx| task.restore(cx, state));
                self.stream.served.clear();
                self.stream.restart_at(self.stream.end + 1);
            }
            ReplicaEntry::Update(update) => self.call_backup(|task, cx| task.apply_update(cx, update)),
            ReplicaEntry::Served { epoch, edge, requester, frame, range, last } => {
                let part = &frame[range.clone()];
                let whole = match self.stream.partial.take() {
                    Some((e, g, r, mut bytes)) if (e, g, r) == (*epoch, *edge, *requester) => {
                        bytes.extend_from_slice(part);
                        bytes
                    }
                    _ => part.to_vec(),
                };
                if *last {
                    self.stream.served.insert((*edge, *requester), (*epoch, Arc::new(whole)));
                } else {
                    self.stream.partial = Some((*epoch, *edge, *requester, whole));
                }
            }
        }
        self.stream.push(entry);
    }
}
