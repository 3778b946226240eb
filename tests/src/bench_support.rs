//! Code shared by the benchmarks `benches/runtime.rs` and
//! `benches/failover.rs`: W1 (15 tasks, binary tree,
//! `taskgraph_examples::regression`) under `LocalCluster` with task 0
//! time-stamped, the hand-written tokio W1 baseline it is compared with,
//! and the small statistics both print.
//!
//! * [`framework_w1`] runs W1 in one process (embedded coordinator, or
//!   the one given) with task 0's `enter_epoch` and `exit` time-stamped,
//!   and checks the job's root values.
//! * [`baseline_w1`] runs the same 28 request/response exchanges per epoch
//!   as 15 actors over persistent loopback TCP (length-prefixed `f32`
//!   frames), either as 15 tokio tasks on a 2-worker multi-thread runtime
//!   ([`Layout::Pool2`]) or one thread with a current-thread runtime per
//!   node ([`Layout::ThreadPerNode`]), and checks the root's values.
//! * [`stat`], [`median`], [`p90`], [`diffs`], [`ms`], [`yes`]: samples
//!   to figures.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskgraph::coord::Coordinator;
use taskgraph::message::Limits;
use taskgraph::prelude::*;
use taskgraph_examples::regression::{self, Grad, Param, ProgressUpdate, Regression, RegressionTasks, Root, RootCx, RootHandlers, Tree, Worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// W1's number of tasks (a binary tree of 15).
pub const TASKS: u64 = 15;

/// The lease TTL W1 asks for, as `regression::job` does.
pub const W1_LEASE_TTL: Duration = Duration::from_millis(300);

/// Time stamps written by one task or actor.
pub type Stamps = Arc<Mutex<Vec<Instant>>>;

// ---------------------------------------------------------------------------
// Statistics.

/// Median, 90th percentile and number of a set of samples.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// The middle sample (the upper one of an even number).
    pub median: Duration,
    /// The sample at index `n * 9 / 10` of the sorted samples.
    pub p90: Duration,
    /// How many samples.
    pub n: usize,
}

/// The [`Stat`] of `samples`; panics if there are none.
pub fn stat(samples: &[Duration]) -> Stat {
    assert!(!samples.is_empty(), "no samples");
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    Stat { median: s[n / 2], p90: s[(n * 9 / 10).min(n - 1)], n }
}

/// The median of `samples` (as [`stat`]).
pub fn median(samples: &[Duration]) -> Duration {
    stat(samples).median
}

/// The 90th percentile of `samples` (as [`stat`]).
pub fn p90(samples: &[Duration]) -> Duration {
    stat(samples).p90
}

/// Consecutive differences, skipping the first `warmup`.
pub fn diffs(stamps: &[Instant], warmup: usize) -> Vec<Duration> {
    stamps.windows(2).map(|w| w[1] - w[0]).skip(warmup).collect()
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "yes" or "NO", for a table's "met" column.
pub fn yes(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

// ---------------------------------------------------------------------------
// The framework: W1 with task 0 timed.

/// Where task 0 writes its time stamps.
#[derive(Clone, Default, Debug)]
pub struct Probe {
    /// Each `enter_epoch`.
    pub enters: Stamps,
    /// `exit` (the job has ended).
    pub exit: Stamps,
}

/// W1's root (the DSL version, `regression::Root`), with its
/// `enter_epoch` and `exit` time-stamped.
#[task(Regression::Root)]
#[derive(Debug)]
struct TimedRoot {
    inner: Root,
    probe: Probe,
}

impl RootHandlers for TimedRoot {
    fn enter_epoch(&mut self, cx: &mut RootCx<'_>, epoch: Epoch) {
        self.probe.enters.lock().expect("stamps").push(Instant::now());
        self.inner.enter_epoch(cx, epoch);
    }
    fn on_grad(&mut self, cx: &mut RootCx<'_>, from: TaskId, grad: Fetched<Grad>) {
        self.inner.on_grad(cx, from, grad);
    }
    fn serve_param(&mut self, cx: &mut RootCx<'_>, to: TaskId) -> Serve<Param> {
        self.inner.serve_param(cx, to)
    }
    fn exit(&mut self, cx: &mut RootCx<'_>) {
        self.probe.exit.lock().expect("stamps").push(Instant::now());
        self.inner.exit(cx);
    }
    fn became_primary(&mut self, cx: &mut RootCx<'_>, term: u64) {
        self.inner.became_primary(cx, term);
    }
    fn became_backup(&mut self, cx: &mut RootCx<'_>) {
        self.inner.became_backup(cx);
    }
    fn apply_update(&mut self, cx: &mut RootCx<'_>, update: ProgressUpdate) {
        self.inner.apply_update(cx, update);
    }
}

/// W1 as `regression::job` builds it (vectors of `size` floats, a
/// [`W1_LEASE_TTL`] lease asked for), named `name`, with task 0 timed
/// into `probe`.
pub fn w1_job(name: &str, size: usize, last_epoch: Epoch, probe: Probe) -> Job {
    let bytes = size * 4 + 1024;
    let mut limits = Limits::default();
    limits.max_bytes = limits.max_bytes.max(bytes * 2);
    let make = RegressionTasks {
        root: move |_| TimedRoot { inner: Root::new(size, last_epoch), probe: probe.clone() },
        worker: move |_| Worker::new(size),
    };
    Regression::job(Tree { tasks: TASKS }, TASKS, make).named(name).limits(limits).lease_ttl(W1_LEASE_TTL)
}

/// What one W1 run under the framework took.
#[derive(Debug)]
pub struct W1Run {
    /// Just before `run()`.
    pub start: Instant,
    /// Task 0's `enter_epoch` calls.
    pub enters: Vec<Instant>,
    /// Task 0's `exit`.
    pub exit: Instant,
    /// The whole `run()`, shutdown included.
    pub total: Duration,
}

/// Runs W1 (job `name`, vectors of `size` floats, epochs 0 to
/// `last_epoch`) under `LocalCluster`, on `coord` or else the embedded
/// coordinator, with task 0 time-stamped. Checks that the job is done,
/// that its root values are right and that task 0 entered each epoch
/// once.
pub fn framework_w1(name: &str, size: usize, last_epoch: Epoch, coord: Option<Arc<dyn Coordinator>>) -> W1Run {
    let probe = Probe::default();
    let mut cluster = LocalCluster::new(w1_job(name, size, last_epoch, probe.clone())).timeout(Duration::from_secs(120));
    if let Some(c) = coord {
        cluster = cluster.coordinator(c);
    }
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

/// How the baseline's 15 nodes are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
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
async fn baseline_node(id: u64, listener: std::net::TcpListener, addrs: Arc<Vec<SocketAddr>>, size: usize, epochs: u64, stamps: Option<Stamps>) -> impl Future<Output = ()> {
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

/// Runs the hand-written W1 (vectors of `size` floats) for `epochs` epochs;
/// returns the start time and the root's epoch start times followed by the
/// end of its last epoch (`epochs + 1` stamps).
pub fn baseline_w1(layout: Layout, size: usize, epochs: u64) -> (Instant, Vec<Instant>) {
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
