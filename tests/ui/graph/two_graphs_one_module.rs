// Two graphs in one module whose roles share a name: each declares
// `WorkerHandlers` and `WorkerCx` in the caller's scope, so they clash
// (put each graph in its own module).

use taskgraph::prelude::*;

#[topology(peers <-> peers)]
pub struct Ring {
    pub tasks: u64,
}

impl RingLinks for Ring {
    fn peers(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![(task + 1) % self.tasks, (task + self.tasks - 1) % self.tasks]
    }
}

taskgraph! {
    pub graph Train(topology = Ring) {
        role Worker = 0..;
    }
}

taskgraph! {
    pub graph Eval(topology = Ring) {
        role Worker = 0..;
    }
}

fn main() {}
