//! Fault injection for a [`LocalCluster`](super::LocalCluster): a plan of
//! the points where nodes are killed.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::graph::TaskId;
use crate::node::{FaultHook, FaultPoint};

/// The kinds of [`FaultPoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// [`FaultPoint::EnterEpoch`].
    EnterEpoch,
    /// [`FaultPoint::DataReceived`].
    DataReceived,
    /// [`FaultPoint::BeforeServe`].
    BeforeServe,
    /// [`FaultPoint::AfterServe`].
    AfterServe,
    /// [`FaultPoint::BackupApplied`].
    BackupApplied,
    /// [`FaultPoint::BackupLost`].
    BackupLost,
}

#[derive(Clone, Debug)]
enum Rule {
    Exact(FaultPoint),
    Random { kind: FaultKind, probability: f64, tasks: Range<TaskId>, edge: Option<u32> },
}

/// A deterministic fault plan: exact points, and random ones decided by a
/// hash of the seed and the point (so a seed gives the same kills whatever
/// the timing). Each point fires at most once: the replacement node that
/// passes the same point again lives.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    rules: Vec<Rule>,
    fired: Mutex<HashSet<FaultPoint>>,
}

impl Faults {
    /// An empty plan with this seed.
    pub fn new(seed: u64) -> Self {
        Faults { seed, rules: Vec::new(), fired: Mutex::new(HashSet::new()) }
    }

    /// Kills the node at exactly this point.
    pub fn at(mut self, point: FaultPoint) -> Self {
        self.rules.push(Rule::Exact(point));
        self
    }

    /// Kills the node of a task in `tasks` at points of `kind` (on `edge`,
    /// if given) with `probability`.
    pub fn random(mut self, kind: FaultKind, probability: f64, tasks: Range<TaskId>, edge: Option<u32>) -> Self {
        self.rules.push(Rule::Random { kind, probability, tasks, edge });
        self
    }

    /// How many points have fired.
    pub fn fired(&self) -> usize {
        self.fired.lock().expect("fault plan lock").len()
    }

    fn decide(&self, point: &FaultPoint) -> bool {
        let (kind, task, epoch, other, edge) = match *point {
            FaultPoint::EnterEpoch { task, epoch } => (FaultKind::EnterEpoch, task, epoch, 0, None),
            FaultPoint::DataReceived { task, epoch, from, edge } => (FaultKind::DataReceived, task, epoch, from, Some(edge)),
            FaultPoint::BeforeServe { task, epoch, to, edge } => (FaultKind::BeforeServe, task, epoch, to, Some(edge)),
            FaultPoint::AfterServe { task, epoch, to, edge } => (FaultKind::AfterServe, task, epoch, to, Some(edge)),
            FaultPoint::BackupApplied { task, epoch } => (FaultKind::BackupApplied, task, epoch, 0, None),
            FaultPoint::BackupLost { task, epoch } => (FaultKind::BackupLost, task, epoch, 0, None),
        };
        self.rules.iter().any(|rule| match rule {
            Rule::Exact(p) => p == point,
            Rule::Random { kind: k, probability, tasks, edge: want } => {
                if *k != kind || !tasks.contains(&task) || want.is_some_and(|w| Some(w) != edge) {
                    return false;
                }
                let h = mix(mix(mix(mix(self.seed ^ kind as u64, task), epoch), other), edge.map_or(u64::MAX, u64::from));
                (h as f64 / u64::MAX as f64) < *probability
            }
        })
    }
}

impl FaultHook for Faults {
    fn kill(&self, point: &FaultPoint) -> bool {
        if !self.decide(point) {
            return false;
        }
        self.fired.lock().expect("fault plan lock").insert(point.clone())
    }
}

impl FaultHook for Arc<Faults> {
    fn kill(&self, point: &FaultPoint) -> bool {
        (**self).kill(point)
    }
}

/// SplitMix64 over `(h, v)`: a stable, well-spread hash.
fn mix(h: u64, v: u64) -> u64 {
    let mut z = h.wrapping_add(v).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
