// Using an edge the role does not have: `Root` fetches no `Param` and
// serves no `Grad`, so `RootCx` has no `fetch_param` nor `reply_grad`.

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
        cx.fetch_param();
        cx.fetch_grad();
    }
    fn on_grad(&mut self, cx: &mut RootCx<'_>, from: TaskId, grad: Fetched<Grad>) {
        cx.reply_grad(from, &grad);
    }
    fn serve_param(&mut self, _cx: &mut RootCx<'_>, _to: TaskId) -> Serve<Param> {
        Serve::later()
    }
}

fn main() {}
