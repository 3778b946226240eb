//! Admission: whether a peer's fetch or flag is let in, held for a later
//! epoch, or refused (and with what status). A plain function of what the
//! node knows, with unit tests; `serve.rs` acts on its decision. Nothing
//! here trusts the request: a term it names is a claim to check, not proof.

use std::collections::{HashMap, HashSet};

use crate::graph::{Epoch, TaskId};
use crate::job::Job;
use crate::transport::{FetchRequest, MetaFlag, Status, StatusKind};

use super::event_loop::{KeyHolder, Seat};

/// How many epochs ahead of this node's a request may be and still be held
/// for its epoch (a neighbour may run ahead while this node's view of the
/// epoch lags). Further ahead, it is refused and the requester retries: a
/// peer cannot make a node hold requests for epochs that never come.
pub(super) const EARLY_EPOCHS: Epoch = 4;

/// The most of a peer's job name a refusal repeats.
const ECHO_BYTES: usize = 64;

/// At most `ECHO_BYTES` of `s` (on a character boundary).
fn clip(s: &str) -> &str {
    let mut end = s.len().min(ECHO_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What decides whether a request is let in.
pub(super) struct Admission<'a> {
    pub(super) job: &'a Job,
    pub(super) node: u64,
    pub(super) seat: Seat,
    pub(super) epoch: Epoch,
    /// This node's task has entered `epoch`.
    pub(super) entered: bool,
    /// The job still runs.
    pub(super) running: bool,
    /// The task this node is claiming (its key may be created already,
    /// and peers may know): fetches for it wait for the outcome rather
    /// than being refused and retried after a back-off.
    pub(super) claiming: Option<TaskId>,
    /// This node's task's neighbours at `epoch`, by link, once `entered`
    /// (requests of other epochs are checked against the topology).
    pub(super) neighbours: &'a HashSet<(u32, TaskId)>,
    /// The primaries this node knows of, by task (their terms fence
    /// requests sent under an ended term).
    pub(super) primaries: &'a HashMap<TaskId, KeyHolder>,
}

/// What becomes of a request.
#[derive(Debug, PartialEq)]
pub(super) enum Admit {
    /// Hand it to the task now.
    Now,
    /// It is for a later epoch, or the task has not entered this one yet:
    /// hold it until the task enters the request's epoch.
    Early,
    /// Refuse it with `status`. `newer_term`: it names a newer term of this
    /// node's task, so this node may have been replaced (the loop has that
    /// checked with the coordinator).
    Refuse { status: Status, newer_term: bool },
}

impl Admission<'_> {
    fn term(&self) -> u64 {
        match self.seat {
            Seat::Primary { term, .. } => term,
            _ => 0,
        }
    }

    fn primary_of(&self) -> Option<TaskId> {
        match self.seat {
            Seat::Primary { task, .. } => Some(task),
            _ => None,
        }
    }

    /// A refusal. It names no term (a stranger learns no live term from
    /// it); the epoch it names is public (`ping` says it too).
    fn refuse(&self, kind: StatusKind, detail: String) -> Admit {
        Admit::Refuse { status: Status::new(kind, detail, self.epoch, 0), newer_term: false }
    }

    /// Whether `peer` is a neighbour of `me` at `epoch` over `link`, or
    /// over any link if `link` is `None`.
    fn neighbours(&self, me: TaskId, peer: TaskId, epoch: Epoch, link: Option<u32>) -> bool {
        let topology = &*self.job.topology;
        let mut links = topology.links().iter().filter(|l| link.is_none_or(|id| l.id == id));
        if epoch == self.epoch && self.entered {
            links.any(|l| self.neighbours.contains(&(l.id, peer)))
        } else {
            links.any(|l| topology.neighbours(l.id, me, epoch).contains(&peer))
        }
    }

    /// A request for `epoch`, far ahead of this node's: refused for now.
    fn too_early(&self, epoch: Epoch) -> Option<Admit> {
        (epoch > self.epoch.saturating_add(EARLY_EPOCHS)).then(|| {
            let detail = format!("epoch {epoch} is more than {EARLY_EPOCHS} ahead of this node's ({}); try again later", self.epoch);
            self.refuse(StatusKind::Internal, detail)
        })
    }

    /// A peer's fetch of this node's task's data.
    pub(super) fn fetch(&self, req: &FetchRequest) -> Admit {
        let job = self.job;
        if req.job != job.name {
            return self.refuse(StatusKind::WrongJob, format!("this node runs job `{}`, not `{}`", clip(&job.name), clip(&req.job)));
        }
        if req.to_task >= job.tasks || req.from_task >= job.tasks {
            return self.refuse(StatusKind::UnknownTask, format!("the job has tasks 0..{}", job.tasks));
        }
        if !job.has_edge(req.edge) {
            return self.refuse(StatusKind::UnknownEdge, format!("the job declares no edge {}", req.edge));
        }
        if !self.running {
            return self.refuse(StatusKind::ShuttingDown, "the job ended".into());
        }
        if self.primary_of() != Some(req.to_task) && self.claiming == Some(req.to_task) {
            return Admit::Early;
        }
        if self.primary_of() != Some(req.to_task) {
            return self.refuse(StatusKind::NotPrimary, format!("node {} is not task {}'s primary", self.node, req.to_task));
        }
        if req.responder_term > self.term() {
            // Someone knows a newer primary of this task: this node may
            // have been replaced.
            let detail = format!("the request names a newer term of task {} than this node's", req.to_task);
            return Admit::Refuse { status: Status::new(StatusKind::StaleTerm, detail, self.epoch, 0), newer_term: true };
        }
        if self.primaries.get(&req.from_task).is_some_and(|p| p.term > req.requester_term) {
            let detail = format!("task {}'s term {} has ended", req.from_task, req.requester_term);
            return self.refuse(StatusKind::StaleTerm, detail);
        }
        if req.epoch < self.epoch {
            return self.refuse(StatusKind::StaleEpoch, format!("epoch {} is over; the job is at {}", req.epoch, self.epoch));
        }
        if let Some(refusal) = self.too_early(req.epoch) {
            return refusal;
        }
        // Only a neighbour of the task at the request's epoch is served (a
        // stranger naming any task id gets nothing).
        if !self.neighbours(req.to_task, req.from_task, req.epoch, None) {
            let detail = format!(
                "task {} is not a neighbour of task {} at epoch {} over any link of the topology: only neighbours fetch from each other",
                req.from_task, req.to_task, req.epoch
            );
            return self.refuse(StatusKind::BadRequest, detail);
        }
        if req.epoch > self.epoch || !self.entered {
            return Admit::Early;
        }
        Admit::Now
    }

    /// A peer's flag to this node's task.
    pub(super) fn flag(&self, flag: &MetaFlag) -> Admit {
        let ok = flag.job == self.job.name
            && self.primary_of() == Some(flag.to_task)
            && flag.from_task < self.job.tasks
            && (flag.link as usize) < self.job.topology.links().len();
        if !ok {
            return self.refuse(StatusKind::BadRequest, "the flag is not for this node's task".into());
        }
        if flag.epoch < self.epoch {
            return self.refuse(StatusKind::StaleEpoch, format!("epoch {} is over", flag.epoch));
        }
        if let Some(refusal) = self.too_early(flag.epoch) {
            return refusal;
        }
        if !self.neighbours(flag.to_task, flag.from_task, flag.epoch, Some(flag.link)) {
            let detail = format!("task {} is not a neighbour of task {} over link {} at epoch {}", flag.from_task, flag.to_task, flag.link, flag.epoch);
            return self.refuse(StatusKind::BadRequest, detail);
        }
        if flag.epoch > self.epoch || !self.entered {
            return Admit::Early;
        }
        Admit::Now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Edge, LinkType, Topology};

    struct Pair;

    const LINKS: [LinkType; 1] = [LinkType::with_inverse(0, "peer", 0)];

    impl Topology for Pair {
        fn links(&self) -> &[LinkType] {
            &LINKS
        }
        /// Tasks 0 and 1 are peers; task 2 is no one's neighbour.
        fn neighbours(&self, _link: u32, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
            if task < 2 {
                vec![1 - task]
            } else {
                vec![]
            }
        }
    }

    fn job() -> Job {
        Job::new("j", 3, Pair, |_| unreachable!("no task is built here")).edge(Edge::<()>::new(2, "value"))
    }

    fn holder(term: u64) -> KeyHolder {
        KeyHolder { node: 7, addr: "127.0.0.1:1".parse().unwrap(), term, mod_revision: term as i64, ready: false, lease: None }
    }

    fn request() -> FetchRequest {
        FetchRequest { job: "j".into(), epoch: 4, from_task: 1, to_task: 0, edge: 2, seq: 1, requester_term: 20, responder_term: 10 }
    }

    fn flag() -> MetaFlag {
        MetaFlag { job: "j".into(), epoch: 4, from_task: 1, to_task: 0, link: 0, meta: vec![1], term: 20 }
    }

    fn kind(admit: Admit) -> (StatusKind, bool) {
        match admit {
            Admit::Refuse { status, newer_term } => (status.kind, newer_term),
            other => panic!("admitted: {other:?}"),
        }
    }

    /// Runs `f` with task 0's primary (term 10) at epoch 4, entered, that
    /// knows task 1's primary has term 20.
    fn at(f: impl FnOnce(&mut Admission<'_>)) {
        let job = job();
        let primaries: HashMap<TaskId, KeyHolder> = [(1, holder(20))].into();
        // Task 0's neighbours at epoch 4, as `enter` keeps them.
        let neighbours: HashSet<(u32, TaskId)> = [(0, 1)].into();
        let mut a = Admission {
            job: &job,
            node: 3,
            seat: Seat::Primary { task: 0, term: 10 },
            epoch: 4,
            entered: true,
            running: true,
            claiming: None,
            neighbours: &neighbours,
            primaries: &primaries,
        };
        f(&mut a);
    }

    #[test]
    fn a_well_formed_fetch_of_this_epoch_is_served_now() {
        at(|a| assert_eq!(a.fetch(&request()), Admit::Now));
    }

    #[test]
    fn fetches_for_another_job_task_or_edge_are_refused_by_kind() {
        at(|a| {
            assert_eq!(kind(a.fetch(&FetchRequest { job: "other".into(), ..request() })), (StatusKind::WrongJob, false));
            assert_eq!(kind(a.fetch(&FetchRequest { to_task: 3, ..request() })), (StatusKind::UnknownTask, false));
            assert_eq!(kind(a.fetch(&FetchRequest { from_task: u64::MAX, ..request() })), (StatusKind::UnknownTask, false));
            assert_eq!(kind(a.fetch(&FetchRequest { edge: 9, ..request() })), (StatusKind::UnknownEdge, false));
            assert_eq!(kind(a.fetch(&FetchRequest { to_task: 1, ..request() })), (StatusKind::NotPrimary, false));
        });
    }

    #[test]
    fn a_fetch_naming_a_newer_term_of_this_task_asks_for_a_check() {
        at(|a| assert_eq!(kind(a.fetch(&FetchRequest { responder_term: 11, ..request() })), (StatusKind::StaleTerm, true)));
    }

    #[test]
    fn a_fetch_sent_under_an_ended_term_or_epoch_is_refused() {
        at(|a| {
            assert_eq!(kind(a.fetch(&FetchRequest { requester_term: 19, ..request() })), (StatusKind::StaleTerm, false));
            assert_eq!(kind(a.fetch(&FetchRequest { epoch: 3, ..request() })), (StatusKind::StaleEpoch, false));
        });
    }

    #[test]
    fn an_early_fetch_or_flag_is_held() {
        at(|a| {
            assert_eq!(a.fetch(&FetchRequest { epoch: 5, ..request() }), Admit::Early);
            assert_eq!(a.flag(&MetaFlag { epoch: 5, ..flag() }), Admit::Early);
            a.entered = false;
            assert_eq!(a.fetch(&request()), Admit::Early);
            assert_eq!(a.flag(&flag()), Admit::Early);
        });
    }

    #[test]
    fn nothing_is_served_once_the_job_ended_or_by_a_node_that_is_not_primary() {
        at(|a| {
            a.running = false;
            assert_eq!(kind(a.fetch(&request())), (StatusKind::ShuttingDown, false));
            a.running = true;
            a.seat = Seat::Backup { task: 0, slot: 1 };
            assert_eq!(kind(a.fetch(&request())), (StatusKind::NotPrimary, false));
            assert_eq!(kind(a.flag(&flag())), (StatusKind::BadRequest, false));
        });
    }

    #[test]
    fn only_a_neighbour_at_the_requests_epoch_is_served_or_heard() {
        at(|a| {
            assert_eq!(kind(a.fetch(&FetchRequest { from_task: 2, ..request() })), (StatusKind::BadRequest, false));
            assert_eq!(kind(a.fetch(&FetchRequest { from_task: 2, epoch: 5, ..request() })), (StatusKind::BadRequest, false));
            assert_eq!(kind(a.flag(&MetaFlag { from_task: 2, ..flag() })), (StatusKind::BadRequest, false));
        });
    }

    #[test]
    fn requests_far_ahead_are_refused_not_held_and_refusals_name_no_term() {
        at(|a| {
            assert_eq!(a.fetch(&FetchRequest { epoch: 4 + EARLY_EPOCHS, ..request() }), Admit::Early);
            for epoch in [5 + EARLY_EPOCHS, 1 << 63, u64::MAX] {
                assert_eq!(kind(a.fetch(&FetchRequest { epoch, ..request() })), (StatusKind::Internal, false), "{epoch}");
                assert_eq!(kind(a.flag(&MetaFlag { epoch, ..flag() })), (StatusKind::Internal, false), "{epoch}");
            }
            for req in [
                FetchRequest { responder_term: 11, ..request() },
                FetchRequest { requester_term: 19, ..request() },
                FetchRequest { job: "x".repeat(1 << 20), ..request() },
            ] {
                let Admit::Refuse { status, .. } = a.fetch(&req) else { panic!("admitted") };
                assert_eq!(status.term, 0);
                assert!(!status.detail.contains("10") && !status.detail.contains("20"), "{}", status.detail);
                assert!(status.detail.len() < 200, "{} bytes", status.detail.len());
            }
        });
    }

    #[test]
    fn a_fetch_for_the_task_this_node_is_claiming_waits_for_the_claim() {
        at(|a| {
            a.seat = Seat::Spare;
            a.claiming = Some(0);
            assert_eq!(a.fetch(&FetchRequest { responder_term: 30, ..request() }), Admit::Early);
            assert_eq!(kind(a.fetch(&FetchRequest { to_task: 1, ..request() })), (StatusKind::NotPrimary, false));
            // Flags are answered at once (held ones count as delivered), so
            // they are not held for a claim that may fail.
            assert_eq!(kind(a.flag(&flag())), (StatusKind::BadRequest, false));
            a.running = false;
            assert_eq!(kind(a.fetch(&request())), (StatusKind::ShuttingDown, false));
        });
    }

    #[test]
    fn flags_are_checked_for_job_task_link_and_epoch() {
        at(|a| {
            assert_eq!(a.flag(&flag()), Admit::Now);
            assert_eq!(kind(a.flag(&MetaFlag { job: "x".into(), ..flag() })), (StatusKind::BadRequest, false));
            assert_eq!(kind(a.flag(&MetaFlag { link: 1, ..flag() })), (StatusKind::BadRequest, false));
            assert_eq!(kind(a.flag(&MetaFlag { from_task: 3, ..flag() })), (StatusKind::BadRequest, false));
            assert_eq!(kind(a.flag(&MetaFlag { epoch: 3, ..flag() })), (StatusKind::StaleEpoch, false));
        });
    }
}
