//! Running a job as separate node processes on this machine, supervised:
//! a node process that dies while the job runs is replaced by a new one,
//! as a process supervisor (or Kubernetes) restarts a crashed pod.
//!
//! The application binary runs one node when called with
//! `--etcd <endpoints> --job <name> --node-id <id> [--task <t>]` appended
//! to its arguments (see [`NodeArgs`]); the `taskgraph launch` command and
//! [`Launch`] start it that way.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::coord::Coordinator;
use crate::graph::TaskId;
use crate::job::{JobStatus, Keys};

/// The exit status of a node process that gave up on the coordinator
/// (unreachable at start, or for longer than a node waits it out):
/// `EX_UNAVAILABLE` of sysexits.h. A supervisor that sees it should not
/// just start another node, which would find the coordinator gone too.
pub const EXIT_COORDINATOR_LOST: i32 = 69;

/// What a node process is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeArgs {
    /// The coordinator's endpoints (comma-separated etcd URLs).
    pub etcd: String,
    /// The job's name.
    pub job: String,
    /// This node's id.
    pub node_id: u64,
    /// The task to try first.
    pub task: Option<TaskId>,
}

impl NodeArgs {
    /// The arguments that say this.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--etcd".into(), self.etcd.clone(), "--job".into(), self.job.clone(), "--node-id".into(), self.node_id.to_string()];
        if let Some(t) = self.task {
            a.extend(["--task".into(), t.to_string()]);
        }
        a
    }

    /// Finds the node arguments among `args` (anywhere, in any order);
    /// `None` if there is no `--etcd`.
    pub fn parse(args: &[String]) -> Result<Option<NodeArgs>, String> {
        let value = |name: &str| -> Option<&String> {
            args.iter().position(|a| a == name).and_then(|i| args.get(i + 1))
        };
        let Some(etcd) = value("--etcd") else { return Ok(None) };
        let job = value("--job").ok_or("--etcd needs --job <name>")?.clone();
        let node_id = value("--node-id")
            .ok_or("--etcd needs --node-id <id>")?
            .parse()
            .map_err(|_| "--node-id takes a number".to_string())?;
        let task = match value("--task") {
            Some(t) => Some(t.parse().map_err(|_| "--task takes a number".to_string())?),
            None => None,
        };
        Ok(Some(NodeArgs { etcd: etcd.clone(), job, node_id, task }))
    }
}

/// How a launched job went.
#[derive(Clone, Debug)]
pub struct LaunchReport {
    /// How the job ended.
    pub status: JobStatus,
    /// Node processes started in all.
    pub started: usize,
    /// Node processes that died while the job ran (and were replaced).
    pub died: usize,
}

/// A job to run as node processes: `tasks + spares` processes of
/// `program args.. <node args>`.
#[derive(Debug)]
pub struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    etcd: String,
    job: String,
    tasks: u64,
    replicas: u32,
    spares: usize,
    timeout: Duration,
    max_restarts: usize,
    children: Arc<Mutex<HashMap<u64, Child>>>,
    started: Arc<Mutex<Vec<u32>>>,
}

impl Launch {
    /// Runs `program` with `args` for each node of job `job`, coordinated
    /// by the etcd at `etcd`.
    pub fn new(program: impl Into<PathBuf>, args: Vec<OsString>, etcd: impl Into<String>, job: impl Into<String>, tasks: u64) -> Self {
        Launch {
            program: program.into(),
            args,
            etcd: etcd.into(),
            job: job.into(),
            tasks,
            replicas: 1,
            spares: 0,
            timeout: Duration::from_secs(600),
            max_restarts: 1000,
            children: Arc::new(Mutex::new(HashMap::new())),
            started: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts `replicas` nodes per task (a primary and hot backups; the
    /// program must build its job with the same `Job::replicas`).
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Also starts `n` spare nodes.
    pub fn spares(mut self, n: usize) -> Self {
        self.spares = n;
        self
    }

    /// Fails the job if it has not ended after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The process ids of the node processes alive now (for status, and
    /// for chaos testing: kill them and watch the job go on).
    pub fn pids(&self) -> Vec<u32> {
        self.children.lock().expect("children lock").values().map(Child::id).collect()
    }

    /// A handle to the live node processes that another thread can use
    /// while [`run`](Self::run) blocks.
    pub fn processes(&self) -> Processes {
        Processes { children: self.children.clone(), started: self.started.clone() }
    }

    fn spawn(&self, node_id: u64, task: Option<TaskId>, exits: &mpsc::Sender<(u64, Option<i32>)>) -> crate::Result<()> {
        let node = NodeArgs { etcd: self.etcd.clone(), job: self.job.clone(), node_id, task };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).args(node.to_args()).stdin(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a signal to the launcher's group does
            // not reach the nodes, and the launcher can kill a node's group.
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|e| crate::Error::Io(format!("cannot start {}: {e}", self.program.display())))?;
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
                let done = {
                    let mut map = children.lock().expect("children lock");
                    match map.get_mut(&node_id).map(Child::try_wait) {
                        Some(Ok(Some(status))) => {
                            map.remove(&node_id);
                            Some(status.code())
                        }
                        Some(Ok(None)) => None,
                        Some(Err(_)) | None => Some(None),
                    }
                };
                if let Some(code) = done {
                    let _ = exits.send((node_id, code));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            })
            .map_err(|e| crate::Error::Io(format!("cannot start a waiter thread for pid {pid}: {e}")))?;
        Ok(())
    }

    /// Starts the nodes and supervises them until the job ends.
    pub fn run(&self, coord: Arc<dyn Coordinator>) -> crate::Result<LaunchReport> {
        let keys = Keys::new(&self.job);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Io(e.to_string()))?;
        // A launch starts the job afresh.
        rt.block_on(coord.delete_prefix(keys.root()))?;
        let (exits, exit_rx) = mpsc::channel();
        let mut next_id = 0u64;
        for _ in 0..self.replicas {
            for t in 0..self.tasks {
                self.spawn(next_id, Some(t), &exits)?;
                next_id += 1;
            }
        }
        for _ in 0..self.spares {
            self.spawn(next_id, None, &exits)?;
            next_id += 1;
        }
        let deadline = Instant::now() + self.timeout;
        let mut died = 0;
        let mut status = JobStatus::Running;
        let mut ended_at: Option<Instant> = None;
        while !self.children.lock().expect("children lock").is_empty() || exit_rx.try_recv().is_ok() {
            if status == JobStatus::Running {
                // The coordinator may be away for a while (restarting):
                // the nodes wait it out, and so does the supervisor.
                match rt.block_on(coord.get(&keys.status())) {
                    Ok(kv) => status = kv.map_or(JobStatus::Running, |kv| JobStatus::parse(&kv.value)),
                    Err(crate::coord::CoordError::Unavailable(why)) => tracing::debug!(%why, "coordinator unreachable"),
                    Err(e) => return Err(e.into()),
                }
            }
            if status != JobStatus::Running && ended_at.is_none() {
                ended_at = Some(Instant::now());
            }
            if Instant::now() > deadline && status == JobStatus::Running {
                let why = format!("timed out after {:?}", self.timeout);
                if let Err(e) = rt.block_on(coord.put(&keys.status(), &JobStatus::Failed(why.clone()).encode(), None)) {
                    tracing::warn!(error = %e, "cannot mark the job failed");
                }
                status = JobStatus::Failed(why);
                ended_at = Some(Instant::now());
            }
            // Nodes get a while to see the end and leave; then they go.
            if ended_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                self.processes().kill_all();
            }
            match exit_rx.recv_timeout(Duration::from_millis(50)) {
                Ok((id, code)) => {
                    // A node leaves when the job ends: look again before
                    // calling its exit a death (the poll above may be late).
                    if status == JobStatus::Running {
                        if let Ok(Some(kv)) = rt.block_on(coord.get(&keys.status())) {
                            status = JobStatus::parse(&kv.value);
                            if status != JobStatus::Running {
                                ended_at.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    if status == JobStatus::Running {
                        died += 1;
                        tracing::info!(node = id, ?code, "node process died; starting a replacement");
                        if died > self.max_restarts {
                            let why = format!("more than {} node restarts", self.max_restarts);
                            if let Err(e) = rt.block_on(coord.put(&keys.status(), &JobStatus::Failed(why).encode(), None)) {
                                tracing::warn!(error = %e, "cannot mark the job failed");
                            }
                        } else {
                            self.spawn(next_id, None, &exits)?;
                            next_id += 1;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(LaunchReport { status, started: next_id as usize, died })
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // No node outlives its launcher.
        self.processes().kill_all();
    }
}

/// The live node processes of a [`Launch`].
#[derive(Clone, Debug)]
pub struct Processes {
    children: Arc<Mutex<HashMap<u64, Child>>>,
    started: Arc<Mutex<Vec<u32>>>,
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_args_round_trip() {
        let a = NodeArgs { etcd: "http://127.0.0.1:2379".into(), job: "j".into(), node_id: 4, task: Some(2) };
        let mut args = vec!["--size".to_string(), "10".into()];
        args.extend(a.to_args());
        assert_eq!(NodeArgs::parse(&args), Ok(Some(a)));
        assert_eq!(NodeArgs::parse(&["--size".into()]), Ok(None));
        assert!(NodeArgs::parse(&["--etcd".into(), "x".into()]).is_err());
    }
}
