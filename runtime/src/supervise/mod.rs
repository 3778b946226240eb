//! Supervising a job's nodes: starting replacements for the ones that die,
//! and failing the job when it cannot go on.
//!
//! [`Supervisor`] is the policy, and only the policy: it is told what
//! happened (a node exited, the job's status or epoch as read, the
//! coordinator did not answer, time passed) and says what to do next
//! (start a replacement, fail the job, kill what is left, stop). It does
//! no I/O, so its rules are tested on their own; two supervisors run it:
//!
//! * [`local`]: [`LocalCluster`](local::LocalCluster), nodes as tasks on a
//!   pool of threads in this process;
//! * [`launch`]: [`Launch`](launch::Launch), nodes as child processes.
//!
//! # The rules
//!
//! * A node that steps down (lost its lease or task, killed by a fault
//!   hook or SIGKILL) is replaced at once; one that failed otherwise after
//!   a back-off that doubles with each failure in a row, from
//!   [`Limits::backoff`]`.0` up to `.1`, and starts again from the first
//!   step after [`Limits::healthy_while`] without a failure.
//! * A node that gave up on the coordinator is evidence that the
//!   coordinator is gone: its replacement waits until the coordinator
//!   answers again (it would find it gone too). After
//!   [`Limits::patience`] without an answer the supervisor gives up.
//! * More than [`Limits::max_restarts`] deaths fail the job; so do no new
//!   epoch for [`Limits::stall`] (time the coordinator is away does not
//!   count) and, if set, [`Limits::timeout`] in all.
//! * A node that exits once the job has ended is no death: it is not
//!   replaced, whatever its exit (a job that is done stays done).
//! * The job is failed once, by compare-and-swap from `running`
//!   (`job::fail_running`): an end that was written
//!   first (done, say) stands, and the supervisor reports that one.
//! * After the end the nodes get [`Limits::grace`] to leave (counted
//!   from the end, or from the last node that left if later); then the
//!   rest are killed.

pub mod launch;
pub mod local;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::keys::JobStatus;

/// The settings of a [`Supervisor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deaths (while the job runs) beyond which the job fails.
    pub max_restarts: usize,
    /// The delay before replacing a failed node: the first, and the
    /// largest it doubles up to.
    pub backoff: (Duration, Duration),
    /// After this long without a failure, the back-off starts again.
    pub healthy_while: Duration,
    /// How long the job may go without a new epoch (`None`: forever).
    pub stall: Option<Duration>,
    /// How long the job may run in all (`None`: forever).
    pub timeout: Option<Duration>,
    /// How long the coordinator may be unreachable before the supervisor
    /// gives up (`None`: forever).
    pub patience: Option<Duration>,
    /// How long the nodes get to leave once the job has ended.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_restarts: 1000,
            backoff: (Duration::from_millis(250), Duration::from_secs(8)),
            healthy_while: Duration::from_secs(30),
            stall: Some(DEFAULT_STALL_TIMEOUT),
            timeout: None,
            patience: Some(DEFAULT_COORDINATOR_PATIENCE),
            grace: Duration::from_secs(10),
        }
    }
}

/// The default of [`Launch::stall_timeout`](launch::Launch::stall_timeout) and
/// [`LocalCluster::stall_timeout`](local::LocalCluster::stall_timeout), 3
/// minutes: how long a running job may go without a new epoch or status
/// before its supervisor fails it.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(180);

/// The default of [`Launch::coordinator_patience`](launch::Launch::coordinator_patience).
pub const DEFAULT_COORDINATOR_PATIENCE: Duration = Duration::from_secs(60);

/// How a node stopped, as its supervisor saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It saw the job end (exit status 0).
    JobEnded,
    /// It stepped down (lost its lease or task) or was killed (a fault
    /// hook, SIGKILL): nothing is wrong with it.
    SteppedDown,
    /// It gave up on the coordinator.
    CoordinatorLost(String),
    /// It failed in any other way.
    Failed(String),
}

/// Why a supervisor ended a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It ran longer than [`Limits::timeout`].
    TimedOut(Duration),
    /// No new epoch for [`Limits::stall`]; the epoch it was stuck at.
    Stalled(Duration, String),
    /// More than [`Limits::max_restarts`] nodes died.
    TooManyRestarts(usize),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::TimedOut(t) => write!(f, "timed out after {t:?}"),
            Verdict::Stalled(s, epoch) => write!(f, "no progress for {s:?} (stuck at epoch {epoch})"),
            Verdict::TooManyRestarts(n) => write!(f, "more than {n} node restarts"),
        }
    }
}

/// What happened, as a supervisor tells its [`Supervisor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A node was started (the supervisor's own: a [`Decision::Restart`]
    /// counts itself).
    Started,
    /// Node `node` exited.
    Exited {
        /// The node's id.
        node: u64,
        /// How.
        exit: Exit,
    },
    /// The job's status, as read from the coordinator or as a node that
    /// left reported it.
    Status(JobStatus),
    /// The epoch key's value, as read from the coordinator.
    Epoch(Option<Vec<u8>>),
    /// A request to the coordinator got no answer.
    Unreachable(String),
}

/// What a supervisor should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a node in the place of node `.0` (which died).
    Restart(u64),
    /// Fail the job, by compare-and-swap from `running`, and tell the
    /// [`Supervisor`] the status that stands if it is not this one.
    FailJob(Verdict),
    /// The coordinator has not answered for [`Limits::patience`] (since
    /// `.1`'s failure, `.0` ago): kill the nodes and report the job
    /// failed (it cannot be recorded).
    GiveUp(Duration, String),
    /// The job has ended and its nodes had their grace to leave: kill
    /// those that are left.
    KillAll,
    /// Every node has stopped and none is due: supervision is over.
    Stop,
    /// Nothing to do before this long has passed, unless something happens.
    Wait(Duration),
}

/// The supervision policy of one job's nodes (the [module docs](self)).
#[derive(Debug)]
pub struct Supervisor {
    limits: Limits,
    started_at: Instant,
    /// The job's status as last known (running until told otherwise).
    status: JobStatus,
    /// When the job ended, as far as this supervisor knows.
    ended_at: Option<Instant>,
    /// Nodes started and not exited.
    live: usize,
    /// Node exits while the job ran.
    died: usize,
    /// When the last node exited.
    last_exit: Option<Instant>,
    /// Replacements due: when, and for which node.
    pending: VecDeque<(Instant, u64)>,
    /// Failures in a row, and when the last was.
    streak: u32,
    last_failure: Option<Instant>,
    /// Since when the coordinator has not answered, and why.
    unreachable: Option<(Instant, String)>,
    /// The epoch last read, and when it (or the status) last changed.
    epoch: Option<Vec<u8>>,
    progressed_at: Instant,
    /// The job is to be failed for this (decided, not yet handed out).
    to_fail: Option<Verdict>,
    /// Why this supervisor failed the job, once it has.
    verdict: Option<Verdict>,
    gave_up: bool,
    killed: bool,
}

/// The longest [`Decision::Wait`]: a supervisor looks at least this often.
const MAX_WAIT: Duration = Duration::from_secs(1);

impl Supervisor {
    /// A supervisor of a job that starts now, with no node yet.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Supervisor {
            limits,
            started_at: now,
            status: JobStatus::Running,
            ended_at: None,
            live: 0,
            died: 0,
            last_exit: None,
            pending: VecDeque::new(),
            streak: 0,
            last_failure: None,
            unreachable: None,
            epoch: None,
            progressed_at: now,
            to_fail: None,
            verdict: None,
            gave_up: false,
            killed: false,
        }
    }

    /// The job's status as last known.
    pub fn status(&self) -> &JobStatus {
        &self.status
    }
    /// Whether the job has ended (as far as this supervisor knows).
    pub fn ended(&self) -> bool {
        self.ended_at.is_some()
    }
    /// Nodes that died while the job ran.
    pub fn died(&self) -> usize {
        self.died
    }
    /// Nodes alive.
    pub fn live(&self) -> usize {
        self.live
    }
    /// Why this supervisor failed the job, if it did.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }
    /// Whether the coordinator answers (as far as this supervisor knows).
    pub fn reachable(&self) -> bool {
        self.unreachable.is_none()
    }

    /// Takes `event` (which happened at `now`) into account; then
    /// [`next`](Self::next) says what to do.
    pub fn on(&mut self, event: Event, now: Instant) {
        match event {
            Event::Started => self.live += 1,
            Event::Exited { node, exit } => self.exited(node, exit, now),
            Event::Status(status) => {
                self.answered(now);
                self.set_status(status, now);
            }
            Event::Epoch(epoch) => {
                self.answered(now);
                if epoch != self.epoch {
                    self.epoch = epoch;
                    self.progressed_at = now;
                }
            }
            Event::Unreachable(why) => {
                self.unreachable.get_or_insert((now, why));
            }
        }
    }

    fn set_status(&mut self, status: JobStatus, now: Instant) {
        if status == JobStatus::Running {
            // An end is final: a late read does not undo it.
            return;
        }
        if self.ended_at.is_none() {
            self.ended_at = Some(now);
        }
        // The verdict stands only if it is what was recorded.
        if self.verdict.as_ref().is_some_and(|v| status != JobStatus::Failed(v.to_string())) {
            self.verdict = None;
        }
        self.status = status;
        self.to_fail = None;
        self.pending.clear();
    }

    fn answered(&mut self, now: Instant) {
        if let Some((since, _)) = self.unreachable.take() {
            // Time the coordinator was away does not count as a stall.
            self.progressed_at += now.saturating_duration_since(since);
        }
    }

    fn exited(&mut self, node: u64, exit: Exit, now: Instant) {
        self.live = self.live.saturating_sub(1);
        self.last_exit = Some(now);
        if self.ended() || self.to_fail.is_some() {
            return;
        }
        self.died += 1;
        let failed = match &exit {
            Exit::JobEnded | Exit::SteppedDown => false,
            Exit::CoordinatorLost(why) => {
                self.unreachable.get_or_insert_with(|| (now, format!("node {node} gave up on the coordinator: {why}")));
                true
            }
            Exit::Failed(_) => true,
        };
        let mut delay = Duration::ZERO;
        if failed {
            if self.last_failure.is_some_and(|t| now.saturating_duration_since(t) > self.limits.healthy_while) {
                self.streak = 0;
            }
            self.streak += 1;
            self.last_failure = Some(now);
            let (first, max) = self.limits.backoff;
            delay = first.saturating_mul(1 << (self.streak - 1).min(16)).min(max.max(first));
        }
        if self.died > self.limits.max_restarts {
            self.to_fail = Some(Verdict::TooManyRestarts(self.limits.max_restarts));
            self.pending.clear();
        } else {
            self.pending.push_back((now + delay, node));
        }
    }

    fn fail(&mut self, verdict: Verdict, now: Instant) -> Decision {
        // Until told otherwise, the job ended as this supervisor decided.
        self.set_status(JobStatus::Failed(verdict.to_string()), now);
        self.verdict = Some(verdict.clone());
        Decision::FailJob(verdict)
    }

    /// What to do now. Call it again after each decision but
    /// [`Wait`](Decision::Wait) and [`Stop`](Decision::Stop).
    pub fn next(&mut self, now: Instant) -> Decision {
        if self.gave_up {
            return Decision::Stop;
        }
        if let Some(ended_at) = self.ended_at {
            if self.live == 0 {
                return Decision::Stop;
            }
            let deadline = self.last_exit.map_or(ended_at, |t| t.max(ended_at)) + self.limits.grace;
            if now >= deadline && !self.killed {
                self.killed = true;
                return Decision::KillAll;
            }
            return Decision::Wait(deadline.saturating_duration_since(now).clamp(Duration::from_millis(1), MAX_WAIT));
        }
        if let Some(verdict) = self.to_fail.take() {
            return self.fail(verdict, now);
        }
        if let (Some((since, why)), Some(patience)) = (&self.unreachable, self.limits.patience) {
            if now.saturating_duration_since(*since) >= patience {
                self.gave_up = true;
                let why = why.clone();
                self.set_status(JobStatus::Failed(format!("the coordinator has been unreachable for {patience:?}: {why}")), now);
                return Decision::GiveUp(patience, why);
            }
        }
        if let Some(t) = self.limits.timeout.filter(|t| now.saturating_duration_since(self.started_at) > *t) {
            return self.fail(Verdict::TimedOut(t), now);
        }
        if let Some(s) = self.limits.stall.filter(|s| self.reachable() && now.saturating_duration_since(self.progressed_at) > *s) {
            let at = self.epoch.as_deref().map_or("?".into(), |e| String::from_utf8_lossy(e).into_owned());
            return self.fail(Verdict::Stalled(s, at), now);
        }
        // No replacement while the coordinator is away: it would find it
        // gone too.
        if self.reachable() && self.pending.front().is_some_and(|(t, _)| *t <= now) {
            let (_, node) = self.pending.pop_front().expect("a replacement is due");
            self.live += 1;
            return Decision::Restart(node);
        }
        if self.live == 0 && self.pending.is_empty() {
            return Decision::Stop;
        }
        let mut wait = MAX_WAIT;
        if let Some((t, _)) = self.pending.front().filter(|_| self.reachable()) {
            wait = wait.min(t.saturating_duration_since(now));
        }
        if let Some(t) = self.limits.timeout {
            wait = wait.min((self.started_at + t).saturating_duration_since(now));
        }
        if let Some(s) = self.limits.stall.filter(|_| self.reachable()) {
            wait = wait.min((self.progressed_at + s).saturating_duration_since(now));
        }
        Decision::Wait(wait.max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests;
