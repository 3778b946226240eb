// A derive that fails reports its own errors only: the type still gets
// the derive's impls (as a dummy), so its uses (a field of another
// message, a list of it, `encode`, `Frame`, a graph's `messages`) add no
// error of their own. One error per mistake: a field of an unsupported
// type is not also an ordinal gap; a missing enumerant number is not
// also a gap, nor an error where the enum is a field.

use taskgraph::prelude::*;

#[derive(Message, Debug, Clone)]
pub struct Weights {
    #[capnp(ordinal = 0)]
    pub step: usize,
    #[capnp(ordinal = 1)]
    pub values: Vec<f32>,
}

#[derive(Message, Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Warmup = 0,
    Train,
    Done = 2,
}

#[derive(Message, Debug)]
pub struct Update {
    #[capnp(ordinal = 0)]
    pub weights: Weights,
    #[capnp(ordinal = 1, enum)]
    pub phase: Phase,
    #[capnp(ordinal = 2)]
    pub history: Vec<Weights>,
    #[capnp(ordinal = 3)]
    pub phases: Option<Vec<Weights>>,
}

#[topology(hub <-> spokes)]
pub struct Star {
    pub tasks: u64,
}

impl StarLinks for Star {
    fn hub(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        if task == 0 { vec![] } else { vec![0] }
    }
    fn spokes(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        if task == 0 { (1..self.tasks).collect() } else { vec![] }
    }
}

taskgraph! {
    pub graph Server(topology = Star) {
        messages Weights, Update;
        role Hub = 0;
        role Spoke = 1..;
        Spoke fetches Weights over hub from Hub;
        Hub fetches Update over spokes from Spoke;
    }
}

fn main() {
    let w = Weights { step: 0, values: vec![] };
    let bytes = w.encode();
    let _ = Weights::decode(&bytes);
    let _ = Frame::<Weights>::new(&bytes).map(|f| f.view().map(|v| v.decode()));
    let _ = Phase::Train == Phase::Done;
    let _ = Server::capnp_schema();
}
