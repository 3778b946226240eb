use taskgraph::prelude::*;

#[topology(Parent <-> childNodes, links, _hidden)]
pub struct Tree {
    pub tasks: u64,
}

// Implemented with the names as declared: only the attribute is wrong.
impl TreeLinks for Tree {
    fn Parent(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
    fn childNodes(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
    fn links(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
    fn _hidden(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
}

fn main() {}
