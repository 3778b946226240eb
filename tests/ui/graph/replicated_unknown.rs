// `replicated(..)` names the role's update message, which must be one of
// the graph's messages.

use taskgraph::prelude::*;

#[derive(Message, Debug)]
pub struct Sum {
    #[capnp(ordinal = 0)]
    pub value: u64,
}

#[topology(peers <-> peers)]
pub struct Pairs {
    pub tasks: u64,
}

impl PairsLinks for Pairs {
    fn peers(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![task ^ 1]
    }
}

taskgraph! {
    pub graph Exchange(topology = Pairs) {
        messages Sum;
        role Peer = 0.. replicated(Progres);
        Peer fetches Sum over peers from Peer;
    }
}

fn main() {}
