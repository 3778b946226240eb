//! Jobs as separate node processes on a real etcd: F4 (random SIGKILLs,
//! the root's node included) and the `taskgraph` command.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use taskgraph::JobStatus;
use taskgraph_tests::chaos;
use taskgraph_tests::etcd::EtcdServer;

#[test]
fn f4_twenty_sigkills_and_the_values_are_exact() {
    let node = PathBuf::from(env!("CARGO_BIN_EXE_w1-node"));
    let report = chaos::run(&node, 20, 42, |line| eprintln!("{line}"));
    assert_eq!(report.status, JobStatus::Done, "{report:?}");
    assert!(report.kills >= 20, "{report:?}");
    assert!(report.root_kills >= 1, "the root's node was never killed: {report:?}");
    assert!(report.values_ok(50), "values: {:?}", report.values);
    assert!(report.leftovers.is_empty(), "processes left running: {:?}", report.leftovers);
}

/// The `taskgraph` binary, built on demand (it is another package's, so
/// this test builds it the way a user would).
fn taskgraph_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "taskgraph", "--features", "cli", "--bin", "taskgraph"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cannot build the taskgraph command");
    // target/<profile>/deps/multiprocess-... -> target/<profile>/../debug
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    target.join("debug").join("taskgraph")
}

#[test]
fn the_taskgraph_command_launches_shows_and_stops_jobs() {
    let etcd = EtcdServer::start();
    let tg = taskgraph_binary();
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
