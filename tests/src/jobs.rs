//! Small jobs that exercise the runtime in the integration tests.

use std::collections::BTreeMap;
use std::time::Duration;

use taskgraph::prelude::*;

/// A number tagged with who sent it and when.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Num {
    #[capnp(ordinal = 0)]
    pub task: u64,
    #[capnp(ordinal = 1)]
    pub epoch: u64,
}

/// "I got all my numbers this epoch."
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Done {
    #[capnp(ordinal = 0)]
    pub count: u32,
}

/// Each task fetches numbers from its successor.
pub const NUM: Edge<Num> = Edge::new(0, "num");
/// Task 0 fetches `Done` from every other task.
pub const DONE: Edge<Done> = Edge::new(1, "done");

/// Successor in the ring.
pub const NEXT: LinkType = LinkType::with_inverse(0, "next", 1);
/// Predecessor in the ring.
pub const PREV: LinkType = LinkType::with_inverse(1, "prev", 0);
/// Task 0's link to everyone (for the barrier), and back.
pub const ALL: LinkType = LinkType::with_inverse(2, "all", 3);
/// Everyone's link to task 0.
pub const ROOT: LinkType = LinkType::with_inverse(3, "root", 2);

/// A ring of `tasks` tasks, plus a star around task 0.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// How many tasks.
    pub tasks: u64,
}

const RING_LINKS: [LinkType; 4] = [NEXT, PREV, ALL, ROOT];

impl Topology for Ring {
    fn links(&self) -> &[LinkType] {
        &RING_LINKS
    }
    fn neighbours(&self, link: u32, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        let n = self.tasks;
        match link {
            0 => vec![(task + 1) % n],
            1 => vec![(task + n - 1) % n],
            2 if task == 0 => (1..n).collect(),
            3 if task != 0 => vec![0],
            _ => vec![],
        }
    }
}

/// Fetches `per_epoch` numbers from its successor every epoch and counts
/// the deliveries: a duplicate fails the job at once; a lost one leaves
/// the epoch unfinished (the test's time limit catches it). Task 0 moves
/// the epoch on when everyone has all of theirs.
#[derive(Debug)]
pub struct Counter {
    per_epoch: u32,
    last_epoch: Epoch,
    got: u32,
    done_waiting: Option<ServeRequest>,
    done_from: BTreeMap<TaskId, u32>,
}

impl Counter {
    /// A counter fetching `per_epoch` numbers an epoch, until `last_epoch`.
    pub fn new(per_epoch: u32, last_epoch: Epoch) -> Self {
        Counter { per_epoch, last_epoch, got: 0, done_waiting: None, done_from: BTreeMap::new() }
    }

    fn progress(&mut self, cx: &mut Context<'_>) {
        if self.got < self.per_epoch {
            return;
        }
        if cx.task() != 0 {
            if let Some(req) = self.done_waiting.take() {
                cx.reply(DONE, req, &Done { count: self.got });
            }
            return;
        }
        if self.done_from.len() as u64 == cx.tasks() - 1 {
            let e = cx.epoch();
            cx.record(format!("epoch/{e:04}"), format!("{}", self.got));
            if e >= self.last_epoch {
                cx.end_job();
            } else {
                cx.advance_epoch();
            }
            self.done_from.clear();
        }
    }
}

impl Task for Counter {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, _epoch: Epoch) {
        self.got = 0;
        self.done_waiting = None;
        self.done_from.clear();
        let next = cx.neighbours(NEXT)[0];
        for _ in 0..self.per_epoch {
            cx.fetch(NUM, next);
        }
        if cx.task() == 0 {
            for t in cx.neighbours(ALL) {
                cx.fetch(DONE, t);
            }
        }
    }

    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        if data.is(NUM) {
            let n = match data.decode(NUM) {
                Ok(n) => n,
                Err(e) => return cx.fail_job(format!("bad number: {e}")),
            };
            if n.epoch != cx.epoch() || n.task != data.from() {
                return cx.fail_job(format!("task {} got {n:?} from {} at epoch {}", cx.task(), data.from(), cx.epoch()));
            }
            self.got += 1;
            if self.got > self.per_epoch {
                return cx.fail_job(format!("task {} got {} numbers at epoch {}: a duplicate delivery", cx.task(), self.got, cx.epoch()));
            }
        } else if data.is(DONE) {
            match data.decode(DONE) {
                Ok(d) if d.count == self.per_epoch => {
                    if self.done_from.insert(data.from(), d.count).is_some() {
                        return cx.fail_job(format!("task 0 got `done` twice from task {}", data.from()));
                    }
                }
                Ok(d) => return cx.fail_job(format!("task {} counted {} numbers, not {}", data.from(), d.count, self.per_epoch)),
                Err(e) => return cx.fail_job(format!("bad done: {e}")),
            }
        }
        self.progress(cx);
    }

    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        if request.is(NUM) {
            cx.reply(NUM, request, &Num { task: cx.task(), epoch: cx.epoch() });
        } else if request.is(DONE) {
            self.done_waiting = Some(request);
            self.progress(cx);
        }
    }
}

/// The counter job: `tasks` tasks, `per_epoch` fetches each per epoch.
pub fn counter_job(name: &str, tasks: u64, per_epoch: u32, last_epoch: Epoch) -> Job {
    Job::new(name, tasks, Ring { tasks }, move |_| Box::new(Counter::new(per_epoch, last_epoch)) as Box<dyn Task>)
        .edge(NUM)
        .edge(DONE)
        .lease_ttl(Duration::from_millis(300))
}

/// A task that serves `Num` and waits: the test ends the job. Task 0
/// moves the job to epoch 1 at once (so epoch 0 requests are stale).
#[derive(Debug, Default)]
pub struct Idle;

impl Task for Idle {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch) {
        if cx.task() == 0 && epoch == 0 {
            cx.advance_epoch();
        }
    }
    fn data_ready(&mut self, _: &mut Context<'_>, _: Received) {}
    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        cx.reply(NUM, request, &Num { task: cx.task(), epoch: cx.epoch() });
    }
}

/// The idle job.
pub fn idle_job(name: &str, tasks: u64) -> Job {
    Job::new(name, tasks, Ring { tasks }, |_| Box::new(Idle) as Box<dyn Task>).edge(NUM).lease_ttl(Duration::from_millis(300))
}

/// A big message.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Blob {
    #[capnp(ordinal = 0)]
    pub values: Vec<f32>,
}

/// Task 1 fetches one `Blob` of `len` values from task 0.
pub const BLOB: Edge<Blob> = Edge::new(0, "blob");

/// Fetches one big message, checks it, ends the job.
#[derive(Debug)]
pub struct Big {
    len: usize,
}

impl Task for Big {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, _: Epoch) {
        if cx.task() == 1 {
            cx.fetch(BLOB, 0);
        }
    }
    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        let frame = match data.frame(BLOB) {
            Ok(f) => f,
            Err(e) => return cx.fail_job(e.to_string()),
        };
        let ok = frame.view().and_then(|v| v.values()).map(|values| {
            values.len() == self.len && values.iter().enumerate().all(|(i, v)| v == i as f32)
        });
        match ok {
            Ok(true) => {
                cx.record("bytes", data.bytes().len().to_string());
                cx.end_job()
            }
            Ok(false) => cx.fail_job("the blob arrived wrong"),
            Err(e) => cx.fail_job(e.to_string()),
        }
    }
    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        let values = (0..self.len).map(|i| i as f32).collect();
        cx.reply(BLOB, request, &Blob { values });
    }
}

/// Two tasks; task 1 fetches `len` f32 values from task 0.
pub fn big_job(len: usize) -> Job {
    let limits = taskgraph::message::Limits::max_bytes(len * 4 + (1 << 20));
    Job::new("big", 2, Ring { tasks: 2 }, move |_| Box::new(Big { len }) as Box<dyn Task>).edge(BLOB).limits(limits)
}

/// Hot standby: a task whose state spans epochs. At every epoch each task
/// fetches a number from its successor (`(successor + 1) * (epoch + 1)`)
/// and adds it to its running `total`; task 0 moves the epoch on when
/// everyone is done (the ring's barrier). The state goes to the task's
/// backups as updates (`Context::replicate`), and as a snapshot to a
/// backup that joins late.
///
/// A task that enters an epoch with its state behind (a spare that took
/// over with nothing) recomputes the epochs it missed locally (the numbers
/// are a function of the epoch) and counts them in `recomputed`: a
/// takeover by a hot backup recomputes nothing. A number delivered again
/// after a takeover (the new primary redoes the current epoch) is not
/// added twice: the state says the epoch is in.
#[derive(Debug, Default)]
pub struct Accumulator {
    last_epoch: Epoch,
    /// The sum of the successor's numbers of epochs `0..next`.
    total: u64,
    next: Epoch,
    /// Epochs this task's replicas computed more than once.
    recomputed: u64,
    /// This epoch's number is in.
    have: bool,
    done_waiting: Option<ServeRequest>,
    done_from: std::collections::BTreeSet<TaskId>,
}

/// The number task `successor` gives at `epoch`.
pub fn accumulator_number(successor: TaskId, epoch: Epoch) -> u64 {
    (successor + 1) * (epoch + 1)
}

impl Accumulator {
    fn encode(&self) -> Vec<u8> {
        [self.total, self.next, self.recomputed].iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn decode(bytes: &[u8]) -> Option<[u64; 3]> {
        let mut out = [0u64; 3];
        for (i, chunk) in bytes.chunks_exact(8).take(3).enumerate() {
            out[i] = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        (bytes.len() == 24).then_some(out)
    }

    fn progress(&mut self, cx: &mut Context<'_>) {
        if !self.have {
            return;
        }
        if cx.task() != 0 {
            if let Some(req) = self.done_waiting.take() {
                cx.reply(DONE, req, &Done { count: 1 });
            }
            return;
        }
        if self.done_from.len() as u64 == cx.tasks() - 1 {
            let e = cx.epoch();
            if e >= self.last_epoch {
                cx.end_job();
            } else {
                cx.advance_epoch();
            }
        }
    }
}

impl Task for Accumulator {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch) {
        let successor = cx.neighbours(NEXT)[0];
        // Behind: a node that took the task over with no state.
        while self.next < epoch {
            self.total += accumulator_number(successor, self.next);
            self.next += 1;
            self.recomputed += 1;
            cx.replicate(self.encode());
        }
        self.have = self.next > epoch;
        self.done_waiting = None;
        self.done_from.clear();
        if !self.have {
            cx.fetch(NUM, successor);
        }
        if cx.task() == 0 {
            for t in cx.neighbours(ALL) {
                cx.fetch(DONE, t);
            }
        }
        self.progress(cx);
    }

    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        if data.is(NUM) {
            let n = match data.decode(NUM) {
                Ok(n) => n,
                Err(e) => return cx.fail_job(format!("bad number: {e}")),
            };
            if self.have {
                return cx.fail_job(format!("task {} got a second number at epoch {}", cx.task(), cx.epoch()));
            }
            self.total += accumulator_number(n.task, n.epoch);
            self.next = n.epoch + 1;
            self.have = true;
            cx.replicate(self.encode());
        } else if data.is(DONE) && !self.done_from.insert(data.from()) {
            return cx.fail_job(format!("task 0 got `done` twice from task {}", data.from()));
        }
        self.progress(cx);
    }

    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        if request.is(NUM) {
            cx.reply(NUM, request, &Num { task: cx.task(), epoch: cx.epoch() });
        } else if request.is(DONE) {
            self.done_waiting = Some(request);
            self.progress(cx);
        }
    }

    fn became_primary(&mut self, cx: &mut Context<'_>, term: u64) {
        if self.next > 0 {
            cx.record(format!("takeover/{}/{term}", cx.task()), format!("with state at epoch {}", self.next));
        }
    }

    fn apply_update(&mut self, cx: &mut Context<'_>, update: &[u8]) {
        match Self::decode(update) {
            Some([total, next, recomputed]) => {
                (self.total, self.next, self.recomputed) = (total, next, recomputed);
            }
            None => panic!("task {}: an unreadable update ({} bytes)", cx.task(), update.len()),
        }
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.encode())
    }

    fn restore(&mut self, cx: &mut Context<'_>, snapshot: &[u8]) {
        self.apply_update(cx, snapshot);
    }

    fn exit(&mut self, cx: &mut Context<'_>) {
        let t = cx.task();
        cx.record(format!("total/{t}"), self.total.to_string());
        cx.record(format!("recomputed/{t}"), self.recomputed.to_string());
    }
}

/// The accumulator job: `tasks` tasks on the ring, epochs
/// `0..=last_epoch`, each task held by `replicas` nodes.
pub fn accumulator_job(name: &str, tasks: u64, last_epoch: Epoch, replicas: u32) -> Job {
    Job::new(name, tasks, Ring { tasks }, move |_| Box::new(Accumulator { last_epoch, ..Default::default() }) as Box<dyn Task>)
        .edge(NUM)
        .edge(DONE)
        .replicas(replicas)
        .lease_ttl(Duration::from_millis(300))
}

/// What every task's total is after `last_epoch`.
pub fn accumulator_totals(tasks: u64, last_epoch: Epoch) -> Vec<u64> {
    (0..tasks).map(|t| (0..=last_epoch).map(|e| accumulator_number((t + 1) % tasks, e)).sum()).collect()
}
