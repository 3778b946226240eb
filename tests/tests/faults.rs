//! Faults that used to break jobs: a paused coordinator (every lease lapses
//! at once), a task left without any node, many kills with hot backups.
//! Real etcd and real node processes where the fault is about them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskgraph::coord::{Coordinator, Embedded, Expect};
use taskgraph::keys::Keys;
use taskgraph::launch::Launch;
use taskgraph::prelude::*;
use taskgraph::{JobStatus, NodeExit, NodeOptions};
use taskgraph_tests::chaos;
use taskgraph_tests::etcd::EtcdServer;
use taskgraph_tests::jobs;
use taskgraph_tests::wait::{epoch_of, epoch_reaches, keys_until};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

/// A paused etcd (SIGSTOP for longer than every lease's TTL, then
/// SIGCONT) lets every lease lapse at once. Every node takes its keys
/// again (new lease, new term, state kept): no node process dies, no task
/// loses its progress, the values stay exact.
#[test]
fn an_etcd_pause_past_every_lease_loses_no_node_and_no_state() {
    // Built first: building it while the job runs would hold the test up.
    let taskgraph = taskgraph_tests::bins::taskgraph_binary();
    let etcd = EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let job = "pause";
    let args = ["--epochs", "100000000", "--replicas", "2", "--size", "100"].iter().map(Into::into).collect();
    let launch = Launch::new(env!("CARGO_BIN_EXE_w1-node"), args, etcd.endpoint(), job, 15)
        .replicas(2)
        .spares(1)
        .timeout(Duration::from_secs(120));
    let c = coord.clone();
    let runner = std::thread::spawn(move || launch.run(c).expect("the launch runs"));
    let pid = etcd.pid().unwrap();
    rt.block_on(async {
        epoch_reaches(&*coord, job, 5).await;
        // Every backup has caught up before the pause (their keys say so).
        let keys = Keys::new(job);
        keys_until(&*coord, &keys.tasks(), Duration::from_secs(20), |kvs| {
            let ready = |kv: &&taskgraph::coord::KeyValue| taskgraph::keys::Holder::parse(&kv.value).is_some_and(|h| h.ready);
            kvs.iter().filter(|kv| keys.backup_slot(&kv.key).is_some()).filter(ready).count() == 15
        })
        .await;
        // `taskgraph status` shows them so.
        let out = Command::new(&taskgraph)
            .args(["status", "--etcd", &etcd.endpoint(), "--job", job])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.matches("(caught up)").count(), 15, "{text}");
        // The fault itself: etcd frozen for three times the longest lease
        // it grants here (1 s), once (TASKGRAPH_PAUSE_SECS and
        // TASKGRAPH_PAUSES set longer and more pauses).
        let seconds = std::env::var("TASKGRAPH_PAUSE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
        let pauses = std::env::var("TASKGRAPH_PAUSES").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        for _ in 0..pauses {
            let before = epoch_of(&*coord, job).await;
            signal(pid, "-STOP");
            std::thread::sleep(Duration::from_secs(seconds));
            signal(pid, "-CONT");
            epoch_reaches(&*coord, job, before + 20).await;
        }
        let over = JobStatus::Failed("the test is over".into()).encode();
        coord.compare_and_swap(&keys.status(), Expect::Value(JobStatus::Running.encode()), &over, None).await.unwrap().unwrap();
    });
    let report = runner.join().unwrap();
    assert_eq!(report.status, JobStatus::Failed("the test is over".into()));
    assert_eq!(report.died, 0, "node processes died in the pause: {report:?}");
    rt.block_on(async {
        let keys = Keys::new(job);
        let (records, _) = coord.get_prefix(&keys.record("root/")).await.unwrap();
        for (i, kv) in records.iter().enumerate() {
            assert_eq!(String::from_utf8_lossy(&kv.value), (105 * i).to_string(), "epoch {i}");
        }
        let last = records.len() - 1;
        // Every task's progress covers every epoch up to the end.
        for t in 0..15 {
            let kv = coord.get(&keys.record(&format!("computed/{t}"))).await.unwrap().expect("progress recorded");
            let counts: Vec<u32> = String::from_utf8_lossy(&kv.value).split(',').filter_map(|c| c.parse().ok()).collect();
            assert!(counts.len() > last.saturating_sub(1), "task {t}: {counts:?}");
            assert!(counts[..last].iter().all(|&n| n >= 1), "task {t} lost progress in the pause: {counts:?}");
        }
    });
}

/// A task that no node holds (here: a job of four tasks with nodes for
/// three, and no spare) fails the job after `Job::vacancy_timeout`, naming
/// the task, instead of waiting forever.
#[test]
fn a_task_without_any_node_fails_the_job_clearly() {
    let coord: Arc<dyn Coordinator> = Arc::new(Embedded::new());
    let job = jobs::idle_job("vacant", 4).vacancy_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let nodes: Vec<_> = (0..3)
        .map(|t| {
            let (job, coord) = (job.clone(), coord.clone());
            std::thread::spawn(move || taskgraph::run_node(job, coord, NodeOptions::new(t, Some(t))))
        })
        .collect();
    for n in nodes {
        let exit = n.join().unwrap().expect("the node runs");
        let NodeExit::JobEnded(JobStatus::Failed(why)) = exit else { panic!("{exit:?}") };
        assert!(why.contains("task 3 has had no node"), "{why}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// F5 under many kills: primaries of tasks with a caught-up backup killed
/// one an epoch, the root's every fourth; no task loses its progress.
#[test]
fn hot_standby_keeps_every_task_s_progress_over_many_kills() {
    let node = PathBuf::from(env!("CARGO_BIN_EXE_w1-node"));
    let kills = 24;
    let report = chaos::run(&node, kills, 3, 2, |line| eprintln!("{line}"));
    let last = 2 * kills as u64 + 10;
    assert_eq!(report.status, JobStatus::Done, "{report:?}");
    assert_eq!(report.kills, kills, "{report:?}");
    assert!(report.values_ok(last), "values: {:?}", report.values);
    assert!(report.progress_complete(last), "progress lost: {:?}", report.computed);
    assert!(report.recomputations() <= kills as u64, "{report:?}");
    assert!(report.leftovers.is_empty(), "processes left running: {:?}", report.leftovers);
}

/// The etcd store used to grow with every epoch: task 0's primary now
/// compacts the coordinator's history as the job goes (one period kept).
#[test]
fn a_long_job_compacts_the_coordinator_s_history() {
    let coord: Arc<dyn Coordinator> = Arc::new(Embedded::new());
    let job = taskgraph_examples::regression::job(7, 1, 200).compaction(Some(Duration::from_millis(1)));
    let keys = Keys::new(job.name());
    let result = taskgraph::LocalCluster::new(job).coordinator(coord.clone()).run().expect("the job runs");
    assert_eq!(result.status, JobStatus::Done);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // History from the job's start is gone; the values are not.
        let mut watch = coord.watch(keys.root(), 1).await.unwrap();
        let first = watch.next().await;
        assert!(matches!(first, Some(Err(taskgraph::coord::CoordError::Compacted { .. }))), "{first:?}");
        let kv = coord.get(&keys.record("root/000200")).await.unwrap().expect("the last value");
        assert_eq!(String::from_utf8_lossy(&kv.value), (21 * 200).to_string());
    });
}

/// A job needing more open files than the process may have fails at once,
/// saying so, instead of nodes failing to accept connections.
#[test]
fn a_local_job_too_big_for_the_open_file_limit_fails_at_once() {
    let tasks = 1 << 20;
    let started = Instant::now();
    let error = taskgraph::LocalCluster::new(taskgraph_examples::regression::job(tasks, 1, 10)).run().unwrap_err();
    assert!(error.to_string().contains("open files"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// What the etcd-stop test's two tasks tell it (they run in this process).
#[derive(Default)]
struct Probe {
    /// Set by the test: 1 while etcd is stopped, 2 once it runs again.
    phase: AtomicU8,
    /// Answers task 0 got to its fetches of task 1's reply.
    answers: AtomicU64,
    /// Task 1 has handled the flag (and asked for a record in it).
    flag_handled: AtomicBool,
}

/// Task 0 fetches task 1's `Num` of the epoch again and again (each
/// answered from task 1's reply cache); while etcd is stopped it flags task
/// 1, whose flag handler records; once etcd runs again, task 0 records what
/// it got and moves on, for three epochs.
struct Refetch {
    probe: Arc<Probe>,
    flagged: bool,
}

impl Task for Refetch {
    fn enter_epoch(&mut self, cx: &mut Context<'_>, _: u64) {
        if cx.task() == 0 {
            cx.fetch(jobs::NUM, 1);
        }
    }
    fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
        let n = match data.decode(jobs::NUM) {
            Ok(n) if n.task == 1 && n.epoch == cx.epoch() => n,
            other => return cx.fail_job(format!("task 0 got {other:?} at epoch {}", cx.epoch())),
        };
        self.probe.answers.fetch_add(1, Ordering::SeqCst);
        match self.probe.phase.load(Ordering::SeqCst) {
            0 => cx.fetch(jobs::NUM, 1),
            1 => {
                if !self.flagged {
                    self.flagged = true;
                    cx.flag(jobs::NEXT, b"record now");
                }
                cx.fetch(jobs::NUM, 1);
            }
            _ => {
                cx.record(format!("got/{}", n.epoch), format!("{}", 10 * n.epoch + n.task));
                if n.epoch >= 2 {
                    cx.end_job();
                } else {
                    cx.advance_epoch();
                }
            }
        }
    }
    fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
        cx.reply(jobs::NUM, request, &jobs::Num { task: cx.task(), epoch: cx.epoch() });
    }
    fn meta_ready(&mut self, cx: &mut Context<'_>, from: TaskId, _: LinkType, meta: &[u8]) {
        if cx.task() == 1 && from == 0 && meta == b"record now" {
            cx.record("flagged", format!("{}", cx.epoch()));
            self.probe.flag_handled.store(true, Ordering::SeqCst);
        }
    }
}

/// While etcd is stopped (SIGSTOP, 10 s: far past every lease), a node
/// goes on answering its neighbour's fetches of the current epoch, also
/// after one of its handlers asked for a record that cannot be written
/// until etcd is back; afterwards every lease has lapsed, the nodes take
/// their keys again, the record is written, and the job ends with exact
/// values. (The event loop never waits for the coordinator.)
#[test]
fn while_etcd_is_stopped_a_node_keeps_answering_its_neighbours() {
    let etcd = EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let job = Job::new("etcd-stopped", 2, jobs::Ring { tasks: 2 }, move |_| Box::new(Refetch { probe: p.clone(), flagged: false }) as Box<dyn Task>)
        .edge(jobs::NUM)
        .lease_ttl(Duration::from_millis(300));
    let c = coord.clone();
    let cluster = std::thread::spawn(move || {
        taskgraph::LocalCluster::new(job).coordinator(c).stall_timeout(None).timeout(Duration::from_secs(120)).run()
    });
    let wait_for = |what: &str, limit: Duration, cond: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for("the job runs", Duration::from_secs(30), &|| probe.answers.load(Ordering::SeqCst) > 100);
    let pid = etcd.pid().unwrap();
    signal(pid, "-STOP");
    let stopped_at = Instant::now();
    probe.phase.store(1, Ordering::SeqCst);
    // Within the stop: the flag is handled, its record cannot be written,
    // and task 1 still answers (each answer a fresh fetch, over TCP).
    wait_for("the flag is handled", Duration::from_secs(3), &|| probe.flag_handled.load(Ordering::SeqCst));
    let before = probe.answers.load(Ordering::SeqCst);
    // Past every lease (1 s, etcd's least): nothing needs etcd to answer.
    std::thread::sleep(Duration::from_secs(3));
    let after_leases = probe.answers.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped_at.elapsed()));
    let during = probe.answers.load(Ordering::SeqCst);
    signal(pid, "-CONT");
    probe.phase.store(2, Ordering::SeqCst);
    assert!(after_leases > before + 100, "answers after the flag, within the first 3 s of the stop: {}", after_leases - before);
    assert!(during > after_leases + 100, "answers in the rest of the stop: {}", during - after_leases);
    let result = cluster.join().unwrap().expect("the job runs");
    assert_eq!(result.status, JobStatus::Done, "{result:?}");
    assert_eq!(result.records.get("flagged").map(|v| v.as_slice()), Some(&b"0"[..]), "{:?}", result.records);
    for e in 0..3u64 {
        assert_eq!(result.records.get(&format!("got/{e}")).map(|v| String::from_utf8_lossy(v).into_owned()), Some(format!("{}", 10 * e + 1)));
    }
}
