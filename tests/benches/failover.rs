//! Failover and the etcd coordinator's epoch latency (`docs/workloads.md` P3,
//! P4-like and P5), on a real etcd.
//!
//! `cargo bench -p taskgraph-tests --bench failover`
//!
//! * **P4-like, SIGKILL** (without hot backups: a spare takes the task over
//!   and redoes the epoch): W1 as node processes (`w1-node`, 15 tasks + 2
//!   spares, supervised by `taskgraph::launch::Launch`) on a real etcd
//!   (`taskgraph_tests::etcd::EtcdServer`: 10 ms heartbeat, 50 ms election
//!   timeout, so leases can be 1 s). At a steady state the bench SIGKILLs
//!   the primary node of one task (a leaf, an inner task or the root, in
//!   turn) and measures, through etcd watches, the time from the kill until
//!   (a) the old primary key is deleted, (b) another node has re-created it
//!   (the takeover), (c) the job's epoch advances for the first time after
//!   the takeover (in revision order): the first epoch completed with the
//!   replacement's answers.
//! * **Hot standby**: the same SIGKILL and SIGSTOP trials with two nodes
//!   per task (`--replicas 2`): a hot backup takes the task over, state
//!   and all (issue 6's target: SIGKILL to serving again, median under
//!   300 ms).
//! * **P5, SIGSTOP**: the same with a frozen primary (its sockets stay
//!   open, so only its lease's expiry frees the task); compared with the
//!   lease TTL etcd actually granted (read back from etcd). The node is
//!   sent SIGCONT afterwards, finds it lost its term and steps down.
//! * **P3**: W1 at S = 1, in one process (`LocalCluster`) on the etcd
//!   coordinator, task 0's `enter_epoch` time-stamped, 200 epochs, against
//!   the hand-written tokio W1 of `benches/runtime.rs` (both from
//!   `taskgraph_tests::bench_support`) measured in the same run; the
//!   embedded coordinator for reference.
//!
//! This is a benchmark, not a test: it prints figures and checks no
//! timing. It checks the jobs' results (a wrong result is a bug, and its
//! timings would mean nothing) and that no node process is left behind.
//! The node processes' stderr goes to a temporary file (summarised at the
//! end), so that their warnings do not break up the table.

// The framework, the baseline and the node processes run under the
// allocator taskgraph's binaries use (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskgraph::coord::{Coordinator, Event, Expect, KeyValue};
use taskgraph::keys::{Holder, Keys};
use taskgraph::launch::{Launch, LaunchReport, Processes};
use taskgraph::prelude::*;
use taskgraph_tests::bench_support::{baseline_w1, diffs, framework_w1, median, ms, p90, yes, Layout, TASKS, W1_LEASE_TTL};
use taskgraph_tests::etcd::{etcd_binary, EtcdServer};

const SPARES: usize = 2;
/// The process job's name in etcd.
const JOB: &str = "failover";
/// SIGKILL trials per kind of task (leaf, inner, root).
const KILL_TRIALS: usize = 10;
/// SIGSTOP trials (leaf, inner and root in turn).
const STOP_TRIALS: usize = 6;
/// P3: epochs per run, runs, epochs skipped at the start of each run.
const P3_EPOCHS: u64 = 200;
const P3_RUNS: usize = 3;
const P3_WARMUP: usize = 5;
/// What the job asks for (`regression::job`); etcd rounds it up.
const REQUESTED_TTL: Duration = W1_LEASE_TTL;
/// etcd's lessor looks for expired leases on this fixed period.
const ETCD_EXPIRY_SCAN: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------
// Statistics (more in `taskgraph_tests::bench_support`).

fn worst(samples: &[Duration]) -> Duration {
    samples.iter().copied().max().expect("samples")
}

/// "median / worst" in ms.
fn mw(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    format!("{:.0} / {:.0}", ms(median(samples)), ms(worst(samples)))
}

/// A small deterministic generator (xorshift) for the kill's phase.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------
// P3: W1 in one process, task 0 timed, against the hand-written tokio W1
// (the 2-worker multi-thread layout), at S = 1, as in benches/runtime.rs.

/// Runs W1 at S = 1 under `LocalCluster` (on `coord`, or the embedded
/// coordinator); task 0's epoch-to-epoch times.
fn p3_framework(coord: Option<Arc<dyn Coordinator>>, last_epoch: Epoch) -> Vec<Duration> {
    let name = if coord.is_some() { "p3-etcd" } else { "p3-embedded" };
    diffs(&framework_w1(name, 1, last_epoch, coord).enters, P3_WARMUP)
}

/// Runs the hand-written W1 (15 tokio tasks, 2 worker threads) at S = 1
/// for `epochs` epochs; the root's epoch-to-epoch times.
fn p3_baseline(epochs: u64) -> Vec<Duration> {
    let (_, mut stamps) = baseline_w1(Layout::Pool2, 1, epochs);
    // The last stamp ends the last epoch: P3 times epoch starts only.
    stamps.pop();
    diffs(&stamps, P3_WARMUP)
}

// ---------------------------------------------------------------------------
// The node program.

/// `target/<profile>/w1-node`: cargo builds it for a bench of this package
/// (and says where); otherwise it is looked for next to this bench's
/// executable (`target/<profile>/deps/failover-*`) and built if missing.
fn w1_node() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_w1-node").map(PathBuf::from).filter(|p| p.is_file()) {
        return p;
    }
    let exe = std::env::current_exe().expect("the bench's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<bench>");
    let node = profile_dir.join("w1-node");
    if !node.is_file() {
        println!("building w1-node ({} is missing)", node.display());
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "taskgraph-tests", "--bins"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build w1-node");
    }
    assert!(node.is_file(), "no w1-node at {}", node.display());
    node
}

// ---------------------------------------------------------------------------
// The process job and its keys.

fn keys() -> Keys {
    Keys::new(JOB)
}

fn node_of(kv: &KeyValue) -> Option<u64> {
    Holder::parse(&kv.value).map(|h| h.node)
}

fn epoch_of(kv: &KeyValue) -> u64 {
    String::from_utf8_lossy(&kv.value).parse().unwrap_or(0)
}

async fn epoch_now(coord: &dyn Coordinator) -> u64 {
    coord.get(&keys().epoch()).await.expect("etcd answers").as_ref().map_or(0, epoch_of)
}

/// Waits until the job is at a steady state: 17 live node processes, each
/// registered in etcd and nothing else registered (a dead node's lease has
/// expired), every task held by a live node, and 10 epochs done since.
async fn steady(coord: &dyn Coordinator, processes: &Processes, replicas: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut since: Option<u64> = None;
    loop {
        let live: BTreeSet<u64> = processes.pids_by_node().into_iter().map(|(n, _)| n).collect();
        let keys = keys();
        let (nodes, _) = coord.get_prefix(&keys.nodes()).await.expect("etcd answers");
        let registered: BTreeSet<u64> = nodes.iter().filter_map(|kv| keys.node_id(&kv.key)).collect();
        let (tasks, _) = coord.get_prefix(&keys.tasks()).await.expect("etcd answers");
        let holders: Vec<u64> = tasks.iter().filter(|kv| keys.primary_task(&kv.key).is_some()).filter_map(node_of).collect();
        let backups: Vec<u64> = tasks.iter().filter(|kv| keys.backup_slot(&kv.key).is_some()).filter_map(node_of).collect();
        let epoch = epoch_now(coord).await;
        let ok = live.len() == TASKS as usize * replicas as usize + SPARES
            && backups.len() == TASKS as usize * (replicas as usize - 1)
            && backups.iter().all(|n| live.contains(n))
            && registered == live
            && holders.len() == TASKS as usize
            && holders.iter().all(|n| live.contains(n));
        match (ok, since) {
            (false, _) => since = None,
            (true, None) => since = Some(epoch),
            (true, Some(e)) if epoch >= e + 10 => return,
            (true, Some(_)) => {}
        }
        assert!(
            Instant::now() < deadline,
            "no steady state within 60 s: live {live:?}, registered {registered:?}, holders {holders:?}, epoch {epoch}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ends the process job (as `taskgraph stop` does).
async fn stop_job(coord: &dyn Coordinator) {
    let over = JobStatus::Failed("the bench is over".into()).encode();
    let _ = coord.compare_and_swap(&keys().status(), Expect::Value(JobStatus::Running.encode()), &over, None).await;
}

/// Sends `sig` (`-STOP`, `-CONT`) to `pid` with kill(1).
fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The TTL etcd granted lease `id`, in seconds, read back from etcd
/// (`/v3/lease/timetolive` of its JSON gateway).
fn granted_ttl(endpoint: &str, id: i64) -> Option<i64> {
    let port: u16 = endpoint.rsplit(':').next()?.parse().ok()?;
    let body = format!(r#"{{"ID":{id}}}"#);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "POST /v3/lease/timetolive HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let rest = &response[response.find("\"grantedTTL\":")? + "\"grantedTTL\":".len()..];
    rest.trim_start_matches('"').split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Leaf,
    Inner,
    Root,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Leaf => "leaf",
            Kind::Inner => "inner",
            Kind::Root => "root",
        }
    }

    /// The `i`-th task of this kind, in turn (W1's binary tree of 15).
    fn task(self, i: usize) -> TaskId {
        match self {
            Kind::Leaf => 7 + (i as u64 % 8),
            Kind::Inner => 1 + (i as u64 % 6),
            Kind::Root => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Kill,
    Stop,
}

/// One failover, timed from the signal.
#[derive(Clone, Debug)]
struct Trial {
    kind: Kind,
    task: TaskId,
    /// The old primary key's deletion (eviction or lease expiry).
    deleted: Duration,
    /// Deleted with the old node's lease (expiry), not evicted alone.
    expired: bool,
    /// Another node created the key.
    takeover: Duration,
    /// The first epoch advance after the takeover.
    advance: Duration,
    /// The epoch when the signal went, and the one the replacement redid.
    epoch_at_signal: u64,
    epoch_redone: u64,
    /// Lease TTL etcd granted the old primary (s).
    granted_ttl: Option<i64>,
}

/// Signals task `t`'s primary node (SIGKILL or SIGSTOP) and times, through
/// watches opened before, the old key's deletion, its re-creation by
/// another node, and the first epoch advance after that.
async fn trial(coord: &dyn Coordinator, endpoint: &str, processes: &Processes, kind: Kind, t: TaskId, how: How, stopped: &Mutex<Vec<u32>>) -> Trial {
    let primary_key = keys().primary(t);
    let old = coord.get(&primary_key).await.expect("etcd answers").expect("the task has a primary");
    let old_node = node_of(&old).expect("a primary value names its node");
    let node_key = keys().node(old_node);
    let pid = processes.pids_by_node().into_iter().find(|(n, _)| *n == old_node).expect("the primary's process").1;
    let granted = old.lease.and_then(|id| granted_ttl(endpoint, id));
    let mut primary_watch = coord.watch(&primary_key, 0).await.expect("a watch");
    let mut node_watch = coord.watch(&node_key, 0).await.expect("a watch");
    let mut epoch_watch = coord.watch(&keys().epoch(), 0).await.expect("a watch");
    let epoch_at_signal = epoch_now(coord).await;

    let t0 = Instant::now();
    match how {
        How::Kill => assert!(processes.kill(pid), "SIGKILL {pid}"),
        How::Stop => {
            stopped.lock().expect("stopped").push(pid);
            assert!(signal(pid, "-STOP"), "SIGSTOP {pid}");
        }
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut deleted: Option<(Instant, i64)> = None;
    let mut node_deleted_rev: Option<i64> = None;
    let mut took: Option<(Instant, i64)> = None;
    // (arrival, revision, value) of every epoch change since the signal.
    let mut epochs: Vec<(Instant, i64, u64)> = Vec::new();
    let (takeover, advance, takeover_rev) = loop {
        if let Some((at, rev)) = took {
            if let Some(&(adv, _, _)) = epochs.iter().find(|(_, r, _)| *r > rev) {
                break (at, adv, rev);
            }
        }
        tokio::select! {
            ev = primary_watch.next() => match ev {
                Some(Ok(Event::Delete { key, revision })) if key == primary_key => {
                    deleted.get_or_insert((Instant::now(), revision));
                }
                Some(Ok(Event::Put(kv))) if kv.key == primary_key && kv.create_revision > old.create_revision && took.is_none() => {
                    took = Some((Instant::now(), kv.create_revision));
                }
                Some(Ok(_)) => {}
                other => panic!("the primary watch ended: {other:?}"),
            },
            ev = node_watch.next() => match ev {
                Some(Ok(Event::Delete { key, revision })) if key == node_key => {
                    node_deleted_rev.get_or_insert(revision);
                }
                Some(Ok(_)) => {}
                other => panic!("the node watch ended: {other:?}"),
            },
            ev = epoch_watch.next() => match ev {
                Some(Ok(Event::Put(kv))) if kv.key == keys().epoch() => epochs.push((Instant::now(), kv.mod_revision, epoch_of(&kv))),
                Some(Ok(_)) => {}
                other => panic!("the epoch watch ended: {other:?}"),
            },
            _ = tokio::time::sleep_until(deadline) => panic!(
                "task {t} ({}) not taken over within 30 s of {how:?}: deleted {deleted:?}, took {took:?}, {} epoch changes",
                kind.name(),
                epochs.len()
            ),
        }
    };
    // Lease expiry deletes the old node's keys in one revision; an
    // eviction deletes the primary key alone (the node key goes later,
    // with the lease). Wait (bounded) for the node key's deletion to tell.
    let until = tokio::time::Instant::from_std(t0 + Duration::from_secs(5));
    while node_deleted_rev.is_none() {
        match tokio::time::timeout_at(until, node_watch.next()).await {
            Ok(Some(Ok(Event::Delete { key, revision }))) if key == node_key => node_deleted_rev = Some(revision),
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let (deleted_at, deleted_rev) = deleted.expect("deleted before re-created");
    let epoch_redone = epochs.iter().rev().find(|(_, r, _)| *r < takeover_rev).map_or(epoch_at_signal, |e| e.2);
    Trial {
        kind,
        task: t,
        deleted: deleted_at - t0,
        expired: node_deleted_rev == Some(deleted_rev),
        takeover: takeover - t0,
        advance: advance - t0,
        epoch_at_signal,
        epoch_redone,
        granted_ttl: granted,
    }
}

/// Wakes a stopped node and waits (bounded) until it has stepped down
/// and exited.
async fn wake(pid: u32, processes: &Processes, stopped: &Mutex<Vec<u32>>) -> Duration {
    let t = Instant::now();
    assert!(signal(pid, "-CONT"), "SIGCONT {pid}");
    stopped.lock().expect("stopped").retain(|p| *p != pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes.pids().contains(&pid) {
        assert!(Instant::now() < deadline, "the woken old primary (pid {pid}) did not step down within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

/// Median latencies of the etcd operations on an epoch's critical path,
/// through the `Etcd` coordinator: put (a record), compare-and-swap (the
/// epoch), and put -> the event at a watch of the key.
fn etcd_ops(coord: &Arc<dyn Coordinator>) -> (Duration, Duration, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        let (mut put, mut cas, mut notify) = (Vec::new(), Vec::new(), Vec::new());
        coord.put("/bench-ops/epoch", b"0", None).await.expect("put");
        let mut w = coord.watch("/bench-ops/watched", 0).await.expect("a watch");
        for i in 0..200u64 {
            let t = Instant::now();
            coord.put("/bench-ops/record", i.to_string().as_bytes(), None).await.expect("put");
            put.push(t.elapsed());
            let t = Instant::now();
            let done = coord
                .compare_and_swap("/bench-ops/epoch", Expect::Value(i.to_string().into_bytes()), (i + 1).to_string().as_bytes(), None)
                .await
                .expect("cas");
            assert!(done.is_ok(), "the CAS matches");
            cas.push(t.elapsed());
            let t = Instant::now();
            coord.put("/bench-ops/watched", b"x", None).await.expect("put");
            let ev = w.next().await;
            assert!(matches!(ev, Some(Ok(Event::Put(_)))), "{ev:?}");
            notify.push(t.elapsed());
        }
        coord.delete_prefix("/bench-ops/").await.expect("delete");
        let skip = |v: Vec<Duration>| median(&v[20..]);
        (skip(put), skip(cas), skip(notify))
    })
}

/// What the process part measured.
struct Failovers {
    kills: Vec<Trial>,
    stops: Vec<Trial>,
    /// SIGCONT -> the woken node's process exited.
    step_down: Vec<Duration>,
    report: LaunchReport,
    recorded: usize,
    leftovers: Vec<u32>,
    epochs_per_s: f64,
}

/// Runs W1 as node processes and fails its primaries, one at a time.
fn failovers(etcd: &EtcdServer, node_log: &Path, replicas: u32) -> Failovers {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    // `sh -c 'exec "$0" "$@" 2>>log' w1-node args..`: the node process
    // (same pid, after exec) with its stderr in the log.
    let script = format!("exec \"$0\" \"$@\" 2>>'{}'", node_log.display());
    let args: Vec<OsString> = vec![
        "-c".into(),
        script.into(),
        w1_node().into(),
        "--epochs".into(),
        "100000000".into(),
        "--replicas".into(),
        replicas.to_string().into(),
    ];
    let launch =
        Launch::new("/bin/sh", args, etcd.endpoint(), JOB, TASKS).replicas(replicas).spares(SPARES).timeout(Duration::from_secs(600));
    let processes = launch.processes();
    let runner = {
        let coord = coord.clone();
        std::thread::spawn(move || launch.run(coord).expect("the launch runs"))
    };
    let stopped: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    let endpoint = etcd.endpoint();

    let measured = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let c = &*coord;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
            steady(c, &processes, replicas).await;
            let (e0, t0) = (epoch_now(c).await, Instant::now());
            tokio::time::sleep(Duration::from_millis(500)).await;
            let epochs_per_s = (epoch_now(c).await - e0) as f64 / t0.elapsed().as_secs_f64();
            let mut kills = Vec::new();
            for i in 0..KILL_TRIALS {
                for kind in [Kind::Leaf, Kind::Inner, Kind::Root] {
                    steady(c, &processes, replicas).await;
                    // A random phase against etcd's 500 ms expiry scan (steady()
                    // often returns just after one: a dead node's lease went).
                    tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
                    kills.push(trial(c, &endpoint, &processes, kind, kind.task(i), How::Kill, &stopped).await);
                }
            }
            let (mut stops, mut step_down) = (Vec::new(), Vec::new());
            for i in 0..STOP_TRIALS {
                let kind = [Kind::Leaf, Kind::Inner, Kind::Root][i % 3];
                steady(c, &processes, replicas).await;
                // A random phase against etcd's 500 ms expiry scan (steady()
                    // often returns just after one: a dead node's lease went).
                    tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
                let t = trial(c, &endpoint, &processes, kind, kind.task(i / 3), How::Stop, &stopped).await;
                let woken = *stopped.lock().expect("stopped").last().expect("the stopped pid");
                step_down.push(wake(woken, &processes, &stopped).await);
                stops.push(t);
            }
            (kills, stops, step_down, epochs_per_s)
        })
    }));

    // Whatever happened: wake anything still stopped, end the job, and
    // make sure every node process is gone.
    for pid in std::mem::take(&mut *stopped.lock().expect("stopped")) {
        if processes.pids().contains(&pid) {
            signal(pid, "-CONT");
        }
    }
    rt.block_on(stop_job(&*coord));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes.pids().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    processes.kill_all();
    let report = runner.join().expect("the launcher thread");
    let leftovers: Vec<u32> = processes.all_started().into_iter().filter(|&p| alive(p)).collect();
    let (kills, stops, step_down, epochs_per_s) = match measured {
        Ok(m) => m,
        Err(panic) => std::panic::resume_unwind(panic),
    };

    // The job's values are W1's, every epoch, across all the failovers.
    let (records, _) = rt.block_on(coord.get_prefix(&keys().record("root/"))).expect("records");
    for (i, kv) in records.iter().enumerate() {
        let e: u64 = kv.key.rsplit('/').next().and_then(|e| e.parse().ok()).expect("an epoch");
        assert_eq!(e, i as u64, "epochs recorded with a gap");
        assert_eq!(String::from_utf8_lossy(&kv.value), (105 * e).to_string(), "epoch {e}'s value");
    }
    Failovers { kills, stops, step_down, report, recorded: records.len(), leftovers, epochs_per_s }
}

// ---------------------------------------------------------------------------

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn main() {
    let wall = Instant::now();
    println!("taskgraph failover benchmark: `cargo bench -p taskgraph-tests --bench failover`");
    println!("command line: {}", std::env::args().collect::<Vec<_>>().join(" "));
    let etcd_version = Command::new(etcd_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("?").to_owned())
        .unwrap_or_else(|e| format!("? ({e})"));
    println!(
        "machine: {} cores visible; {etcd_version}; etcd flags: --heartbeat-interval=10 --election-timeout=50 --unsafe-no-fsync",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let etcd = EtcdServer::start();

    // P3 first, on a quiet etcd.
    let p3_coord: Arc<dyn Coordinator> = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Arc::new(rt.block_on(etcd.connect()))
    };
    let (mut on_etcd, mut embedded, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..P3_RUNS {
        on_etcd.extend(p3_framework(Some(p3_coord.clone()), P3_EPOCHS - 1));
        base.extend(p3_baseline(P3_EPOCHS));
        embedded.extend(p3_framework(None, P3_EPOCHS - 1));
    }
    let (op_put, op_cas, op_notify) = etcd_ops(&p3_coord);
    drop(p3_coord);

    println!("node program: {}", w1_node().display());
    let node_log = std::env::temp_dir().join(format!("taskgraph-failover-bench-{}.log", std::process::id()));
    let f = failovers(&etcd, &node_log, 1);
    let h = failovers(&etcd, &node_log, 2);
    drop(etcd);
    let etcd_gone = true;

    let ttls: BTreeSet<i64> = f.kills.iter().chain(&f.stops).filter_map(|t| t.granted_ttl).collect();
    let ttl_s = ttls.iter().next().copied();
    let ttl = Duration::from_secs(ttl_s.unwrap_or(1).max(0) as u64);

    println!();
    println!("== P3: W1 epoch latency, S = 1, in one process (LocalCluster), task 0's enter_epoch to enter_epoch");
    println!("   {P3_EPOCHS} epochs x {P3_RUNS} runs, first {P3_WARMUP} of each skipped; runs interleaved");
    println!("{:<40} {:>20} {:>22} {:>8} {:>8} {:>4}", "", "median (p90) ms", "baseline median (p90)", "ratio", "target", "met");
    let base_m = median(&base);
    for (name, s, target) in [("taskgraph on etcd (P3)", &on_etcd, Some(4.0)), ("taskgraph, embedded coordinator (P2)", &embedded, Some(2.0))] {
        let ratio = median(s).as_secs_f64() / base_m.as_secs_f64();
        println!(
            "{:<40} {:>20} {:>22} {:>7.2}x {:>8} {:>4}",
            name,
            format!("{:.3} ({:.3})", ms(median(s)), ms(p90(s))),
            format!("{:.3} ({:.3})", ms(base_m), ms(p90(&base))),
            ratio,
            target.map_or("-".into(), |t| format!("<= {t}x")),
            target.map_or("-", |t| yes(ratio <= t)),
        );
    }
    println!("   baseline: hand-written tokio W1, 15 actors on a 2-worker runtime, persistent loopback TCP (benches/runtime.rs)");
    println!(
        "   (info) etcd ops through the coordinator, median of 180: put {:.3} ms, CAS {:.3} ms, put -> watch event {:.3} ms;",
        ms(op_put),
        ms(op_cas),
        ms(op_notify)
    );
    println!(
        "          etcd - embedded = {:.3} ms per epoch, ~ the root's record-and-advance transaction + the epoch's watch fan-out, in series",
        ms(median(&on_etcd).saturating_sub(median(&embedded)))
    );

    println!();
    println!("== P4-like: SIGKILL of a task's primary node (no hot backup: a spare takes over and redoes the epoch)");
    println!(
        "   W1 as {} w1-node processes ({TASKS} tasks + {SPARES} spares) on etcd, ~{:.0} epochs/s at steady state; {KILL_TRIALS} kills per kind",
        TASKS as usize + SPARES,
        f.epochs_per_s
    );
    println!("   times from the kill, ms, median / worst");
    println!(
        "{:<8} {:>3} {:>18} {:>16} {:>22} {:>22}",
        "tasks", "n", "old key deleted", "new primary", "epoch advance (redo)", "deleted by / tasks"
    );
    type Pick = fn(&Trial) -> bool;
    let groups: [(&str, Pick); 6] = [
        ("leaf", |t| t.kind == Kind::Leaf),
        ("inner", |t| t.kind == Kind::Inner),
        ("root", |t| t.kind == Kind::Root),
        ("all", |_| true),
        ("evicted", |t| !t.expired),
        ("expired", |t| t.expired),
    ];
    for (name, pick) in groups {
        let sel: Vec<&Trial> = f.kills.iter().filter(|t| pick(t)).collect();
        if sel.is_empty() {
            continue;
        }
        let col = |f: fn(&Trial) -> Duration| mw(&sel.iter().map(|t| f(t)).collect::<Vec<_>>());
        let expired = sel.iter().filter(|t| t.expired).count();
        let kinds = |k: Kind| sel.iter().filter(|t| t.kind == k).count();
        println!(
            "{:<8} {:>3} {:>18} {:>16} {:>22} {:>22}",
            name,
            sel.len(),
            col(|t| t.deleted),
            col(|t| t.takeover),
            col(|t| t.advance),
            if name == "evicted" || name == "expired" {
                format!("{} leaf {} inner {} root", kinds(Kind::Leaf), kinds(Kind::Inner), kinds(Kind::Root))
            } else {
                format!("{} evicted, {} expired", sel.len() - expired, expired)
            },
        );
    }
    let by_kind = |k: Kind| median(&f.kills.iter().filter(|t| t.kind == k).map(|t| t.advance).collect::<Vec<_>>());
    let (leaf, inner, root) = (by_kind(Kind::Leaf), by_kind(Kind::Inner), by_kind(Kind::Root));
    let limit = Duration::from_millis(300);
    println!(
        "   P4 target (it is for a hot backup, below): kill -> next response, median < 300 ms; here, with spares, kill -> epoch advance,"
    );
    println!(
        "   median by kind: leaf {:.0} ms {}, inner {:.0} ms {}, root {:.0} ms {}",
        ms(leaf),
        yes(leaf < limit),
        ms(inner),
        yes(inner < limit),
        ms(root),
        yes(root < limit)
    );
    println!("   Ray 2.60 peer figure (docs/workloads.md): kill -> epoch complete 0.45-1.1 s, median ~0.75 s");

    println!();
    println!("== P5: SIGSTOP of a task's primary node (silent failure; its sockets stay open, only its lease can free the task)");
    println!(
        "   lease TTL: the job asks {} ms, etcd granted {} (minimum 1 s with these flags); expiry scan every {} ms",
        REQUESTED_TTL.as_millis(),
        match ttl_s {
            Some(s) => format!("{s} s (read back from etcd{})", if ttls.len() > 1 { format!(", values seen {ttls:?}") } else { String::new() }),
            None => "? (could not read it back; assuming 1 s)".into(),
        },
        ETCD_EXPIRY_SCAN.as_millis()
    );
    println!("   times from the SIGSTOP, ms");
    println!(
        "{:<6} {:>5} {:>10} {:>16} {:>12} {:>14} {:>22}",
        "trial", "task", "deleted", "new primary", "epoch adv.", "deleted by", "epoch at stop / redone"
    );
    for (i, t) in f.stops.iter().enumerate() {
        println!(
            "{:<6} {:>5} {:>10.0} {:>16.0} {:>12.0} {:>14} {:>22}",
            i + 1,
            format!("{}{}", t.kind.name().chars().next().unwrap_or('?'), t.task),
            ms(t.deleted),
            ms(t.takeover),
            ms(t.advance),
            if t.expired { "lease expiry" } else { "eviction" },
            format!("{} / {}", t.epoch_at_signal, t.epoch_redone)
        );
    }
    let take: Vec<Duration> = f.stops.iter().map(|t| t.takeover).collect();
    let adv: Vec<Duration> = f.stops.iter().map(|t| t.advance).collect();
    let bound = ttl + ETCD_EXPIRY_SCAN;
    println!("{:<44} {:>16} {:>16} {:>4}", "P5", "median / worst", "target", "met");
    println!(
        "{:<44} {:>16} {:>16} {:>4}",
        "SIGSTOP -> new primary (takeover)",
        mw(&take),
        format!("<= {:.0} ms", ms(bound)),
        yes(worst(&take) <= bound)
    );
    println!(
        "{:<44} {:>16} {:>16} {:>4}",
        "SIGSTOP -> epoch advance with the replacement",
        mw(&adv),
        format!("<= {:.0} ms", ms(bound)),
        yes(worst(&adv) <= bound)
    );
    println!("{:<44} {:>16}", "  (info) SIGCONT -> old primary exited", mw(&f.step_down));
    println!(
        "   ratio to the granted TTL: takeover median {:.2}x, worst {:.2}x",
        median(&take).as_secs_f64() / ttl.as_secs_f64(),
        worst(&take).as_secs_f64() / ttl.as_secs_f64()
    );

    println!();
    println!("== Hot standby (issue 6): the same W1 with 2 nodes per task (a primary and a hot backup) + {SPARES} spares");
    println!(
        "   {} w1-node processes, ~{:.0} epochs/s at steady state; {KILL_TRIALS} SIGKILLs per kind, {STOP_TRIALS} SIGSTOPs; times ms, median / worst",
        TASKS as usize * 2 + SPARES,
        h.epochs_per_s
    );
    println!("{:<8} {:>3} {:>18} {:>16} {:>22}", "tasks", "n", "old key deleted", "new primary", "epoch advance");
    for (name, pick) in groups {
        let sel: Vec<&Trial> = h.kills.iter().filter(|t| pick(t)).collect();
        if sel.is_empty() {
            continue;
        }
        let col = |f: fn(&Trial) -> Duration| mw(&sel.iter().map(|t| f(t)).collect::<Vec<_>>());
        println!("{:<8} {:>3} {:>18} {:>16} {:>22}", name, sel.len(), col(|t| t.deleted), col(|t| t.takeover), col(|t| t.advance));
    }
    let hot_take: Vec<Duration> = h.kills.iter().map(|t| t.takeover).collect();
    let hot_adv: Vec<Duration> = h.kills.iter().map(|t| t.advance).collect();
    println!("{:<52} {:>16} {:>16} {:>4}", "", "median / worst", "target", "met");
    println!(
        "{:<52} {:>16} {:>16} {:>4}",
        "SIGKILL -> the backup is the new primary",
        mw(&hot_take),
        "median < 300 ms",
        yes(median(&hot_take) < limit)
    );
    println!(
        "{:<52} {:>16} {:>16} {:>4}",
        "SIGKILL -> epoch advance (new primary has served)",
        mw(&hot_adv),
        "median < 300 ms",
        yes(median(&hot_adv) < limit)
    );
    let hot_stop: Vec<Duration> = h.stops.iter().map(|t| t.takeover).collect();
    println!(
        "{:<52} {:>16} {:>16} {:>4}",
        "SIGSTOP -> the backup is the new primary",
        mw(&hot_stop),
        format!("<= {:.0} ms", ms(bound)),
        yes(worst(&hot_stop) <= bound)
    );
    println!("{:<52} {:>16}", "  (info) SIGCONT -> old primary exited", mw(&h.step_down));
    println!(
        "   job: {} node processes started, {} died and were replaced, status {:?}; root values exact for {} epochs",
        h.report.started, h.report.died, h.report.status, h.recorded
    );

    println!();
    println!("notes:");
    println!("  'old key deleted': the watch saw the old primary key go: 'expired' = in the same revision as the old");
    println!("     node's registration key (its lease ended), 'evicted' = alone (a requester's compare-and-delete after");
    println!("     its connection to the dead address was refused). 'new primary': a spare or a backup created the key (new term).");
    println!("  'epoch advance (redo)': the first change of the job's epoch after the takeover in etcd's revision order,");
    println!("     i.e. the first epoch completed with the replacement's answers. Watch delivery adds ~0.3 ms.");
    println!("  SIGKILL is sent with kill(2) right after the start stamp; SIGSTOP/SIGCONT run kill(1) (~1-2 ms included).");
    println!(
        "  process job: {} node processes started, {} died and were replaced, status {:?}; root values exact for {} epochs",
        f.report.started, f.report.died, f.report.status, f.recorded
    );
    let log = std::fs::read_to_string(&node_log).unwrap_or_default();
    let lines: Vec<String> = log.lines().map(strip_ansi).collect();
    let warns = lines.iter().filter(|l| l.contains(" WARN ")).count();
    let errors = lines.iter().filter(|l| l.contains(" ERROR ")).count();
    println!("  node processes' stderr: {} lines ({warns} WARN, {errors} ERROR); the last 3:", lines.len());
    for l in lines.iter().rev().take(3).rev() {
        println!("     {}", l.chars().take(150).collect::<String>());
    }
    let _ = std::fs::remove_file(&node_log);
    println!(
        "  leftover node processes: {}; etcd stopped: {}",
        if f.leftovers.is_empty() { "none".to_string() } else { format!("{:?}", f.leftovers) },
        etcd_gone
    );
    println!("total bench time: {:.1} s", wall.elapsed().as_secs_f64());
    assert!(f.leftovers.is_empty(), "node processes left running: {:?}", f.leftovers);
    assert!(h.leftovers.is_empty(), "node processes left running: {:?}", h.leftovers);
}
