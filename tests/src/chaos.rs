//! F4: W1 as separate node processes on a real etcd, with random node
//! processes killed (SIGKILL) again and again while it runs. Shared by the
//! test suite and `scripts/chaos`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use taskgraph::coord::{Coordinator, Event};
use taskgraph::launch::Launch;
use taskgraph::JobStatus;

use crate::etcd::EtcdServer;

/// What a chaos run did and got.
#[derive(Debug)]
pub struct ChaosReport {
    /// Node processes killed.
    pub kills: usize,
    /// Of them, the root's node.
    pub root_kills: usize,
    /// How the job ended.
    pub status: JobStatus,
    /// The root's recorded values, by epoch.
    pub values: Vec<(u64, String)>,
    /// Node processes started in all.
    pub started: usize,
    /// Processes the run started that were still alive at the end.
    pub leftovers: Vec<u32>,
}

impl ChaosReport {
    /// Whether the values are exactly W1's for epochs `0..=last`.
    pub fn values_ok(&self, last: u64) -> bool {
        self.values == (0..=last).map(|e| (e, (105 * e).to_string())).collect::<Vec<_>>()
    }
}

/// A small deterministic generator (xorshift), so a seed replays a run's
/// choice of victims.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Runs W1 (`epochs` epochs, 15 tasks, 2 spares) as processes of
/// `node_program`, killing one random node process each time the job has
/// advanced an epoch since the last kill, `kills` times (every fourth kill
/// is the root's node). `log` gets one line per kill.
pub fn run(node_program: &Path, kills: usize, seed: u64, mut log: impl FnMut(String)) -> ChaosReport {
    let epochs = 2 * kills as u64 + 10;
    let etcd = EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let job = "chaos";
    let args = ["--size", "1000", "--epochs", &epochs.to_string()].iter().map(Into::into).collect();
    let launch = Launch::new(node_program, args, etcd.endpoint(), job, 15).spares(2).timeout(Duration::from_secs(240));
    let processes = launch.processes();
    let runner = {
        let coord = coord.clone();
        std::thread::spawn(move || {
            let report = launch.run(coord);
            // Dropping the launch kills anything left.
            (report, launch.pids())
        })
    };

    let mut rng = Rng(seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut killed = Vec::new();
    let mut root_kills = 0;
    let epoch_key = format!("/taskgraph/{job}/epoch");
    rt.block_on(async {
        let mut watch = coord.watch(&epoch_key, 0).await.expect("a watch of the epoch");
        let mut last_kill_epoch = None;
        while killed.len() < kills {
            // Wait for the next epoch (a bounded wait: a stuck job fails).
            let event = tokio::time::timeout(Duration::from_secs(60), watch.next()).await;
            let epoch: u64 = match event {
                Ok(Some(Ok(Event::Put(kv)))) => String::from_utf8_lossy(&kv.value).parse().unwrap_or(0),
                Ok(Some(Ok(_))) => continue,
                other => {
                    log(format!("chaos: the job stopped advancing: {other:?}"));
                    break;
                }
            };
            if epoch < 2 || last_kill_epoch.is_some_and(|k| epoch <= k) || epoch >= epochs {
                continue;
            }
            let root_node = coord
                .get(&format!("/taskgraph/{job}/tasks/0/primary"))
                .await
                .ok()
                .flatten()
                .and_then(|kv| String::from_utf8_lossy(&kv.value).split_whitespace().find_map(|p| p.strip_prefix("node=")?.parse::<u64>().ok()));
            let pids = processes.pids_by_node();
            let victim = if killed.len() % 4 == 0 {
                root_node.and_then(|n| pids.iter().find(|(id, _)| *id == n).copied())
            } else {
                None
            }
            .or_else(|| (!pids.is_empty()).then(|| pids[(rng.next() % pids.len() as u64) as usize]));
            let Some((node, pid)) = victim else { continue };
            if processes.kill(pid) {
                let is_root = Some(node) == root_node;
                root_kills += usize::from(is_root);
                killed.push(pid);
                last_kill_epoch = Some(epoch);
                log(format!(
                    "kill {}: node {node} (pid {pid}{}) at epoch {epoch}",
                    killed.len(),
                    if is_root { ", the root's" } else { "" }
                ));
            }
        }
    });

    let (report, _) = runner.join().expect("the launcher thread");
    let report = report.expect("the launch runs");
    let (records, _) = rt.block_on(coord.get_prefix(&format!("/taskgraph/{job}/records/root/"))).expect("records");
    let values = records
        .into_iter()
        .filter_map(|kv| {
            let e = kv.key.rsplit('/').next()?.parse().ok()?;
            Some((e, String::from_utf8_lossy(&kv.value).into_owned()))
        })
        .collect();
    let leftovers = killed.iter().copied().chain(processes.all_started()).filter(|&p| alive(p)).collect();
    ChaosReport { kills: killed.len(), root_kills, status: report.status, values, started: report.started, leftovers }
}
