//! What this node knows of the job's keys: the epoch and status as they
//! change, every followed task's primary and backups, vacancies; and
//! following (reading, then watching) only the keys this node acts on.
//!
//! `Members` holds who holds the tasks' keys and decides what a write or
//! a deletion of one means (a restart, an older key, a new backup); the
//! loop's handlers below act on that.

use std::collections::BTreeMap;

use super::*;

/// Who holds the tasks' keys, as this node knows: the primaries and
/// backups of the tasks it follows, the tasks without a primary, and the
/// key prefixes it follows.
#[derive(Debug, Default)]
pub(super) struct Members {
    pub(super) primaries: HashMap<TaskId, KeyHolder>,
    /// Every followed task's backups, by slot.
    pub(super) backups: HashMap<TaskId, BTreeMap<u32, KeyHolder>>,
    /// Tasks whose primary key was seen deleted, or found missing (for
    /// backups and spares to claim; see `fill_vacancy`).
    pub(super) vacant: HashMap<TaskId, Vacancy>,
    /// The key prefixes this node follows (see `follow_soon`).
    pub(super) followed: Vec<String>,
}

/// What a write of a task's key means to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// An older key than the one this node knows (the watch lags what it
    /// has read or written since): nothing changes.
    Older,
    /// The holder this node knew, or one it had no view of before.
    Same,
    /// A new holder: the task's primary restarted (a new term, or a task
    /// seen vacant has one again), or a slot has a new backup.
    New,
}

impl Members {
    /// Task `t`'s primary key was written, by `p`.
    pub(super) fn put_primary(&mut self, t: TaskId, p: KeyHolder) -> Change {
        if self.primaries.get(&t).is_some_and(|known| known.term > p.term) {
            return Change::Older;
        }
        let was_vacant = self.vacant.remove(&t).is_some();
        match self.primaries.insert(t, p) {
            Some(old) if old.term != p.term => Change::New,
            None if was_vacant => Change::New,
            _ => Change::Same,
        }
    }

    /// Backup slot `slot` of task `t` was written, by `b`.
    pub(super) fn put_backup(&mut self, t: TaskId, slot: u32, b: KeyHolder) -> Change {
        let slots = self.backups.entry(t).or_default();
        match slots.get(&slot) {
            Some(known) if known.term > b.term => Change::Older,
            known => {
                let change = if known.is_some_and(|k| k.term == b.term) { Change::Same } else { Change::New };
                slots.insert(slot, b);
                change
            }
        }
    }

    /// Task `t`'s primary key was deleted at `revision`: whether that was
    /// the key this node knows (not an earlier holder's).
    pub(super) fn delete_primary(&mut self, t: TaskId, revision: i64) -> bool {
        if self.primaries.get(&t).is_some_and(|p| p.term as i64 > revision) {
            return false;
        }
        self.primaries.remove(&t);
        true
    }

    /// Backup slot `slot` of task `t` was deleted at `revision`: `None` if
    /// that was an earlier holder's key, else who held it as this node
    /// knew (if it did).
    pub(super) fn delete_backup(&mut self, t: TaskId, slot: u32, revision: i64) -> Option<Option<KeyHolder>> {
        let slots = self.backups.get_mut(&t);
        match slots {
            Some(m) if m.get(&slot).is_some_and(|b| b.term as i64 > revision) => None,
            Some(m) => Some(m.remove(&slot)),
            None => Some(None),
        }
    }

    /// Task `t` has no primary since `now`.
    pub(super) fn vacate(&mut self, t: TaskId, now: Instant) {
        self.vacant.insert(t, Vacancy { since: now, next_look: now });
    }

    /// Takes in a read of a task's primary key (`slot` `None`) or backup
    /// slot: a backup as read; a primary only if this node knew none (as
    /// the watch will say, then without a restart: this is not one this
    /// node has seen happen).
    pub(super) fn learn(&mut self, t: TaskId, slot: Option<u32>, holder: KeyHolder) {
        match slot {
            Some(slot) => {
                self.backups.entry(t).or_default().insert(slot, holder);
            }
            None => {
                if let std::collections::hash_map::Entry::Vacant(e) = self.primaries.entry(t) {
                    e.insert(holder);
                    self.vacant.remove(&t);
                }
            }
        }
    }

    /// A read covered tasks `covered`: those without a primary are vacant
    /// from `now` on (or since they were).
    pub(super) fn covered(&mut self, covered: impl IntoIterator<Item = TaskId>, now: Instant) {
        for t in covered {
            if !self.primaries.contains_key(&t) {
                self.vacant.entry(t).or_insert(Vacancy { since: now, next_look: now });
            }
        }
    }

    /// Whether the keys under `prefix` are followed already.
    pub(super) fn follows(&self, prefix: &str) -> bool {
        self.followed.iter().any(|f| prefix.starts_with(f.as_str()))
    }
}

impl Loop {
    pub(super) async fn on_put(&mut self, kv: KeyValue) -> Option<Exit> {
        if kv.key == self.keys.epoch() {
            self.compact_as_we_go(kv.mod_revision);
            let epoch = std::str::from_utf8(&kv.value).ok().and_then(|s| s.parse().ok());
            match epoch {
                Some(e) => return self.set_epoch(e).await.err(),
                None => tracing::error!(value = ?kv.value, "unreadable epoch in the coordinator"),
            }
        } else if kv.key == self.keys.status() {
            self.status = JobStatus::parse(&kv.value);
            if self.status != JobStatus::Running {
                // The last chance to save work: what `exit` records is
                // written (nothing else it asks for is of use now) — by the
                // primaries the job ended with, not by a node that claimed
                // a task after the end (a backup whose primary left first).
                if self.role.primary().is_some_and(|(_, term)| term as i64 > kv.mod_revision) {
                    return Some(NodeExit::JobEnded(self.status.clone()));
                }
                self.call(|task, cx| task.exit(cx));
                let pending = std::mem::take(&mut self.pending);
                let puts = self.record_puts(pending);
                // (No backup needs them: the job is over, nobody takes over.)
                if !puts.is_empty() {
                    self.lane.submit(Write::Records { puts, advance: None });
                }
                // The job is over: what this node still has to write (its
                // records, these last ones) is written before it leaves.
                let _ = self.lane.flush().await;
                return Some(NodeExit::JobEnded(self.status.clone()));
            }
        } else if let Some((t, slot)) = self.keys.backup_slot(&kv.key) {
            let Some(v) = Holder::parse(&kv.value) else {
                tracing::error!(key = %kv.key, "unreadable backup value");
                return None;
            };
            let b = KeyHolder::of(&kv, &v);
            let change = self.members.put_backup(t, slot, b);
            if self.role.primary().is_some_and(|(me, _)| me == t) && change == Change::New {
                // A new backup of ours: bring it up to date now.
                tracing::info!(task = t, slot, node = b.node, "a new backup");
                self.sending.add(slot);
                self.pump();
            }
        } else if let Some(t) = self.keys.primary_task(&kv.key) {
            let Some(v) = Holder::parse(&kv.value) else {
                tracing::error!(key = %kv.key, "unreadable primary value");
                return None;
            };
            let new = KeyHolder { ready: false, ..KeyHolder::of(&kv, &v) };
            match self.members.put_primary(t, new) {
                Change::Older => return None,
                Change::New => self.neighbour_event(t, true),
                Change::Same => {}
            }
            if self.role.backup().is_some_and(|(b, _)| b == t) {
                self.watch_primary();
            }
            self.reroute(t);
        }
        None
    }

    pub(super) async fn on_delete(&mut self, key: &str, revision: i64) -> Result<(), Exit> {
        // The watch may lag what this node has read or written since: a
        // deletion older than the key this node knows is about an earlier
        // holder's key (say its own, before it took the key again).
        if let Some((t, slot)) = self.keys.backup_slot(key) {
            let Some(held) = self.members.delete_backup(t, slot, revision) else { return Ok(()) };
            if self.role.backup() == Some((t, slot)) {
                // Our lease lapsed (then we take the slot again), or our
                // primary dropped us (then we stop following).
                let lease = held.and_then(|b| b.lease).unwrap_or(self.lease);
                self.rejoin(Some(lease));
                return Ok(());
            }
            if self.role.primary().is_some_and(|(me, _)| me == t) {
                self.sending.remove(slot);
                self.release().await?;
            }
            // A freed slot (or a task now without backups) may be work
            // for a spare.
            self.find_work();
            return Ok(());
        }
        let Some(t) = self.keys.primary_task(key) else { return Ok(()) };
        if !self.members.delete_primary(t, revision) {
            return Ok(());
        }
        if self.role.primary().is_some_and(|(mine, _)| mine == t) {
            // Our own key is gone while we live: our lease lapsed, or a
            // peer freed the task thinking us dead.
            tracing::warn!(node = self.cfg.node_id, task = t, "lost the task's key");
            self.rejoin(None);
            return Ok(());
        }
        if self.status != JobStatus::Running {
            return Ok(());
        }
        self.members.vacate(t, Instant::now());
        if self.role.primary().is_none() {
            self.fill_vacancy(t);
            return Ok(());
        }
        self.neighbour_event(t, false);
        Ok(())
    }

    /// On task 0's primary, as the epoch moves on (at `revision`): compacts
    /// the coordinator's history to one period ago, off the loop.
    pub(super) fn compact_as_we_go(&mut self, revision: i64) {
        let (Some(period), Some((0, _))) = (self.cfg.job.compaction, self.role.primary()) else { return };
        let compactor = self.compactor.get_or_insert_with(|| crate::coord::Compactor::new(period));
        if let Some(to) = compactor.due(Instant::now(), revision) {
            let coord = self.cfg.coord.clone();
            self.spawner.spawn(async move {
                match coord.compact(to).await {
                    Ok(()) => tracing::debug!(revision = to, "compacted the coordinator's history"),
                    Err(e) => tracing::debug!(revision = to, error = %e, "cannot compact the coordinator's history"),
                }
            });
        }
    }

    /// Tells the task a neighbour failed or restarted, once per link it is
    /// a neighbour over this epoch.
    pub(super) fn neighbour_event(&mut self, t: TaskId, restarted: bool) {
        let Some((me, _)) = self.role.primary() else { return };
        if !self.role.entered() || t == me {
            return;
        }
        let term = self.members.primaries.get(&t).map_or(0, |p| p.term);
        let topology = self.cfg.job.topology.clone();
        for link in topology.links().to_vec() {
            if topology.neighbours(link.id, me, self.epoch).contains(&t) {
                self.call(|task, cx| {
                    if restarted {
                        task.neighbour_restarted(cx, link, t, term)
                    } else {
                        task.neighbour_failed(cx, link, t)
                    }
                });
            }
        }
    }

    /// This node as the holder of `kv`, a key it has just created.
    pub(super) fn mine(&self, kv: &KeyValue) -> KeyHolder {
        KeyHolder { node: self.cfg.node_id, addr: self.shared.addr(), term: kv.create_revision as u64, mod_revision: kv.mod_revision, ready: false, lease: kv.lease }
    }

    /// Takes in what a read of the coordinator says of a task's key.
    pub(super) fn learn(&mut self, kv: &KeyValue) {
        let Some(v) = Holder::parse(&kv.value) else { return };
        let holder = KeyHolder::of(kv, &v);
        if let Some((t, slot)) = self.keys.backup_slot(&kv.key) {
            self.members.learn(t, Some(slot), holder);
        } else if let Some(t) = self.keys.primary_task(&kv.key) {
            self.members.learn(t, None, holder);
        }
    }

    /// Follows the job's keys under `prefix` (one task's, one primary key,
    /// or every task's): reads them, then watches them from that read on,
    /// off the loop; what the read finds comes back as `Event::Followed`
    /// (a fetch to a task whose primary is not known yet waits for it).
    /// A node follows only what it acts on: its own task's keys, the
    /// primaries of the tasks it talks to (its neighbours at each epoch),
    /// and, as a spare, every task (to fill vacancies). So a job's size
    /// does not multiply every node's work and memory. A followed task
    /// without a primary is vacant from then on (see `vacancy_timeout`).
    pub(super) fn follow_soon(&mut self, prefix: String) {
        if self.members.follows(&prefix) {
            return;
        }
        self.members.followed.push(prefix.clone());
        let (coord, tx, spawner) = (self.cfg.coord.clone(), self.tx.clone(), self.spawner.clone());
        self.spawner.spawn(async move {
            let read = patiently(|| coord.get_prefix(&prefix)).await;
            let watch = match read {
                Ok((_, revision)) => patiently(|| coord.watch(&prefix, revision + 1)).await.map(Some),
                Err(_) => Ok(None),
            };
            match (read, watch) {
                (Ok((kvs, _)), Ok(Some(watch))) => {
                    // The read first, then the watch's events (newer).
                    let _ = tx.send(Event::Followed { prefix, kvs });
                    forward(&spawner, &tx, watch);
                }
                (Err(e), _) | (_, Err(e)) => {
                    let _ = tx.send(Event::CoordLost(format!("cannot follow the job's keys under {prefix}: {e}")));
                }
                (Ok(_), Ok(None)) => {}
            }
        });
    }

    /// What a read of the keys under `prefix` found (see `follow_soon`).
    pub(super) fn on_followed(&mut self, prefix: &str, kvs: &[KeyValue]) {
        self.took_in(prefix, kvs);
        // Fetches and flags that waited for these primaries go now.
        for t in kvs.iter().filter_map(|kv| self.keys.primary_task(&kv.key)).collect::<Vec<_>>() {
            self.reroute(t);
        }
        match self.role.seat() {
            // Backups of ours it did not know of: bring them up to date.
            Seat::Primary { task, .. } => {
                let known = self.sending.slots();
                let new: Vec<u32> = self.members.backups.get(&task).map_or(Vec::new(), |m| m.keys().copied().filter(|s| !known.contains(s)).collect());
                if self.cfg.job.replicas_of(task) > 1 && !new.is_empty() {
                    for slot in new {
                        tracing::info!(task, slot, "a new backup");
                        self.sending.add(slot);
                    }
                    self.pump();
                }
            }
            Seat::Backup { task, .. } => {
                if let (Role::Backup(b), true) = (&mut self.role, self.members.primaries.contains_key(&task)) {
                    if !b.watching {
                        b.watching = true;
                        self.watch_primary();
                    }
                }
            }
            Seat::Spare => self.find_work(),
        }
    }

    /// Takes in a read of the keys under `prefix`: holders, and the
    /// vacancies of the tasks it covers.
    pub(super) fn took_in(&mut self, prefix: &str, kvs: &[KeyValue]) {
        for kv in kvs {
            self.learn(kv);
        }
        let covered: Vec<TaskId> = match prefix.strip_prefix(&self.keys.tasks()).and_then(|rest| rest.split('/').next()) {
            Some("") => (0..self.cfg.job.tasks).collect(),
            Some(t) => t.parse().ok().into_iter().collect(),
            None => Vec::new(),
        };
        self.members.covered(covered, Instant::now());
    }

    /// Follows task `t`'s primary (a task this node fetches from or
    /// flags), off the loop.
    pub(super) fn follow_primary(&mut self, t: TaskId) {
        if t < self.cfg.job.tasks {
            self.follow_soon(self.keys.primary(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(node: u64, term: u64) -> KeyHolder {
        KeyHolder { node, addr: "127.0.0.1:1".parse().unwrap(), term, mod_revision: term as i64, ready: false, lease: None }
    }

    #[test]
    fn a_new_term_or_a_vacant_task_with_a_primary_again_is_a_restart_and_an_older_key_changes_nothing() {
        let mut m = Members::default();
        assert_eq!(m.put_primary(1, holder(5, 10)), Change::Same, "first sight of a task not seen vacant");
        assert_eq!(m.put_primary(1, holder(5, 10)), Change::Same);
        assert_eq!(m.put_primary(1, holder(6, 12)), Change::New);
        assert_eq!(m.put_primary(1, holder(5, 10)), Change::Older);
        assert_eq!(m.primaries[&1].node, 6);
        m.vacate(2, Instant::now());
        assert_eq!(m.put_primary(2, holder(7, 20)), Change::New, "a vacant task has a primary again");
        assert!(m.vacant.is_empty());
    }

    #[test]
    fn a_deletion_older_than_the_known_key_is_about_an_earlier_holder() {
        let mut m = Members::default();
        m.put_primary(1, holder(5, 10));
        assert!(!m.delete_primary(1, 9));
        assert!(m.primaries.contains_key(&1));
        assert!(m.delete_primary(1, 11));
        assert!(!m.primaries.contains_key(&1));
        m.put_backup(1, 1, holder(8, 30));
        assert!(m.delete_backup(1, 1, 29).is_none());
        assert_eq!(m.delete_backup(1, 1, 31).map(|b| b.map(|b| b.node)), Some(Some(8)));
        assert_eq!(m.delete_backup(1, 1, 32).map(|b| b.is_none()), Some(true), "a slot it did not know of");
    }

    #[test]
    fn a_slot_has_a_new_backup_when_its_term_changes() {
        let mut m = Members::default();
        assert_eq!(m.put_backup(3, 1, holder(8, 30)), Change::New);
        assert_eq!(m.put_backup(3, 1, KeyHolder { ready: true, ..holder(8, 30) }), Change::Same);
        assert!(m.backups[&3][&1].ready, "a rewrite of the key (marked ready) is taken in");
        assert_eq!(m.put_backup(3, 1, holder(9, 25)), Change::Older);
        assert_eq!(m.put_backup(3, 1, holder(9, 40)), Change::New);
    }

    #[test]
    fn a_read_fills_in_what_the_watch_has_not_said_and_marks_the_rest_vacant() {
        let mut m = Members::default();
        m.put_primary(1, holder(5, 10));
        m.learn(1, None, holder(6, 8));
        assert_eq!(m.primaries[&1].node, 5, "a read does not replace what the watch said");
        let earlier = Instant::now();
        m.vacate(2, earlier);
        m.covered([0, 1, 2], earlier + Duration::from_secs(1));
        assert!(m.vacant.contains_key(&0) && !m.vacant.contains_key(&1));
        assert_eq!(m.vacant[&2].since, earlier, "a vacancy keeps its start");
        m.learn(0, None, holder(7, 9));
        assert!(!m.vacant.contains_key(&0));
        m.followed.push("/j/tasks/".into());
        assert!(m.follows("/j/tasks/3/primary") && !m.follows("/j/epoch"));
    }
}
