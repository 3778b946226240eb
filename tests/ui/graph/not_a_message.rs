// A type in `messages` that does not derive `Message`: an error at its
// name in `messages` (today with five more for the same mistake).

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

#[derive(Debug)]
pub struct Plain {
    pub values: Vec<f32>,
}

taskgraph! {
    pub graph Regression(topology = Tree) {
        messages Param, Grad, Plain;
        role Root = 0;
        role Worker = 1..;
        Worker fetches Param over parent from Root | Worker;
        Root | Worker fetch Grad over children from Worker;
        Worker fetches Plain over parent from Root | Worker;
    }
}

fn main() {}
