//! What this node knows of the job's keys: the epoch and status as they
//! change, every followed task's primary and backups, vacancies; and
//! following (reading, then watching) only the keys this node acts on.

use super::*;

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
            if self.backups.get(&t).and_then(|m| m.get(&slot)).is_some_and(|known| known.term > b.term) {
                return None;
            }
            let old = self.backups.entry(t).or_default().insert(slot, b);
            if self.role.primary().is_some_and(|(me, _)| me == t) && old.is_none_or(|o| o.term != b.term) {
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
            if self.primaries.get(&t).is_some_and(|p| p.term > new.term) {
                // An older key than the one this node knows (it lags).
                return None;
            }
            let was_vacant = self.vacant.remove(&t).is_some();
            let old = self.primaries.insert(t, new);
            let restarted = match old {
                Some(o) => o.term != new.term,
                None => was_vacant,
            };
            if restarted {
                self.neighbour_event(t, true);
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
            if self.backups.get(&t).and_then(|m| m.get(&slot)).is_some_and(|b| b.term as i64 > revision) {
                return Ok(());
            }
            let held = self.backups.get_mut(&t).and_then(|m| m.remove(&slot));
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
        if self.primaries.get(&t).is_some_and(|p| p.term as i64 > revision) {
            return Ok(());
        }
        self.primaries.remove(&t);
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
        let now = Instant::now();
        self.vacant.insert(t, Vacancy { since: now, next_look: now });
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
        let term = self.primaries.get(&t).map_or(0, |p| p.term);
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
            self.backups.entry(t).or_default().insert(slot, holder);
        } else if let Some(t) = self.keys.primary_task(&kv.key) {
            if let std::collections::hash_map::Entry::Vacant(e) = self.primaries.entry(t) {
                // As the watch will say (then without an event: this is
                // not a restart this node has seen happen).
                e.insert(holder);
                self.vacant.remove(&t);
            }
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
        if self.followed.iter().any(|f| prefix.starts_with(f.as_str())) {
            return;
        }
        self.followed.push(prefix.clone());
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
                let new: Vec<u32> = self.backups.get(&task).map_or(Vec::new(), |m| m.keys().copied().filter(|s| !known.contains(s)).collect());
                if self.cfg.job.replicas_of(task) > 1 && !new.is_empty() {
                    for slot in new {
                        tracing::info!(task, slot, "a new backup");
                        self.sending.add(slot);
                    }
                    self.pump();
                }
            }
            Seat::Backup { task, .. } => {
                if let (Role::Backup(b), true) = (&mut self.role, self.primaries.contains_key(&task)) {
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
        let now = Instant::now();
        for t in covered {
            if !self.primaries.contains_key(&t) {
                self.vacant.entry(t).or_insert(Vacancy { since: now, next_look: now });
            }
        }
    }

    /// Follows task `t`'s primary (a task this node fetches from or
    /// flags), off the loop.
    pub(super) fn follow_primary(&mut self, t: TaskId) {
        if t < self.cfg.job.tasks {
            self.follow_soon(self.keys.primary(t));
        }
    }
}
