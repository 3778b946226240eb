// A role or a message the graph does not declare: each error is at the
// misspelt name and lists the valid ones.

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
        Wroker fetches Param over parent from Root | Worker;
        Root | Worker fetch Gard over children from Worker;
    }
}

fn main() {}
