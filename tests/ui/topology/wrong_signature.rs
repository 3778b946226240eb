use taskgraph::prelude::*;

#[topology(parent <-> children, peers <-> peers)]
pub struct Tree {
    pub tasks: u64,
}

impl TreeLinks for Tree {
    fn parent(&self, task: TaskId, _epoch: Epoch) -> Option<TaskId> {
        task.checked_sub(1).map(|t| t / 2)
    }
    fn children(&self, task: u32, _epoch: Epoch) -> Vec<TaskId> {
        vec![2 * task as u64 + 1]
    }
    fn peers(&mut self, _task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        vec![]
    }
}

fn main() {}
