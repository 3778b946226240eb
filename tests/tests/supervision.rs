//! Supervision faults (issue 10, items 3, 4, 5, 7, 8): etcd lost for
//! good, the launcher killed, a second launch of a running job, jobs
//! longer than any fixed time limit and jobs that stall, and `taskgraph
//! status` into a pipe closed early; and (issue 11, item 6) node
//! processes that fail once the job is done. Real node processes and a
//! real etcd where the fault is about them.

use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use taskgraph::coord::{Coordinator, Expect};
use taskgraph::keys::{Holder, Keys};
use taskgraph::launch::{Launch, LaunchReport, EXIT_COORDINATOR_LOST};
use taskgraph::{JobStatus, LocalCluster};
use taskgraph_tests::bins::{alive, children_of, taskgraph_binary};
use taskgraph_tests::etcd::EtcdServer;
use taskgraph_tests::wait::{epoch_of, epoch_reaches, keys_until};

const W1_NODE: &str = env!("CARGO_BIN_EXE_w1-node");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

async fn stop_job(coord: &dyn Coordinator, job: &str) {
    let over = JobStatus::Failed("the test is over".into()).encode();
    coord.compare_and_swap(&Keys::new(job).status(), Expect::Value(JobStatus::Running.encode()), &over, None).await.unwrap().unwrap();
}

/// The root's records (epoch, value), in order.
async fn root_records(coord: &dyn Coordinator, job: &str) -> Vec<(u64, String)> {
    let (records, _) = coord.get_prefix(&Keys::new(job).record("root/")).await.unwrap();
    let mut v: Vec<(u64, String)> = records
        .iter()
        .map(|kv| (kv.key.rsplit('/').next().unwrap().parse().unwrap(), String::from_utf8_lossy(&kv.value).into_owned()))
        .collect();
    v.sort();
    v
}

/// The ids of the job's live nodes.
async fn live_nodes(coord: &dyn Coordinator, job: &str) -> Vec<u64> {
    let keys = Keys::new(job);
    let (kvs, _) = coord.get_prefix(&keys.nodes()).await.unwrap();
    let mut ids: Vec<u64> = kvs.iter().filter_map(|kv| keys.node_id(&kv.key)).collect();
    ids.sort();
    ids
}

/// The node ids of the job's primaries.
async fn primaries(coord: &dyn Coordinator, job: &str) -> Vec<u64> {
    let keys = Keys::new(job);
    let (kvs, _) = coord.get_prefix(&keys.tasks()).await.unwrap();
    kvs.iter().filter(|kv| keys.primary_task(&kv.key).is_some()).filter_map(|kv| Some(Holder::parse(&kv.value)?.node)).collect()
}

/// Waits (bounded, polling `/proc`) until none of `pids` is alive.
fn all_gone(pids: &[u32], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while pids.iter().any(|&p| alive(p)) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Runs `launch` on a thread; its report comes on the receiver.
fn run_in_thread(launch: Launch, coord: Arc<dyn Coordinator>) -> (mpsc::Receiver<taskgraph::Result<LaunchReport>>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(launch.run(coord));
    });
    (rx, handle)
}

// Item 3: etcd lost for good.

#[test]
fn a_node_that_cannot_reach_etcd_exits_with_the_coordinator_lost_status() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let out = Command::new(W1_NODE)
        .args(["--etcd", &format!("http://127.0.0.1:{port}"), "--job", "nobody", "--node-id", "0"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_COORDINATOR_LOST), "{}", String::from_utf8_lossy(&out.stderr));
    // EtcdOptions::default().connect_timeout is 5 s.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[test]
fn etcd_lost_for_good_the_launcher_gives_up_clearly_and_stops_its_nodes() {
    let mut etcd = EtcdServer::start();
    let rt = runtime();
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let args = ["--tasks", "3", "--epochs", "100000000"].iter().map(Into::into).collect();
    let patience = Duration::from_secs(3);
    let launch = Launch::new(W1_NODE, args, etcd.endpoint(), "lost", 3).spares(1).coordinator_patience(patience);
    let processes = launch.processes();
    let (report, runner) = run_in_thread(launch, coord.clone());
    rt.block_on(epoch_reaches(&*coord, "lost", 3));
    etcd.kill();
    let killed_at = Instant::now();
    let report = report.recv_timeout(Duration::from_secs(30)).expect("the launcher ends").expect("the launch reports");
    let took = killed_at.elapsed();
    runner.join().unwrap();
    let JobStatus::Failed(why) = &report.status else { panic!("{report:?}") };
    assert!(why.contains("coordinator") && why.contains("unreachable") && why.contains(&etcd.endpoint()), "{why}");
    assert!(report.coordinator_lost, "{report:?}");
    // Patience, plus at most a poll's bound and the kills.
    assert!(took >= patience && took < patience + Duration::from_secs(8), "gave up after {took:?}");
    // No restart storm: the nodes were waiting etcd out, none was replaced.
    assert!(report.started <= 4 + 2, "{report:?}");
    let leftovers: Vec<u32> = processes.all_started().into_iter().filter(|&p| alive(p)).collect();
    assert!(leftovers.is_empty(), "processes left running: {leftovers:?}");
}

// Item 4: the launcher killed.

/// A `taskgraph launch` of a long 3-task W1 job, and its 4 node processes
/// once the job runs.
fn launch_command(etcd: &EtcdServer, job: &str, extra: &[&str]) -> (std::process::Child, Vec<u32>) {
    let mut cmd = Command::new(taskgraph_binary());
    cmd.args(["launch", "--etcd", &etcd.endpoint(), "--job", job, "--tasks", "3", "--spares", "1"])
        .args(extra)
        .args(["--", W1_NODE, "--tasks", "3", "--epochs", "100000000"])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let launcher = cmd.spawn().unwrap();
    let rt = runtime();
    let coord = rt.block_on(etcd.connect());
    rt.block_on(epoch_reaches(&coord, job, 3));
    let nodes = children_of(launcher.id());
    assert_eq!(nodes.len(), 4, "node processes of the launcher: {nodes:?}");
    (launcher, nodes)
}

#[test]
fn a_killed_launcher_takes_its_nodes_with_it_by_default() {
    let etcd = EtcdServer::start();
    let (mut launcher, nodes) = launch_command(&etcd, "orphans-kill", &[]);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    assert!(all_gone(&nodes, Duration::from_secs(5)), "orphans alive: {:?}", nodes.iter().filter(|&&p| alive(p)).collect::<Vec<_>>());
}

#[test]
fn with_orphans_keep_the_nodes_carry_on_after_the_launcher_dies() {
    let etcd = EtcdServer::start();
    let (mut launcher, nodes) = launch_command(&etcd, "orphans-keep", &["--orphans", "keep"]);
    let rt = runtime();
    let coord = rt.block_on(etcd.connect());
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The job goes on without its supervisor...
    let now = rt.block_on(epoch_of(&coord, "orphans-keep"));
    rt.block_on(epoch_reaches(&coord, "orphans-keep", now + 5));
    assert!(nodes.iter().all(|&p| alive(p)), "a node died with the launcher: {nodes:?}");
    // ...until it is stopped: then its nodes leave on their own.
    let out = Command::new(taskgraph_binary()).args(["stop", "--etcd", &etcd.endpoint(), "--job", "orphans-keep"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gone = all_gone(&nodes, Duration::from_secs(20));
    for &p in &nodes {
        let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
    }
    assert!(gone, "the orphans did not leave when the job was stopped");
}

// Item 5: a second launch of a running job.

#[test]
fn a_second_launch_of_a_running_job_is_refused_and_join_adds_spares() {
    let etcd = EtcdServer::start();
    let rt = runtime();
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let job = "twice";
    let args = || ["--epochs", "100000000"].iter().map(Into::into).collect();
    let first = Launch::new(W1_NODE, args(), etcd.endpoint(), job, 15).spares(1);
    let first_processes = first.processes();
    let (first_report, first_runner) = run_in_thread(first, coord.clone());
    let before = rt.block_on(epoch_reaches(&*coord, job, 5));
    let records_before = rt.block_on(root_records(&*coord, job));

    // A second launch: refused, and the running job untouched.
    let second = Launch::new(W1_NODE, args(), etcd.endpoint(), job, 15).spares(1);
    let refused = second.run(coord.clone()).expect_err("a running job is not launched again");
    let msg = refused.to_string();
    assert!(msg.contains("job `twice` is running") && msg.contains("live nodes") && msg.contains("--join"), "{msg}");
    assert!(second.processes().all_started().is_empty(), "the refused launch started processes");
    assert!(rt.block_on(epoch_of(&*coord, job)) >= before, "the epoch went back");
    let records_after = rt.block_on(root_records(&*coord, job));
    assert!(records_after.starts_with(&records_before), "records changed: {records_before:?} -> {records_after:?}");
    // The same through the command.
    let out = Command::new(taskgraph_binary())
        .args(["launch", "--etcd", &etcd.endpoint(), "--job", job, "--tasks", "15", "--", W1_NODE])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("job `twice` is running"), "{}", String::from_utf8_lossy(&out.stderr));

    // --join: two more nodes, with ids above the live ones, as spares.
    let live = rt.block_on(live_nodes(&*coord, job));
    let joiner = Launch::new(W1_NODE, args(), etcd.endpoint(), job, 0).join(true).spares(2);
    let joiner_processes = joiner.processes();
    let (join_report, join_runner) = run_in_thread(joiner, coord.clone());
    let keys = Keys::new(job);
    let nodes_prefix = keys.nodes();
    let registered = |kvs: &[taskgraph::coord::KeyValue]| -> Vec<u64> {
        kvs.iter().filter_map(|kv| keys.node_id(&kv.key)).filter(|id| !live.contains(id)).collect()
    };
    rt.block_on(keys_until(&*coord, &nodes_prefix, Duration::from_secs(30), |kvs| registered(kvs).len() == 2));
    let mut joined = registered(&rt.block_on(coord.get_prefix(&nodes_prefix)).unwrap().0);
    joined.sort();
    assert!(joined.iter().all(|id| id > live.iter().max().unwrap()), "joined ids {joined:?} vs live {live:?}");
    let primaries = rt.block_on(primaries(&*coord, job));
    assert!(joined.iter().all(|id| !primaries.contains(id)), "a joined node took a task of a healthy job");
    let now = rt.block_on(epoch_of(&*coord, job));
    rt.block_on(epoch_reaches(&*coord, job, now + 3));
    rt.block_on(stop_job(&*coord, job));

    for (report, runner) in [(first_report, first_runner), (join_report, join_runner)] {
        let report = report.recv_timeout(Duration::from_secs(30)).expect("the launch ends").expect("the launch reports");
        assert_eq!(report.status, JobStatus::Failed("the test is over".into()));
        runner.join().unwrap();
    }
    // The first job's records are W1's from epoch 0, with no gap.
    let records = rt.block_on(root_records(&*coord, job));
    assert!(records.len() as u64 > before, "{records:?}");
    for (i, (e, v)) in records.iter().enumerate() {
        assert_eq!(*e, i as u64, "epochs recorded with a gap");
        assert_eq!(*v, (105 * e).to_string(), "epoch {e}");
    }
    let leftovers: Vec<u32> =
        first_processes.all_started().into_iter().chain(joiner_processes.all_started()).filter(|&p| alive(p)).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_local_cluster_refuses_a_job_running_on_its_coordinator_and_restarts_an_ended_one() {
    let rt = runtime();
    let coord: Arc<dyn Coordinator> = Arc::new(taskgraph::coord::Embedded::new());
    // A job with a live node (its key bound to a lease), still running.
    let keys = Keys::new("shared");
    rt.block_on(async {
        coord.put(&keys.status(), &JobStatus::Running.encode(), None).await.unwrap();
        coord.put(&keys.epoch(), b"7", None).await.unwrap();
        let lease = coord.grant(Duration::from_secs(60)).await.unwrap();
        coord.put(&keys.node(0), b"addr=127.0.0.1:1", Some(lease)).await.unwrap();
    });
    let job = taskgraph_tests::jobs::counter_job("shared", 3, 2, 3);
    let err = LocalCluster::new(job.clone()).coordinator(coord.clone()).run().expect_err("refused");
    assert!(err.to_string().contains("job `shared` is running (epoch 7, 1 live node)"), "{err}");
    assert_eq!(rt.block_on(epoch_of(&*coord, "shared")), 7, "the running job was touched");
    // Ended: started afresh.
    let ended = rt.block_on(coord.compare_and_swap(&keys.status(), Expect::Value(JobStatus::Running.encode()), &JobStatus::Done.encode(), None));
    ended.unwrap().unwrap();
    let result = LocalCluster::new(job).coordinator(coord.clone()).run().unwrap();
    assert_eq!(result.status, JobStatus::Done);
}

// Item 7: no hidden time limit; a stall fails the job.

/// One task that computes for `epoch_time` (a sleep, on its own node's
/// thread) each epoch, until `last`.
#[derive(Debug)]
struct Slow {
    epoch_time: Duration,
    last: u64,
}

impl taskgraph::Task for Slow {
    fn enter_epoch(&mut self, cx: &mut taskgraph::Context<'_>, epoch: u64) {
        std::thread::sleep(self.epoch_time);
        if epoch == self.last {
            cx.end_job();
        } else {
            cx.advance_epoch();
        }
    }
    fn data_ready(&mut self, _: &mut taskgraph::Context<'_>, _: taskgraph::Received) {}
    fn serve(&mut self, _: &mut taskgraph::Context<'_>, _: taskgraph::ServeRequest) {}
}

fn slow_job(name: &str, epoch_time: Duration, last: u64) -> taskgraph::Job {
    let ring = taskgraph_tests::jobs::Ring { tasks: 1 };
    taskgraph::Job::new(name, 1, ring, move |_| Box::new(Slow { epoch_time, last }) as Box<dyn taskgraph::Task>)
}

#[test]
fn a_local_job_that_advances_runs_longer_than_the_stall_bound() {
    // 20 epochs of 100 ms: 2 s in all, 4 stall bounds, each epoch well
    // within one.
    let stall = Duration::from_millis(500);
    let started = Instant::now();
    let result = LocalCluster::new(slow_job("slow", Duration::from_millis(100), 20)).stall_timeout(Some(stall)).run().unwrap();
    assert_eq!(result.status, JobStatus::Done);
    assert!(started.elapsed() > 3 * stall, "the job was too short to test anything: {:?}", started.elapsed());
}

#[test]
fn a_local_job_that_stops_advancing_fails_with_no_progress() {
    // The idle job's tasks never advance past epoch 1.
    let stall = Duration::from_millis(400);
    let started = Instant::now();
    let err = LocalCluster::new(taskgraph_tests::jobs::idle_job("stuck", 3)).stall_timeout(Some(stall)).run().expect_err("a stuck job fails");
    let took = started.elapsed();
    assert!(matches!(err, taskgraph::Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("job `stuck` made no progress for 400ms (stuck at epoch 1)"), "{err}");
    assert!(took >= stall && took < Duration::from_secs(10), "failed after {took:?}");
}

#[test]
fn an_explicit_time_limit_still_holds_for_a_job_that_advances() {
    let err = LocalCluster::new(slow_job("limited", Duration::from_millis(50), 1_000_000))
        .timeout(Duration::from_millis(500))
        .run()
        .expect_err("the limit ends it");
    assert!(err.to_string().contains("job `limited` timed out after 500ms"), "{err}");
}

// Issue 11, item 6: a job's end is written once, by compare-and-swap.

/// A 3-task W1 job of 5 epochs as processes (and a spare) whose nodes,
/// once the job has ended, wait `linger_ms` and exit with `exit_status`.
fn launch_ending_badly(etcd: &EtcdServer, job: &str, linger_ms: u64, exit_status: u8) -> Launch {
    let args = ["--tasks", "3", "--epochs", "5", "--linger-after-end", &linger_ms.to_string(), "--exit-after-end", &exit_status.to_string()];
    Launch::new(W1_NODE, args.iter().map(Into::into).collect(), etcd.endpoint(), job, 3).spares(1)
}

/// The job's status key now.
fn status_key(rt: &tokio::runtime::Runtime, coord: &dyn Coordinator, job: &str) -> JobStatus {
    let kv = rt.block_on(coord.get(&Keys::new(job).status())).unwrap().expect("the job has a status");
    JobStatus::parse(&kv.value)
}

#[test]
fn node_processes_that_fail_after_the_job_is_done_leave_it_done() {
    let etcd = EtcdServer::start();
    let rt = runtime();
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    // Every node exits with status 1 after the end, the last one too.
    let launch = launch_ending_badly(&etcd, "fails-after-done", 200, 1);
    let report = launch.run(coord.clone()).expect("the launch runs");
    assert_eq!(status_key(&rt, &*coord, "fails-after-done"), JobStatus::Done, "the end was overwritten: {report:?}");
    assert_eq!(report.status, JobStatus::Done, "{report:?}");
    assert_eq!((report.died, report.started), (0, 4), "exits after the end are no deaths: {report:?}");
}

#[test]
fn node_processes_sigkilled_after_the_job_is_done_leave_it_done() {
    let etcd = EtcdServer::start();
    let rt = runtime();
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let job = "killed-after-done";
    // The nodes stay after the end (for longer than the test), to be killed.
    let launch = launch_ending_badly(&etcd, job, 60_000, 0);
    let processes = launch.processes();
    let (report, runner) = run_in_thread(launch, coord.clone());
    let status = Keys::new(job).status();
    rt.block_on(keys_until(&*coord, &status, Duration::from_secs(60), |kvs| {
        kvs.iter().any(|kv| kv.key == status && JobStatus::parse(&kv.value) == JobStatus::Done)
    }));
    let pids = processes.pids();
    assert_eq!(pids.len(), 4, "the nodes stay after the end: {pids:?}");
    for pid in pids {
        assert!(processes.kill(pid), "SIGKILL {pid}");
    }
    let report = report.recv_timeout(Duration::from_secs(30)).expect("the launcher ends").expect("the launch reports");
    runner.join().unwrap();
    assert_eq!(status_key(&rt, &*coord, job), JobStatus::Done, "the end was overwritten: {report:?}");
    assert_eq!(report.status, JobStatus::Done, "{report:?}");
    assert_eq!((report.died, report.started), (0, 4), "no node is replaced after the end: {report:?}");
    assert!(all_gone(&processes.all_started(), Duration::from_secs(5)), "processes left running");
}

// Item 8: `taskgraph status | head -1`.

#[test]
fn taskgraph_status_into_a_pipe_closed_early_exits_quietly() {
    let etcd = EtcdServer::start();
    let rt = runtime();
    let coord = rt.block_on(etcd.connect());
    // Enough primaries that the output (~130 KB) overflows a pipe's
    // buffer: writes after `head` has gone fail, whatever the timing.
    let keys = Keys::new("wide");
    rt.block_on(async {
        coord.put(&keys.status(), &JobStatus::Running.encode(), None).await.unwrap();
        coord.put(&keys.epoch(), b"3", None).await.unwrap();
        for chunk in (0..3000u64).collect::<Vec<_>>().chunks(100) {
            futures::future::join_all(chunk.iter().map(|t| {
                let holder = Holder { node: *t, addr: ([127, 0, 0, 1], 10000 + *t as u16).into(), ready: false };
                let (key, value) = (keys.primary(*t), holder.encode());
                let coord = &coord;
                async move { coord.put(&key, &value, None).await.unwrap() }
            }))
            .await;
        }
    });
    let mut head = Command::new("head").args(["-n", "1"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let pipe = head.stdin.take().unwrap();
    let status = Command::new(taskgraph_binary())
        .args(["status", "--etcd", &etcd.endpoint(), "--job", "wide"])
        .stdout(pipe)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let head_out = head.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&head_out.stdout), "job wide: running, epoch 3\n");
    let out = status.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
