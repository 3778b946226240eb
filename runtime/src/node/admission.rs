//! Admission: whether a peer's fetch or flag is let in, held for a later
//! epoch, or refused (and with what status). A plain function of what the
//! node knows, with unit tests; `serve.rs` acts on its decision. Nothing
//! here trusts the request: a term it names is a claim to check, not proof.

use std::collections::HashMap;

use crate::graph::{Epoch, TaskId};
use crate::job::Job;
use crate::transport::{FetchRequest, MetaFlag, Status, StatusKind};

use super::event_loop::{KeyHolder, Seat};

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

    fn refuse(&self, kind: StatusKind, detail: String) -> Admit {
        Admit::Refuse { status: Status::new(kind, detail, self.epoch, self.term()), newer_term: false }
    }

    /// A peer's fetch of this node's task's data.
    pub(super) fn fetch(&self, req: &FetchRequest) -> Admit {
        let job = self.job;
        if req.job != job.name {
            return self.refuse(StatusKind::WrongJob, format!("this node runs job `{}`, not `{}`", job.name, req.job));
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
            let status = Status::new(StatusKind::NotPrimary, format!("node {} is not task {}'s primary", self.node, req.to_task), self.epoch, 0);
            return Admit::Refuse { status, newer_term: false };
        }
        if req.responder_term > self.term() {
            // Someone knows a newer primary of this task: this node may
            // have been replaced.
            let detail = format!("this node's term {} is older than {}", self.term(), req.responder_term);
            return Admit::Refuse { status: Status::new(StatusKind::StaleTerm, detail, self.epoch, self.term()), newer_term: true };
        }
        if let Some(p) = self.primaries.get(&req.from_task).filter(|p| p.term > req.requester_term) {
            let detail = format!("task {}'s term {} has ended (it is {} now)", req.from_task, req.requester_term, p.term);
            return self.refuse(StatusKind::StaleTerm, detail);
        }
        if req.epoch < self.epoch {
            return self.refuse(StatusKind::StaleEpoch, format!("epoch {} is over; the job is at {}", req.epoch, self.epoch));
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
        fn neighbours(&self, _link: u32, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
            vec![1 - task]
        }
    }

    fn job() -> Job {
        Job::new("j", 2, Pair, |_| unreachable!("no task is built here")).edge(Edge::<()>::new(2, "value"))
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
        let mut a = Admission {
            job: &job,
            node: 3,
            seat: Seat::Primary { task: 0, term: 10 },
            epoch: 4,
            entered: true,
            running: true,
            claiming: None,
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
            assert_eq!(kind(a.fetch(&FetchRequest { to_task: 2, ..request() })), (StatusKind::UnknownTask, false));
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
            assert_eq!(kind(a.flag(&MetaFlag { from_task: 2, ..flag() })), (StatusKind::BadRequest, false));
            assert_eq!(kind(a.flag(&MetaFlag { epoch: 3, ..flag() })), (StatusKind::StaleEpoch, false));
        });
    }
}
