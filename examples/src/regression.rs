//! W1, the tree regression of `docs/workloads.md`, written with the graph DSL.
//!
//! 15 tasks in a binary tree (parent of `i` is `(i - 1) / 2`); task 0 is
//! the root. At epoch `e` the root's parameter is a vector of `size`
//! values all equal to `e`. Every worker fetches the parameter from its
//! parent and the gradients of its children, and serves its own gradient:
//! `parameter * id + sum of its children's gradients`. The root sums its
//! children's gradients, records the value, and advances the epoch; after
//! `last_epoch` it ends the job. Root values: `105 * e`.
//!
//! The program is four declarations: the messages (`#[derive(Message)]`),
//! the topology (`#[topology]`), the graph (`taskgraph!`: roles, typed
//! edges) and a struct per role (`#[task]`) implementing the handlers the
//! graph asks of it. [`crate::regression_by_hand`] is the same job against
//! the runtime's own API.

use std::time::Duration;

use taskgraph::prelude::*;

/// The parameter, broadcast down the tree.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Param {
    #[capnp(ordinal = 0)]
    pub values: Vec<f32>,
}

/// A gradient, reduced up the tree.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Grad {
    #[capnp(ordinal = 0)]
    pub values: Vec<f32>,
}

/// A task's progress: how many times it computed each epoch's result
/// (`epochs[e]`). It is the tasks' replicated state: every change goes to
/// the task's hot backups (a job with `replicas > 1`), so a backup that
/// takes over knows what its primary did, and a count above 1 is an epoch
/// computed again. It grows by one count an epoch, so the primary sends
/// its backups only the change ([`ProgressUpdate::Computed`]); the whole
/// of it goes only to a backup that joins late (the snapshot).
#[derive(Message, Debug, Clone, PartialEq, Default)]
pub struct Progress {
    #[capnp(ordinal = 0)]
    pub epochs: Vec<u32>,
}

/// What the tasks replicate (`replicated(ProgressUpdate)`): one change to
/// their [`Progress`], or all of it. The DSL uses one message for both
/// the updates and the snapshot a late backup starts from, so that message
/// can say either.
#[derive(Message, Debug, Clone, PartialEq)]
pub enum ProgressUpdate {
    /// The whole progress: the task's snapshot.
    #[capnp(ordinal = 0)]
    Whole(Progress),
    /// `epoch`'s result has now been computed `count` times (a count, not
    /// an increment: applying it twice changes nothing).
    Computed {
        #[capnp(ordinal = 1)]
        epoch: u64,
        #[capnp(ordinal = 2)]
        count: u32,
    },
}

impl Progress {
    /// Counts a computation of `epoch`'s result: the change, to replicate.
    fn computed(&mut self, epoch: Epoch) -> ProgressUpdate {
        let count = self.count(epoch) + 1;
        self.set(epoch, count);
        ProgressUpdate::Computed { epoch, count }
    }

    /// How many times `epoch`'s result was computed.
    fn count(&self, epoch: Epoch) -> u32 {
        usize::try_from(epoch).ok().and_then(|e| self.epochs.get(e)).copied().unwrap_or(0)
    }

    fn set(&mut self, epoch: Epoch, count: u32) {
        let e = epoch as usize;
        if self.epochs.len() <= e {
            self.epochs.resize(e + 1, 0);
        }
        self.epochs[e] = count;
    }

    /// Applies an update of the primary's (on a backup).
    pub fn apply(&mut self, update: ProgressUpdate) {
        match update {
            ProgressUpdate::Whole(whole) => *self = whole,
            ProgressUpdate::Computed { epoch, count } => self.set(epoch, count),
        }
    }

    /// The whole progress as an update: the snapshot.
    pub fn whole(&self) -> ProgressUpdate {
        ProgressUpdate::Whole(self.clone())
    }

    /// As recorded at the end: the counts, comma-separated.
    pub fn text(&self) -> String {
        self.epochs.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}

/// A binary tree of `tasks` tasks, the same at every epoch.
#[topology(parent <-> children)]
#[derive(Clone, Copy, Debug)]
pub struct Tree {
    /// How many tasks.
    pub tasks: u64,
}

impl TreeLinks for Tree {
    fn parent(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        if task == 0 {
            vec![]
        } else {
            vec![(task - 1) / 2]
        }
    }
    fn children(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        [2 * task + 1, 2 * task + 2].into_iter().filter(|&c| c < self.tasks).collect()
    }
}

taskgraph! {
    /// W1: the parameter goes down the tree, the gradients come up.
    pub graph Regression(topology = Tree) {
        messages Param, Grad, Progress, ProgressUpdate;
        role Root = 0 replicated(ProgressUpdate);
        role Worker = 1.. replicated(ProgressUpdate);
        Worker fetches Param over parent from Root | Worker;
        Root | Worker fetch Grad over children from Worker;
    }
}

/// The name under which the root records epoch `e`'s value.
pub fn record_name(e: Epoch) -> String {
    format!("root/{e:06}")
}

/// Adds `values` into `sum`.
fn add(sum: &mut [f32], values: &[f32]) {
    for (s, v) in sum.iter_mut().zip(values) {
        *s += v;
    }
}

/// Task 0: makes the parameter, sums its children's gradients, records
/// the value and moves the job on.
#[task(Regression::Root)]
#[derive(Debug)]
pub struct Root {
    size: usize,
    last_epoch: Epoch,
    /// This epoch's parameter, encoded once for both children.
    param: Option<Encoded<Param>>,
    sum: Vec<f32>,
    /// Gradients still to come.
    pending: usize,
    progress: Progress,
}

impl Root {
    /// The root of a job with vectors of `size` that ends after `last_epoch`.
    pub fn new(size: usize, last_epoch: Epoch) -> Self {
        Root { size, last_epoch, param: None, sum: Vec::new(), pending: 0, progress: Progress::default() }
    }

    fn finish(&mut self, cx: &mut RootCx<'_>) {
        let e = cx.epoch();
        let first = self.sum.first().copied().unwrap_or(0.0);
        if let Some(bad) = self.sum.iter().position(|v| *v != first) {
            return cx.fail_job(format!("epoch {e}: element {bad} of the root value is {}, not {first}", self.sum[bad]));
        }
        let update = self.progress.computed(e);
        cx.replicate(&update);
        cx.record(record_name(e), first.to_string());
        if e >= self.last_epoch {
            cx.end_job();
        } else {
            cx.advance_epoch();
        }
    }
}

impl RootHandlers for Root {
    fn enter_epoch(&mut self, cx: &mut RootCx<'_>, epoch: Epoch) {
        self.param = Some(Encoded::new(&Param { values: vec![epoch as f32; self.size] }));
        self.sum = vec![0.0; self.size];
        self.pending = cx.fetch_grad();
        if self.pending == 0 {
            self.finish(cx);
        }
    }

    fn on_grad(&mut self, cx: &mut RootCx<'_>, _from: TaskId, grad: Fetched<Grad>) {
        add(&mut self.sum, &grad.values);
        self.pending -= 1;
        if self.pending == 0 {
            self.finish(cx);
        }
    }

    fn serve_param(&mut self, _cx: &mut RootCx<'_>, _to: TaskId) -> Serve<Param> {
        match &self.param {
            Some(p) => Serve::encoded(p),
            None => Serve::later(),
        }
    }

    fn became_primary(&mut self, cx: &mut RootCx<'_>, term: u64) {
        took_over(&self.progress, term, cx);
    }
    fn apply_update(&mut self, _cx: &mut RootCx<'_>, update: ProgressUpdate) {
        self.progress.apply(update);
    }
    fn snapshot(&self) -> Option<ProgressUpdate> {
        Some(self.progress.whole())
    }
    fn exit(&mut self, cx: &mut RootCx<'_>) {
        let name = format!("computed/{}", cx.task());
        cx.record(name, self.progress.text());
    }
}

/// Records a takeover by a node that had the task's progress (a hot
/// backup; a spare starts with none).
fn took_over(progress: &Progress, term: u64, cx: &mut TaskCx<'_>) {
    if !progress.epochs.is_empty() {
        let name = format!("takeover/{}/{term}", cx.task());
        cx.record(name, format!("with progress {}", progress.text()));
    }
}

/// Every other task: passes the parameter down, and its gradient up.
#[task(Regression::Worker)]
#[derive(Debug)]
pub struct Worker {
    size: usize,
    /// The parameter as it came, forwarded to the children unchanged.
    param: Option<Fetched<Param>>,
    /// Children that asked for the parameter before it came.
    param_waiting: Vec<TaskId>,
    sum: Vec<f32>,
    pending: usize,
    grad: Option<Encoded<Grad>>,
    /// The parent, if it asked for the gradient before it was ready.
    grad_waiting: Option<TaskId>,
    progress: Progress,
}

impl Worker {
    /// A worker of a job with vectors of `size`.
    pub fn new(size: usize) -> Self {
        Worker {
            size,
            param: None,
            param_waiting: Vec::new(),
            sum: Vec::new(),
            pending: 0,
            grad: None,
            grad_waiting: None,
            progress: Progress::default(),
        }
    }

    /// Once the parameter and every child's gradient are here: our
    /// gradient, to the parent.
    fn try_finish(&mut self, cx: &mut WorkerCx<'_>) {
        let Some(param) = &self.param else { return };
        if self.pending > 0 || self.grad.is_some() {
            return;
        }
        let id = cx.task() as f32;
        let values = param.values.iter().zip(&self.sum).map(|(p, s)| p * id + s).collect();
        let grad = Encoded::new(&Grad { values });
        let update = self.progress.computed(cx.epoch());
        cx.replicate(&update);
        if let Some(parent) = self.grad_waiting.take() {
            cx.reply_grad_encoded(parent, &grad);
        }
        self.grad = Some(grad);
    }
}

impl WorkerHandlers for Worker {
    fn enter_epoch(&mut self, cx: &mut WorkerCx<'_>, _epoch: Epoch) {
        self.param = None;
        self.param_waiting.clear();
        self.sum = vec![0.0; self.size];
        self.grad = None;
        self.grad_waiting = None;
        cx.fetch_param();
        self.pending = cx.fetch_grad();
    }

    fn on_param(&mut self, cx: &mut WorkerCx<'_>, _from: TaskId, param: Fetched<Param>) {
        let frame = param.encoded();
        for child in self.param_waiting.drain(..) {
            cx.reply_param_encoded(child, &frame);
        }
        self.param = Some(param);
        self.try_finish(cx);
    }

    fn on_grad(&mut self, cx: &mut WorkerCx<'_>, _from: TaskId, grad: Fetched<Grad>) {
        add(&mut self.sum, &grad.values);
        self.pending -= 1;
        self.try_finish(cx);
    }

    fn serve_param(&mut self, _cx: &mut WorkerCx<'_>, to: TaskId) -> Serve<Param> {
        match &self.param {
            Some(p) => Serve::encoded(&p.encoded()),
            None => {
                self.param_waiting.push(to);
                Serve::later()
            }
        }
    }

    fn serve_grad(&mut self, _cx: &mut WorkerCx<'_>, to: TaskId) -> Serve<Grad> {
        match &self.grad {
            Some(g) => Serve::encoded(g),
            None => {
                self.grad_waiting = Some(to);
                Serve::later()
            }
        }
    }

    fn became_primary(&mut self, cx: &mut WorkerCx<'_>, term: u64) {
        took_over(&self.progress, term, cx);
    }
    fn apply_update(&mut self, _cx: &mut WorkerCx<'_>, update: ProgressUpdate) {
        self.progress.apply(update);
    }
    fn snapshot(&self) -> Option<ProgressUpdate> {
        Some(self.progress.whole())
    }
    fn exit(&mut self, cx: &mut WorkerCx<'_>) {
        let name = format!("computed/{}", cx.task());
        cx.record(name, self.progress.text());
    }
}

/// The regression job: `tasks` tasks, vectors of `size`, epochs
/// `0..=last_epoch` (each task on one node; `.replicas(n)` for hot
/// backups).
pub fn job(tasks: u64, size: usize, last_epoch: Epoch) -> Job {
    let bytes = size * 4 + 1024;
    let mut limits = taskgraph::message::Limits::default();
    limits.max_bytes = limits.max_bytes.max(bytes * 2);
    Regression::job(
        Tree { tasks },
        tasks,
        RegressionTasks { root: move |_| Root::new(size, last_epoch), worker: move |_| Worker::new(size) },
    )
    .limits(limits)
    // Short, for quick failovers in the tests, and sized for the job: a
    // thousand nodes sharing two cores answer more slowly as they start.
    .lease_ttl(Duration::from_millis(300).max(Duration::from_millis(tasks)))
}

/// The failure scenarios of `docs/workloads.md` that run in one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// F1: the root dies as it enters epoch 1.
    F1,
    /// F2: workers die on receiving their parent's parameter, 3%.
    F2,
    /// F3: workers die right before and right after serving their
    /// gradient, 3% each.
    F3,
}

/// The fault plan of a scenario.
pub fn faults(scenarios: &[Scenario], tasks: u64, seed: u64) -> Faults {
    let mut f = Faults::new(seed);
    for s in scenarios {
        f = match s {
            Scenario::F1 => f.at(FaultPoint::EnterEpoch { task: 0, epoch: 1 }),
            Scenario::F2 => f.random(FaultKind::DataReceived, 0.03, 1..tasks, Some(Regression::PARAM.id)),
            Scenario::F3 => f
                .random(FaultKind::BeforeServe, 0.03, 1..tasks, Some(Regression::GRAD.id))
                .random(FaultKind::AfterServe, 0.03, 1..tasks, Some(Regression::GRAD.id)),
        };
    }
    f
}

/// What each task recorded of its progress at the end: how many times it
/// computed each epoch's result, by task.
pub fn computed(result: &JobResult) -> Vec<(TaskId, Vec<u32>)> {
    result
        .records
        .iter()
        .filter_map(|(k, v)| {
            let t = k.strip_prefix("computed/")?.parse().ok()?;
            let counts = String::from_utf8_lossy(v).split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0)).collect();
            Some((t, counts))
        })
        .collect()
}

/// The takeovers by hot backups a finished job recorded: (task, term).
pub fn takeovers(result: &JobResult) -> Vec<(TaskId, u64)> {
    result
        .records
        .keys()
        .filter_map(|k| {
            let (t, term) = k.strip_prefix("takeover/")?.split_once('/')?;
            Some((t.parse().ok()?, term.parse().ok()?))
        })
        .collect()
}

/// The root values a finished job recorded, by epoch.
pub fn root_values(result: &JobResult) -> Vec<(Epoch, String)> {
    result
        .records
        .iter()
        .filter_map(|(k, v)| {
            let e = k.strip_prefix("root/")?.parse().ok()?;
            Some((e, String::from_utf8_lossy(v).into_owned()))
        })
        .collect()
}

/// Runs this process as one node of a regression job coordinated by etcd:
/// what `regression --etcd <endpoints> --job <name> --node-id <id>
/// [--task <t>]` does, and what `taskgraph launch` starts.
#[cfg(feature = "etcd")]
pub fn run_node_process(
    node: &taskgraph::launch::NodeArgs,
    tasks: u64,
    size: usize,
    last_epoch: Epoch,
    replicas: u32,
) -> taskgraph::Result<taskgraph::NodeExit> {
    let endpoints: Vec<String> = node.etcd.split(',').map(str::to_owned).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| taskgraph::Error::Io(e.to_string()))?;
    let etcd = rt.block_on(taskgraph::coord::Etcd::connect(&endpoints, Default::default()))?;
    let job = job(tasks, size, last_epoch).replicas(replicas).named(node.job.clone());
    taskgraph::run_node(job, std::sync::Arc::new(etcd), taskgraph::NodeOptions::new(node.node_id, node.task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup that applies the primary's updates has the primary's
    /// progress; one that starts from a snapshot too; and an update stays
    /// small however long the job has run, while the snapshot is all of it.
    #[test]
    fn updates_carry_only_the_change_and_rebuild_the_progress() {
        let mut primary = Progress::default();
        let mut backup = Progress::default();
        let mut late = None;
        for e in 0..30_000 {
            let update = primary.computed(e);
            // As the runtime carries it: encoded, decoded on the backup.
            let frame = update.encode();
            assert!(frame.len() <= 48, "epoch {e}: an update of {} bytes", frame.len());
            backup.apply(ProgressUpdate::decode(&frame).unwrap());
            if e == 20_000 {
                let mut joined = Progress::default();
                joined.apply(ProgressUpdate::decode(&primary.whole().encode()).unwrap());
                late = Some(joined);
            } else if let Some(joined) = &mut late {
                joined.apply(update);
            }
        }
        assert!(late.as_ref() == Some(&primary), "the backup that joined late differs");
        // An epoch computed again (after a takeover) counts twice; an
        // update applied twice, once.
        let again = primary.computed(7);
        backup.apply(again.clone());
        backup.apply(again);
        assert!(backup == primary, "the backup differs");
        assert_eq!(primary.epochs.len(), 30_000);
        assert!(primary.whole().encode().len() > 4 * 30_000);
        assert_eq!(primary.count(7), 2);
        assert_eq!(primary.count(8), 1);
        assert_eq!(primary.count(30_000), 0);
    }
}
