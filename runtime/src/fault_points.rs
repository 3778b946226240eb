//! [`FaultPoint`]s built from typed edges: `FaultPoint::before_serve(task,
//! epoch, to, Regression::GRAD)` instead of spelling the variant with the
//! edge's number (`FaultPoint::BeforeServe { task, epoch, to, edge:
//! Regression::GRAD.id }`, which keeps working). A constructor takes the
//! graph's [`Edge`] const, so a point cannot name an edge by a number that
//! is not one, and reads as the point it names.

use crate::graph::{Edge, Epoch, TaskId};
use crate::node::FaultPoint;

impl FaultPoint {
    /// Task `task` is about to enter `epoch` (before its handler runs):
    /// [`FaultPoint::EnterEpoch`].
    pub fn enter_epoch(task: TaskId, epoch: Epoch) -> Self {
        FaultPoint::EnterEpoch { task, epoch }
    }

    /// At `epoch`, a message task `task` fetched over `edge` arrived from
    /// task `from`, before its handler (`on_<edge>`) runs:
    /// [`FaultPoint::DataReceived`].
    pub fn data_received<M>(task: TaskId, epoch: Epoch, from: TaskId, edge: Edge<M>) -> Self {
        FaultPoint::DataReceived { task, epoch, from, edge: edge.id }
    }

    /// At `epoch`, task `to`'s fetch of `edge` arrived at task `task`,
    /// before its serve handler (`serve_<edge>`) runs:
    /// [`FaultPoint::BeforeServe`].
    pub fn before_serve<M>(task: TaskId, epoch: Epoch, to: TaskId, edge: Edge<M>) -> Self {
        FaultPoint::BeforeServe { task, epoch, to, edge: edge.id }
    }

    /// At `epoch`, task `task` has just sent task `to` its reply over
    /// `edge`: [`FaultPoint::AfterServe`].
    pub fn after_serve<M>(task: TaskId, epoch: Epoch, to: TaskId, edge: Edge<M>) -> Self {
        FaultPoint::AfterServe { task, epoch, to, edge: edge.id }
    }

    /// At `epoch`, a backup of task `task` is about to apply an update of
    /// its primary's: [`FaultPoint::BackupApplied`].
    pub fn backup_applied(task: TaskId, epoch: Epoch) -> Self {
        FaultPoint::BackupApplied { task, epoch }
    }

    /// At `epoch`, task `task`'s primary has just dropped a backup that
    /// stopped answering: [`FaultPoint::BackupLost`].
    pub fn backup_lost(task: TaskId, epoch: Epoch) -> Self {
        FaultPoint::BackupLost { task, epoch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Grad;
    const GRAD: Edge<Grad> = Edge::new(3, "grad");

    #[test]
    fn typed_constructors_build_the_variants() {
        assert_eq!(FaultPoint::enter_epoch(1, 2), FaultPoint::EnterEpoch { task: 1, epoch: 2 });
        assert_eq!(FaultPoint::data_received(1, 2, 5, GRAD), FaultPoint::DataReceived { task: 1, epoch: 2, from: 5, edge: 3 });
        assert_eq!(FaultPoint::before_serve(1, 2, 0, GRAD), FaultPoint::BeforeServe { task: 1, epoch: 2, to: 0, edge: 3 });
        assert_eq!(FaultPoint::after_serve(1, 2, 0, GRAD), FaultPoint::AfterServe { task: 1, epoch: 2, to: 0, edge: 3 });
        assert_eq!(FaultPoint::backup_applied(4, 7), FaultPoint::BackupApplied { task: 4, epoch: 7 });
        assert_eq!(FaultPoint::backup_lost(4, 7), FaultPoint::BackupLost { task: 4, epoch: 7 });
    }
}
