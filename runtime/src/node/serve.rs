//! Serving: admitting a neighbour's fetch or flag (job, task, edge, terms,
//! epoch), holding early ones until the task enters their epoch, and the
//! epoch's reply cache (one `serve` per edge and requester).

use super::*;

/// Where the answer to one fetch goes.
pub(super) type Responder = oneshot::Sender<Answer>;

/// What a served (edge, requester) pair of this epoch is at.
pub(super) enum Served {
    Pending(Vec<Responder>),
    Ready(Arc<Vec<u8>>),
}

pub(super) const MAX_HELD: usize = 100_000;

impl Loop {
    pub(super) async fn on_fetch(
        &mut self,
        req: transport::FetchRequest,
        respond: Responder,
    ) -> Result<(), Exit> {
        let job = &self.cfg.job;
        let refuse = |kind, detail: String, epoch, term| Err(Status::new(kind, detail, epoch, term));
        let check: Result<(), Status> = if req.job != job.name {
            refuse(StatusKind::WrongJob, format!("this node runs job `{}`, not `{}`", job.name, req.job), self.epoch, self.term())
        } else if req.to_task >= job.tasks || req.from_task >= job.tasks {
            refuse(StatusKind::UnknownTask, format!("the job has tasks 0..{}", job.tasks), self.epoch, self.term())
        } else if !job.has_edge(req.edge) {
            refuse(StatusKind::UnknownEdge, format!("the job declares no edge {}", req.edge), self.epoch, self.term())
        } else if self.status != JobStatus::Running {
            refuse(StatusKind::ShuttingDown, "the job ended".into(), self.epoch, self.term())
        } else if self.role.primary().map(|(t, _)| t) != Some(req.to_task) {
            refuse(StatusKind::NotPrimary, format!("node {} is not task {}'s primary", self.cfg.node_id, req.to_task), self.epoch, 0)
        } else if req.responder_term > self.term() {
            // Someone knows a newer primary of this task: this node has
            // been replaced. Refuse, then step down (below).
            refuse(StatusKind::StaleTerm, format!("this node's term {} is older than {}", self.term(), req.responder_term), self.epoch, self.term())
        } else if self.primaries.get(&req.from_task).is_some_and(|p| p.term > req.requester_term) {
            refuse(
                StatusKind::StaleTerm,
                format!("task {}'s term {} has ended (it is {} now)", req.from_task, req.requester_term, self.primaries[&req.from_task].term),
                self.epoch,
                self.term(),
            )
        } else if req.epoch < self.epoch {
            refuse(StatusKind::StaleEpoch, format!("epoch {} is over; the job is at {}", req.epoch, self.epoch), self.epoch, self.term())
        } else {
            Ok(())
        };
        if let Err(status) = check {
            let replaced = status.kind == StatusKind::StaleTerm && req.responder_term > self.term();
            let _ = respond.send(Err(status));
            // A request naming a newer term is a claim, not proof (a rogue
            // client can send anything): step down only if the coordinator
            // confirms this node no longer holds the task.
            if replaced && self.role.primary().is_some() && !self.still_primary().await {
                tracing::warn!(node = self.cfg.node_id, "a newer primary of this task exists: stepping down");
                return Err(NodeExit::Replaced { task: req.to_task });
            }
            return Ok(());
        }
        if req.epoch > self.epoch || !self.entered {
            // Early: answer once this task enters that epoch.
            if self.held.len() >= MAX_HELD {
                let _ = respond.send(Err(Status::new(StatusKind::Internal, "too many early requests", self.epoch, self.term())));
            } else {
                self.held.push((req, respond));
            }
            return Ok(());
        }
        let key = (req.edge, req.from_task);
        match self.served.get_mut(&key) {
            Some(Served::Ready(frame)) => {
                let _ = respond.send(Ok(frame.clone()));
            }
            Some(Served::Pending(waiters)) => waiters.push(respond),
            None => {
                let me = req.to_task;
                self.served.insert(key, Served::Pending(vec![respond]));
                self.kill_at(FaultPoint::BeforeServe { task: me, epoch: req.epoch, to: req.from_task, edge: req.edge })?;
                let request = ServeRequest { from: req.from_task, edge: req.edge, epoch: req.epoch };
                self.call(|task, cx| task.serve(cx, request));
                self.apply_pending().await?;
            }
        }
        Ok(())
    }

    pub(super) async fn on_flag(&mut self, flag: transport::MetaFlag, respond: oneshot::Sender<Status>) -> Result<(), Exit> {
        let ok = flag.job == self.cfg.job.name
            && self.role.primary().map(|(t, _)| t) == Some(flag.to_task)
            && flag.from_task < self.cfg.job.tasks
            && (flag.link as usize) < self.cfg.job.topology.links().len();
        if !ok {
            let _ = respond.send(Status::new(StatusKind::BadRequest, "the flag is not for this node's task", self.epoch, self.term()));
            return Ok(());
        }
        if flag.epoch < self.epoch {
            let _ = respond.send(Status::new(StatusKind::StaleEpoch, format!("epoch {} is over", flag.epoch), self.epoch, self.term()));
            return Ok(());
        }
        let _ = respond.send(Status::ok(self.epoch, self.term()));
        if flag.epoch > self.epoch || !self.entered {
            // Early: deliver once this task enters that epoch.
            if self.held_flags.len() < MAX_HELD {
                self.held_flags.push(flag);
            }
            return Ok(());
        }
        self.deliver_flag(flag);
        Ok(())
    }

    pub(super) fn deliver_flag(&mut self, flag: transport::MetaFlag) {
        let link = self.cfg.job.topology.links()[flag.link as usize];
        self.call(|task, cx| task.meta_ready(cx, flag.from_task, link, &flag.meta));
    }
}
