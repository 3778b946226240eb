//! The primary's side of replication: which backup is sent what next, what
//! an answer means, and when the effects waiting for the backups may go.
//!
//! Plain data with no I/O: the node sends the batches this part picks (one
//! in flight per backup, on their own tasks) and brings the answers back
//! here; the event loop never waits for a backup.
//!
//! *Synced* is the position every backup of the task has applied. An
//! effect others can see (a reply, a flag, a record, an epoch advance, the
//! job's end) waits here, in order, until the backups hold everything the
//! task did before it: the stream's end when it was asked for.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::graph::Epoch;

/// How a backup answered one batch.
#[derive(Debug)]
pub(crate) enum Answer {
    /// It has applied the stream up to this position.
    Applied(u64),
    /// It says the task has a newer primary than this one.
    StaleTerm(String),
    /// No answer in time, but its key (its lease) lives: slow, not gone.
    Slow,
    /// Its port is closed, or its key is gone.
    Gone(String),
}

/// What to do after an answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Carry on: send it what it lacks, if anything.
    Send,
    /// Drop this backup (delete its key; it steps down if it was only slow).
    Drop(String),
    /// Ask the coordinator whether this node is still the task's primary
    /// (the backup said why it doubts it).
    CheckPrimary(String),
}

/// A backup's progress as this primary sees it.
#[derive(Debug, Default)]
struct Backup {
    /// Position it has applied (0: nothing yet).
    acked: u64,
    /// The attempt in flight, if any.
    in_flight: Option<u64>,
    /// Answers in a row that did not move it forward.
    stuck: u32,
    /// Since when it has not answered in time (it is slow).
    slow_since: Option<Instant>,
    /// Dropped: its key is being deleted. Until that is done it is sent
    /// nothing and still holds effects back (its key may say `ready`: a
    /// node that sees it would leave the task to it).
    dropping: bool,
}

/// How many answers in a row may leave a backup where it was.
const STUCK_LIMIT: u32 = 2;

/// The primary's view of its backups' progress, by slot.
#[derive(Debug, Default)]
pub(crate) struct Sending {
    backups: HashMap<u32, Backup>,
    next_attempt: u64,
}

impl Sending {
    /// A backup (new, or starting over from a restarted stream) in `slot`.
    pub(crate) fn add(&mut self, slot: u32) {
        self.backups.insert(slot, Backup::default());
    }

    /// The backup in `slot` no longer counts (its key is gone).
    pub(crate) fn remove(&mut self, slot: u32) {
        self.backups.remove(&slot);
    }

    /// The backup in `slot` is dropped: nothing more goes to it, and it
    /// holds effects back until `remove` (its key is deleted).
    pub(crate) fn dropping(&mut self, slot: u32) {
        if let Some(b) = self.backups.get_mut(&slot) {
            b.dropping = true;
            b.in_flight = None;
        }
    }

    pub(crate) fn slots(&self) -> Vec<u32> {
        let mut slots: Vec<u32> = self.backups.keys().copied().collect();
        slots.sort_unstable();
        slots
    }

    /// Where `slot` has applied to.
    pub(crate) fn acked(&self, slot: u32) -> u64 {
        self.backups.get(&slot).map_or(0, |b| b.acked)
    }

    /// The position every backup has applied (`u64::MAX` with none).
    pub(crate) fn synced(&self) -> u64 {
        self.backups.values().map(|b| b.acked).min().unwrap_or(u64::MAX)
    }

    /// Whether `slot` should be sent a batch now: it lacks entries up to
    /// `end` and nothing is in flight to it. Then the attempt's number.
    pub(crate) fn start(&mut self, slot: u32, end: u64) -> Option<u64> {
        let b = self.backups.get_mut(&slot)?;
        if b.dropping || b.in_flight.is_some() || b.acked >= end {
            return None;
        }
        self.next_attempt += 1;
        b.in_flight = Some(self.next_attempt);
        Some(self.next_attempt)
    }

    /// Takes in `answer` to attempt `attempt` to `slot`; `None` if the
    /// attempt no longer counts (the backup went, or the stream restarted).
    pub(crate) fn answered(&mut self, slot: u32, attempt: u64, answer: Answer, now: Instant, patience: Duration) -> Option<Next> {
        let b = self.backups.get_mut(&slot).filter(|b| b.in_flight == Some(attempt))?;
        b.in_flight = None;
        Some(match answer {
            Answer::Applied(applied) => {
                b.slow_since = None;
                b.stuck = if applied > b.acked { 0 } else { b.stuck + 1 };
                b.acked = b.acked.max(applied);
                if b.stuck > STUCK_LIMIT {
                    Next::Drop(format!("it does not follow the stream (applied {applied})"))
                } else {
                    Next::Send
                }
            }
            Answer::StaleTerm(why) => Next::CheckPrimary(why),
            // Slow (busy, or the coordinator was paused and every node
            // catches up at once) is not gone: keep at it, for a while.
            Answer::Slow => {
                let since = *b.slow_since.get_or_insert(now);
                if now.duration_since(since) < patience {
                    Next::Send
                } else {
                    Next::Drop(format!("it has not answered for {:?}", now.duration_since(since)))
                }
            }
            Answer::Gone(why) => Next::Drop(why),
        })
    }
}

/// Effects waiting for the backups, in the order they were asked for.
#[derive(Debug)]
pub(crate) struct Gate<E> {
    waiting: VecDeque<(u64, Epoch, E)>,
}

impl<E> Default for Gate<E> {
    fn default() -> Self {
        Gate { waiting: VecDeque::new() }
    }
}

impl<E> Gate<E> {
    /// Whether an effect asked for now, with the stream at `end` and the
    /// backups at `synced`, must wait (also behind earlier ones).
    pub(crate) fn must_wait(&self, end: u64, synced: u64) -> bool {
        !self.waiting.is_empty() || synced < end
    }

    /// Holds `effect` (asked for at `epoch`) until the backups hold
    /// position `need`.
    pub(crate) fn hold(&mut self, need: u64, epoch: Epoch, effect: E) {
        self.waiting.push_back((need, epoch, effect));
    }

    /// The effects the backups hold everything for now (with `synced`),
    /// in order, each with the epoch it was asked for at.
    pub(crate) fn release(&mut self, synced: u64) -> Vec<(Epoch, E)> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|(need, _, _)| *need <= synced) {
            let (_, epoch, effect) = self.waiting.pop_front().expect("present");
            out.push((epoch, effect));
        }
        out
    }

    /// The stream restarted at a snapshot ending at `end` that holds
    /// everything: every waiting effect needs just that.
    pub(crate) fn restarted(&mut self, end: u64) {
        for (need, _, _) in &mut self.waiting {
            *need = end;
        }
    }

    /// The waiting effects, in order, with the epoch each was asked at.
    pub(crate) fn items(&self) -> impl Iterator<Item = (&Epoch, &E)> {
        self.waiting.iter().map(|(_, epoch, e)| (epoch, e))
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(1);

    #[test]
    fn one_batch_in_flight_per_backup_and_stale_answers_ignored() {
        let mut s = Sending::default();
        s.add(1);
        let now = Instant::now();
        let a = s.start(1, 5).expect("lacks 1..=5");
        assert_eq!(s.start(1, 5), None, "one in flight");
        assert_eq!(s.answered(1, a + 7, Answer::Applied(5), now, PATIENCE), None, "not the attempt in flight");
        assert_eq!(s.answered(1, a, Answer::Applied(3), now, PATIENCE), Some(Next::Send));
        assert_eq!(s.acked(1), 3);
        let b = s.start(1, 5).expect("still lacks 4..=5");
        s.add(1);
        assert_eq!(s.answered(1, b, Answer::Applied(5), now, PATIENCE), None, "the backup started over");
        assert_eq!(s.acked(1), 0);
    }

    #[test]
    fn synced_is_the_least_backup_and_infinite_without_any() {
        let mut s = Sending::default();
        assert_eq!(s.synced(), u64::MAX);
        s.add(1);
        s.add(2);
        let now = Instant::now();
        let a = s.start(1, 9).unwrap();
        s.answered(1, a, Answer::Applied(9), now, PATIENCE);
        assert_eq!(s.synced(), 0);
        let b = s.start(2, 9).unwrap();
        s.answered(2, b, Answer::Applied(4), now, PATIENCE);
        assert_eq!(s.synced(), 4);
        s.remove(2);
        assert_eq!(s.synced(), 9);
        assert_eq!(s.start(1, 9), None, "nothing to send");
    }

    #[test]
    fn a_backup_that_does_not_move_is_dropped_and_a_slow_one_after_patience() {
        let mut s = Sending::default();
        s.add(1);
        let now = Instant::now();
        for _ in 0..STUCK_LIMIT {
            let a = s.start(1, 5).unwrap();
            assert_eq!(s.answered(1, a, Answer::Applied(0), now, PATIENCE), Some(Next::Send));
        }
        let a = s.start(1, 5).unwrap();
        assert!(matches!(s.answered(1, a, Answer::Applied(0), now, PATIENCE), Some(Next::Drop(_))));

        s.add(2);
        let a = s.start(2, 5).unwrap();
        assert_eq!(s.answered(2, a, Answer::Slow, now, PATIENCE), Some(Next::Send));
        let a = s.start(2, 5).unwrap();
        assert_eq!(s.answered(2, a, Answer::Slow, now + PATIENCE / 2, PATIENCE), Some(Next::Send));
        let a = s.start(2, 5).unwrap();
        assert!(matches!(s.answered(2, a, Answer::Slow, now + PATIENCE, PATIENCE), Some(Next::Drop(_))));
        let a = s.start(2, 5).unwrap();
        assert!(matches!(s.answered(2, a, Answer::Gone("refused".into()), now, PATIENCE), Some(Next::Drop(_))));
        let a = s.start(2, 5).unwrap();
        assert_eq!(s.answered(2, a, Answer::StaleTerm("newer".into()), now, PATIENCE), Some(Next::CheckPrimary("newer".into())));
    }

    #[test]
    fn a_dropped_backup_holds_effects_back_until_its_key_is_gone() {
        let mut s = Sending::default();
        s.add(1);
        let now = Instant::now();
        let a = s.start(1, 5).unwrap();
        s.answered(1, a, Answer::Applied(2), now, PATIENCE);
        s.dropping(1);
        assert_eq!(s.start(1, 5), None, "nothing more is sent to it");
        assert_eq!(s.synced(), 2, "it still holds effects back");
        s.remove(1);
        assert_eq!(s.synced(), u64::MAX);
    }

    #[test]
    fn effects_wait_in_order_for_the_backups() {
        let mut g: Gate<&str> = Gate::default();
        assert!(!g.must_wait(3, 3));
        assert!(g.must_wait(4, 3));
        g.hold(4, 1, "reply");
        assert!(g.must_wait(4, 9), "behind the reply");
        g.hold(6, 1, "flag");
        g.hold(6, 1, "record");
        assert_eq!(g.release(3), vec![]);
        assert_eq!(g.release(5), vec![(1, "reply")]);
        g.restarted(2);
        assert_eq!(g.release(2), vec![(1, "flag"), (1, "record")]);
        assert!(g.is_empty());
    }
}
