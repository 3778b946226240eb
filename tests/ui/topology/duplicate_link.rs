use taskgraph::prelude::*;

#[topology(parent <-> children, parent, children <-> parent)]
pub struct Tree {
    pub tasks: u64,
}

// Still a valid impl: each link has its one method.
impl TreeLinks for Tree {
    fn parent(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
    fn children(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
}

#[topology(peers <-> peers, peers)]
pub struct Peers;

impl PeersLinks for Peers {
    fn peers(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
}

fn main() {}
