// Task ids must cover 0, 1, 2, ... once: overlapping ranges, a gap (tasks
// without a role) and an empty range are errors at the range.

use taskgraph::prelude::*;

#[derive(Message, Debug)]
pub struct Param {
    #[capnp(ordinal = 0)]
    pub values: Vec<f32>,
}

#[derive(Message, Debug)]
pub struct Grad {
    #[capnp(ordinal = 0)]
    pub values: Vec<f32>,
}

#[topology(parent <-> children)]
pub struct Tree {
    pub tasks: u64,
}

impl TreeLinks for Tree {
    fn parent(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        if task == 0 {
            vec![]
        } else {
            vec![(task - 1) / 2]
        }
    }
    fn children(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        [2 * task + 1, 2 * task + 2].into_iter().filter(|&c| c < self.tasks).collect()
    }
}

// Each graph in its own module: the role types they declare (`RootCx`,
// `WorkerHandlers`, ...) would clash in one.

// Overlap: task 3 would be both a `Root` and a `Worker`.
mod overlap {
    use super::*;

    taskgraph! {
        pub graph Overlap(topology = Tree) {
            messages Param;
            role Root = 0..4;
            role Worker = 3..;
            Worker fetches Param over parent from Root | Worker;
        }
    }
}

// A gap: tasks 1 and 2 have no role.
mod gap {
    use super::*;

    taskgraph! {
        pub graph Gap(topology = Tree) {
            messages Param;
            role Root = 0;
            role Worker = 3..;
            Worker fetches Param over parent from Root | Worker;
        }
    }
}

// Empty: `0..0` has no task (task 0 is `0`, `0..1` or `0..=0`).
mod empty {
    use super::*;

    taskgraph! {
        pub graph Empty(topology = Tree) {
            messages Param;
            role Root = 0..0;
            role Worker = 1..;
            Worker fetches Param over parent from Root | Worker;
        }
    }
}

fn main() {}
