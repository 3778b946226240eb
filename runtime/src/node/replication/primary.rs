//! The primary's side of replication, on the loop: sending each backup
//! what it lacks (on their own tasks) and taking in their answers, with
//! `progress` deciding what they mean and when waiting effects may go.

use super::super::*;

impl Loop {
    /// On a primary: the backups of its task start over from the stream
    /// it writes now (every one it knows of).
    pub(in crate::node) fn track_backups(&mut self) {
        self.sending = Sending::default();
        let Some((me, _)) = self.role.primary() else { return };
        for slot in self.members.backups.get(&me).map(|m| m.keys().copied().collect::<Vec<_>>()).unwrap_or_default() {
            self.sending.add(slot);
        }
        self.gate.restarted(self.stream.end);
    }

    /// The stream position every backup of this primary has applied
    /// (`u64::MAX` when it has none to wait for).
    pub(in crate::node) fn synced(&self) -> u64 {
        match self.role.primary() {
            Some((me, _)) if self.cfg.job.replicas_of(me) > 1 => self.sending.synced(),
            _ => u64::MAX,
        }
    }

    /// On a primary: sends every backup that lacks part of the stream its
    /// next batch (one in flight each, off the loop; the answers come back
    /// as `Event::Replicated`).
    pub(in crate::node) fn pump(&mut self) {
        let Some((me, term)) = self.role.primary() else { return };
        if self.cfg.job.replicas_of(me) <= 1 {
            return;
        }
        for slot in self.sending.slots() {
            let Some(b) = self.members.backups.get(&me).and_then(|m| m.get(&slot)).copied() else { continue };
            let Some(attempt) = self.sending.start(slot, self.stream.end) else { continue };
            let first = (self.sending.acked(slot) + 1).max(self.stream.base);
            let entries = self.stream.batch(first);
            let batch = Replication { job: self.cfg.job.name.clone(), task: me, term, first, entries, end: self.stream.end };
            let (peers, coord, tx, ttl) = (self.peers.clone(), self.cfg.coord.clone(), self.tx.clone(), self.cfg.job.lease_ttl);
            let key = self.keys.backup(me, slot);
            self.spawner.spawn(async move {
                let answer = match tokio::time::timeout(ttl, peers.replicate(b.addr, &batch)).await {
                    Ok(Ok((status, applied))) if status.kind == StatusKind::Ok => ReplicaAnswer::Applied(applied),
                    Ok(Ok((status, _))) if status.kind == StatusKind::StaleTerm => ReplicaAnswer::StaleTerm(status.detail),
                    other => {
                        // A closed port, or a lapsed lease, is gone; an
                        // answer late while the backup's key lives is slow.
                        let refused = matches!(other, Ok(Err(CallFailure::Refused(_))));
                        let alive = !refused && matches!(coord.get(&key).await, Ok(Some(kv)) if kv.create_revision as u64 == b.term);
                        let what = format!("{:?}", other.map(|r| r.map(|(s, _)| s.kind)));
                        if alive { ReplicaAnswer::Slow } else { ReplicaAnswer::Gone(what) }
                    }
                };
                let _ = tx.send(Event::Replicated { slot, attempt, answer });
            });
        }
    }

    /// A backup answered a batch.
    pub(in crate::node) async fn on_replicated(&mut self, slot: u32, attempt: u64, answer: ReplicaAnswer) -> Result<(), Exit> {
        let Some((me, _)) = self.role.primary() else { return Ok(()) };
        let patience = 4 * self.cfg.job.lease_ttl;
        let Some(next) = self.sending.answered(slot, attempt, answer, Instant::now(), patience) else { return Ok(()) };
        match next {
            ReplicaNext::Send => {}
            ReplicaNext::CheckPrimary(why) => {
                tracing::debug!(task = me, detail = %why, "a backup names a newer primary: checking");
                self.check_primary();
            }
            ReplicaNext::Drop(why) => {
                if let Some(b) = self.members.backups.get(&me).and_then(|m| m.get(&slot)).copied() {
                    tracing::warn!(task = me, slot, node = b.node, %why, "a backup is unreachable or does not follow: dropping it");
                    self.drop_backup(me, slot, b);
                }
            }
        }
        self.pump();
        self.release().await
    }

    /// Drops backup `b` of task `t` in `slot`: its key is deleted (off
    /// the loop; only its key: the key may have been written since, marked
    /// ready, or be another node's by now), and it counts no more once
    /// that is done (`Event::BackupDropped`): until then, its key may say
    /// it holds everything, so effects wait.
    pub(in crate::node) fn drop_backup(&mut self, t: TaskId, slot: u32, b: KeyHolder) {
        self.sending.dropping(slot);
        let (coord, key, tx) = (self.cfg.coord.clone(), self.keys.backup(t, slot), self.tx.clone());
        self.spawner.spawn(async move {
            let mut revision = b.mod_revision;
            for _ in 0..3 {
                match coord.compare_and_delete(&key, revision).await {
                    Ok(true) => break,
                    Ok(false) => match coord.get(&key).await {
                        Ok(Some(kv)) if kv.create_revision as u64 == b.term => revision = kv.mod_revision,
                        _ => break,
                    },
                    Err(e) => {
                        tracing::warn!(task = t, slot, error = %e, "cannot delete a dropped backup's key");
                        break;
                    }
                }
            }
            let _ = tx.send(Event::BackupDropped { task: t, slot, term: b.term });
        });
    }

    /// Runs the effects whose stream position every backup holds now.
    pub(in crate::node) async fn release(&mut self) -> Result<(), Exit> {
        for (epoch, effect) in self.gate.release(self.synced()) {
            self.run_effect(effect, epoch).await?;
        }
        Ok(())
    }

    /// A dropped backup's key is deleted (or could not be): it counts no
    /// more.
    pub(in crate::node) async fn on_backup_dropped(&mut self, t: TaskId, slot: u32, term: u64) -> Result<(), Exit> {
        if self.role.primary().map(|(me, _)| me) != Some(t) {
            return Ok(());
        }
        if let Some(m) = self.members.backups.get_mut(&t) {
            if m.get(&slot).is_some_and(|b| b.term == term) {
                m.remove(&slot);
                self.sending.remove(slot);
            }
        }
        self.kill_at(FaultPoint::BackupLost { task: t, epoch: self.epoch })?;
        self.release().await
    }
}
