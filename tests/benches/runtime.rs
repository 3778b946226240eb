//! The runtime's performance targets of `WORKLOAD.md` (P1, P2, P2b and the
//! time to the first epoch), each against a baseline measured in the same
//! run on the same machine.
//!
//! `cargo bench -p taskgraph-tests --bench runtime`
//!
//! * **P2 / P2b**: W1 (15 tasks, binary tree, `taskgraph_examples::
//!   regression`) under `LocalCluster` with the embedded coordinator; the
//!   time between task 0's consecutive `enter_epoch` calls, against a
//!   hand-written tokio program doing the same 28 request/response
//!   exchanges per epoch over loopback TCP (length-prefixed frames). The
//!   baseline runs as 15 actors on a multi-thread runtime with 2 worker
//!   threads (the ratio's denominator) and, for information, as one thread
//!   per node with current-thread runtimes (the framework's layout).
//! * **P1**: task 1 fetches one 64 MiB `Vec<f32>` message from task 0 each
//!   epoch; time from `fetch` to `data_ready`, against raw tokio TCP
//!   (`write_all` / `read_exact` into a reused buffer) between two threads.
//!   Task 0 builds the message once, but `Context::reply` encodes it on
//!   every reply, so the table gives the fetch with the encode and, by
//!   subtracting the time `reply` took on task 0, without it.
//! * **Start**: from just before `LocalCluster::run()` to task 0's
//!   `enter_epoch(0)`, W1 with one epoch.
//! * `BENCH_ONLY=p2|p2b|p1|start` runs one section (for profiling).
//!
//! This is a benchmark, not a test: it prints figures and checks no
//! timing. It does check the jobs' results (a wrong result is a bug, and
//! its timings would mean nothing).

// Both the framework and the hand-written baselines run in this binary,
// under the allocator taskgraph's binaries use (see the workspace
// Cargo.toml on why mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskgraph::message::Limits;
use taskgraph::prelude::*;
use taskgraph_examples::regression::{self, Regression, Tree, GRAD, PARAM};
use taskgraph_tests::jobs::{Blob, Ring, BLOB};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const TASKS: u64 = 15;
const RUNS: usize = 3;
const P1_BYTES: usize = 64 << 20;

type Stamps = Arc<Mutex<Vec<Instant>>>;

// ---------------------------------------------------------------------------
// Statistics.

#[derive(Clone, Copy, Debug)]
struct Stat {
    median: Duration,
    p90: Duration,
    n: usize,
}

fn stat(samples: &[Duration]) -> Stat {
    assert!(!samples.is_empty(), "no samples");
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    Stat { median: s[n / 2], p90: s[(n * 9 / 10).min(n - 1)], n }
}

/// Consecutive differences, skipping the first `warmup`.
fn diffs(stamps: &[Instant], warmup: usize) -> Vec<Duration> {
    stamps.windows(2).map(|w| w[1] - w[0]).skip(warmup).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// The framework: W1 with task 0 timed.

/// Where task 0 writes its time stamps.
#[derive(Clone, Default)]
struct Probe {
    /// Each `enter_epoch`.
    enters: Stamps,
    /// `exit` (the job has ended).
    exit: Stamps,
}

/// `Regression`, with task 0's `enter_epoch` and `exit` time-stamped.
struct Timed {
    inner: Regression,
    probe: Option<Probe>,
}

impl Task for Timed {
    fn init(&mut self, cx: &mut Context<'_>) {
        self.inner.init(cx);
    }
    fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch) {
        if let Some(p) = &self.probe {
            p.enters.lock().expect("stamps").push(Instant::now());
        }
        self.inner.enter_epoch(cx, epoch);
    }
    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        self.inner.data_ready(cx, data);
    }
    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        self.inner.serve(cx, request);
    }
    fn meta_ready(&mut self, cx: &mut Context<'_>, from: TaskId, link: LinkType, meta: &[u8]) {
        self.inner.meta_ready(cx, from, link, meta);
    }
    fn neighbour_failed(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId) {
        self.inner.neighbour_failed(cx, link, task);
    }
    fn neighbour_restarted(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId) {
        self.inner.neighbour_restarted(cx, link, task);
    }
    fn exit(&mut self, cx: &mut Context<'_>) {
        if let Some(p) = &self.probe {
            p.exit.lock().expect("stamps").push(Instant::now());
        }
        self.inner.exit(cx);
    }
}

/// W1 as `regression::job` builds it, with task 0 timed.
fn w1_job(size: usize, last_epoch: Epoch, probe: Probe) -> Job {
    let bytes = size * 4 + 1024;
    let mut limits = Limits::default();
    limits.max_bytes = limits.max_bytes.max(bytes * 2);
    let factory = move |t: TaskId| {
        Box::new(Timed { inner: Regression::new(size, last_epoch), probe: (t == 0).then(|| probe.clone()) }) as Box<dyn Task>
    };
    Job::new("bench", TASKS, Tree { tasks: TASKS }, factory)
        .edge(PARAM)
        .edge(GRAD)
        .limits(limits)
        .lease_ttl(Duration::from_millis(300))
}

/// What one W1 run under the framework took.
struct W1Run {
    /// Just before `run()`.
    start: Instant,
    /// Task 0's `enter_epoch` calls.
    enters: Vec<Instant>,
    /// Task 0's `exit`.
    exit: Instant,
    /// The whole `run()`, shutdown included.
    total: Duration,
}

/// Runs W1 with task 0 time-stamped.
fn framework_w1(size: usize, last_epoch: Epoch) -> W1Run {
    let probe = Probe::default();
    let cluster = LocalCluster::new(w1_job(size, last_epoch, probe.clone())).timeout(Duration::from_secs(120));
    let start = Instant::now();
    let result = cluster.run().expect("W1 runs");
    let total = start.elapsed();
    assert_eq!(result.status, JobStatus::Done, "W1 failed: {result:?}");
    let values = regression::root_values(&result);
    let want: Vec<(Epoch, String)> = (0..=last_epoch).map(|e| (e, (105 * e).to_string())).collect();
    assert_eq!(values, want, "W1 gave wrong root values");
    let enters = std::mem::take(&mut *probe.enters.lock().expect("stamps"));
    assert_eq!(enters.len() as u64, last_epoch + 1, "task 0 entered each epoch once (no failover)");
    let exit = probe.exit.lock().expect("stamps")[0];
    W1Run { start, enters, exit, total }
}

// ---------------------------------------------------------------------------
// The baseline: W1 hand-written over tokio TCP.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// 15 tokio tasks on one multi-thread runtime with 2 worker threads.
    Pool2,
    /// One OS thread per node, each with a current-thread runtime.
    ThreadPerNode,
}

/// The latest value a node publishes: (epoch, length-prefixed frame).
type Slot = watch::Sender<Option<(u64, Arc<Vec<u8>>)>>;

const KIND_PARAM: u8 = 0;
const KIND_GRAD: u8 = 1;

fn encode_frame(values: &[f32]) -> Arc<Vec<u8>> {
    let mut b = vec![0u8; 4 + 4 * values.len()];
    b[..4].copy_from_slice(&((4 * values.len()) as u32).to_le_bytes());
    for (c, v) in b[4..].chunks_exact_mut(4).zip(values) {
        c.copy_from_slice(&v.to_le_bytes());
    }
    Arc::new(b)
}

/// Serves one incoming connection: its first byte says which value it
/// asks for; then each request is an epoch (u64), answered with that
/// epoch's frame once it is published.
async fn serve_conn(mut stream: TcpStream, param: watch::Receiver<Option<(u64, Arc<Vec<u8>>)>>, grad: watch::Receiver<Option<(u64, Arc<Vec<u8>>)>>) {
    let Ok(kind) = stream.read_u8().await else { return };
    let mut rx = if kind == KIND_PARAM { param } else { grad };
    while let Ok(e) = stream.read_u64_le().await {
        let frame = {
            let Ok(v) = rx.wait_for(|v| matches!(v, Some((ep, _)) if *ep >= e)).await else { return };
            let (ep, frame) = v.as_ref().expect("published");
            assert_eq!(*ep, e, "baseline served the wrong epoch");
            frame.clone()
        };
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// An outgoing persistent connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr, kind: u8) -> Conn {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_u8(kind).await.expect("handshake");
        Conn { stream, buf: Vec::new() }
    }

    async fn request(&mut self, epoch: u64) -> Vec<f32> {
        self.stream.write_u64_le(epoch).await.expect("request");
        let len = self.stream.read_u32_le().await.expect("length") as usize;
        self.buf.resize(len, 0);
        self.stream.read_exact(&mut self.buf).await.expect("payload");
        self.buf.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }
}

struct Actor {
    id: u64,
    size: usize,
    epochs: u64,
    parent: Option<Conn>,
    children: Vec<Conn>,
    param: Slot,
    grad: Slot,
    stamps: Option<Stamps>,
}

impl Actor {
    async fn run(mut self) {
        let id = self.id as f32;
        for e in 0..self.epochs {
            if let Some(s) = &self.stamps {
                s.lock().expect("stamps").push(Instant::now());
            }
            let (parent, param_slot, size, has_children) = (&mut self.parent, &self.param, self.size, !self.children.is_empty());
            let param = async move {
                let p = match parent {
                    None => vec![e as f32; size],
                    Some(c) => c.request(e).await,
                };
                if has_children {
                    param_slot.send_replace(Some((e, encode_frame(&p))));
                }
                p
            };
            let grads = futures::future::join_all(self.children.iter_mut().map(|c| c.request(e)));
            let (param, grads) = futures::join!(param, grads);
            let mut sum = vec![0f32; self.size];
            for g in &grads {
                for (s, v) in sum.iter_mut().zip(g) {
                    *s += v;
                }
            }
            if self.parent.is_none() {
                let want = 105.0 * e as f32;
                assert!(sum.iter().all(|v| *v == want), "baseline root value wrong at epoch {e}");
            } else {
                let grad: Vec<f32> = param.iter().zip(&sum).map(|(p, s)| p * id + s).collect();
                self.grad.send_replace(Some((e, encode_frame(&grad))));
            }
        }
        if let Some(s) = &self.stamps {
            s.lock().expect("stamps").push(Instant::now());
        }
    }
}

fn parent_of(i: u64) -> Option<u64> {
    (i > 0).then(|| (i - 1) / 2)
}

fn children_of(i: u64) -> Vec<u64> {
    [2 * i + 1, 2 * i + 2].into_iter().filter(|&c| c < TASKS).collect()
}

/// One node of the baseline: serves its listener, connects to its
/// neighbours, runs its epochs.
async fn baseline_node(id: u64, listener: std::net::TcpListener, addrs: Arc<Vec<SocketAddr>>, size: usize, epochs: u64, stamps: Option<Stamps>) -> impl std::future::Future<Output = ()> {
    let (param, param_rx) = watch::channel(None);
    let (grad, grad_rx) = watch::channel(None);
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            s.set_nodelay(true).expect("nodelay");
            tokio::spawn(serve_conn(s, param_rx.clone(), grad_rx.clone()));
        }
    });
    let parent = match parent_of(id) {
        Some(p) => Some(Conn::open(addrs[p as usize], KIND_PARAM).await),
        None => None,
    };
    let mut children = Vec::new();
    for c in children_of(id) {
        children.push(Conn::open(addrs[c as usize], KIND_GRAD).await);
    }
    Actor { id, size, epochs, parent, children, param, grad, stamps }.run()
}

/// Runs the hand-written W1 for `epochs` epochs; returns the start time and
/// the root's epoch start times (plus the end of the last epoch).
fn baseline_w1(layout: Layout, size: usize, epochs: u64) -> (Instant, Vec<Instant>) {
    let stamps: Stamps = Arc::default();
    let start = Instant::now();
    let listeners: Vec<std::net::TcpListener> = (0..TASKS)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
        .collect();
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(listeners.iter().map(|l| l.local_addr().expect("addr")).collect());
    match layout {
        Layout::Pool2 => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async {
                // Nodes connect to listeners whose accept loop may not
                // run yet: the kernel's backlog holds the connection.
                let mut runs = Vec::new();
                for (id, l) in listeners.into_iter().enumerate() {
                    let id = id as u64;
                    let s = (id == 0).then(|| stamps.clone());
                    runs.push(baseline_node(id, l, addrs.clone(), size, epochs, s).await);
                }
                let handles: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
                for h in handles {
                    h.await.expect("actor");
                }
            });
        }
        Layout::ThreadPerNode => {
            let barrier = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
            let threads: Vec<_> = listeners
                .into_iter()
                .enumerate()
                .map(|(id, l)| {
                    let id = id as u64;
                    let (addrs, barrier) = (addrs.clone(), barrier.clone());
                    let s = (id == 0).then(|| stamps.clone());
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                        rt.block_on(async move {
                            baseline_node(id, l, addrs, size, epochs, s).await.await;
                            // Keep serving until every node is done.
                            barrier.wait().await;
                        });
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("baseline node thread");
            }
        }
    }
    let stamps = std::mem::take(&mut *stamps.lock().expect("stamps"));
    (start, stamps)
}

// ---------------------------------------------------------------------------
// P1: one 64 MiB message.

#[derive(Default)]
struct PullTimes {
    /// Task 1 asked (`fetch`).
    fetch: Vec<Instant>,
    /// Task 0's `serve` began / `reply` (which encodes) returned.
    serve: Vec<(Instant, Instant)>,
    /// Task 1 got `data_ready`.
    ready: Vec<Instant>,
}

struct Pull {
    len: usize,
    last_epoch: Epoch,
    blob: Option<Blob>,
    times: Arc<Mutex<PullTimes>>,
}

impl Task for Pull {
    fn init(&mut self, cx: &mut Context<'_>) {
        if cx.task() == 0 {
            // Built once; `reply` still encodes it each time.
            self.blob = Some(Blob { values: (0..self.len).map(|i| i as f32).collect() });
        }
    }
    fn enter_epoch(&mut self, cx: &mut Context<'_>, _: Epoch) {
        if cx.task() == 1 {
            self.times.lock().expect("times").fetch.push(Instant::now());
            cx.fetch(BLOB, 0);
        }
    }
    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        self.times.lock().expect("times").ready.push(Instant::now());
        if data.bytes().len() < self.len * 4 {
            return cx.fail_job(format!("got {} bytes", data.bytes().len()));
        }
        if cx.epoch() >= self.last_epoch {
            cx.end_job();
        } else {
            cx.advance_epoch();
        }
    }
    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        let blob = self.blob.as_ref().expect("task 0 has the blob");
        let t0 = Instant::now();
        cx.reply(BLOB, request, blob);
        let t1 = Instant::now();
        self.times.lock().expect("times").serve.push((t0, t1));
    }
}

/// Per fetch: (fetch -> data_ready, encode time, reply done -> data_ready).
fn framework_p1(epochs: u64) -> Vec<(Duration, Duration, Duration)> {
    let len = P1_BYTES / 4;
    let times: Arc<Mutex<PullTimes>> = Arc::default();
    let t = times.clone();
    let last_epoch = epochs - 1;
    let job = Job::new("bench-p1", 2, Ring { tasks: 2 }, move |_| {
        Box::new(Pull { len, last_epoch, blob: None, times: t.clone() }) as Box<dyn Task>
    })
    .edge(BLOB)
    .limits(Limits::max_bytes(len * 4 + (1 << 20)));
    let result = LocalCluster::new(job).timeout(Duration::from_secs(120)).run().expect("P1 job runs");
    assert_eq!(result.status, JobStatus::Done, "P1 job failed: {result:?}");
    let t = times.lock().expect("times");
    assert_eq!(t.fetch.len(), t.ready.len());
    assert_eq!(t.serve.len(), t.ready.len());
    (0..t.ready.len()).map(|i| (t.ready[i] - t.fetch[i], t.serve[i].1 - t.serve[i].0, t.ready[i] - t.serve[i].1)).collect()
}

/// Raw tokio TCP between two threads: the reader asks with one byte, the
/// writer sends the 64 MiB. `fresh`: read into a new `Vec` each time
/// (allocation and page faults included) instead of a reused buffer.
fn raw_p1(samples: usize, fresh: bool) -> Vec<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let data: Vec<u8> = (0..P1_BYTES / 4).flat_map(|i| (i as f32).to_le_bytes()).collect();
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let (mut s, _) = listener.accept().await.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            while s.read_u8().await.is_ok() {
                s.write_all(&data).await.expect("write");
            }
        });
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let times = rt.block_on(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; P1_BYTES];
        let mut times = Vec::new();
        for i in 0..samples + 1 {
            let t = Instant::now();
            s.write_u8(1).await.expect("ask");
            if fresh {
                let mut b = vec![0u8; P1_BYTES];
                s.read_exact(&mut b).await.expect("read");
                assert_eq!(b[4..8], 1f32.to_le_bytes(), "raw transfer arrived wrong");
            } else {
                s.read_exact(&mut buf).await.expect("read");
                assert_eq!(buf[4..8], 1f32.to_le_bytes(), "raw transfer arrived wrong");
            }
            if i > 0 {
                times.push(t.elapsed());
            }
        }
        times
    });
    drop(rt);
    writer.join().expect("writer thread");
    times
}

// ---------------------------------------------------------------------------
// The table.

struct Row {
    metric: String,
    framework: String,
    baseline: String,
    ratio: String,
    target: String,
    met: &'static str,
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

fn lat(s: Stat) -> String {
    format!("{:.3} ms ({:.3})", ms(s.median), ms(s.p90))
}

fn main() {
    let wall = Instant::now();
    println!("taskgraph runtime benchmark: `cargo bench -p taskgraph-tests --bench runtime`");
    println!(
        "machine: {} cores visible; medians (p90) over pooled samples of {RUNS} runs each, framework and baselines interleaved",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // `BENCH_ONLY=p2|p2b|p1|start` runs one section (for profiling).
    let only = std::env::var("BENCH_ONLY").ok();
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // P2 and P2b.
    for (key, name, size, epochs, warmup) in [("p2", "P2  W1 epoch, S=1", 1usize, 200u64, 5usize), ("p2b", "P2b W1 epoch, S=1M", 1_000_000, 12, 2)] {
        if want(key) {
            let (mut fw, mut pool, mut tpn) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..RUNS {
                fw.extend(diffs(&framework_w1(size, epochs - 1).enters, warmup));
                let (_, stamps) = baseline_w1(Layout::Pool2, size, epochs);
                pool.extend(diffs(&stamps, warmup));
                let (_, stamps) = baseline_w1(Layout::ThreadPerNode, size, epochs);
                tpn.extend(diffs(&stamps, warmup));
            }
            let (fw, pool, tpn) = (stat(&fw), stat(&pool), stat(&tpn));
            let ratio = fw.median.as_secs_f64() / pool.median.as_secs_f64();
            let (target, ok) = if size == 1 {
                ("<= 2x, < 1 ms", ratio <= 2.0 && fw.median < Duration::from_millis(1))
            } else {
                ("<= 1.5x", ratio <= 1.5)
            };
            rows.push(Row {
                metric: name.into(),
                framework: lat(fw),
                baseline: lat(pool),
                ratio: format!("{ratio:.2}x"),
                target: target.into(),
                met: yes(ok),
            });
            rows.push(Row {
                metric: format!("  (info) {name}, thread/node base"),
                framework: lat(fw),
                baseline: lat(tpn),
                ratio: format!("{:.2}x", fw.median.as_secs_f64() / tpn.median.as_secs_f64()),
                target: "-".into(),
                met: "-",
            });
            notes.push(format!(
                "{name}: {} epochs x {RUNS} runs, first {warmup} of each skipped: {} framework / {} / {} baseline samples",
                epochs, fw.n, pool.n, tpn.n
            ));
        }
    }

    // P1.
    if want("p1") {
        let p1_epochs = 6u64;
        let (mut incl, mut enc, mut after, mut raw, mut raw_fresh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..2 {
            for (i, (a, b, c)) in framework_p1(p1_epochs).into_iter().enumerate() {
                if i == 0 {
                    continue; // warm-up: first connection, first page faults
                }
                incl.push(a);
                enc.push(b);
                after.push(c);
            }
            raw.extend(raw_p1(5, false));
            raw_fresh.extend(raw_p1(5, true));
        }
        let excl: Vec<Duration> = incl.iter().zip(&enc).map(|(a, b)| a.saturating_sub(*b)).collect();
        let gbs = |d: Duration| P1_BYTES as f64 / d.as_secs_f64() / 1e9;
        let (incl, enc, after, excl, raw, raw_fresh) = (stat(&incl), stat(&enc), stat(&after), stat(&excl), stat(&raw), stat(&raw_fresh));
        let tput = |s: Stat| format!("{:.2} GB/s ({:.2})", gbs(s.median), gbs(s.p90));
        let p1_ratio = |s: Stat| gbs(s.median) / gbs(raw.median);
        rows.push(Row {
            metric: "P1  64 MiB fetch, incl. encode".into(),
            framework: tput(incl),
            baseline: tput(raw),
            ratio: format!("{:.2}", p1_ratio(incl)),
            target: ">= 0.7 of raw".into(),
            met: yes(p1_ratio(incl) >= 0.7),
        });
        rows.push(Row {
            metric: "P1  64 MiB fetch, excl. encode".into(),
            framework: tput(excl),
            baseline: tput(raw),
            ratio: format!("{:.2}", p1_ratio(excl)),
            target: ">= 0.7 of raw".into(),
            met: yes(p1_ratio(excl) >= 0.7),
        });
        rows.push(Row {
            metric: "  (info) P1 reply -> data_ready".into(),
            framework: tput(after),
            baseline: tput(raw),
            ratio: format!("{:.2}", p1_ratio(after)),
            target: "-".into(),
            met: "-",
        });
        rows.push(Row {
            metric: "  (info) P1 vs raw into fresh Vec".into(),
            framework: tput(excl),
            baseline: tput(raw_fresh),
            ratio: format!("{:.2}", gbs(excl.median) / gbs(raw_fresh.median)),
            target: "-".into(),
            met: "-",
        });
        notes.push(format!(
            "P1: {} framework samples ({} epochs x 2 runs, first of each skipped), {} raw; fetch->data_ready {:.1} ms incl. {:.1} ms encode in `reply`; raw {:.1} ms, raw into a fresh Vec {:.1} ms",
            incl.n,
            p1_epochs,
            raw.n,
            ms(incl.median),
            ms(enc.median),
            ms(raw.median),
            ms(raw_fresh.median)
        ));
    }

    // Time to the first epoch.
    if want("start") {
        let (mut first, mut done, mut whole, mut base_first, mut base_done) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..7 {
            let run = framework_w1(1, 0);
            first.push(run.enters[0] - run.start);
            done.push(run.exit - run.start);
            whole.push(run.total);
            let (start, stamps) = baseline_w1(Layout::Pool2, 1, 1);
            base_first.push(stamps[0] - start);
            base_done.push(stamps[1] - start);
        }
        let (first, done, whole, base_first, base_done) = (stat(&first), stat(&done), stat(&whole), stat(&base_first), stat(&base_done));
        rows.push(Row {
            metric: "start -> enter_epoch(0), 15 tasks".into(),
            framework: lat(first),
            baseline: lat(base_first),
            ratio: format!("{:.2}x", first.median.as_secs_f64() / base_first.median.as_secs_f64()),
            target: "< 0.5 s".into(),
            met: yes(first.median < Duration::from_millis(500)),
        });
        rows.push(Row {
            metric: "  (info) start -> epoch 0 done".into(),
            framework: lat(done),
            baseline: lat(base_done),
            ratio: format!("{:.2}x", done.median.as_secs_f64() / base_done.median.as_secs_f64()),
            target: "-".into(),
            met: "-",
        });
        notes.push(format!(
            "start: 7 runs of W1 with one epoch; 'epoch 0 done' = task 0's exit (framework), end of the root's epoch 0 (baseline); whole run() incl. shutdown {:.1} ms ({:.1})",
            ms(whole.median),
            ms(whole.p90)
        ));
    }

    println!();
    println!("{:<44} {:>24} {:>24} {:>8} {:>15} {:>4}", "metric", "framework median (p90)", "baseline median (p90)", "ratio", "target", "met");
    println!("{}", "-".repeat(124));
    for r in &rows {
        println!("{:<44} {:>24} {:>24} {:>8} {:>15} {:>4}", r.metric, r.framework, r.baseline, r.ratio, r.target, r.met);
    }
    println!();
    println!("baseline: hand-written tokio W1, 15 actors, persistent loopback TCP, length-prefixed f32 frames,");
    println!("          28 request/response exchanges per epoch; ratio against 15 tokio tasks on a 2-worker");
    println!("          multi-thread runtime; the (info) rows use one thread + current-thread runtime per node.");
    println!("framework: LocalCluster, embedded coordinator, taskgraph_examples::regression::Regression wrapped");
    println!("          to time-stamp task 0's enter_epoch; nodes on one thread per core (LocalCluster's default), no spares.");
    for n in &notes {
        println!("note: {n}");
    }
    println!("total bench time: {:.1} s", wall.elapsed().as_secs_f64());
}
