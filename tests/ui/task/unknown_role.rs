// `#[task]` naming a role the graph does not have.

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

taskgraph! {
    pub graph Regression(topology = Tree) {
        messages Param, Grad;
        role Root = 0;
        role Worker = 1..;
        Worker fetches Param over parent from Root | Worker;
        Root | Worker fetch Grad over children from Worker;
    }
}

#[task(Regression::Wroker)]
pub struct Worker;

impl WorkerHandlers for Worker {
    fn enter_epoch(&mut self, cx: &mut WorkerCx<'_>, _epoch: Epoch) {
        cx.fetch_param();
        cx.fetch_grad();
    }
    fn on_param(&mut self, _cx: &mut WorkerCx<'_>, _from: TaskId, _param: Fetched<Param>) {}
    fn on_grad(&mut self, _cx: &mut WorkerCx<'_>, _from: TaskId, _grad: Fetched<Grad>) {}
    fn serve_param(&mut self, _cx: &mut WorkerCx<'_>, _to: TaskId) -> Serve<Param> {
        Serve::later()
    }
    fn serve_grad(&mut self, _cx: &mut WorkerCx<'_>, _to: TaskId) -> Serve<Grad> {
        Serve::now(&Grad { values: vec![1.0] })
    }
}

fn main() {}
