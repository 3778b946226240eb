//! A task's replication stream: its primary writes it, its backups follow
//! it (see the README's "Hot standby"). Positions count from 1 within one
//! primary's term; the log keeps positions `base..=end`, restarting at a
//! snapshot once it is long. This is plain data with no I/O; `primary` decides
//! what each backup is sent next and when effects may go.

use std::collections::HashMap;
use std::sync::Arc;

use crate::graph::{Epoch, TaskId};
use crate::transport::{self, ReplicaEntry};

mod follower;
mod primary;
pub(crate) mod progress;

/// A primary's replication log restarts at a snapshot of the task's state
/// at the first epoch it holds more entries than this, or more bytes.
const REBASE_ENTRIES: usize = 256;
const REBASE_BYTES: usize = 16 << 20;

/// A reply a backup was sent, with its epoch.
pub(crate) type KeptReply = (Epoch, Arc<Vec<u8>>);

/// A task's replication stream: written by its primary, followed by its
/// backups. Positions count from 1 within one primary's term.
#[derive(Default)]
pub(crate) struct Stream {
    /// The term of the primary that writes it (0: none yet).
    pub(crate) term: u64,
    /// The entries kept: positions `base..=end`.
    pub(crate) log: Vec<ReplicaEntry>,
    pub(crate) base: u64,
    pub(crate) end: u64,
    /// Whether the task gives snapshots: then the log starts at the last
    /// snapshot; without, it keeps everything since the stream's start.
    pub(crate) snapshots: bool,
    /// On a backup: a reply being put together from its parts.
    pub(crate) partial: Option<(Epoch, u32, TaskId, Vec<u8>)>,
    /// On a backup: the replies the primary released, by (edge,
    /// requester), with their epoch.
    pub(crate) served: HashMap<(u32, TaskId), KeptReply>,
    /// Log entries before this index hold no reply of a past epoch (the
    /// stream is in time order, so the next forgetting starts here).
    pub(crate) forgotten: usize,
}

impl Stream {
    /// A new stream of term `term`, starting with `first` (`Start` or a
    /// snapshot).
    pub(crate) fn begin(term: u64, snapshots: bool, first: ReplicaEntry) -> Self {
        Stream { term, log: vec![first], base: 1, end: 1, snapshots, ..Default::default() }
    }

    pub(crate) fn push(&mut self, entry: ReplicaEntry) {
        self.log.push(entry);
        self.end += 1;
    }

    /// Appends a reply, in parts of at most one batch.
    pub(crate) fn push_served(&mut self, epoch: Epoch, edge: u32, requester: TaskId, frame: &Arc<Vec<u8>>) {
        let len = frame.len();
        let mut start = 0;
        loop {
            let end = (start + transport::REPLICA_BATCH_BYTES).min(len);
            let last = end == len;
            self.push(ReplicaEntry::Served { epoch, edge, requester, frame: frame.clone(), range: start..end, last });
            if last {
                break;
            }
            start = end;
        }
    }

    /// Empties the replies of epochs before `epoch` kept in the log (no
    /// one asks for them any more; positions stay).
    pub(crate) fn forget_replies_before(&mut self, epoch: Epoch) {
        for e in &mut self.log[self.forgotten..] {
            if let ReplicaEntry::Served { epoch: at, frame, range, .. } = e {
                if *at >= epoch {
                    break;
                }
                *frame = Arc::new(Vec::new());
                *range = 0..0;
            }
            self.forgotten += 1;
        }
    }

    /// Empties the log; the next entry takes position `next`.
    pub(crate) fn restart_at(&mut self, next: u64) {
        self.log.clear();
        self.forgotten = 0;
        self.base = next;
        self.end = next - 1;
    }

    /// Whether the log has grown enough to restart it at a snapshot: more
    /// than `REBASE_ENTRIES` entries, or `REBASE_BYTES` of them.
    pub(crate) fn is_long(&self) -> bool {
        self.log.len() > REBASE_ENTRIES || self.log.iter().map(ReplicaEntry::size).sum::<usize>() > REBASE_BYTES
    }

    /// Restarts the log at a snapshot (positions go on).
    pub(crate) fn rebase(&mut self, snapshot: ReplicaEntry) {
        self.restart_at(self.end + 1);
        self.push(snapshot);
    }

    /// The entries from position `from` on, up to about one batch.
    pub(crate) fn batch(&self, from: u64) -> Vec<ReplicaEntry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.log[(from - self.base) as usize..] {
            if !out.is_empty() && bytes + e.size() > transport::REPLICA_BATCH_BYTES {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
        }
        out
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn served(e: &ReplicaEntry) -> Option<(Epoch, usize, bool)> {
        match e {
            ReplicaEntry::Served { epoch, range, last, .. } => Some((*epoch, range.len(), *last)),
            _ => None,
        }
    }

    #[test]
    fn a_big_reply_is_streamed_in_parts_of_one_batch() {
        let mut stream = Stream::begin(7, false, ReplicaEntry::Start);
        let frame = Arc::new(vec![1u8; 2 * transport::REPLICA_BATCH_BYTES + 10]);
        stream.push_served(3, 1, 4, &frame);
        assert_eq!((stream.base, stream.end), (1, 4));
        let parts: Vec<_> = stream.log.iter().filter_map(served).collect();
        let b = transport::REPLICA_BATCH_BYTES;
        assert_eq!(parts, vec![(3, b, false), (3, b, false), (3, 10, true)]);
        // A batch stays within one batch's bytes: each part goes alone.
        assert_eq!(stream.batch(1).len(), 1);
        assert_eq!(stream.batch(2).len(), 1);
        assert_eq!(stream.batch(3).len(), 1);
        assert_eq!(stream.batch(4).len(), 1);
    }

    #[test]
    fn replies_of_past_epochs_are_emptied_and_positions_kept() {
        let mut stream = Stream::begin(7, false, ReplicaEntry::Start);
        stream.push_served(3, 1, 4, &Arc::new(vec![1u8; 100]));
        stream.push(ReplicaEntry::Update(Arc::new(vec![9])));
        stream.push_served(4, 1, 4, &Arc::new(vec![2u8; 50]));
        stream.forget_replies_before(4);
        let parts: Vec<_> = stream.log.iter().filter_map(served).collect();
        assert_eq!(parts, vec![(3, 0, true), (4, 50, true)]);
        assert_eq!((stream.base, stream.end, stream.log.len()), (1, 4, 4));
        // The next epoch's forgetting picks up where this one stopped.
        stream.push_served(5, 1, 4, &Arc::new(vec![3u8; 20]));
        stream.forget_replies_before(5);
        let parts: Vec<_> = stream.log.iter().filter_map(served).collect();
        assert_eq!(parts, vec![(3, 0, true), (4, 0, true), (5, 20, true)]);
    }

    #[test]
    fn a_snapshot_restarts_the_log_where_the_positions_are() {
        let mut stream = Stream::begin(7, true, ReplicaEntry::Snapshot(Arc::new(vec![0])));
        stream.push(ReplicaEntry::Update(Arc::new(vec![1])));
        stream.push(ReplicaEntry::Update(Arc::new(vec![2])));
        stream.rebase(ReplicaEntry::Snapshot(Arc::new(vec![3])));
        assert_eq!((stream.base, stream.end, stream.log.len()), (4, 4, 1));
        assert!(matches!(stream.batch(4)[0], ReplicaEntry::Snapshot(_)));
    }
}
