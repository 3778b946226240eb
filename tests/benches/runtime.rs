//! The runtime's performance targets of `docs/workloads.md` (P1, P2, P2b and the
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
//!   Both W1 programs are in `taskgraph_tests::bench_support`, shared with
//!   `benches/failover.rs`.
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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskgraph::message::Limits;
use taskgraph::prelude::*;
use taskgraph_tests::bench_support::{baseline_w1, diffs, framework_w1, ms, stat, yes, Layout, Stat};
use taskgraph_tests::jobs::{Blob, Ring, BLOB};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RUNS: usize = 3;
const P1_BYTES: usize = 64 << 20;

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
                fw.extend(diffs(&framework_w1("bench", size, epochs - 1, None).enters, warmup));
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
            let run = framework_w1("bench", 1, 0, None);
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
    println!("framework: LocalCluster, embedded coordinator, taskgraph_examples::regression (the DSL version), its Root wrapped");
    println!("          to time-stamp task 0's enter_epoch; nodes on one thread per core (LocalCluster's default), no spares.");
    for n in &notes {
        println!("note: {n}");
    }
    println!("total bench time: {:.1} s", wall.elapsed().as_secs_f64());
}
