//! A context's own methods borrow it in two phases: an argument may read
//! the context that the call then changes (`cx.fail_job(format!("..",
//! cx.epoch()))`, `cx.record(.., cx.task()..)`, a reply built from
//! `cx.epoch()`), as with a plain `&mut` method. These were E0502 while
//! the contexts reached them through `DerefMut`. Code that takes a
//! `&mut TaskCx` keeps working through the dereference.

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

/// Code written against the shared context, reached by dereference.
fn note(cx: &mut TaskCx<'_>) {
    let name = format!("seen/{}", cx.task());
    cx.record(name, cx.epoch().to_string());
}

#[task(Ticks::Hub)]
#[derive(Debug, Default)]
pub struct Hub {
    pending: usize,
}

impl HubHandlers for Hub {
    fn enter_epoch(&mut self, cx: &mut HubCx<'_>, _epoch: Epoch) {
        self.pending = cx.fetch_tick();
        note(cx);
    }

    fn on_tick(&mut self, cx: &mut HubCx<'_>, from: TaskId, tick: Fetched<Tick>) {
        cx.record(format!("tick/{from}"), format!("{} of {}", tick.epoch, cx.tasks()));
        self.pending -= 1;
        if self.pending > 0 {
            return;
        }
        if cx.epoch() == 0 {
            cx.advance_epoch();
        } else {
            cx.fail_job(format!("stopped by {} ({}) at epoch {}", cx.task(), cx.role_name(), cx.epoch()));
        }
    }
}

#[task(Ticks::Spoke)]
#[derive(Debug, Default)]
pub struct Spoke;

impl SpokeHandlers for Spoke {
    fn enter_epoch(&mut self, cx: &mut SpokeCx<'_>, _epoch: Epoch) {
        cx.record(format!("spoke/{}/{}", cx.task(), cx.epoch()), cx.role_of(0).unwrap_or("?"));
    }

    fn serve_tick(&mut self, cx: &mut SpokeCx<'_>, _to: TaskId) -> Serve<Tick> {
        Serve::now(&Tick { epoch: cx.epoch() })
    }
}

fn main() {
    let job = Ticks::job(Star { tasks: 3 }, 3, TicksTasks { hub: |_| Hub::default(), spoke: |_| Spoke });
    let result = LocalCluster::new(job).threads(1).run().unwrap();
    assert_eq!(result.status, JobStatus::Failed("stopped by 0 (Hub) at epoch 1".into()));
    assert_eq!(result.records["tick/2"], b"1 of 3");
    assert_eq!(result.records["seen/0"], b"1");
    assert_eq!(result.records["spoke/1/0"], b"Hub");
}
