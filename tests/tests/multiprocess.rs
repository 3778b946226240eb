//! Jobs as separate node processes on a real etcd: F4 (random SIGKILLs,
//! the root's node included) and the `taskgraph` command.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use taskgraph::JobStatus;
use taskgraph_tests::chaos;
use taskgraph_tests::etcd::EtcdServer;
use taskgraph_tests::wait::epoch_reaches;

#[test]
fn f4_twenty_sigkills_and_the_values_are_exact() {
    let node = PathBuf::from(env!("CARGO_BIN_EXE_w1-node"));
    let report = chaos::run(&node, 20, 42, 1, |line| eprintln!("{line}"));
    assert_eq!(report.status, JobStatus::Done, "{report:?}");
    assert!(report.kills >= 20, "{report:?}");
    assert!(report.root_kills >= 1, "the root's node was never killed: {report:?}");
    assert!(report.values_ok(50), "values: {:?}", report.values);
    assert!(report.leftovers.is_empty(), "processes left running: {:?}", report.leftovers);
}

#[test]
fn f5_hot_backups_take_over_killed_primaries_with_their_progress() {
    let node = PathBuf::from(env!("CARGO_BIN_EXE_w1-node"));
    let report = chaos::run(&node, 8, 7, 2, |line| eprintln!("{line}"));
    assert_eq!(report.status, JobStatus::Done, "{report:?}");
    assert_eq!(report.kills, 8, "{report:?}");
    assert!(report.root_kills >= 1, "the root's primary was never killed: {report:?}");
    assert!(report.values_ok(26), "values: {:?}", report.values);
    // Every kill was followed by a new primary of the task, and the new
    // primaries had the progress: no task lost a computed epoch, and at
    // most the epoch in progress at each kill was computed again.
    assert_eq!(report.failovers.len(), 8, "{report:?}");
    assert!(report.progress_complete(26), "progress lost: {:?}", report.computed);
    assert!(report.recomputations() <= 8, "{} epochs computed again: {:?}", report.recomputations(), report.computed);
    assert!(report.takeovers >= 8, "takeovers by backups with the progress: {report:?}");
    assert!(report.leftovers.is_empty(), "processes left running: {:?}", report.leftovers);
}

#[test]
fn the_taskgraph_command_launches_shows_and_stops_jobs() {
    let etcd = EtcdServer::start();
    let tg = taskgraph_tests::bins::taskgraph_binary();
    let node = env!("CARGO_BIN_EXE_w1-node");

    // A whole job: launch returns when it is done.
    let out = Command::new(&tg)
        .args(["launch", "--etcd", &etcd.endpoint(), "--job", "w1", "--tasks", "15", "--spares", "1", "--", node])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("job w1: Done (16 node processes started"), "{stderr}");
    let out = Command::new(&tg).args(["status", "--etcd", &etcd.endpoint(), "--job", "w1"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("job w1: done, epoch 10"), "{stdout}");

    // A long job: status shows its primaries; stop ends it.
    let launch = Command::new(&tg)
        .args(["launch", "--etcd", &etcd.endpoint(), "--job", "long", "--tasks", "3", "--spares", "1", "--", node, "--tasks", "3", "--epochs", "100000000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status_text = loop {
        let out = Command::new(&tg).args(["status", "--etcd", &etcd.endpoint(), "--job", "long"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Three primaries and one spare registered.
        if text.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count() == 3 && !text.contains("spares: none") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "the long job never showed 3 primaries and a spare: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status_text.starts_with("job long: running"), "{status_text}");
    let out = Command::new(&tg).args(["stop", "--etcd", &etcd.endpoint(), "--job", "long", "--reason", "enough"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = launch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!done.status.success(), "a stopped job is not a success");
    assert!(stderr.contains("Failed(\"enough\")"), "{stderr}");
    // Stopping again: not running.
    let out = Command::new(&tg).args(["stop", "--etcd", &etcd.endpoint(), "--job", "long"]).output().unwrap();
    assert!(!out.status.success());
}

use std::sync::Arc;

use taskgraph::coord::{Coordinator, Event, Expect};
use taskgraph::keys::{Holder, Keys};
use taskgraph::launch::{Launch, LaunchReport, Processes};

/// A long W1 job as processes, run in a thread; stop it with `stop_job`.
fn launch_long(
    etcd: &EtcdServer,
    job: &str,
    spares: usize,
    replicas: u32,
) -> (Processes, std::thread::JoinHandle<LaunchReport>, Arc<dyn Coordinator>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let args = ["--epochs", "100000000", "--replicas", &replicas.to_string()].iter().map(Into::into).collect();
    let launch = Launch::new(env!("CARGO_BIN_EXE_w1-node"), args, etcd.endpoint(), job, 15)
        .replicas(replicas)
        .spares(spares)
        .timeout(Duration::from_secs(120));
    let processes = launch.processes();
    let c = coord.clone();
    let runner = std::thread::spawn(move || launch.run(c).expect("the launch runs"));
    (processes, runner, coord, rt)
}

/// The node id and term of task `t`'s primary.
async fn primary_of(coord: &dyn Coordinator, job: &str, t: u64) -> (u64, i64) {
    let kv = coord.get(&Keys::new(job).primary(t)).await.unwrap().expect("task has a primary");
    (Holder::parse(&kv.value).expect("a holder").node, kv.create_revision)
}

async fn stop_job(coord: &dyn Coordinator, job: &str) {
    let over = JobStatus::Failed("the test is over".into()).encode();
    coord.compare_and_swap(&Keys::new(job).status(), Expect::Value(JobStatus::Running.encode()), &over, None).await.unwrap().unwrap();
}

/// The root's recorded values are W1's, from epoch 0 on, with no gap.
async fn values_are_exact(coord: &dyn Coordinator, job: &str) -> usize {
    let (records, _) = coord.get_prefix(&Keys::new(job).record("root/")).await.unwrap();
    for (i, kv) in records.iter().enumerate() {
        let e: u64 = kv.key.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(e, i as u64, "epochs recorded with a gap");
        assert_eq!(String::from_utf8_lossy(&kv.value), (105 * e).to_string(), "epoch {e}");
    }
    records.len()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn f6_a_frozen_primary_is_replaced_and_fenced_when_it_wakes() {
    let etcd = EtcdServer::start();
    let (processes, runner, coord, rt) = launch_long(&etcd, "f6", 1, 1);
    let c = &*coord;
    rt.block_on(async {
        epoch_reaches(c, "f6", 3).await;
        let (node, term) = primary_of(c, "f6", 5).await;
        let pid = processes.pids_by_node().into_iter().find(|(n, _)| *n == node).unwrap().1;
        signal(pid, "-STOP");
        let frozen_at = epoch_reaches(c, "f6", 0).await;
        // Its lease runs out; a spare takes task 5 with a newer term.
        let key = Keys::new("f6").primary(5);
        let mut watch = c.watch(&key, 0).await.unwrap();
        loop {
            if let Some(kv) = c.get(&key).await.unwrap() {
                if kv.create_revision > term {
                    break;
                }
            }
            let next = tokio::time::timeout(Duration::from_secs(30), watch.next()).await;
            assert!(matches!(next, Ok(Some(Ok(Event::Put(_) | Event::Delete { .. })))), "no takeover: {next:?}");
        }
        // The job goes on without the frozen node...
        epoch_reaches(c, "f6", frozen_at + 5).await;
        // ...and when it wakes, it finds it lost its term and steps down.
        signal(pid, "-CONT");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while processes.pids().contains(&pid) {
            assert!(std::time::Instant::now() < deadline, "the woken old primary did not step down");
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = epoch_reaches(c, "f6", 0).await;
        epoch_reaches(c, "f6", now + 3).await;
        stop_job(c, "f6").await;
    });
    let report = runner.join().unwrap();
    assert_eq!(report.status, JobStatus::Failed("the test is over".into()));
    let recorded = rt.block_on(values_are_exact(c, "f6"));
    assert!(recorded > 10);
}

/// The node id of task `t`'s backup in slot 1.
async fn backup_of(coord: &dyn Coordinator, job: &str, t: u64) -> u64 {
    let kv = coord.get(&Keys::new(job).backup(t, 1)).await.unwrap().expect("task has a backup");
    Holder::parse(&kv.value).expect("a holder").node
}

/// Waits (bounded) until task `t` has a primary with a term above `term`;
/// its node.
async fn new_primary(coord: &dyn Coordinator, job: &str, t: u64, term: i64) -> u64 {
    let key = Keys::new(job).primary(t);
    let mut watch = coord.watch(&key, 0).await.unwrap();
    loop {
        if let Some(kv) = coord.get(&key).await.unwrap() {
            if kv.create_revision > term {
                return Holder::parse(&kv.value).expect("a holder").node;
            }
        }
        let next = tokio::time::timeout(Duration::from_secs(30), watch.next()).await;
        assert!(matches!(next, Ok(Some(Ok(_)))), "no takeover of task {t}: {next:?}");
    }
}

/// What task `t` recorded of its progress at the end.
async fn computed(coord: &dyn Coordinator, job: &str, t: u64) -> Vec<u32> {
    let kv = coord.get(&Keys::new(job).record(&format!("computed/{t}"))).await.unwrap().expect("the task recorded its progress");
    String::from_utf8_lossy(&kv.value).split(',').filter_map(|c| c.parse().ok()).collect()
}

#[test]
fn f6_with_a_hot_backup_a_frozen_primary_is_replaced_by_its_backup_and_fenced() {
    let etcd = EtcdServer::start();
    let (processes, runner, coord, rt) = launch_long(&etcd, "f6b", 1, 2);
    let c = &*coord;
    rt.block_on(async {
        epoch_reaches(c, "f6b", 3).await;
        let (node, term) = primary_of(c, "f6b", 5).await;
        let backup = backup_of(c, "f6b", 5).await;
        let pid = processes.pids_by_node().into_iter().find(|(n, _)| *n == node).unwrap().1;
        signal(pid, "-STOP");
        // Its lease runs out; its backup, not a spare, takes task 5 over.
        assert_eq!(new_primary(c, "f6b", 5, term).await, backup);
        let now = epoch_reaches(c, "f6b", 0).await;
        epoch_reaches(c, "f6b", now + 5).await;
        // Woken, the old primary finds it lost its term and steps down.
        signal(pid, "-CONT");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while processes.pids().contains(&pid) {
            assert!(std::time::Instant::now() < deadline, "the woken old primary did not step down");
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = epoch_reaches(c, "f6b", 0).await;
        epoch_reaches(c, "f6b", now + 3).await;
        stop_job(c, "f6b").await;
    });
    let report = runner.join().unwrap();
    assert_eq!(report.status, JobStatus::Failed("the test is over".into()));
    assert!(rt.block_on(values_are_exact(c, "f6b")) > 10);
    // Task 5's progress came through the takeover whole.
    let counts = rt.block_on(computed(c, "f6b", 5));
    assert!(counts.iter().all(|&n| n >= 1), "task 5 lost progress: {counts:?}");
}

#[test]
fn f5_when_both_replicas_of_a_task_die_a_spare_takes_over_and_the_values_stay_exact() {
    let etcd = EtcdServer::start();
    let (processes, runner, coord, rt) = launch_long(&etcd, "f5both", 1, 2);
    let c = &*coord;
    rt.block_on(async {
        epoch_reaches(c, "f5both", 4).await;
        let (node, term) = primary_of(c, "f5both", 6).await;
        let backup = backup_of(c, "f5both", 6).await;
        let pids = processes.pids_by_node();
        let pid_of = |n: u64| pids.iter().find(|(id, _)| *id == n).unwrap().1;
        // Both at once, with one kill(1): one after the other, the
        // primary may drop its dead backup and a spare catch up in its
        // place before the primary dies (then the state survives).
        let both = [pid_of(backup).to_string(), pid_of(node).to_string()];
        assert!(Command::new("kill").arg("-KILL").args(&both).status().unwrap().success());
        let replacement = new_primary(c, "f5both", 6, term).await;
        assert_ne!(replacement, backup);
        let now = epoch_reaches(c, "f5both", 0).await;
        epoch_reaches(c, "f5both", now + 4).await;
        stop_job(c, "f5both").await;
    });
    let report = runner.join().unwrap();
    assert_eq!(report.status, JobStatus::Failed("the test is over".into()));
    assert!(rt.block_on(values_are_exact(c, "f5both")) >= 8);
    // The spare started from nothing: task 6's progress before the
    // failure is gone (W1 needs none of it to go on), the rest is there.
    let counts = rt.block_on(computed(c, "f5both", 6));
    assert!(counts.first() == Some(&0), "task 6 kept progress no node held: {counts:?}");
    assert!(counts.last().is_some_and(|&n| n >= 1), "{counts:?}");
}

#[test]
fn f7_the_job_survives_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let (_processes, runner, coord, rt) = launch_long(&etcd, "f7", 1, 1);
    let before = rt.block_on(epoch_reaches(&*coord, "f7", 3));
    etcd.restart();
    rt.block_on(async {
        epoch_reaches(&*coord, "f7", before + 20).await;
        stop_job(&*coord, "f7").await;
    });
    let report = runner.join().unwrap();
    assert_eq!(report.status, JobStatus::Failed("the test is over".into()));
    rt.block_on(values_are_exact(&*coord, "f7"));
    assert_eq!(report.died, 0, "nodes gave up during the restart: {report:?}");
}
