//! A launcher's node processes: starting them, waiting for them, killing
//! them.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{NodeArgs, Orphans, EXIT_COORDINATOR_LOST, EXIT_NODE_FAILED, EXIT_STEPPED_DOWN};
use crate::supervise::Exit;

/// The live node processes of a [`Launch`](super::Launch).
#[derive(Clone, Debug, Default)]
pub struct Processes {
    children: Arc<Mutex<HashMap<u64, Child>>>,
    started: Arc<Mutex<Vec<u32>>>,
}

/// A node process's exit: its node id and status (`None` if it could
/// not be waited for, or was killed by [`Processes::kill_all`]).
pub(super) type Exited = (u64, Option<ExitStatus>);

impl Processes {
    /// (node id, process id) of the live node processes.
    pub fn pids_by_node(&self) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = self.children.lock().expect("children lock").iter().map(|(id, c)| (*id, c.id())).collect();
        v.sort();
        v
    }

    /// The process ids of every node process ever started.
    pub fn all_started(&self) -> Vec<u32> {
        self.started.lock().expect("started lock").clone()
    }

    /// Process ids of the live node processes.
    pub fn pids(&self) -> Vec<u32> {
        self.children.lock().expect("children lock").values().map(Child::id).collect()
    }

    /// Sends SIGKILL to the node process `pid` (if it is one of ours).
    pub fn kill(&self, pid: u32) -> bool {
        let mut map = self.children.lock().expect("children lock");
        match map.values_mut().find(|c| c.id() == pid) {
            Some(c) => c.kill().is_ok(),
            None => false,
        }
    }

    /// Kills every live node process.
    pub fn kill_all(&self) {
        let mut map = self.children.lock().expect("children lock");
        for c in map.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        map.clear();
    }

    /// Starts `program args.. <node args>` as node `node.node_id`; its
    /// exit will come on `exits`.
    pub(super) fn spawn(&self, program: &Path, args: &[std::ffi::OsString], node: &NodeArgs, orphans: Orphans, exits: &mpsc::Sender<Exited>) -> crate::Result<()> {
        let node_id = node.node_id;
        let mut cmd = Command::new(program);
        cmd.args(args).args(node.to_args()).stdin(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a signal to the launcher's group does
            // not reach the nodes, and the launcher can kill a node's group.
            cmd.process_group(0);
        }
        #[cfg(target_os = "linux")]
        if orphans == Orphans::Kill {
            die_with_parent(&mut cmd);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = orphans;
        let child = cmd.spawn().map_err(|e| crate::Error::Io(format!("cannot start {}: {e}", program.display())))?;
        let pid = child.id();
        self.started.lock().expect("started lock").push(pid);
        self.children.lock().expect("children lock").insert(node_id, child);
        let children = self.children.clone();
        let exits = exits.clone();
        std::thread::Builder::new()
            .name(format!("launch-wait-{node_id}"))
            .spawn(move || loop {
                // Poll: `Child::wait` would need the child out of the map,
                // where `kill` must still find it.
                {
                    let mut map = children.lock().expect("children lock");
                    let done = match map.get_mut(&node_id).map(Child::try_wait) {
                        Some(Ok(Some(status))) => {
                            map.remove(&node_id);
                            Some(Some(status))
                        }
                        Some(Ok(None)) => None,
                        Some(Err(_)) | None => Some(None),
                    };
                    // Sent under the lock: once the map is empty, every
                    // exit is in the channel.
                    if let Some(status) = done {
                        let _ = exits.send((node_id, status));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            })
            .map_err(|e| crate::Error::Io(format!("cannot start a waiter thread for pid {pid}: {e}")))?;
        Ok(())
    }
}

/// What a node process's exit status says (the table in the
/// [`launch`](super) docs).
pub(super) fn exit_of(status: Option<ExitStatus>) -> Exit {
    match status.map(|s| (s.code(), s)) {
        Some((Some(0), _)) => Exit::JobEnded,
        Some((Some(EXIT_STEPPED_DOWN), _)) => Exit::SteppedDown,
        Some((Some(EXIT_COORDINATOR_LOST), _)) => Exit::CoordinatorLost(format!("it exited with status {EXIT_COORDINATOR_LOST}")),
        Some((Some(code), _)) => Exit::Failed(format!("exit status {code}")),
        Some((None, s)) if killed_by_sigkill(s) => Exit::SteppedDown,
        Some((None, s)) => Exit::Failed(format!("{s}")),
        None => Exit::Failed("its exit status is unknown".into()),
    }
}

#[cfg(unix)]
fn killed_by_sigkill(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed_by_sigkill(_: ExitStatus) -> bool {
    false
}

/// Makes the child die (SIGKILL) when this process dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
/// not the process: [`Launch::run`](super::Launch::run) spawns every node
/// from the thread it runs on, which lives until the nodes have stopped.
/// If the launcher died between the fork and the `prctl`, the signal
/// would never come: the child then sees another parent and exits at once.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls (prctl, getppid, _exit); it
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(EXIT_NODE_FAILED);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn exit_statuses_say_how_a_node_stopped() {
        use std::os::unix::process::ExitStatusExt;
        let code = |c: i32| Some(ExitStatus::from_raw(c << 8));
        assert_eq!(exit_of(code(0)), Exit::JobEnded);
        assert_eq!(exit_of(code(EXIT_STEPPED_DOWN)), Exit::SteppedDown);
        assert!(matches!(exit_of(code(EXIT_COORDINATOR_LOST)), Exit::CoordinatorLost(_)));
        assert_eq!(exit_of(code(1)), Exit::Failed("exit status 1".into()));
        assert_eq!(exit_of(Some(ExitStatus::from_raw(9))), Exit::SteppedDown);
        assert!(matches!(exit_of(Some(ExitStatus::from_raw(11))), Exit::Failed(_)));
        assert!(matches!(exit_of(None), Exit::Failed(_)));
    }
}
