//! Where a job's state lives in the coordinator, and what its values
//! say: the layout that nodes, supervisors and tools outside (`taskgraph
//! status`, a dashboard, a test) share, so that none of them spells it
//! out again.
//!
//! # Key layout
//!
//! Everything of job `J` lives under `/taskgraph/J/`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `epoch` | the current epoch, decimal | created as `0` by the first node; advanced by compare-and-swap |
//! | `status` | `running`, `done`, or `failed: <reason>` | created by the first node; changed once, from `running`, always by compare-and-swap: by the task that ends the job, by a supervisor that fails it ([`Launch`](crate::launch::Launch), [`LocalCluster`](crate::LocalCluster)), or by `taskgraph stop` |
//! | `tasks/<t>/primary` | `node=<id> addr=<ip:port>`, bound to the node's lease | created-if-absent by the node that wins task `t`; its create revision is the primary's **term** |
//! | `tasks/<t>/backup/<slot>` | `node=<id> addr=<ip:port>`, then ` ready=1` appended once the backup has caught up with its primary, bound to the node's lease | created-if-absent by a node that becomes a backup of task `t` (slots `1..replicas`); deleted by it when it becomes the primary, or by its primary when it stops following |
//! | `nodes/<id>` | `addr=<ip:port>`, bound to the node's lease | each node, while it lives |
//! | `records/<name>` | bytes | [`Context::record`](crate::task::Context::record) |
//!
//! A node's death shows as the deletion of its lease's keys: its
//! `nodes/<id>` and, if it was a primary, `tasks/<t>/primary`, which spare
//! nodes race to create.

use crate::graph::TaskId;

/// Where a job's state lives in the coordinator (the table in this
/// module's documentation): for tools that read or watch a job from
/// outside, such as `taskgraph status`, a dashboard or a test, so that
/// none of them spells the layout out again.
#[derive(Clone, Debug)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The keys of job `job`.
    pub fn new(job: &str) -> Self {
        Keys { root: format!("/taskgraph/{job}/") }
    }
    /// The prefix of every key of the job.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// The epoch (decimal).
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.root)
    }
    /// The job's status ([`JobStatus::parse`]).
    pub fn status(&self) -> String {
        format!("{}status", self.root)
    }
    /// The prefix of every task's keys.
    pub fn tasks(&self) -> String {
        format!("{}tasks/", self.root)
    }
    /// Every key of task `task` (its primary and backups).
    pub fn task(&self, task: TaskId) -> String {
        format!("{}tasks/{task}/", self.root)
    }
    /// Task `task`'s primary ([`Holder::parse`]; its create revision is the term).
    pub fn primary(&self, task: TaskId) -> String {
        format!("{}tasks/{task}/primary", self.root)
    }
    /// A live node's key.
    pub fn node(&self, node: u64) -> String {
        format!("{}nodes/{node}", self.root)
    }
    /// The prefix of the live nodes' keys.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }
    /// The node id of a `nodes/<id>` key.
    pub fn node_id(&self, key: &str) -> Option<u64> {
        key.strip_prefix(&self.root)?.strip_prefix("nodes/")?.parse().ok()
    }
    /// A record's key.
    pub fn record(&self, name: &str) -> String {
        format!("{}records/{name}", self.root)
    }
    /// The prefix of the records' keys.
    pub fn records(&self) -> String {
        format!("{}records/", self.root)
    }
    /// Task `task`'s backup in `slot` ([`Holder::parse`]).
    pub fn backup(&self, task: TaskId, slot: u32) -> String {
        format!("{}tasks/{task}/backup/{slot}", self.root)
    }
    /// The task and slot of a `tasks/<t>/backup/<slot>` key.
    pub fn backup_slot(&self, key: &str) -> Option<(TaskId, u32)> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("tasks/")?;
        let (task, slot) = rest.split_once("/backup/")?;
        Some((task.parse().ok()?, slot.parse().ok()?))
    }
    /// The task of a `tasks/<t>/primary` key.
    pub fn primary_task(&self, key: &str) -> Option<TaskId> {
        key.strip_prefix(&self.root)?.strip_prefix("tasks/")?.strip_suffix("/primary")?.parse().ok()
    }
}

/// Who holds a task: the value of a `tasks/<t>/primary` or
/// `tasks/<t>/backup/<slot>` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The node's id.
    pub node: u64,
    /// Where the node serves its peers.
    pub addr: std::net::SocketAddr,
    /// On a backup key: the backup has caught up with its primary's
    /// stream (from then on its primary syncs it before every effect), so
    /// it can take the task over with its state (` ready=1`).
    pub ready: bool,
}

impl Holder {
    /// The key's value (`node=<id> addr=<ip:port>[ ready=1]`).
    pub fn encode(&self) -> Vec<u8> {
        let ready = if self.ready { " ready=1" } else { "" };
        format!("node={} addr={}{ready}", self.node, self.addr).into_bytes()
    }
    /// Reads a key's value (unknown `name=value` parts are skipped);
    /// `None` if it has no node or address.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut node = None;
        let mut addr = None;
        let mut ready = false;
        for part in text.split_whitespace() {
            match part.split_once('=')? {
                ("node", v) => node = v.parse().ok(),
                ("addr", v) => addr = v.parse().ok(),
                ("ready", v) => ready = v == "1",
                _ => {}
            }
        }
        Some(Holder { node: node?, addr: addr?, ready })
    }
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Still running.
    Running,
    /// Ended by a task with [`end_job`](crate::task::Context::end_job).
    Done,
    /// Ended by [`fail_job`](crate::task::Context::fail_job) or by the
    /// runtime (e.g. an inconsistent topology).
    Failed(String),
}

impl JobStatus {
    /// The status key's value (`running`, `done`, `failed: <reason>`).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            JobStatus::Running => b"running".to_vec(),
            JobStatus::Done => b"done".to_vec(),
            JobStatus::Failed(r) => format!("failed: {r}").into_bytes(),
        }
    }
    /// Reads the status key's value.
    pub fn parse(bytes: &[u8]) -> JobStatus {
        match std::str::from_utf8(bytes) {
            Ok("running") => JobStatus::Running,
            Ok("done") => JobStatus::Done,
            Ok(s) => JobStatus::Failed(s.strip_prefix("failed: ").unwrap_or(s).to_owned()),
            Err(_) => JobStatus::Failed("unreadable status".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("j");
        assert_eq!(k.primary(12), "/taskgraph/j/tasks/12/primary");
        assert_eq!(k.primary_task(&k.primary(12)), Some(12));
        assert_eq!(k.primary_task("/taskgraph/j/tasks/x/primary"), None);
        assert_eq!(k.primary_task("/taskgraph/other/tasks/1/primary"), None);
        assert_eq!(k.backup_slot(&k.backup(12, 2)), Some((12, 2)));
        assert_eq!(k.primary_task(&k.backup(12, 2)), None);
        assert_eq!(k.backup_slot(&k.primary(12)), None);
        let v = Holder { node: 3, addr: "127.0.0.1:5000".parse().unwrap(), ready: false };
        assert_eq!(Holder::parse(&v.encode()), Some(v.clone()));
        let r = Holder { ready: true, ..v };
        assert_eq!(Holder::parse(&r.encode()), Some(r));
        assert_eq!(k.task(1), "/taskgraph/j/tasks/1/");
        assert_eq!(k.node_id(&k.node(7)), Some(7));
        assert_eq!(k.node_id("/taskgraph/j/nodes/x"), None);
        assert_eq!(k.node_id(&k.primary(7)), None);
        assert_eq!(Holder::parse(b"garbage"), None);
        for status in [JobStatus::Running, JobStatus::Done, JobStatus::Failed("x y".into())] {
            assert_eq!(JobStatus::parse(&status.encode()), status);
        }
        // The literal layout, as tools outside taskgraph see it.
        assert_eq!(k.status(), "/taskgraph/j/status");
        assert_eq!(JobStatus::Failed("why".into()).encode(), b"failed: why");
    }
}
