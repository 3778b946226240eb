// Code generic over the roles of an edge, given a role without it: only
// `Hub` fetches `Tick` (so only `HubCx` is `FetchesTick`), and only
// `Spoke` serves it (so only `SpokeCx` is `ServesTick`).

use taskgraph::prelude::*;

#[derive(Message, Debug)]
pub struct Tick {
    #[capnp(ordinal = 0)]
    pub epoch: u64,
}

#[topology(hub <-> spokes)]
pub struct Star {
    pub tasks: u64,
}

impl StarLinks for Star {
    fn hub(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        if task == 0 {
            vec![]
        } else {
            vec![0]
        }
    }
    fn spokes(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        if task == 0 {
            (1..self.tasks).collect()
        } else {
            vec![]
        }
    }
}

taskgraph! {
    pub graph Ticks(topology = Star) {
        messages Tick;
        role Hub = 0;
        role Spoke = 1..;
        Hub fetches Tick over spokes from Spoke;
    }
}

fn ask(cx: &mut impl FetchesTick) {
    cx.fetch_tick();
}

fn answer(cx: &mut impl ServesTick, to: TaskId) {
    let tick = Tick { epoch: cx.epoch() };
    cx.reply_tick(to, &tick);
}

#[task(Ticks::Hub)]
pub struct Hub;

impl HubHandlers for Hub {
    fn enter_epoch(&mut self, cx: &mut HubCx<'_>, _epoch: Epoch) {
        ask(cx);
        answer(cx, 1);
    }
    fn on_tick(&mut self, _cx: &mut HubCx<'_>, _from: TaskId, _tick: Fetched<Tick>) {}
}

#[task(Ticks::Spoke)]
pub struct Spoke;

impl SpokeHandlers for Spoke {
    fn enter_epoch(&mut self, cx: &mut SpokeCx<'_>, _epoch: Epoch) {
        ask(cx);
    }
    fn serve_tick(&mut self, cx: &mut SpokeCx<'_>, to: TaskId) -> Serve<Tick> {
        answer(cx, to);
        Serve::later()
    }
}

fn main() {}
