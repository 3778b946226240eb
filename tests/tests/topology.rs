//! `#[topology]` through the public API: generated topologies are
//! `Topology` values with the declared links, evaluate per epoch, and run
//! real jobs, including one whose links change every epoch.

use std::time::Duration;

use taskgraph::graph::check_links;
use taskgraph::prelude::*;
use taskgraph_examples::regression;
use taskgraph_examples::regression_by_hand::{self as by_hand, Regression};

/// W1's binary tree, declared with the attribute.
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

/// A ring with a symmetric `peers` link and a `log` link with no inverse.
#[topology(next <-> prev, peers <-> peers, log)]
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// How many tasks.
    pub tasks: u64,
}

impl RingLinks for Ring {
    fn next(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        vec![(task + 1) % self.tasks]
    }
    fn prev(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        vec![(task + self.tasks - 1) % self.tasks]
    }
    fn peers(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        vec![(task + 1) % self.tasks, (task + self.tasks - 1) % self.tasks]
    }
    /// Task 0 logs to task 1 at odd epochs.
    fn log(&self, task: TaskId, epoch: Epoch) -> Vec<TaskId> {
        if task == 0 && epoch % 2 == 1 {
            vec![1]
        } else {
            vec![]
        }
    }
}

fn summary(t: &dyn Topology) -> Vec<(u32, &'static str, Option<u32>)> {
    t.links().iter().map(|l| (l.id, l.name, l.inverse)).collect()
}

#[test]
fn a_tree_is_a_topology_with_its_declared_links() {
    let tree = Tree { tasks: 7 };
    assert_eq!(summary(&tree), vec![(0, "parent", Some(1)), (1, "children", Some(0))]);
    assert_eq!(Tree::LINKS, [Tree::PARENT, Tree::CHILDREN]);
    // The same links as the hand-written W1 tree: its tasks use those.
    assert_eq!(Tree::PARENT, by_hand::PARENT);
    assert_eq!(Tree::CHILDREN, by_hand::CHILDREN);
    let hand = by_hand::Tree { tasks: 7 };
    for e in 0..3 {
        for t in 0..7 {
            for l in Tree::LINKS {
                assert_eq!(tree.neighbours(l.id, t, e), hand.neighbours(l.id, t, e), "{l} of {t} at {e}");
            }
            check_links(&tree, 7, t, e).unwrap();
        }
    }
    assert_eq!(tree.neighbours(Tree::CHILDREN.id, 2, 0), vec![5, 6]);
    assert_eq!(tree.neighbours(Tree::PARENT.id, 0, 0), Vec::<TaskId>::new());
    assert_eq!(tree.neighbours(2, 1, 0), Vec::<TaskId>::new(), "an unknown link has no neighbours");
}

#[test]
fn a_ring_has_pairs_symmetric_and_one_way_links() {
    let ring = Ring { tasks: 5 };
    assert_eq!(
        summary(&ring),
        vec![(0, "next", Some(1)), (1, "prev", Some(0)), (2, "peers", Some(2)), (3, "log", None)]
    );
    assert_eq!(Ring::PEERS, LinkType::with_inverse(2, "peers", 2));
    assert_eq!(Ring::LOG, LinkType::new(3, "log"));
    assert_eq!(ring.neighbours(Ring::NEXT.id, 4, 0), vec![0]);
    assert_eq!(ring.neighbours(Ring::PREV.id, 0, 0), vec![4]);
    assert_eq!(ring.neighbours(Ring::PEERS.id, 0, 0), vec![1, 4]);
    // Per epoch.
    assert_eq!(ring.neighbours(Ring::LOG.id, 0, 0), Vec::<TaskId>::new());
    assert_eq!(ring.neighbours(Ring::LOG.id, 0, 1), vec![1]);
    for e in 0..2 {
        for t in 0..5 {
            check_links(&ring, 5, t, e).unwrap();
        }
    }
}

#[test]
fn w1_runs_on_a_generated_tree() {
    let job = Job::new("w1-topology", 15, Tree { tasks: 15 }, |_| Box::new(Regression::new(1, 10)) as Box<dyn Task>)
        .edge(by_hand::PARAM)
        .edge(by_hand::GRAD)
        .lease_ttl(Duration::from_millis(300));
    let result = LocalCluster::new(job).spares(2).timeout(Duration::from_secs(120)).run().expect("the job runs");
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    let want: Vec<(Epoch, String)> = (0..=10).map(|e| (e, (105 * e).to_string())).collect();
    assert_eq!(regression::root_values(&result), want);
}

/// Recursive doubling over `tasks` (a power of two) tasks: at epoch `e`,
/// task `i`'s partner is `i ^ 2^(e mod log2 tasks)`; and a star around
/// task 0 for the barrier that ends each epoch.
#[topology(partner <-> partner, all <-> root)]
#[derive(Clone, Copy, Debug)]
pub struct Doubling {
    /// How many tasks (a power of two).
    pub tasks: u64,
}

impl DoublingLinks for Doubling {
    fn partner(&self, task: TaskId, epoch: Epoch) -> Vec<TaskId> {
        let rounds = self.tasks.trailing_zeros() as u64;
        vec![task ^ (1 << (epoch % rounds))]
    }
    fn all(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        if task == 0 {
            (1..self.tasks).collect()
        } else {
            vec![]
        }
    }
    fn root(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        if task == 0 {
            vec![]
        } else {
            vec![0]
        }
    }
}

/// A task's running sum.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Sum {
    #[capnp(ordinal = 0)]
    pub value: u64,
}

/// Partners fetch each other's sum as it was when the epoch began.
const SUM: Edge<Sum> = Edge::new(0, "sum");
/// Task 0 fetches every task's sum once it has its partner's: the barrier.
const DONE: Edge<Sum> = Edge::new(1, "done");

/// All-reduce by recursive doubling: each epoch, add the partner's sum.
/// After `log2 tasks` epochs every task holds the total.
#[derive(Debug)]
struct AllReduce {
    last_epoch: Epoch,
    value: u64,
    /// The sum at the start of the epoch: what the partner gets.
    start: u64,
    added: bool,
    done_waiting: Option<ServeRequest>,
    /// Task 0: the other tasks' sums this epoch.
    sums: Vec<(TaskId, u64)>,
}

impl AllReduce {
    fn new(task: TaskId, last_epoch: Epoch) -> Self {
        AllReduce { last_epoch, value: task + 1, start: 0, added: false, done_waiting: None, sums: Vec::new() }
    }

    fn progress(&mut self, cx: &mut Context<'_>) {
        if !self.added {
            return;
        }
        if cx.task() != 0 {
            if let Some(req) = self.done_waiting.take() {
                cx.reply(DONE, req, &Sum { value: self.value });
            }
            return;
        }
        if self.sums.len() as u64 == cx.tasks() - 1 {
            let e = cx.epoch();
            let mut all = vec![(0, self.value)];
            all.append(&mut self.sums);
            all.sort();
            let text: Vec<String> = all.iter().map(|(_, v)| v.to_string()).collect();
            cx.record(format!("epoch/{e:02}"), text.join(" "));
            if e >= self.last_epoch {
                cx.end_job();
            } else {
                cx.advance_epoch();
            }
        }
    }
}

impl Task for AllReduce {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, _epoch: Epoch) {
        self.start = self.value;
        self.added = false;
        self.done_waiting = None;
        self.sums.clear();
        for p in cx.neighbours(Doubling::PARTNER) {
            cx.fetch(SUM, p);
        }
        for t in cx.neighbours(Doubling::ALL) {
            cx.fetch(DONE, t);
        }
    }

    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        if data.is(SUM) {
            match data.decode(SUM) {
                Ok(s) => self.value += s.value,
                Err(e) => return cx.fail_job(format!("bad sum: {e}")),
            }
            self.added = true;
        } else if data.is(DONE) {
            match data.decode(DONE) {
                Ok(s) => self.sums.push((data.from(), s.value)),
                Err(e) => return cx.fail_job(format!("bad done: {e}")),
            }
        }
        self.progress(cx);
    }

    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        if request.is(SUM) {
            cx.reply(SUM, request, &Sum { value: self.start });
        } else if request.is(DONE) {
            self.done_waiting = Some(request);
            self.progress(cx);
        }
    }
}

/// What recursive doubling leaves each task with after each epoch.
fn simulate(tasks: u64, last_epoch: Epoch) -> Vec<(String, Vec<u8>)> {
    let topology = Doubling { tasks };
    let mut values: Vec<u64> = (1..=tasks).collect();
    let mut out = Vec::new();
    for e in 0..=last_epoch {
        values = (0..tasks).map(|t| values[t as usize] + values[topology.partner(t, e)[0] as usize]).collect();
        let text: Vec<String> = values.iter().map(u64::to_string).collect();
        out.push((format!("epoch/{e:02}"), text.join(" ").into_bytes()));
    }
    out
}

#[test]
fn a_topology_that_changes_every_epoch_passes_the_consistency_check() {
    let (tasks, last_epoch) = (8, 5);
    let topology = Doubling { tasks };
    assert_eq!(topology.neighbours(Doubling::PARTNER.id, 5, 0), vec![4]);
    assert_eq!(topology.neighbours(Doubling::PARTNER.id, 5, 1), vec![7]);
    assert_eq!(topology.neighbours(Doubling::PARTNER.id, 5, 2), vec![1]);
    assert_eq!(topology.neighbours(Doubling::PARTNER.id, 5, 3), vec![4]);

    let job = Job::new("doubling", tasks, topology, move |t| Box::new(AllReduce::new(t, last_epoch)) as Box<dyn Task>)
        .edge(SUM)
        .edge(DONE);
    let result = LocalCluster::new(job).timeout(Duration::from_secs(60)).run().expect("the job runs");
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    let records: Vec<(String, Vec<u8>)> = result.records.into_iter().collect();
    let want = simulate(tasks, last_epoch);
    // After log2(8) = 3 epochs every task holds the total, 36.
    assert_eq!(want[2].1, b"36 36 36 36 36 36 36 36");
    assert_eq!(records, want);
}

/// Partner `i + 1`: not its own inverse, which the runtime catches.
#[topology(partner <-> partner)]
#[derive(Debug)]
pub struct Lopsided;

impl LopsidedLinks for Lopsided {
    fn partner(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        vec![(task + 1) % 4]
    }
}

#[test]
fn a_symmetric_link_that_is_not_fails_the_job_naming_the_pair() {
    let job = Job::new("lopsided", 4, Lopsided, move |t| Box::new(AllReduce::new(t, 3)) as Box<dyn Task>)
        .edge(SUM)
        .edge(DONE);
    let result = LocalCluster::new(job).timeout(Duration::from_secs(30)).run().expect("the job runs");
    match result.status {
        JobStatus::Failed(why) => assert!(
            why.starts_with("inconsistent topology at epoch 0: task ")
                && why.contains("over `partner`, but task ")
                && why.ends_with("over `partner`"),
            "{why}"
        ),
        other => panic!("expected the topology check to fail the job, got {other:?}"),
    }
}
