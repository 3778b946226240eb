//! Delivery of this task's fetches and flags (fetch retry): one attempt at
//! a time to the task's current primary, fencing by term, back-off, resend
//! to a new primary, and eviction of a primary whose port is closed.

use super::*;

/// One of this node's fetches.
#[derive(Debug)]
pub(super) struct Outstanding {
    pub(super) edge: u32,
    pub(super) to: TaskId,
    pub(super) epoch: Epoch,
    /// The attempt in flight (results of older attempts are stale).
    pub(super) attempt: u32,
    pub(super) in_flight: bool,
    /// The term of the node the attempt went to.
    pub(super) sent_to_term: u64,
    /// When to try again if not in flight.
    pub(super) retry_at: Instant,
}

/// A flag this task sent this epoch.
#[derive(Debug)]
pub(super) struct SentFlag {
    pub(super) flag: transport::MetaFlag,
    /// The term of the receiver's node it last went to.
    pub(super) sent_to_term: u64,
    pub(super) in_flight: bool,
    pub(super) delivered: bool,
}

pub(super) const RETRY_MIN: Duration = Duration::from_millis(20);

pub(super) const RETRY_MAX: Duration = Duration::from_millis(500);

impl Loop {
    /// Sends (or resends) flag `index` of this epoch to its receiver's
    /// current primary.
    pub(super) fn send_flag(&mut self, index: usize) {
        let epoch = self.epoch;
        let Some(f) = self.flags.get_mut(index) else { return };
        let Some(p) = self.primaries.get(&f.flag.to_task).copied() else { return };
        f.in_flight = true;
        f.sent_to_term = p.term;
        let (flag, peers, tx) = (f.flag.clone(), self.peers.clone(), self.tx.clone());
        self.spawner.spawn(async move {
            let result = peers.flag(p.addr, flag).await;
            if let Err(e) = &result {
                tracing::debug!(error = ?e, "flag not delivered; will retry");
            }
            let _ = tx.send(Event::FlagDone { index, epoch, term: p.term, delivered: result.is_ok() });
        });
    }

    /// Sends (or resends) fetch `seq` to its task's current primary.
    pub(super) fn send(&mut self, seq: u64) {
        let Some(o) = self.outstanding.get_mut(&seq) else { return };
        let Some(p) = self.primaries.get(&o.to).copied() else {
            o.in_flight = false;
            o.retry_at = Instant::now() + RETRY_MIN;
            return;
        };
        let Some((me, my_term)) = self.role.primary() else { return };
        o.attempt += 1;
        o.in_flight = true;
        o.sent_to_term = p.term;
        let req = transport::FetchRequest {
            job: self.cfg.job.name.clone(),
            epoch: o.epoch,
            from_task: me,
            to_task: o.to,
            edge: o.edge,
            seq,
            requester_term: my_term,
            responder_term: p.term,
        };
        let attempt = o.attempt;
        let peers = self.peers.clone();
        let tx = self.tx.clone();
        self.spawner.spawn(async move {
            for result in peers.fetch(p.addr, req, attempt).await {
                let _ = tx.send(Event::FetchDone { seq, attempt, result });
            }
        });
    }

    /// Resends the fetches to task `t` that went to an older term, and
    /// those waiting for a primary.
    pub(super) fn reroute(&mut self, t: TaskId) {
        let Some(p) = self.primaries.get(&t).copied() else { return };
        let due: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.to == t && (!o.in_flight || o.sent_to_term != p.term))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            self.send(seq);
        }
        let flags: Vec<usize> = (0..self.flags.len())
            .filter(|&i| self.flags[i].flag.to_task == t && self.flags[i].sent_to_term != p.term)
            .collect();
        for i in flags {
            self.send_flag(i);
        }
    }

    pub(super) async fn on_fetch_done(&mut self, seq: u64, attempt: u32, result: Result<Fetched, FetchFailure>) -> Result<(), Exit> {
        let Some(o) = self.outstanding.get_mut(&seq) else {
            // Already delivered (a duplicate), or its epoch ended.
            return Ok(());
        };
        // Fencing: an answer from a node whose term has ended (a primary
        // that was replaced while it was paused, say) is not taken.
        let result = match result {
            Ok(f) if self.primaries.get(&o.to).is_some_and(|p| p.term > f.term) => Err(FetchFailure::Status(Status::new(
                StatusKind::StaleTerm,
                format!("answered by term {}, but task {} has term {} now", f.term, o.to, self.primaries[&o.to].term),
                self.epoch,
                f.term,
            ))),
            other => other,
        };
        match result {
            Ok(Fetched { frame: bytes, .. }) => {
                let o = self.outstanding.remove(&seq).expect("present");
                let Some((me, _)) = self.role.primary() else { return Ok(()) };
                if o.epoch != self.epoch {
                    return Ok(());
                }
                self.kill_at(FaultPoint::DataReceived { task: me, epoch: o.epoch, from: o.to, edge: o.edge })?;
                let received = Received { from: o.to, edge: o.edge, epoch: o.epoch, bytes, limits: self.cfg.job.limits.clone() };
                self.call(|task, cx| task.data_ready(cx, received));
                self.apply_pending().await
            }
            Err(failure) => {
                if attempt != o.attempt {
                    return Ok(());
                }
                o.in_flight = false;
                // A broken connection is retried at once the first time
                // (the reconnect tells a dead peer, by refusal, within a
                // millisecond); after that, and for other errors, back off.
                let backoff = match failure {
                    FetchFailure::Transport(_) if o.attempt <= 1 => Duration::ZERO,
                    _ => (RETRY_MIN * o.attempt.min(16)).min(RETRY_MAX),
                };
                o.retry_at = Instant::now() + backoff;
                let retry_now = backoff.is_zero();
                match failure {
                    FetchFailure::Status(s) if s.kind.is_fatal() => {
                        let reason = format!(
                            "task {} cannot fetch edge {} from task {}: {:?}: {}",
                            self.role.primary().map_or(0, |r| r.0),
                            o.edge,
                            o.to,
                            s.kind,
                            s.detail
                        );
                        self.outstanding.remove(&seq);
                        self.end(Some(reason));
                    }
                    FetchFailure::Status(s) if s.kind == StatusKind::StaleEpoch => {
                        // The responder is ahead: this epoch is over here too
                        // once the coordinator's change arrives.
                        tracing::debug!(seq, detail = %s.detail, "stale epoch");
                    }
                    FetchFailure::Refused(why) => {
                        // Nothing listens where the task's primary was: its
                        // process is gone. Free the task now rather than
                        // after its lease (safe: terms fence a node that
                        // was only slow) — if the attempt went to the
                        // primary it still has.
                        let (to, term) = (o.to, o.sent_to_term);
                        tracing::info!(task = to, term, %why, "the task's primary is gone; freeing the task");
                        self.evict(to, term);
                    }
                    other => tracing::debug!(seq, error = ?other, "fetch attempt failed; will retry"),
                }
                if retry_now {
                    self.send(seq);
                }
                Ok(())
            }
        }
    }
}
