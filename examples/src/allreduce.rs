//! W4 of `docs/workloads.md`, a topology that changes every epoch: an all-reduce
//! by recursive doubling, written with the graph DSL, that survives the
//! loss of a task's state without any checkpoint.
//!
//! # The computation
//!
//! `N` tasks, `N` a power of two (`N = 2^k`, `k >= 1`). Task `i` starts
//! with the value `i + 1` ([`initial_value`]). At epoch `e` it exchanges
//! with its *partner* `i ^ 2^(e mod k)`: each fetches the value the other
//! held entering the epoch and adds it to its own. After `k` epochs every
//! task holds the sum of all the starting values (`N (N + 1) / 2`); the job
//! goes on for as many epochs as asked, the sum doubling each epoch
//! (wrapping at `2^64`). [`simulate`] is the same computation in one loop.
//!
//! Task 0, the [`Leader`], is also a peer of the exchange. It ends every
//! epoch with a barrier: it fetches [`Done`] (the value after the epoch)
//! from every other task over the `peers` link, records the epoch's values
//! (`epoch/<e>`: the `N` values in task order, see [`values`]), and
//! advances the epoch, or ends the job after the last one. Nobody enters
//! epoch `e + 1` before every task has its epoch-`e` partner's value, so no
//! partner can be left waiting.
//!
//! # Recovery, without a checkpoint
//!
//! When a node dies, a spare builds its task anew and enters the *current*
//! epoch (see the runtime's `task` module): the value the task had
//! accumulated is lost. It need not be stored anywhere, because it is not
//! the task's alone: after epoch `e - 1`, task `i` and its partner at that
//! epoch, `j = i ^ 2^((e - 1) mod k)`, have each added the other's value
//! to their own, so they hold the **same** value entering epoch `e`. The
//! topology says so with a second per-epoch link, `previous` (empty at
//! epoch 0), and the graph declares an edge over it, `restore`:
//!
//! * a task that enters epoch `e > 0` with no value (it is a replacement:
//!   it finished no epoch on this node) fetches `restore` from its
//!   previous partner, at the same time as it fetches its partner's
//!   `value`; once restored, it adds the partner's value as usual (in
//!   whichever order the two arrive) and records `restored/<e>/<i>`
//!   (see [`restorations`]);
//! * every task serves, over both `value` and `restore`, the value it
//!   held *entering* the epoch, even after it has added its partner's;
//! * a request that comes to a replacement before it is restored is
//!   answered later: its serve handler returns `Serve::later()` and keeps
//!   the asking task; the restore replies to it;
//! * a task that has its value serves the barrier with `Done` as soon as
//!   it has its partner's: the reply goes out before the leader asks
//!   (the runtime keeps it for the epoch), and so reaches a replaced
//!   leader's new fetches as well.
//!
//! A replacement of the leader does the same, then fetches `Done` from
//! everyone again (the runtime answers with the replies it kept). Epoch 0
//! needs no restore: the starting value is known. A task replaced after it
//! had answered the barrier may enter epoch `e + 1` directly; the rule is
//! the same (no value: restore), and its previous partner at `e + 1` is its
//! partner at `e`, which holds the value.
//!
//! # The limit
//!
//! The value survives as long as one of the two previous partners keeps
//! it: **if both are replaced before either has restored, both wait on
//! each other and the job stalls** (until `LocalCluster`'s time limit
//! fails it). That happens if task `i` and `i ^ 2^((e - 1) mod k)` both
//! die in epoch `e` (before one restores), or if one dies in epoch `e - 1`
//! after answering the barrier and the other dies in epoch `e`. The
//! program is strict on purpose: it asks only the previous partner,
//! although after epoch `e - 1` the value is in fact held by every task of
//! `i`'s group of `2^min(e, k)` tasks (from epoch `k` on, by every task);
//! a link to the whole group, tried in turn, would tolerate more. The
//! tests and [`spaced_faults`] kill at most one node in any two
//! consecutive epochs, which never loses a value.

use std::time::Duration;

use taskgraph::prelude::*;

/// A task's value as it was entering the epoch: what its partner adds
/// (edge `value`) and what a replaced previous partner restores (edge
/// `restore`).
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Value {
    /// The value.
    #[capnp(ordinal = 0)]
    pub value: u64,
}

/// A task's value after the epoch: its answer to the leader's barrier.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Done {
    /// The value.
    #[capnp(ordinal = 0)]
    pub value: u64,
}

/// A hypercube of `tasks` tasks (a power of two, at least 2) walked one
/// dimension per epoch, plus a star around task 0 for the barrier.
///
/// * `partner`: at epoch `e`, task `i`'s partner `i ^ 2^(e mod k)`;
/// * `previous`: its partner at epoch `e - 1` (none at epoch 0);
/// * `peers`: task 0's link to every other task; `leader`, theirs to it.
#[topology(partner <-> partner, previous <-> previous, peers <-> leader)]
#[derive(Clone, Copy, Debug)]
pub struct Hypercube {
    /// How many tasks.
    pub tasks: u64,
}

impl Hypercube {
    /// The hypercube of `tasks` tasks.
    ///
    /// # Panics
    ///
    /// If `tasks` is not a power of two of at least 2.
    pub fn new(tasks: u64) -> Self {
        assert!(tasks >= 2 && tasks.is_power_of_two(), "recursive doubling needs a power of two of tasks, at least 2, not {tasks}");
        Hypercube { tasks }
    }

    /// `k = log2 tasks`: how many epochs until every task holds the sum.
    pub fn dimensions(&self) -> u32 {
        self.tasks.trailing_zeros()
    }

    /// Task `task`'s partner at epoch `epoch`: `task ^ 2^(epoch mod k)`.
    pub fn partner_of(&self, task: TaskId, epoch: Epoch) -> TaskId {
        task ^ (1 << (epoch % u64::from(self.dimensions())))
    }
}

impl HypercubeLinks for Hypercube {
    fn partner(&self, task: TaskId, epoch: Epoch) -> Vec<TaskId> {
        vec![self.partner_of(task, epoch)]
    }
    fn previous(&self, task: TaskId, epoch: Epoch) -> Vec<TaskId> {
        match epoch {
            0 => vec![],
            e => vec![self.partner_of(task, e - 1)],
        }
    }
    fn peers(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        if task == 0 {
            (1..self.tasks).collect()
        } else {
            vec![]
        }
    }
    fn leader(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        if task == 0 {
            vec![]
        } else {
            vec![0]
        }
    }
}

taskgraph! {
    /// W4: recursive doubling, the partners changing every epoch; a
    /// replaced task restores its value from its previous partner.
    pub graph AllReduce(topology = Hypercube) {
        messages Value, Done;
        role Leader = 0;
        role Peer = 1..;
        Leader | Peer fetch Value over partner from Leader | Peer;
        Leader | Peer fetch Value over previous from Leader | Peer as restore;
        Leader fetches Done over peers from Peer;
    }
}

/// Task `task`'s value at the start of the job: `task + 1`.
pub fn initial_value(task: TaskId) -> u64 {
    task + 1
}

/// The name under which the leader records epoch `e`'s values.
pub fn record_name(e: Epoch) -> String {
    format!("epoch/{e:06}")
}

/// The name under which task `task` records that it restored its value
/// at epoch `e`.
pub fn restored_name(e: Epoch, task: TaskId) -> String {
    format!("restored/{e:06}/{task:06}")
}

/// One task's part of the exchange, the same for both roles: its methods
/// take any context with the exchange's edges, through the traits
/// `taskgraph!` generates for them (`FetchesValue`, `ServesRestore`, ...,
/// which `LeaderCx` and `PeerCx` both implement).
#[derive(Debug)]
struct Exchange {
    /// The value after this epoch, once the partner's has been added;
    /// entering the next epoch, the value to start from. `None` on a node
    /// that has not finished an epoch: a replacement.
    after: Option<u64>,
    /// The value entering this epoch, once known (at once, unless this
    /// task is restoring).
    start: Option<u64>,
    /// The partner's value entering this epoch, once fetched.
    partner: Option<u64>,
    /// Fetches of `value` waiting for the restore.
    value_waiting: Vec<TaskId>,
    /// Fetches of `restore` waiting for the restore (only when both
    /// previous partners lost the value: see the module doc).
    restore_waiting: Vec<TaskId>,
}

impl Exchange {
    fn new() -> Self {
        Exchange { after: None, start: None, partner: None, value_waiting: Vec::new(), restore_waiting: Vec::new() }
    }

    fn enter(&mut self, cx: &mut (impl FetchesValue + FetchesRestore), epoch: Epoch) {
        self.start = if epoch == 0 { Some(initial_value(cx.task())) } else { self.after.take() };
        self.after = None;
        self.partner = None;
        self.value_waiting.clear();
        self.restore_waiting.clear();
        if self.start.is_none() {
            cx.fetch_restore();
        }
        cx.fetch_value();
    }

    /// The partner's value came; the value after the epoch if that
    /// finishes it.
    fn on_partner(&mut self, value: &Value) -> Option<u64> {
        self.partner = Some(value.value);
        self.try_finish()
    }

    /// The previous partner's value came: it is this task's. Answers the
    /// fetches that waited for it; the value after the epoch if that
    /// finishes it.
    fn on_restore(&mut self, cx: &mut (impl ServesValue + ServesRestore), from: TaskId, value: &Value) -> Option<u64> {
        if self.start.is_some() {
            return None;
        }
        self.start = Some(value.value);
        let (e, me) = (cx.epoch(), cx.task());
        cx.record(restored_name(e, me), from.to_string());
        for to in std::mem::take(&mut self.value_waiting) {
            cx.reply_value(to, value);
        }
        for to in std::mem::take(&mut self.restore_waiting) {
            cx.reply_restore(to, value);
        }
        self.try_finish()
    }

    fn try_finish(&mut self) -> Option<u64> {
        match (self.start, self.partner, self.after) {
            (Some(start), Some(partner), None) => {
                let after = start.wrapping_add(partner);
                self.after = Some(after);
                Some(after)
            }
            _ => None,
        }
    }

    /// Serves `value` (`restore: false`) or `restore` to `to`: the value
    /// entering the epoch, now or once restored.
    fn serve(&mut self, to: TaskId, restore: bool) -> Serve<Value> {
        match self.start {
            Some(value) => Serve::now(&Value { value }),
            None => {
                let waiting = if restore { &mut self.restore_waiting } else { &mut self.value_waiting };
                waiting.push(to);
                Serve::later()
            }
        }
    }
}

/// Task 0: a peer of the exchange that also holds the barrier, records
/// each epoch's values and moves the job on.
#[task(AllReduce::Leader)]
#[derive(Debug)]
pub struct Leader {
    exchange: Exchange,
    last_epoch: Epoch,
    /// Every task's value after this epoch, as it comes.
    done: Vec<Option<u64>>,
    /// Whether this epoch's values have been recorded.
    closed: bool,
}

impl Leader {
    /// The leader of a job of `tasks` tasks that ends after `last_epoch`.
    pub fn new(tasks: u64, last_epoch: Epoch) -> Self {
        Leader { exchange: Exchange::new(), last_epoch, done: vec![None; tasks as usize], closed: false }
    }

    /// Task `task`'s value after the epoch is `value`; when every task's
    /// is in, records them and advances the epoch (or ends the job).
    fn done(&mut self, cx: &mut LeaderCx<'_>, task: TaskId, value: u64) {
        self.done[task as usize] = Some(value);
        if self.closed || self.done.iter().any(Option::is_none) {
            return;
        }
        self.closed = true;
        let text: Vec<String> = self.done.iter().flatten().map(u64::to_string).collect();
        let e = cx.epoch();
        cx.record(record_name(e), text.join(" "));
        if e >= self.last_epoch {
            cx.end_job();
        } else {
            cx.advance_epoch();
        }
    }
}

impl LeaderHandlers for Leader {
    fn enter_epoch(&mut self, cx: &mut LeaderCx<'_>, epoch: Epoch) {
        self.done.iter_mut().for_each(|d| *d = None);
        self.closed = false;
        self.exchange.enter(cx, epoch);
        cx.fetch_done();
    }

    fn on_value(&mut self, cx: &mut LeaderCx<'_>, _from: TaskId, value: Fetched<Value>) {
        if let Some(after) = self.exchange.on_partner(&value) {
            let me = cx.task();
            self.done(cx, me, after);
        }
    }

    fn on_restore(&mut self, cx: &mut LeaderCx<'_>, from: TaskId, restore: Fetched<Value>) {
        if let Some(after) = self.exchange.on_restore(cx, from, &restore) {
            let me = cx.task();
            self.done(cx, me, after);
        }
    }

    fn on_done(&mut self, cx: &mut LeaderCx<'_>, from: TaskId, done: Fetched<Done>) {
        self.done(cx, from, done.value);
    }

    fn serve_value(&mut self, _cx: &mut LeaderCx<'_>, to: TaskId) -> Serve<Value> {
        self.exchange.serve(to, false)
    }

    fn serve_restore(&mut self, _cx: &mut LeaderCx<'_>, to: TaskId) -> Serve<Value> {
        self.exchange.serve(to, true)
    }
}

/// Every other task: a peer of the exchange that answers the leader's
/// barrier.
#[task(AllReduce::Peer)]
#[derive(Debug)]
pub struct Peer {
    exchange: Exchange,
}

impl Peer {
    /// A peer.
    pub fn new() -> Self {
        Peer { exchange: Exchange::new() }
    }

    /// The epoch is done here: tell the leader, before it asks or after.
    fn finished(cx: &mut PeerCx<'_>, value: u64) {
        for leader in cx.neighbours(Hypercube::LEADER) {
            cx.reply_done(leader, &Done { value });
        }
    }
}

impl Default for Peer {
    fn default() -> Self {
        Peer::new()
    }
}

impl PeerHandlers for Peer {
    fn enter_epoch(&mut self, cx: &mut PeerCx<'_>, epoch: Epoch) {
        self.exchange.enter(cx, epoch);
    }

    fn on_value(&mut self, cx: &mut PeerCx<'_>, _from: TaskId, value: Fetched<Value>) {
        if let Some(after) = self.exchange.on_partner(&value) {
            Self::finished(cx, after);
        }
    }

    fn on_restore(&mut self, cx: &mut PeerCx<'_>, from: TaskId, restore: Fetched<Value>) {
        if let Some(after) = self.exchange.on_restore(cx, from, &restore) {
            Self::finished(cx, after);
        }
    }

    fn serve_value(&mut self, _cx: &mut PeerCx<'_>, to: TaskId) -> Serve<Value> {
        self.exchange.serve(to, false)
    }

    fn serve_restore(&mut self, _cx: &mut PeerCx<'_>, to: TaskId) -> Serve<Value> {
        self.exchange.serve(to, true)
    }

    fn serve_done(&mut self, _cx: &mut PeerCx<'_>, _to: TaskId) -> Serve<Done> {
        // Only called before this task finishes: `finished` answers then.
        // (Once finished it has replied, and the runtime answers from that
        // reply without asking; `now` is a safeguard.)
        match self.exchange.after {
            Some(value) => Serve::now(&Done { value }),
            None => Serve::later(),
        }
    }
}

/// The all-reduce job: `tasks` tasks (a power of two, at least 2), epochs
/// `0..=last_epoch`.
///
/// # Panics
///
/// If `tasks` is not a power of two of at least 2.
pub fn job(tasks: u64, last_epoch: Epoch) -> Job {
    AllReduce::job(
        Hypercube::new(tasks),
        tasks,
        AllReduceTasks { leader: move |_| Leader::new(tasks, last_epoch), peer: |_| Peer::new() },
    )
    .lease_ttl(Duration::from_millis(300))
}

/// The values every task holds after each epoch `0..=last_epoch`,
/// computed in one loop: what [`values`] must read back from a job.
///
/// # Panics
///
/// If `tasks` is not a power of two of at least 2.
pub fn simulate(tasks: u64, last_epoch: Epoch) -> Vec<(Epoch, Vec<u64>)> {
    let cube = Hypercube::new(tasks);
    let mut values: Vec<u64> = (0..tasks).map(initial_value).collect();
    let mut out = Vec::new();
    for e in 0..=last_epoch {
        values = (0..tasks).map(|t| values[t as usize].wrapping_add(values[cube.partner_of(t, e) as usize])).collect();
        out.push((e, values.clone()));
    }
    out
}

/// The values a finished job recorded, by epoch: every task's value after
/// the epoch, in task order (a record that does not parse is left out,
/// and so shows as a mismatch against [`simulate`]).
pub fn values(result: &JobResult) -> Vec<(Epoch, Vec<u64>)> {
    result
        .records
        .iter()
        .filter_map(|(k, v)| {
            let e = k.strip_prefix("epoch/")?.parse().ok()?;
            let text = std::str::from_utf8(v).ok()?;
            let values: Result<Vec<u64>, _> = text.split(' ').map(str::parse).collect();
            Some((e, values.ok()?))
        })
        .collect()
}

/// The restores a finished job recorded: `(epoch, task, from)`, task
/// `task` restored its value at `epoch` from its previous partner `from`.
pub fn restorations(result: &JobResult) -> Vec<(Epoch, TaskId, TaskId)> {
    result
        .records
        .iter()
        .filter_map(|(k, v)| {
            let (e, t) = k.strip_prefix("restored/")?.split_once('/')?;
            let from = std::str::from_utf8(v).ok()?.parse().ok()?;
            Some((e.parse().ok()?, t.parse().ok()?, from))
        })
        .collect()
}

/// Where a value-exchange fault can be injected, for [`fault_point`]:
/// the kinds of `FaultPoint`, at the `value` edge for those on an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// The task's node dies as it enters the epoch.
    Enter,
    /// It dies when its partner's fetch of its value arrives, before
    /// serving it.
    BeforeServe,
    /// It dies right after replying with its value.
    AfterServe,
    /// It dies when its partner's value arrives, before adding it.
    Received,
}

impl Kill {
    /// Every kind.
    pub const ALL: [Kill; 4] = [Kill::Enter, Kill::BeforeServe, Kill::AfterServe, Kill::Received];
}

/// The fault point where task `task`'s node dies at `epoch`, in the
/// exchange with its partner.
///
/// # Panics
///
/// If `tasks` is not a power of two of at least 2.
pub fn fault_point(tasks: u64, kill: Kill, task: TaskId, epoch: Epoch) -> FaultPoint {
    let partner = Hypercube::new(tasks).partner_of(task, epoch);
    match kill {
        Kill::Enter => FaultPoint::enter_epoch(task, epoch),
        Kill::BeforeServe => FaultPoint::before_serve(task, epoch, partner, AllReduce::VALUE),
        Kill::AfterServe => FaultPoint::after_serve(task, epoch, partner, AllReduce::VALUE),
        Kill::Received => FaultPoint::data_received(task, epoch, partner, AllReduce::VALUE),
    }
}

/// Up to `kills` fault points drawn from `seed`, that this program
/// survives: at most one kill in any two consecutive epochs (see the
/// module doc), each at a random task (the leader included) and kind.
/// Each point is passed once in a run, so each fires: a run with them
/// kills exactly as many nodes as there are points. Fewer than `kills`
/// when there are not enough epochs (`last_epoch / 2 + 1` at most).
pub fn spaced_faults(tasks: u64, last_epoch: Epoch, kills: usize, seed: u64) -> Vec<(Kill, TaskId, Epoch)> {
    let mut state = seed;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // The epochs in a random order (Fisher-Yates), taken when two away
    // from every epoch taken so far.
    let mut epochs: Vec<Epoch> = (0..=last_epoch).collect();
    for i in (1..epochs.len()).rev() {
        epochs.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let mut chosen: Vec<Epoch> = Vec::new();
    for e in epochs {
        if chosen.len() == kills {
            break;
        }
        if chosen.iter().all(|&c| c.abs_diff(e) >= 2) {
            chosen.push(e);
        }
    }
    chosen.sort_unstable();
    chosen.into_iter().map(|e| (Kill::ALL[(next() % 4) as usize], next() % tasks, e)).collect()
}
