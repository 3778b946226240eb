// Handlers for edges the role does not have: `Root` serves no `Grad` and
// there is no edge `stop`.

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

#[task(Regression::Root)]
pub struct Root;

impl RootHandlers for Root {
    fn enter_epoch(&mut self, cx: &mut RootCx<'_>, _epoch: Epoch) {
        cx.fetch_grad();
    }
    fn on_grad(&mut self, _cx: &mut RootCx<'_>, _from: TaskId, _grad: Fetched<Grad>) {}
    fn serve_param(&mut self, _cx: &mut RootCx<'_>, _to: TaskId) -> Serve<Param> {
        Serve::later()
    }
    fn serve_grad(&mut self, _cx: &mut RootCx<'_>, _to: TaskId) -> Serve<Grad> {
        Serve::later()
    }
    fn on_stop(&mut self, _cx: &mut RootCx<'_>, _from: TaskId, _meta: &[u8]) {}
}

fn main() {}
