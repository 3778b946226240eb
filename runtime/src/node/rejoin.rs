//! Rejoining: this node's keys went while it lives (its lease lapsed in a
//! pause of the coordinator or of this process, or a peer freed its task
//! thinking it dead). It takes them again, off the loop
//! (`takeover::rejoin`), and keeps the task's state; or it steps down.

use super::*;
use super::takeover::{self, Retaken};

impl Loop {
    /// Takes this node's keys again, under a new lease if its own is gone,
    /// keeping the task's state: a primary under a new term (its
    /// neighbours see a restart; what it sent under the old term is
    /// fenced), a backup in its slot (it catches up with its primary's
    /// stream again). If another node took the task meanwhile, this one
    /// steps down. `gone`: this backup's slot key went, and it was held
    /// under that lease; if that is still this node's lease and it lives,
    /// its primary dropped it, and it stops (a key of a lease since
    /// replaced went with it).
    ///
    /// Waits for an attempt to take a task in flight (which may find the
    /// lease gone itself). A primary's writes wait until it holds its key
    /// again (see `session`).
    pub(super) fn rejoin(&mut self, gone: Option<LeaseId>) {
        if self.taking.busy() {
            self.taking.rejoin_later(gone);
            return;
        }
        if self.role.primary().is_some() {
            self.lane.retake();
        }
        self.attempt(None, takeover::rejoin(self.claimant(), self.role.seat(), gone));
    }

    /// What a rejoin did.
    pub(super) fn retaken(&mut self, retaken: Retaken) -> Result<(), Exit> {
        if let Some((lease, granted_at)) = retaken.lease {
            let ttl = self.cfg.job.lease_ttl;
            self.lease = lease;
            self.lease_sure_until.set(granted_at + ttl);
            self.keeper =
                lease::keep(self.cfg.coord.clone(), lease, ttl, COORDINATOR_PATIENCE, self.lease_sure_until.clone(), self.lease_news.clone());
        }
        self.rejoined_at = Some(Instant::now());
        // A key this node holds under its lease already (a rejoin asked
        // for twice) is as good as one it created. One it held under a
        // lapsed lease is about to go (etcd revokes expired leases at a
        // bounded rate): its deletion brings this node back here.
        let me = self.cfg.node_id;
        let ours = |kv: &KeyValue| Holder::parse(&kv.value).is_some_and(|h| h.node == me);
        let key = match retaken.key {
            Some(Err(kv)) if ours(&kv) && kv.lease == Some(self.lease) => Some(Ok(kv)),
            Some(Err(kv)) if ours(&kv) => {
                tracing::info!(node = me, key = %kv.key, "its key under the lapsed lease has not gone yet: taking it again once it has");
                // (Known as read, so that its deletion counts.)
                self.learn(&kv);
                return Ok(());
            }
            other => other,
        };
        match (self.role.seat(), key) {
            (Seat::Primary { task: t, term: old_term }, Some(Ok(kv))) => {
                let term = kv.create_revision as u64;
                self.lane.hold(t, term);
                if term == old_term {
                    return Ok(());
                }
                tracing::info!(node = me, task = t, old_term, term, "took its task again, with its state, under a new term");
                if let Role::Primary(p) = &mut self.role {
                    p.term = term;
                }
                self.shared.set_role(t as i64, term);
                let holder = self.mine(&kv);
                self.members.primaries.insert(t, holder);
                self.members.vacant.remove(&t);
                if self.cfg.job.replicas_of(t) > 1 {
                    let old = std::mem::take(&mut self.stream);
                    self.restart_stream(term, old);
                }
                self.call(|task, cx| task.became_primary(cx, term));
                Ok(())
            }
            (Seat::Primary { task: t, .. }, Some(Err(existing))) => {
                self.learn(&existing);
                tracing::warn!(node = me, task = t, "another node took the task while this one had lost it: stepping down");
                Err(NodeExit::Replaced { task: t })
            }
            (Seat::Backup { task: t, slot }, Some(Ok(kv))) => {
                let holder = self.mine(&kv);
                if self.members.backups.get(&t).and_then(|m| m.get(&slot)).is_some_and(|b| b.term == holder.term) {
                    // The key it holds already (what it knows of it, say
                    // that it is marked ready, is newer than this read).
                    return Ok(());
                }
                tracing::info!(node = me, task = t, slot, "took its backup slot again");
                self.members.backups.entry(t).or_default().insert(slot, holder);
                if let Role::Backup(b) = &mut self.role {
                    // Its primary did not sync it while its key was gone.
                    b.caught_up = false;
                }
                Ok(())
            }
            (Seat::Backup { task: t, slot }, Some(Err(existing))) => {
                self.learn(&existing);
                tracing::warn!(node = me, task = t, slot, "another node took the backup slot: stopping");
                Err(NodeExit::BackupDropped { task: t })
            }
            _ => Ok(()),
        }
    }

    pub(super) fn on_lease_news(&mut self, news: LeaseNews) -> Result<(), Exit> {
        match news {
            LeaseNews::Lost(lease) if lease == self.lease => {
                self.rejoin(None);
                Ok(())
            }
            // An older lease's keeper, replaced since.
            LeaseNews::Lost(_) => Ok(()),
            LeaseNews::Unreachable(why) => {
                tracing::warn!(node = self.cfg.node_id, %why, "giving up on the coordinator");
                Err(NodeExit::CoordinatorLost(why))
            }
        }
    }
}
