//! F4: W1 as separate node processes on a real etcd, with random node
//! processes killed (SIGKILL) again and again while it runs. Shared by the
//! test suite and `scripts/chaos`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use taskgraph::coord::{Coordinator, Event};
use taskgraph::keys::{Holder, Keys};
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
    /// For each kill, the time from the SIGKILL to the victim's task
    /// having a new primary (a backup that took over, or a spare).
    pub failovers: Vec<Duration>,
    /// What each task recorded of its progress: how many times it
    /// computed each epoch's result.
    pub computed: Vec<(u64, Vec<u32>)>,
    /// Takeovers by a node that had the task's progress (a hot backup).
    pub takeovers: usize,
}

impl ChaosReport {
    /// Whether the values are exactly W1's for epochs `0..=last`.
    pub fn values_ok(&self, last: u64) -> bool {
        self.values == (0..=last).map(|e| (e, (105 * e).to_string())).collect::<Vec<_>>()
    }

    /// Epochs some task computed more than once, in all.
    pub fn recomputations(&self) -> u64 {
        self.computed.iter().flat_map(|(_, c)| c).map(|&n| u64::from(n.saturating_sub(1))).sum()
    }

    /// Whether every task's progress covers every epoch `0..=last` (no
    /// progress lost to a failure).
    pub fn progress_complete(&self, last: u64) -> bool {
        self.computed.len() == 15 && self.computed.iter().all(|(_, c)| c.len() as u64 == last + 1 && c.iter().all(|&n| n >= 1))
    }

    /// The median and the worst failover time.
    pub fn failover_stats(&self) -> Option<(Duration, Duration)> {
        let mut f = self.failovers.clone();
        f.sort();
        Some((*f.get(f.len() / 2)?, *f.last()?))
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

/// Runs W1 (`epochs` epochs, 15 tasks, 2 spares, `replicas` nodes per
/// task) as processes of `node_program`, killing one node process each
/// time the job has advanced an epoch since the last kill, `kills` times
/// (every fourth kill is the root's primary). With one replica the victim
/// is any node (spares included); with hot backups it is the primary of a
/// task whose backup has caught up (its key says `ready`: the hot-standby
/// guarantee holds while one caught-up replica survives each kill).
/// `log` gets one line per kill.
pub fn run(node_program: &Path, kills: usize, seed: u64, replicas: u32, mut log: impl FnMut(String)) -> ChaosReport {
    let epochs = 2 * kills as u64 + 10;
    let etcd = EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
    let coord: Arc<dyn Coordinator> = Arc::new(rt.block_on(etcd.connect()));
    let job = "chaos";
    let args = ["--size", "1000", "--epochs", &epochs.to_string(), "--replicas", &replicas.to_string()].iter().map(Into::into).collect();
    let launch =
        Launch::new(node_program, args, etcd.endpoint(), job, 15).replicas(replicas).spares(2).timeout(Duration::from_secs(240));
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
    let mut measures = Vec::new();
    let layout = Keys::new(job);
    let epoch_key = layout.epoch();
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
            // Who holds which task now: one read.
            let (keys, _) = coord.get_prefix(&layout.tasks()).await.unwrap_or_default();
            let primaries: Vec<(u64, u64, i64)> = keys
                .iter()
                .filter_map(|kv| Some((layout.primary_task(&kv.key)?, Holder::parse(&kv.value)?.node, kv.mod_revision)))
                .collect();
            // With hot backups, the guarantee is for a task with a caught-up
            // backup (its key says `ready`): only such tasks' primaries die.
            // (A backup that has just become the primary still has its
            // backup key for a moment: it does not count.)
            let ready: Vec<u64> = keys
                .iter()
                .filter_map(|kv| {
                    let (t, _) = layout.backup_slot(&kv.key)?;
                    let backup = Holder::parse(&kv.value).filter(|h| h.ready)?;
                    primaries.iter().all(|p| p.0 != t || p.1 != backup.node).then_some(t)
                })
                .collect();
            let primary_of = |t: u64| primaries.iter().find(|p| p.0 == t).map(|p| p.1).filter(|_| replicas == 1 || ready.contains(&t));
            let root_node = primaries.iter().find(|p| p.0 == 0).map(|p| p.1);
            let pids = processes.pids_by_node();
            let pid_of = |n: u64| pids.iter().find(|(id, _)| *id == n).copied();
            let victim = if killed.len() % 4 == 0 {
                primary_of(0).and_then(pid_of)
            } else if replicas > 1 {
                let first = rng.next() % 14;
                (0..14).map(|i| 1 + (first + i) % 14).find_map(primary_of).and_then(pid_of)
            } else {
                None
            }
            .or_else(|| (!pids.is_empty() && replicas == 1).then(|| pids[(rng.next() % pids.len() as u64) as usize]));
            let Some((node, pid)) = victim else { continue };
            // The victim's task, if it is a primary: watch for its next
            // primary, from before the kill.
            let task_of_victim = primaries.iter().find(|p| p.1 == node).map(|p| (p.0, p.2));
            let mut next_primary = match task_of_victim {
                Some((t, rev)) => coord.watch(&layout.primary(t), rev + 1).await.ok(),
                None => None,
            };
            let killed_at = std::time::Instant::now();
            if processes.kill(pid) {
                let is_root = Some(node) == root_node;
                root_kills += usize::from(is_root);
                killed.push(pid);
                last_kill_epoch = Some(epoch);
                // The time to the task's next primary, measured aside (the
                // kills go on meanwhile).
                if let (Some((t, _)), Some(mut watch)) = (task_of_victim, next_primary.take()) {
                    measures.push(tokio::spawn(async move {
                        let deadline = killed_at + Duration::from_secs(30);
                        while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline.into(), watch.next()).await {
                            if let Event::Put(_) = event {
                                return (t, Some(killed_at.elapsed()));
                            }
                        }
                        (t, None)
                    }));
                }
                log(format!(
                    "kill {}: node {node} (pid {pid}{}) at epoch {epoch}{}",
                    killed.len(),
                    if is_root { ", the root's" } else { "" },
                    task_of_victim.map_or(String::new(), |(t, _)| format!(", task {t}'s primary")),
                ));
            }
        }
    });

    let mut failovers = Vec::new();
    for m in measures {
        match rt.block_on(m) {
            Ok((t, Some(d))) => {
                log(format!("task {t}: a new primary {:.1} ms after the kill", d.as_secs_f64() * 1e3));
                failovers.push(d);
            }
            Ok((t, None)) => log(format!("task {t}: no new primary within 30 s of the kill")),
            Err(e) => log(format!("a failover measurement failed: {e}")),
        }
    }
    let (report, _) = runner.join().expect("the launcher thread");
    let report = report.expect("the launch runs");
    let layout = Keys::new(job);
    let (records, _) = rt.block_on(coord.get_prefix(&layout.record("root/"))).expect("records");
    let values = records
        .into_iter()
        .filter_map(|kv| {
            let e = kv.key.rsplit('/').next()?.parse().ok()?;
            Some((e, String::from_utf8_lossy(&kv.value).into_owned()))
        })
        .collect();
    let leftovers = killed.iter().copied().chain(processes.all_started()).filter(|&p| alive(p)).collect();
    let (all, _) = rt.block_on(coord.get_prefix(&layout.records())).expect("records");
    let mut computed = Vec::new();
    let mut takeovers = 0;
    for kv in all {
        let name = kv.key.trim_start_matches(&layout.records()).to_owned();
        if let Some(t) = name.strip_prefix("computed/").and_then(|t| t.parse().ok()) {
            let counts = String::from_utf8_lossy(&kv.value).split(',').filter_map(|c| c.parse().ok()).collect();
            computed.push((t, counts));
        } else if name.starts_with("takeover/") {
            takeovers += 1;
        }
    }
    ChaosReport {
        kills: killed.len(),
        root_kills,
        status: report.status,
        values,
        started: report.started,
        leftovers,
        failovers,
        computed,
        takeovers,
    }
}
