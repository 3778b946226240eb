//! A complete small graph compiles and runs: two roles, an edge each way,
//! a flag, one struct taking both roles, `G::job` run by a `LocalCluster`
//! to its end.
//!
//! Task 0 (the hub) serves the seed `epoch + 1`; every spoke fetches it,
//! computes `seed * id` and flags the hub `ready`; the hub fetches that
//! part from each spoke that flagged, records the sum and moves on.
#![deny(missing_docs)]

use taskgraph::prelude::*;

/// What the hub hands out.
#[derive(Message, Debug)]
pub struct Seed {
    /// The seed.
    #[capnp(ordinal = 0)]
    pub value: u64,
}

/// A spoke's share of the sum.
#[derive(Message, Debug)]
pub struct Part {
    /// The share.
    #[capnp(ordinal = 0)]
    pub value: u64,
}

/// Task 0 in the middle, every other task linked to it only.
#[topology(hub <-> spokes)]
pub struct Star {
    /// How many tasks.
    pub tasks: u64,
}

impl StarLinks for Star {
    fn hub(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        if task == 0 {
            vec![]
        } else {
            vec![0]
        }
    }
    fn spokes(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        if task == 0 {
            (1..self.tasks).collect()
        } else {
            vec![]
        }
    }
}

taskgraph! {
    /// Sums `seed * id` over the spokes, once per epoch.
    pub graph Sum(topology = Star) {
        messages Seed, Part;
        role Hub = 0;
        role Spoke = 1..;
        Spoke fetches Seed over hub from Hub;
        Hub fetches Part over spokes from Spoke;
        Spoke flags ready over hub to Hub;
    }
}

const LAST_EPOCH: Epoch = 1;

/// Both roles' work: the hub's sum, or the spoke's part.
#[task(Sum::Hub, Sum::Spoke)]
#[derive(Debug, Default)]
pub struct Node {
    total: u64,
    pending: u64,
    part: u64,
}

impl HubHandlers for Node {
    fn enter_epoch(&mut self, cx: &mut HubCx<'_>, _epoch: Epoch) {
        self.total = 0;
        self.pending = cx.tasks() - 1;
    }

    fn on_part(&mut self, cx: &mut HubCx<'_>, _from: TaskId, part: Fetched<Part>) {
        self.total += part.value;
        self.pending -= 1;
        if self.pending == 0 {
            let e = cx.epoch();
            cx.record(format!("sum/{e}"), self.total.to_string());
            if e == LAST_EPOCH {
                cx.end_job();
            } else {
                cx.advance_epoch();
            }
        }
    }

    fn serve_seed(&mut self, cx: &mut HubCx<'_>, _to: TaskId) -> Serve<Seed> {
        Serve::now(&Seed { value: cx.epoch() + 1 })
    }

    fn on_ready(&mut self, cx: &mut HubCx<'_>, from: TaskId, meta: &[u8]) {
        assert_eq!(meta, b"ok");
        assert!(cx.fetch_part_from(from));
    }
}

impl SpokeHandlers for Node {
    fn enter_epoch(&mut self, cx: &mut SpokeCx<'_>, _epoch: Epoch) {
        assert_eq!(cx.fetch_seed(), 1);
    }

    fn on_seed(&mut self, cx: &mut SpokeCx<'_>, _from: TaskId, seed: Fetched<Seed>) {
        self.part = seed.value * cx.task();
        assert_eq!(cx.flag_ready(b"ok"), 1);
    }

    fn serve_part(&mut self, _cx: &mut SpokeCx<'_>, _to: TaskId) -> Serve<Part> {
        Serve::now(&Part { value: self.part })
    }
}

fn main() {
    assert_eq!(Sum::role_of(0), Some(Sum::Hub));
    assert_eq!(Sum::role_of(2), Some(Sum::Spoke));
    let job = Sum::job(Star { tasks: 3 }, 3, SumTasks { hub: |_| Node::default(), spoke: |_| Node::default() });
    let result = LocalCluster::new(job).threads(1).run().unwrap();
    assert_eq!(result.status, JobStatus::Done);
    let sums: Vec<(&str, &[u8])> = result.records.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    // Epoch 0: seed 1, parts 1 and 2; epoch 1: seed 2, parts 2 and 4.
    assert_eq!(sums, [("sum/0", &b"3"[..]), ("sum/1", &b"6"[..])]);
}
