// Syntax errors: each statement's error says what was expected, and the
// other statements are still checked.

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

// A verb that is not `fetches` or `flags`, and an edge without `over`.
mod verbs {
    use super::*;

    taskgraph! {
        pub graph Regression(topology = Tree) {
            messages Param, Grad;
            role Root = 0;
            role Worker = 1..;
            Worker gets Param over parent from Root | Worker;
            Root | Worker fetch Grad children from Worker;
        }
    }
}

// Edges but no `messages` statement.
mod no_messages {
    use super::*;

    taskgraph! {
        pub graph Regression(topology = Tree) {
            role Root = 0;
            role Worker = 1..;
            Worker fetches Param over parent from Root | Worker;
        }
    }
}

fn main() {}
