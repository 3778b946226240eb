//! Delivery of this task's fetches and flags (fetch retry): one attempt at
//! a time to the task's current primary, fencing by term, back-off, resend
//! to a new primary, and eviction of a primary whose port is closed.
//!
//! `Outbox` is plain data with no I/O: it says which attempt to send to
//! which term, and what an attempt's outcome means (`Done`); the loop
//! sends (on tasks of their own) and acts on the decisions.

use super::*;

/// One of this node's fetches.
#[derive(Debug)]
struct Outstanding {
    edge: u32,
    to: TaskId,
    epoch: Epoch,
    /// The attempt in flight (results of older attempts are stale).
    attempt: u32,
    in_flight: bool,
    /// The term of the node the attempt went to.
    sent_to_term: u64,
    /// When to try again if not in flight.
    retry_at: Instant,
}

/// A flag this task sent this epoch.
#[derive(Debug)]
struct SentFlag {
    flag: transport::MetaFlag,
    /// The term of the receiver's node it last went to.
    sent_to_term: u64,
    in_flight: bool,
    delivered: bool,
}

pub(super) const RETRY_MIN: Duration = Duration::from_millis(20);

pub(super) const RETRY_MAX: Duration = Duration::from_millis(500);

/// An attempt of a fetch to send now.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Attempt {
    pub(super) seq: u64,
    pub(super) attempt: u32,
    pub(super) to: TaskId,
    pub(super) edge: u32,
    pub(super) epoch: Epoch,
}

/// What an attempt's outcome means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Done {
    /// Not this fetch's current attempt, or the fetch was delivered or
    /// dropped already: nothing to do.
    Stale,
    /// The answer: hand it to the task (once).
    Deliver { to: TaskId, edge: u32, epoch: Epoch, frame: Arc<Vec<u8>> },
    /// Try again: now, or when due (see `due`).
    Retry { now: bool },
    /// Nothing listens where `task`'s primary of `term` was: free the task
    /// (and try again when due).
    Evict { task: TaskId, term: u64, now: bool },
    /// Retrying cannot help: the job fails, for this reason.
    Fail(String),
}

/// This task's fetches and flags in flight.
#[derive(Debug)]
pub(super) struct Outbox {
    fetches: HashMap<u64, Outstanding>,
    next_seq: u64,
    flags: Vec<SentFlag>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox { fetches: HashMap::new(), next_seq: 1, flags: Vec::new() }
    }
}

impl Outbox {
    /// A new fetch of `edge` from `to` at `epoch`; its number.
    pub(super) fn fetch(&mut self, edge: u32, to: TaskId, epoch: Epoch, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.fetches.insert(seq, Outstanding { edge, to, epoch, attempt: 0, in_flight: false, sent_to_term: 0, retry_at: now });
        seq
    }

    /// The task fetch `seq` goes to.
    pub(super) fn target(&self, seq: u64) -> Option<TaskId> {
        self.fetches.get(&seq).map(|o| o.to)
    }

    /// The next attempt of fetch `seq`, to its task's primary of `term`
    /// (`None`: no primary known; it is tried again later).
    pub(super) fn start(&mut self, seq: u64, term: Option<u64>, now: Instant) -> Option<Attempt> {
        let o = self.fetches.get_mut(&seq)?;
        let Some(term) = term else {
            o.in_flight = false;
            o.retry_at = now + RETRY_MIN;
            return None;
        };
        o.attempt += 1;
        o.in_flight = true;
        o.sent_to_term = term;
        Some(Attempt { seq, attempt: o.attempt, to: o.to, edge: o.edge, epoch: o.epoch })
    }

    /// Takes in the outcome of attempt `attempt` of fetch `seq`, with the
    /// term of its task's primary as this node knows it now (`current`).
    pub(super) fn done(
        &mut self,
        seq: u64,
        attempt: u32,
        result: Result<Fetched, CallFailure>,
        current: Option<u64>,
        me: TaskId,
        now: Instant,
    ) -> Done {
        let Some(o) = self.fetches.get_mut(&seq) else { return Done::Stale };
        // Fencing: an answer from a node whose term has ended (a primary
        // that was replaced while it was paused, say) is not taken.
        let result = match result {
            Ok(f) if current.is_some_and(|c| c > f.term) => Err(CallFailure::Status(Status::new(
                StatusKind::StaleTerm,
                format!("answered by term {}, but task {} has term {} now", f.term, o.to, current.unwrap_or(0)),
                o.epoch,
                f.term,
            ))),
            other => other,
        };
        let failure = match result {
            Ok(f) => {
                // Delivered once: a duplicate of it finds nothing here.
                let o = self.fetches.remove(&seq).expect("present");
                return Done::Deliver { to: o.to, edge: o.edge, epoch: o.epoch, frame: f.frame };
            }
            Err(failure) if attempt == o.attempt => failure,
            Err(_) => return Done::Stale,
        };
        o.in_flight = false;
        // A broken connection is retried at once the first time (the
        // reconnect tells a dead peer, by refusal, within a millisecond);
        // after that, and for other errors, back off.
        let backoff = match failure {
            CallFailure::Transport(_) if o.attempt <= 1 => Duration::ZERO,
            _ => (RETRY_MIN * o.attempt.min(16)).min(RETRY_MAX),
        };
        o.retry_at = now + backoff;
        let now_too = backoff.is_zero();
        match failure {
            CallFailure::Status(s) if s.kind.is_fatal() => {
                let reason = format!("task {me} cannot fetch edge {} from task {}: {:?}: {}", o.edge, o.to, s.kind, s.detail);
                self.fetches.remove(&seq);
                Done::Fail(reason)
            }
            CallFailure::Status(s) if s.kind == StatusKind::StaleEpoch => {
                // The responder is ahead: this epoch is over here too once
                // the coordinator's change arrives.
                tracing::debug!(seq, detail = %s.detail, "stale epoch");
                Done::Retry { now: now_too }
            }
            CallFailure::Refused(why) => {
                // Safe to free the task now rather than after its lease:
                // terms fence a node that was only slow.
                tracing::info!(task = o.to, term = o.sent_to_term, %why, "the task's primary is gone; freeing the task");
                Done::Evict { task: o.to, term: o.sent_to_term, now: now_too }
            }
            other => {
                tracing::debug!(seq, error = ?other, "fetch attempt failed; will retry");
                Done::Retry { now: now_too }
            }
        }
    }

    /// Fetches due for another attempt.
    pub(super) fn due(&self, now: Instant) -> Vec<u64> {
        let mut due: Vec<u64> = self.fetches.iter().filter(|(_, o)| !o.in_flight && o.retry_at <= now).map(|(s, _)| *s).collect();
        due.sort_unstable();
        due
    }

    /// Fetches to `t` that went to an older term than `term`, or wait for
    /// a primary: to be sent to `t`'s primary of `term` now.
    pub(super) fn rerouted(&self, t: TaskId, term: u64) -> Vec<u64> {
        let mut due: Vec<u64> =
            self.fetches.iter().filter(|(_, o)| o.to == t && (!o.in_flight || o.sent_to_term != term)).map(|(s, _)| *s).collect();
        due.sort_unstable();
        due
    }

    /// The task entered epoch `e`: fetches of earlier epochs, and this
    /// epoch's flags so far, are dropped.
    pub(super) fn entered(&mut self, e: Epoch) {
        self.fetches.retain(|_, o| o.epoch >= e);
        self.flags.clear();
    }

    /// A new flag of this epoch; its index.
    pub(super) fn flag(&mut self, flag: transport::MetaFlag) -> usize {
        self.flags.push(SentFlag { flag, sent_to_term: 0, in_flight: false, delivered: false });
        self.flags.len() - 1
    }

    /// Flag `index`, to go to its receiver's primary of `term` now.
    pub(super) fn start_flag(&mut self, index: usize, term: u64) -> Option<transport::MetaFlag> {
        let f = self.flags.get_mut(index)?;
        f.in_flight = true;
        f.sent_to_term = term;
        Some(f.flag.clone())
    }

    /// The receiver of flag `index`.
    pub(super) fn flag_target(&self, index: usize) -> Option<TaskId> {
        self.flags.get(index).map(|f| f.flag.to_task)
    }

    /// An attempt of flag `index` (sent to `term`) finished.
    pub(super) fn flag_done(&mut self, index: usize, term: u64, delivered: bool) {
        if let Some(f) = self.flags.get_mut(index).filter(|f| f.sent_to_term == term) {
            f.in_flight = false;
            f.delivered = delivered;
        }
    }

    /// Flags not delivered and not in flight.
    pub(super) fn flags_due(&self) -> Vec<usize> {
        (0..self.flags.len()).filter(|&i| !self.flags[i].in_flight && !self.flags[i].delivered).collect()
    }

    /// Flags to `t` that went to an older term than `term`.
    pub(super) fn flags_rerouted(&self, t: TaskId, term: u64) -> Vec<usize> {
        (0..self.flags.len()).filter(|&i| self.flags[i].flag.to_task == t && self.flags[i].sent_to_term != term).collect()
    }
}

impl Loop {
    /// Sends (or resends) flag `index` of this epoch to its receiver's
    /// current primary.
    pub(super) fn send_flag(&mut self, index: usize) {
        let epoch = self.epoch;
        let Some(p) = self.outbox.flag_target(index).and_then(|t| self.members.primaries.get(&t).copied()) else { return };
        let Some(flag) = self.outbox.start_flag(index, p.term) else { return };
        let (peers, tx) = (self.peers.clone(), self.tx.clone());
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
        let Some((me, my_term)) = self.role.primary() else { return };
        let Some(to) = self.outbox.target(seq) else { return };
        let p = self.members.primaries.get(&to).copied();
        let Some(a) = self.outbox.start(seq, p.map(|p| p.term), Instant::now()) else { return };
        let Some(p) = p else { return };
        let req = transport::FetchRequest {
            job: self.cfg.job.name.clone(),
            epoch: a.epoch,
            from_task: me,
            to_task: a.to,
            edge: a.edge,
            seq,
            requester_term: my_term,
            responder_term: p.term,
        };
        let (peers, tx, attempt) = (self.peers.clone(), self.tx.clone(), a.attempt);
        self.spawner.spawn(async move {
            for result in peers.fetch(p.addr, req, attempt).await {
                let _ = tx.send(Event::FetchDone { seq, attempt, result });
            }
        });
    }

    /// Resends the fetches and flags to task `t` that went to an older
    /// term, and those waiting for a primary.
    pub(super) fn reroute(&mut self, t: TaskId) {
        let Some(p) = self.members.primaries.get(&t).copied() else { return };
        for seq in self.outbox.rerouted(t, p.term) {
            self.send(seq);
        }
        for i in self.outbox.flags_rerouted(t, p.term) {
            self.send_flag(i);
        }
    }

    /// Sends the fetches and flags due for another attempt.
    pub(super) fn resend_due(&mut self) {
        for seq in self.outbox.due(Instant::now()) {
            self.send(seq);
        }
        for i in self.outbox.flags_due() {
            self.send_flag(i);
        }
    }

    pub(super) async fn on_fetch_done(&mut self, seq: u64, attempt: u32, result: Result<Fetched, CallFailure>) -> Result<(), Exit> {
        let Some((me, _)) = self.role.primary() else { return Ok(()) };
        let current = self.outbox.target(seq).and_then(|t| self.members.primaries.get(&t)).map(|p| p.term);
        match self.outbox.done(seq, attempt, result, current, me, Instant::now()) {
            Done::Stale => Ok(()),
            Done::Deliver { to, edge, epoch, frame } => {
                if epoch != self.epoch {
                    return Ok(());
                }
                self.kill_at(FaultPoint::DataReceived { task: me, epoch, from: to, edge })?;
                let received = Received { from: to, edge, epoch, bytes: frame, limits: self.cfg.job.limits.clone() };
                self.call(|task, cx| task.data_ready(cx, received));
                self.apply_pending().await
            }
            Done::Retry { now } => {
                if now {
                    self.send(seq);
                }
                Ok(())
            }
            Done::Evict { task, term, now } => {
                self.evict(task, term);
                if now {
                    self.send(seq);
                }
                Ok(())
            }
            Done::Fail(reason) => {
                self.end(Some(reason));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(term: u64) -> Result<Fetched, CallFailure> {
        Ok(Fetched { frame: Arc::new(vec![7]), term })
    }

    fn status(kind: StatusKind) -> Result<Fetched, CallFailure> {
        Err(CallFailure::Status(Status::new(kind, "x", 0, 0)))
    }

    #[test]
    fn a_fetch_is_delivered_once_and_old_attempts_do_not_count() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let seq = o.fetch(3, 1, 0, now);
        let a = o.start(seq, Some(5), now).unwrap();
        assert_eq!(a, Attempt { seq, attempt: 1, to: 1, edge: 3, epoch: 0 });
        let b = o.start(seq, Some(5), now).unwrap();
        // The first attempt's failure comes after the second went out.
        assert_eq!(o.done(seq, a.attempt, Err(CallFailure::Transport("cut".into())), Some(5), 0, now), Done::Stale);
        assert!(matches!(o.done(seq, b.attempt, fetched(5), Some(5), 0, now), Done::Deliver { to: 1, edge: 3, epoch: 0, .. }));
        // A duplicate answer (another attempt's) finds nothing.
        assert_eq!(o.done(seq, a.attempt, fetched(5), Some(5), 0, now), Done::Stale);
        assert!(o.due(now + RETRY_MAX).is_empty());
    }

    #[test]
    fn an_answer_of_an_ended_term_is_fenced_and_retried() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let seq = o.fetch(0, 2, 4, now);
        let a = o.start(seq, Some(5), now).unwrap();
        // The task has term 9 now: term 5's answer is not taken.
        assert_eq!(o.done(seq, a.attempt, fetched(5), Some(9), 0, now), Done::Retry { now: false });
        assert_eq!(o.due(now), Vec::<u64>::new(), "backs off");
        assert_eq!(o.due(now + RETRY_MIN), vec![seq]);
        assert_eq!(o.rerouted(2, 9), vec![seq], "not in flight: goes to the new term at once");
    }

    #[test]
    fn back_off_grows_to_its_bound_and_a_first_cut_is_retried_at_once() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let seq = o.fetch(0, 1, 0, now);
        let a = o.start(seq, Some(1), now).unwrap();
        assert_eq!(o.done(seq, a.attempt, Err(CallFailure::Transport("cut".into())), Some(1), 0, now), Done::Retry { now: true });
        for n in 2..40u32 {
            let a = o.start(seq, Some(1), now).unwrap();
            assert_eq!(a.attempt, n);
            assert_eq!(o.done(seq, a.attempt, status(StatusKind::Internal), Some(1), 0, now), Done::Retry { now: false });
            let wait = (RETRY_MIN * n.min(16)).min(RETRY_MAX);
            assert!(o.due(now + wait - Duration::from_millis(1)).is_empty());
            assert_eq!(o.due(now + wait), vec![seq]);
        }
    }

    #[test]
    fn a_closed_port_evicts_the_term_the_attempt_went_to_and_a_fatal_status_fails() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let seq = o.fetch(0, 6, 0, now);
        let a = o.start(seq, Some(11), now).unwrap();
        assert_eq!(
            o.done(seq, a.attempt, Err(CallFailure::Refused("closed".into())), Some(11), 0, now),
            Done::Evict { task: 6, term: 11, now: false }
        );
        let a = o.start(seq, Some(12), now).unwrap();
        let Done::Fail(why) = o.done(seq, a.attempt, status(StatusKind::UnknownEdge), Some(12), 3, now) else { panic!() };
        assert!(why.contains("task 3 cannot fetch edge 0 from task 6"), "{why}");
        assert_eq!(o.target(seq), None, "dropped");
    }

    #[test]
    fn no_primary_waits_and_a_new_epoch_drops_old_fetches_and_flags() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let old = o.fetch(0, 1, 3, now);
        let new = o.fetch(0, 1, 4, now);
        assert_eq!(o.start(old, None, now), None);
        assert!(o.due(now).contains(&new) && !o.due(now).contains(&old));
        let flag = transport::MetaFlag { job: "j".into(), epoch: 3, from_task: 0, to_task: 1, link: 0, meta: vec![], term: 1 };
        let i = o.flag(flag);
        assert_eq!(o.flags_due(), vec![i]);
        o.start_flag(i, 8);
        o.flag_done(i, 7, true);
        assert!(o.flags_due().is_empty(), "in flight to term 8; term 7's answer does not count");
        assert_eq!(o.flags_rerouted(1, 9), vec![i]);
        o.flag_done(i, 8, true);
        assert!(o.flags_due().is_empty() && o.flags_rerouted(1, 8).is_empty());
        o.entered(4);
        assert_eq!(o.target(old), None);
        assert_eq!(o.target(new), Some(1));
        assert!(o.flags_rerouted(1, 9).is_empty());
    }
}
