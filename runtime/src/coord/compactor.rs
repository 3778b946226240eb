//! When to compact the coordinator's history: [`Compactor`].

use std::time::{Duration, Instant};

use super::{CoordResult, Coordinator, Revision};

/// The compaction policy of Kubernetes' API server: every `period`, compact
/// the coordinator's history to the revision that was current one period
/// earlier. So at least one period of history is always kept, and a watcher
/// that lags by less than a period is never cut off (one lagging more gets
/// [`CoordError::Compacted`](super::CoordError::Compacted) and re-reads).
///
/// The type only decides; it does no I/O and reads no clock. Whoever writes
/// steadily (the node that advances the epoch) calls [`due`](Self::due) as
/// it goes, with the time and the store's current revision, and compacts
/// when told to ([`Coordinator::compact`], or
/// [`compact_if_due`](Self::compact_if_due) for both steps):
///
/// ```
/// # use std::time::{Duration, Instant};
/// # use taskgraph::coord::Compactor;
/// let mut compactor = Compactor::new(Duration::from_secs(300));
/// let start = Instant::now();
/// assert_eq!(compactor.due(start, 100), None); // the first mark
/// assert_eq!(compactor.due(start + Duration::from_secs(10), 150), None);
/// // One period later: compact to what was current one period ago.
/// assert_eq!(compactor.due(start + Duration::from_secs(300), 900), Some(100));
/// assert_eq!(compactor.due(start + Duration::from_secs(600), 2000), Some(900));
/// ```
///
/// How often `due` is called does not matter for safety: the revision it
/// returns was current at least one period before the call (calls further
/// apart only keep more history). If the revision goes backwards (the
/// store was replaced by an empty one), the compactor starts over.
#[derive(Clone, Debug)]
pub struct Compactor {
    period: Duration,
    /// The revision current at the start of this period, and when.
    mark: Option<(Instant, Revision)>,
    /// The last revision [`due`](Self::due) returned (0: none).
    compacted: Revision,
}

impl Compactor {
    /// Kubernetes' default compaction interval: 5 minutes. At W1's ~170
    /// epochs/s and ~190 B of etcd history per epoch, about 10 MB.
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(300);

    /// A compactor that keeps at least `period` of history.
    pub fn new(period: Duration) -> Self {
        Compactor { period, mark: None, compacted: 0 }
    }

    /// The history it keeps at least.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// At `now`, with the store at `current_revision`: the revision to
    /// compact to, if a period has passed since the last mark (the first
    /// call only marks). The returned revision is the one observed at the
    /// mark, at least one period ago; every call that returns `Some` starts
    /// a new period at `(now, current_revision)`. Never returns a revision
    /// at or below one it returned before (nothing new to drop: `None`).
    pub fn due(&mut self, now: Instant, current_revision: Revision) -> Option<Revision> {
        let Some((at, marked)) = self.mark else {
            self.mark = Some((now, current_revision));
            return None;
        };
        if current_revision < marked {
            // Another store (a fresh etcd): its revisions start over.
            self.mark = Some((now, current_revision));
            self.compacted = 0;
            return None;
        }
        if now.saturating_duration_since(at) < self.period {
            return None;
        }
        self.mark = Some((now, current_revision));
        if marked <= self.compacted {
            return None;
        }
        self.compacted = marked;
        Some(marked)
    }

    /// [`due`](Self::due), then, if due, `coord.compact(revision)`: the
    /// revision compacted to, if any. A failure is returned as is (the next
    /// period compacts further anyway); [`CoordError::Invalid`](super::CoordError::Invalid)
    /// means the coordinator cannot compact at all.
    pub async fn compact_if_due(
        &mut self,
        coord: &dyn Coordinator,
        now: Instant,
        current_revision: Revision,
    ) -> CoordResult<Option<Revision>> {
        match self.due(now, current_revision) {
            None => Ok(None),
            Some(revision) => coord.compact(revision).await.map(|()| Some(revision)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(300);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn compacts_to_the_revision_of_one_period_ago() {
        let t0 = Instant::now();
        let mut c = Compactor::new(PERIOD);
        assert_eq!(c.due(t0, 10), None, "the first call only marks");
        for s in [1, 100, 299] {
            assert_eq!(c.due(at(t0, s), 10 + s as i64), None, "at {s} s: not a period yet");
        }
        assert_eq!(c.due(at(t0, 300), 400), Some(10), "one period after the mark: its revision");
        assert_eq!(c.due(at(t0, 599), 700), None);
        assert_eq!(c.due(at(t0, 600), 800), Some(400));
    }

    #[test]
    fn always_keeps_at_least_one_period() {
        // Calls at irregular times: whatever is returned was current at
        // least one period before the call that returns it.
        let t0 = Instant::now();
        let mut c = Compactor::new(PERIOD);
        let mut seen: Vec<(u64, Revision)> = Vec::new();
        let mut secs = 0;
        for step in 0..1000u64 {
            secs += 1 + step * 7 % 41;
            let revision = 1 + secs as i64 * 3;
            seen.push((secs, revision));
            if let Some(r) = c.due(at(t0, secs), revision) {
                let when = seen.iter().find(|(_, rev)| *rev == r).expect("a revision it was shown").0;
                assert!(secs - when >= PERIOD.as_secs(), "at {secs} s it compacted to {r}, current at {when} s");
            }
        }
    }

    #[test]
    fn rare_calls_keep_more_history() {
        let t0 = Instant::now();
        let mut c = Compactor::new(PERIOD);
        assert_eq!(c.due(t0, 5), None);
        // An hour without a call: still only the revision of the mark.
        assert_eq!(c.due(at(t0, 3600), 9000), Some(5));
        assert_eq!(c.due(at(t0, 3900), 9100), Some(9000));
    }

    #[test]
    fn nothing_new_to_drop_is_not_due() {
        let t0 = Instant::now();
        let mut c = Compactor::new(PERIOD);
        assert_eq!(c.due(t0, 50), None);
        assert_eq!(c.due(at(t0, 300), 50), Some(50));
        // No writes since: compacting to 50 again would do nothing.
        assert_eq!(c.due(at(t0, 600), 50), None);
        assert_eq!(c.due(at(t0, 900), 60), None, "the mark of 600 s was still 50");
        assert_eq!(c.due(at(t0, 1200), 70), Some(60));
    }

    #[test]
    fn a_store_that_starts_over_starts_the_compactor_over() {
        let t0 = Instant::now();
        let mut c = Compactor::new(PERIOD);
        assert_eq!(c.due(t0, 5000), None);
        assert_eq!(c.due(at(t0, 300), 6000), Some(5000));
        // A fresh store: revisions from 1 again.
        assert_eq!(c.due(at(t0, 310), 3), None, "a new mark, not a compaction to 6000");
        assert_eq!(c.due(at(t0, 500), 40), None);
        assert_eq!(c.due(at(t0, 610), 90), Some(3));
    }

    #[test]
    fn a_zero_period_compacts_to_the_previous_call() {
        let t0 = Instant::now();
        let mut c = Compactor::new(Duration::ZERO);
        assert_eq!(c.due(t0, 2), None);
        assert_eq!(c.due(t0, 7), Some(2));
        assert_eq!(c.due(t0, 9), Some(7));
    }

    #[test]
    fn time_going_backwards_is_not_a_period() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let mut c = Compactor::new(PERIOD);
        assert_eq!(c.due(t0, 2), None);
        assert_eq!(c.due(t0 - Duration::from_secs(500), 7), None);
    }

    #[tokio::test]
    async fn compact_if_due_compacts_the_store() {
        let store = crate::coord::Embedded::new();
        let t0 = Instant::now();
        let mut c = Compactor::new(PERIOD);
        let mut revisions = Vec::new();
        for i in 0..3 {
            revisions.push(store.put("k", &[i], None).await.unwrap());
        }
        assert_eq!(c.compact_if_due(&store, t0, revisions[0]).await, Ok(None));
        assert_eq!(c.compact_if_due(&store, at(t0, 300), revisions[2]).await, Ok(Some(revisions[0])));
        let mut w = store.watch("", revisions[0] - 1).await.unwrap();
        assert!(matches!(w.next().await, Some(Err(crate::coord::CoordError::Compacted { .. }))));
        let mut w = store.watch("", revisions[0]).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().revision(), revisions[0]);
    }
}
