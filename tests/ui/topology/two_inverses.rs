use taskgraph::prelude::*;

#[topology(parent <-> children, kids <-> parent)]
pub struct Tree {
    pub tasks: u64,
}

impl TreeLinks for Tree {
    fn parent(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
    fn children(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
    fn kids(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
}

#[topology(peers <-> peers, others <-> peers)]
pub struct Peers;

fn main() {}
