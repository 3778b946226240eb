// A topology type without `#[topology(...)]` (a hand-written `Topology`
// impl has no link names known at compile time): the error is at the type.

use taskgraph::prelude::*;

#[derive(Message, Debug)]
pub struct Param {
    #[capnp(ordinal = 0)]
    pub values: Vec<f32>,
}

pub struct Ring {
    pub tasks: u64,
}

const NEXT: LinkType = LinkType::new(0, "next");

impl Topology for Ring {
    fn links(&self) -> &[LinkType] {
        &[NEXT]
    }
    fn neighbours(&self, _link: u32, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![(task + 1) % self.tasks]
    }
}

taskgraph! {
    pub graph Gossip(topology = Ring) {
        messages Param;
        role Peer = 0..;
        Peer fetches Param over next from Peer;
    }
}

fn main() {}
