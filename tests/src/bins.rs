//! The binaries the multi-process tests run that are not this package's
//! (`env!("CARGO_BIN_EXE_..")` only names a package's own).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The `taskgraph` command, built on demand (debug profile, in the target
/// directory of the running test) the way a user would build it; once per
/// test process.
pub fn taskgraph_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "taskgraph", "--features", "cli", "--bin", "taskgraph"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "cannot build the taskgraph command");
            // target/<profile>/deps/<test>-... -> target/debug/taskgraph
            let exe = std::env::current_exe().expect("the test's path");
            let target = exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()).expect("a target directory");
            target.join("debug").join("taskgraph")
        })
        .clone()
}

/// Whether process `pid` is alive (a zombie is not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// The live child processes of `parent` (from `/proc`).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // "pid (comm) state ppid ...": comm may hold spaces, not ')'.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')').is_some_and(|(_, rest)| {
                    let mut f = rest.split_whitespace();
                    let state = f.next();
                    state != Some("Z") && f.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent)
                })
            })
        })
        .collect();
    pids.sort();
    pids
}
