// A replicated role (`replicated(Progress)`): its handlers must also
// apply the primary's updates (`became_primary` and `became_backup` have
// defaults). Forgetting it is a compile error naming it.

use taskgraph::prelude::*;

#[derive(Message, Debug)]
pub struct Sum {
    #[capnp(ordinal = 0)]
    pub value: u64,
}

#[derive(Message, Debug)]
pub struct Progress {
    #[capnp(ordinal = 0)]
    pub epochs: u64,
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
        messages Sum, Progress;
        role Peer = 0.. replicated(Progress);
        Peer fetches Sum over peers from Peer;
    }
}

#[task(Exchange::Peer)]
pub struct Peer;

impl PeerHandlers for Peer {
    fn enter_epoch(&mut self, cx: &mut PeerCx<'_>, _epoch: Epoch) {
        cx.fetch_sum();
        cx.replicate(&Progress { epochs: 1 });
    }
    fn on_sum(&mut self, _cx: &mut PeerCx<'_>, _from: TaskId, _sum: Fetched<Sum>) {}
    fn serve_sum(&mut self, _cx: &mut PeerCx<'_>, _to: TaskId) -> Serve<Sum> {
        Serve::now(&Sum { value: 1 })
    }
}

fn main() {}
