//! Code generic over roles, through the per-edge traits that `taskgraph!`
//! generates: `FetchesToken` (`fetch_token`, `fetch_token_from`) and
//! `ServesToken` (`reply_token`, `reply_token_encoded`), implemented by
//! the context of every role that fetches or serves edge `token`, here
//! both `FirstCx` and `RestCx`. Their supertrait, `RoleContext`, gives
//! the generic code `task()`, `epoch()`, `record`, ... No hand-written
//! trait is needed.

use taskgraph::prelude::*;

#[derive(Message, Debug)]
pub struct Token {
    #[capnp(ordinal = 0)]
    pub hops: u64,
}

/// A ring: each task's `prev` is the task before it, `next` the one after.
#[topology(prev <-> next)]
pub struct Ring {
    pub tasks: u64,
}

impl RingLinks for Ring {
    fn prev(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![(task + self.tasks - 1) % self.tasks]
    }
    fn next(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![(task + 1) % self.tasks]
    }
}

taskgraph! {
    pub graph Relay(topology = Ring) {
        messages Token;
        role First = 0;
        role Rest = 1..;
        First | Rest fetch Token over prev from First | Rest;
    }
}

/// Either role: fetches the token from the task before it.
fn ask(cx: &mut impl FetchesToken) {
    let asked = cx.fetch_token();
    cx.record(format!("asked/{}", cx.task()), asked.to_string());
}

/// Either role: hands its token to the task after it, before it asks.
fn pass_on(cx: &mut impl ServesToken) {
    let token = Token { hops: cx.task() + cx.epoch() };
    for next in cx.neighbours(Ring::NEXT) {
        cx.reply_token(next, &token);
    }
}

/// Both sides of the edge at once.
fn enter(cx: &mut (impl FetchesToken + ServesToken)) {
    ask(cx);
    pass_on(cx);
}

#[task(Relay::First)]
#[derive(Debug, Default)]
pub struct First;

impl FirstHandlers for First {
    fn enter_epoch(&mut self, cx: &mut FirstCx<'_>, _epoch: Epoch) {
        enter(cx);
    }
    fn on_token(&mut self, cx: &mut FirstCx<'_>, from: TaskId, token: Fetched<Token>) {
        cx.record("got", format!("{} from {from}, a {}", token.hops, cx.role_of(from).unwrap_or("?")));
        cx.end_job();
    }
    fn serve_token(&mut self, cx: &mut FirstCx<'_>, _to: TaskId) -> Serve<Token> {
        Serve::now(&Token { hops: cx.task() + cx.epoch() })
    }
}

#[task(Relay::Rest)]
#[derive(Debug, Default)]
pub struct Rest;

impl RestHandlers for Rest {
    fn enter_epoch(&mut self, cx: &mut RestCx<'_>, _epoch: Epoch) {
        enter(cx);
    }
    fn on_token(&mut self, _cx: &mut RestCx<'_>, _from: TaskId, _token: Fetched<Token>) {}
    fn serve_token(&mut self, cx: &mut RestCx<'_>, _to: TaskId) -> Serve<Token> {
        Serve::now(&Token { hops: cx.task() + cx.epoch() })
    }
}

fn main() {
    let job = Relay::job(Ring { tasks: 3 }, 3, RelayTasks { first: |_| First, rest: |_| Rest });
    let result = LocalCluster::new(job).threads(1).run().unwrap();
    assert_eq!(result.status, JobStatus::Done);
    assert_eq!(result.records["asked/0"], b"1");
    assert_eq!(result.records["got"], b"2 from 2, a Rest");
}
