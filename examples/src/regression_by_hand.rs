//! W1, the tree regression of `docs/workloads.md`, written by hand against the
//! task API: [`Task`] with `Context::fetch`/`reply`, `Edge` and `LinkType`
//! consts, and a hand-written [`Topology`], with no macros but the
//! messages' derive. [`crate::regression`] is the same job written with
//! the graph DSL, as programs are meant to be written; this one is for
//! those who need the runtime's own API (a graph built at run time, a
//! topology from a file, ...), and the two give the same values.
//!
//! 15 tasks in a binary tree (parent of `i` is `(i - 1) / 2`); task 0 is
//! the root. At epoch `e` the root's parameter is a vector of `size`
//! values all equal to `e`. Every worker fetches the parameter from its
//! parent and the gradients of its children, and serves its own gradient:
//! `parameter * id + sum of its children's gradients`. The root sums its
//! children's gradients, records the value, and advances the epoch; after
//! `last_epoch` it ends the job. Root values: `105 * e`.

use std::collections::BTreeMap;

use taskgraph::prelude::*;

pub use crate::regression::{record_name, Grad, Param};

/// Workers fetch the parameter from their parent.
pub const PARAM: Edge<Param> = Edge::new(0, "param");
/// Every task fetches its children's gradients.
pub const GRAD: Edge<Grad> = Edge::new(1, "grad");

/// The parent link (`(i - 1) / 2`).
pub const PARENT: LinkType = LinkType::with_inverse(0, "parent", 1);
/// The children link (`2i + 1`, `2i + 2`).
pub const CHILDREN: LinkType = LinkType::with_inverse(1, "children", 0);

const LINKS: [LinkType; 2] = [PARENT, CHILDREN];

/// A binary tree of `tasks` tasks, the same at every epoch.
#[derive(Clone, Copy, Debug)]
pub struct Tree {
    /// How many tasks.
    pub tasks: u64,
}

impl Topology for Tree {
    fn links(&self) -> &[LinkType] {
        &LINKS
    }
    fn neighbours(&self, link: u32, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        if link == PARENT.id {
            if task == 0 {
                vec![]
            } else {
                vec![(task - 1) / 2]
            }
        } else {
            [2 * task + 1, 2 * task + 2].into_iter().filter(|&c| c < self.tasks).collect()
        }
    }
}

/// One task of the regression (root or worker, by its id).
#[derive(Debug)]
pub struct Regression {
    size: usize,
    last_epoch: Epoch,
    param: Option<Vec<f32>>,
    /// The parameter as served to our children: encoded once (the root)
    /// or forwarded as it arrived (a worker).
    param_frame: Option<Encoded<Param>>,
    grads: BTreeMap<TaskId, Vec<f32>>,
    children: Vec<TaskId>,
    /// Fetches of our parameter that came before we had it.
    param_waiting: Vec<ServeRequest>,
    /// Our parent's fetch of our gradient, if it came before it was ready.
    grad_waiting: Option<ServeRequest>,
    grad: Option<Grad>,
    finished: bool,
}

impl Regression {
    /// Task of a job with vectors of `size` values that ends after
    /// `last_epoch`.
    pub fn new(size: usize, last_epoch: Epoch) -> Self {
        Regression {
            size,
            last_epoch,
            param: None,
            param_frame: None,
            grads: BTreeMap::new(),
            children: Vec::new(),
            param_waiting: Vec::new(),
            grad_waiting: None,
            grad: None,
            finished: false,
        }
    }

    fn serve_param(&mut self, cx: &mut Context<'_>) {
        if let Some(frame) = &self.param_frame {
            for req in self.param_waiting.drain(..) {
                cx.reply_encoded(PARAM, req, frame);
            }
        }
    }

    /// Once the parameter and every child's gradient are here: serve our
    /// gradient (a worker) or finish the epoch (the root).
    fn try_finish(&mut self, cx: &mut Context<'_>) {
        let Some(param) = &self.param else { return };
        if self.finished || self.grads.len() < self.children.len() {
            return;
        }
        self.finished = true;
        let mut sum = vec![0f32; self.size];
        for g in self.grads.values() {
            for (s, v) in sum.iter_mut().zip(g) {
                *s += v;
            }
        }
        if cx.task() == 0 {
            let e = cx.epoch();
            let first = sum.first().copied().unwrap_or(0.0);
            if let Some(bad) = sum.iter().position(|v| *v != first) {
                cx.fail_job(format!("epoch {e}: element {bad} of the root value is {}, not {first}", sum[bad]));
                return;
            }
            cx.record(record_name(e), first.to_string());
            if e >= self.last_epoch {
                cx.end_job();
            } else {
                cx.advance_epoch();
            }
        } else {
            let id = cx.task() as f32;
            let values = param.iter().zip(&sum).map(|(p, s)| p * id + s).collect();
            let grad = Grad { values };
            if let Some(req) = self.grad_waiting.take() {
                cx.reply(GRAD, req, &grad);
            }
            self.grad = Some(grad);
        }
    }
}

impl Task for Regression {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch) {
        self.param = None;
        self.param_frame = None;
        self.grads.clear();
        self.grad = None;
        self.grad_waiting = None;
        self.param_waiting.clear();
        self.finished = false;
        self.children = cx.neighbours(CHILDREN);
        if cx.task() == 0 {
            let param = Param { values: vec![epoch as f32; self.size] };
            self.param_frame = Some(Encoded::new(&param));
            self.param = Some(param.values);
        } else {
            for parent in cx.neighbours(PARENT) {
                cx.fetch(PARAM, parent);
            }
        }
        for c in self.children.clone() {
            cx.fetch(GRAD, c);
        }
        self.try_finish(cx);
    }

    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        if data.is(PARAM) {
            match (data.decode(PARAM), data.encoded(PARAM)) {
                (Ok(p), Ok(frame)) => {
                    self.param = Some(p.values);
                    self.param_frame = Some(frame);
                }
                (Err(e), _) | (_, Err(e)) => return cx.fail_job(format!("task {}: bad parameter: {e}", cx.task())),
            }
            self.serve_param(cx);
        } else if data.is(GRAD) {
            match data.decode(GRAD) {
                Ok(g) => {
                    self.grads.insert(data.from(), g.values);
                }
                Err(e) => return cx.fail_job(format!("task {}: bad gradient: {e}", cx.task())),
            }
        }
        self.try_finish(cx);
    }

    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        if request.is(PARAM) {
            self.param_waiting.push(request);
            self.serve_param(cx);
        } else if request.is(GRAD) {
            match &self.grad {
                Some(g) => cx.reply(GRAD, request, g),
                None => self.grad_waiting = Some(request),
            }
        }
    }
}

/// The regression job, by hand: `tasks` tasks, vectors of `size`, epochs
/// `0..=last_epoch`.
pub fn job(tasks: u64, size: usize, last_epoch: Epoch) -> Job {
    let bytes = size * 4 + 1024;
    let mut limits = taskgraph::message::Limits::default();
    limits.max_bytes = limits.max_bytes.max(bytes * 2);
    Job::new("regression", tasks, Tree { tasks }, move |_| Box::new(Regression::new(size, last_epoch)) as Box<dyn Task>)
        .edge(PARAM)
        .edge(GRAD)
        .limits(limits)
        .lease_ttl(std::time::Duration::from_millis(300))
}
