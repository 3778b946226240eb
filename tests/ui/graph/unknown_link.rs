// A link the topology does not have: a compile-time error that lists the
// topology's links (today at the whole invocation, not at `parnt`).

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

taskgraph! {
    pub graph Regression(topology = Tree) {
        messages Param, Grad;
        role Root = 0;
        role Worker = 1..;
        Worker fetches Param over parnt from Root | Worker;
        Root | Worker fetch Grad over children from Worker;
    }
}

fn main() {}
