//! Serving: admitting a neighbour's fetch or flag (job, task, edge, terms,
//! epoch), holding early ones until the task enters their epoch, and the
//! epoch's reply cache (one `serve` per edge and requester).

use super::*;
use super::admission::{Admission, Admit};

/// Where the answer to one fetch goes.
pub(super) type Responder = oneshot::Sender<Answer>;

/// What a served (edge, requester) pair of this epoch is at.
enum Served {
    Pending(Vec<Responder>),
    Ready(Arc<Vec<u8>>),
}

pub(super) const MAX_HELD: usize = 100_000;

/// A fetch's (edge, requesting task).
pub(super) type ReplyKey = (u32, TaskId);

/// The epoch's reply cache, and the requests and flags that came before
/// this task entered their epoch. Plain data with no I/O.
#[derive(Default)]
pub(super) struct Replies {
    /// The epoch whose replies `cache` holds.
    epoch: Option<Epoch>,
    cache: HashMap<ReplyKey, Served>,
    held: Vec<(transport::FetchRequest, Responder)>,
    held_flags: Vec<transport::MetaFlag>,
}

impl Replies {
    /// The epoch the cache holds replies of.
    pub(super) fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// A fetch of this epoch for `key`: answered from the cache, or added
    /// to those waiting for the reply. `true`: the first request for it
    /// (the task's `serve` is to be called).
    pub(super) fn ask(&mut self, key: ReplyKey, respond: Responder) -> bool {
        match self.cache.get_mut(&key) {
            Some(Served::Ready(frame)) => {
                let _ = respond.send(Ok(frame.clone()));
                false
            }
            Some(Served::Pending(waiters)) => {
                waiters.push(respond);
                false
            }
            None => {
                self.cache.insert(key, Served::Pending(vec![respond]));
                true
            }
        }
    }

    /// Whether the reply for `key` has been released.
    pub(super) fn is_ready(&self, key: ReplyKey) -> bool {
        matches!(self.cache.get(&key), Some(Served::Ready(_)))
    }

    /// The task's reply for `key`: kept for the epoch, and sent to every
    /// request waiting for it. `false`: it had replied already (the first
    /// reply stays).
    pub(super) fn release(&mut self, key: ReplyKey, frame: Arc<Vec<u8>>) -> bool {
        match self.cache.get_mut(&key) {
            Some(Served::Ready(_)) => false,
            Some(entry @ Served::Pending(_)) => {
                let Served::Pending(waiters) = std::mem::replace(entry, Served::Ready(frame.clone())) else { unreachable!() };
                for w in waiters {
                    let _ = w.send(Ok(frame.clone()));
                }
                true
            }
            None => {
                self.cache.insert(key, Served::Ready(frame));
                true
            }
        }
    }

    /// The cache now holds epoch `e`'s replies: the old epoch's waiting
    /// requests get `stale`.
    pub(super) fn start_epoch(&mut self, e: Epoch, stale: &Status) {
        self.fail_waiting(stale);
        self.epoch = Some(e);
    }

    /// Takes over the replies a backup was sent for `epoch` (it became the
    /// primary): they are this node's now.
    pub(super) fn adopt(&mut self, epoch: Epoch, kept: impl IntoIterator<Item = (ReplyKey, Arc<Vec<u8>>)>) {
        self.cache.clear();
        self.cache.extend(kept.into_iter().map(|(k, frame)| (k, Served::Ready(frame))));
        self.epoch = Some(epoch);
    }

    /// The replies released this epoch.
    pub(super) fn released(&self) -> impl Iterator<Item = (ReplyKey, &Arc<Vec<u8>>)> {
        self.cache.iter().filter_map(|(k, s)| match s {
            Served::Ready(frame) => Some((*k, frame)),
            Served::Pending(_) => None,
        })
    }

    /// Holds a fetch until the task enters its epoch (`false`: too many
    /// held; it was refused with `full`).
    pub(super) fn hold(&mut self, req: transport::FetchRequest, respond: Responder, full: Status) -> bool {
        if self.held.len() >= MAX_HELD {
            let _ = respond.send(Err(full));
            return false;
        }
        self.held.push((req, respond));
        true
    }

    /// The held fetches of epochs up to `e` (the others stay held).
    pub(super) fn take_held(&mut self, e: Epoch) -> Vec<(transport::FetchRequest, Responder)> {
        let (now, later) = std::mem::take(&mut self.held).into_iter().partition(|(req, _)| req.epoch <= e);
        self.held = later;
        now
    }

    /// Holds a flag until the task enters its epoch (dropped when too many
    /// are held).
    pub(super) fn hold_flag(&mut self, flag: transport::MetaFlag) {
        if self.held_flags.len() < MAX_HELD {
            self.held_flags.push(flag);
        }
    }

    /// The held flags of epoch `e`, in arrival order; older ones are dropped.
    pub(super) fn take_flags(&mut self, e: Epoch) -> Vec<transport::MetaFlag> {
        let mut now = Vec::new();
        for flag in std::mem::take(&mut self.held_flags) {
            match flag.epoch.cmp(&e) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => now.push(flag),
                std::cmp::Ordering::Greater => self.held_flags.push(flag),
            }
        }
        now
    }

    /// Every request waiting here (for a reply, or held) gets `status`.
    pub(super) fn shut(&mut self, status: &Status) {
        self.fail_waiting(status);
        for (_, w) in self.held.drain(..) {
            let _ = w.send(Err(status.clone()));
        }
    }

    fn fail_waiting(&mut self, status: &Status) {
        for (_, served) in self.cache.drain() {
            if let Served::Pending(ws) = served {
                for w in ws {
                    let _ = w.send(Err(status.clone()));
                }
            }
        }
    }
}

impl Loop {
    /// What decides whether a peer's request is let in (see `admission`).
    pub(super) fn admission(&self) -> Admission<'_> {
        Admission {
            job: &self.cfg.job,
            node: self.cfg.node_id,
            seat: self.role.seat(),
            epoch: self.epoch,
            entered: self.role.entered(),
            running: self.status == JobStatus::Running,
            claiming: self.taking.claiming(),
            neighbours: &self.neighbours,
            primaries: &self.members.primaries,
        }
    }

    pub(super) async fn on_fetch(&mut self, req: transport::FetchRequest, respond: Responder) -> Result<(), Exit> {
        match self.admission().fetch(&req) {
            Admit::Refuse { status, newer_term } => {
                let _ = respond.send(Err(status));
                // A request naming a newer term is a claim, not proof (a
                // rogue client can send anything): step down only if the
                // coordinator confirms this node no longer holds the task
                // (the lane checks, off the loop).
                if newer_term {
                    self.check_primary();
                }
                Ok(())
            }
            Admit::Early => {
                // Answered once this task enters that epoch.
                let full = Status::new(StatusKind::Internal, "too many early requests", self.epoch, self.term());
                self.replies.hold(req, respond, full);
                Ok(())
            }
            Admit::Now => {
                if self.replies.ask((req.edge, req.from_task), respond) {
                    let me = req.to_task;
                    self.kill_at(FaultPoint::BeforeServe { task: me, epoch: req.epoch, to: req.from_task, edge: req.edge })?;
                    let request = ServeRequest { from: req.from_task, edge: req.edge, epoch: req.epoch };
                    self.call(|task, cx| task.serve(cx, request));
                    self.apply_pending().await?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn on_flag(&mut self, flag: transport::MetaFlag, respond: oneshot::Sender<Status>) -> Result<(), Exit> {
        match self.admission().flag(&flag) {
            Admit::Refuse { status, .. } => {
                let _ = respond.send(status);
            }
            Admit::Early => {
                let _ = respond.send(Status::ok(self.epoch, self.term()));
                // Delivered once this task enters that epoch.
                self.replies.hold_flag(flag);
            }
            Admit::Now => {
                let _ = respond.send(Status::ok(self.epoch, self.term()));
                self.deliver_flag(flag);
            }
        }
        Ok(())
    }

    pub(super) fn deliver_flag(&mut self, flag: transport::MetaFlag) {
        let link = self.cfg.job.topology.links()[flag.link as usize];
        self.call(|task, cx| task.meta_ready(cx, flag.from_task, link, &flag.meta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(epoch: Epoch) -> transport::FetchRequest {
        transport::FetchRequest {
            job: "j".into(),
            epoch,
            from_task: 1,
            to_task: 0,
            edge: 2,
            seq: 1,
            requester_term: 1,
            responder_term: 1,
        }
    }

    fn flag(epoch: Epoch) -> transport::MetaFlag {
        transport::MetaFlag { job: "j".into(), epoch, from_task: 1, to_task: 0, link: 0, meta: vec![epoch as u8], term: 1 }
    }

    #[test]
    fn serve_is_asked_once_and_every_request_gets_the_first_reply() {
        let mut r = Replies::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        assert!(r.ask((2, 1), a), "the first request: serve");
        assert!(!r.ask((2, 1), b), "the second waits");
        assert!(!r.is_ready((2, 1)));
        assert!(r.release((2, 1), Arc::new(vec![1])));
        assert!(!r.release((2, 1), Arc::new(vec![2])), "a second reply is not taken");
        assert_eq!(a_rx.try_recv().unwrap().unwrap().as_slice(), &[1]);
        assert_eq!(b_rx.try_recv().unwrap().unwrap().as_slice(), &[1]);
        let (c, mut c_rx) = oneshot::channel();
        assert!(!r.ask((2, 1), c), "a retry is answered from the cache");
        assert_eq!(c_rx.try_recv().unwrap().unwrap().as_slice(), &[1]);
        assert_eq!(r.released().count(), 1);
    }

    #[test]
    fn a_new_epoch_fails_waiting_requests_and_releases_held_ones_in_turn() {
        let mut r = Replies::default();
        let (a, mut a_rx) = oneshot::channel();
        r.ask((2, 1), a);
        let stale = Status::new(StatusKind::StaleEpoch, "over", 4, 1);
        r.start_epoch(4, &stale);
        assert_eq!(r.epoch(), Some(4));
        assert_eq!(a_rx.try_recv().unwrap().unwrap_err().kind, StatusKind::StaleEpoch);
        let (b, _b_rx) = oneshot::channel();
        let (c, _c_rx) = oneshot::channel();
        assert!(r.hold(request(5), b, stale.clone()));
        assert!(r.hold(request(6), c, stale.clone()));
        assert_eq!(r.take_held(5).len(), 1);
        let (d, mut d_rx) = oneshot::channel();
        r.hold(request(7), d, stale.clone());
        r.shut(&Status::new(StatusKind::ShuttingDown, "ended", 5, 1));
        assert_eq!(d_rx.try_recv().unwrap().unwrap_err().kind, StatusKind::ShuttingDown);
        assert!(r.take_held(100).is_empty());
    }

    #[test]
    fn held_flags_go_in_their_epoch_and_older_ones_are_dropped() {
        let mut r = Replies::default();
        for e in [3, 5, 4, 5] {
            r.hold_flag(flag(e));
        }
        assert_eq!(r.take_flags(4).iter().map(|f| f.epoch).collect::<Vec<_>>(), vec![4]);
        assert_eq!(r.take_flags(5).iter().map(|f| f.epoch).collect::<Vec<_>>(), vec![5, 5]);
        assert!(r.take_flags(6).is_empty());
    }

    #[test]
    fn a_promoted_backup_adopts_the_replies_it_was_sent() {
        let mut r = Replies::default();
        r.adopt(9, [((2, 1), Arc::new(vec![5]))]);
        assert_eq!(r.epoch(), Some(9));
        assert!(r.is_ready((2, 1)));
        let (a, mut a_rx) = oneshot::channel();
        assert!(!r.ask((2, 1), a));
        assert_eq!(a_rx.try_recv().unwrap().unwrap().as_slice(), &[5]);
    }
}
