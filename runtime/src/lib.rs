//! # taskgraph
//!
//! A framework for fault-tolerant distributed iterative programs: an
//! application is a graph of tasks that exchange typed messages in epochs.
//!
//! This crate is what applications depend on:
//!
//! * [`message`]: typed messages that travel as Cap'n Proto, declared with
//!   `#[derive(Message)]` on plain Rust types;
//! * [`graph`], [`task`](mod@task), [`job`]: a job's tasks, topology and typed edges,
//!   and the handlers a task implements;
//! * [`keys`]: where a job's state lives in the coordinator;
//! * [`dsl`]: what the graph macros (`taskgraph!`, `#[task]`,
//!   `#[topology]`) generate code against;
//! * [`supervise`]: the supervision policy, and its two supervisors:
//!   [`local`] (a whole job in one process, with fault injection) and
//!   [`launch`] (a job as supervised node processes);
//! * [`coord`]: the coordination store (embedded, or etcd in a cluster);
//! * [`node`]: the node event loop (its transport, capnp-rpc over TCP, is
//!   internal: `transport`).

#![warn(missing_docs)]

// Lets `::taskgraph::...` paths in macro output resolve inside this crate.
extern crate self as taskgraph;

pub mod coord;
pub mod dsl;
mod error;
mod fault_points;
pub mod graph;
pub mod job;
pub mod keys;
pub mod message;
pub mod node;
pub mod protocol;
mod spawn;
pub mod supervise;
mod transport;
pub mod task;
pub mod view;
#[doc(hidden)]
pub mod wire;

// Their old paths, which programs use.
pub use supervise::{launch, local};

pub use error::{DecodeError, DecodeErrorKind, Error, Result};
pub use graph::{Edge, Epoch, LinkType, TaskId, Topology};
pub use taskgraph_macros::{task, taskgraph, topology};
pub use job::Job;
pub use keys::JobStatus;
pub use local::{Faults, JobResult, LocalCluster};
pub use node::{run_node, NodeExit, NodeOptions};
pub use message::Message;
pub use task::{Context, Received, ServeRequest, Task};

/// What most programs need.
pub mod prelude {
    pub use crate::graph::{Edge, Epoch, LinkType, TaskId, Topology};
    pub use crate::job::Job;
    pub use crate::keys::JobStatus;
    pub use crate::local::{FaultKind, Faults, JobResult, LocalCluster};
    pub use crate::message::{Encoded, Frame, Message};
    pub use crate::node::FaultPoint;
    pub use crate::task::{Context, Received, ServeRequest, Task};
    pub use crate::dsl::{Fetched, RoleContext, Serve, TaskCx};
    pub use crate::{task, topology};
    pub use taskgraph_macros::taskgraph;
}

/// Items used by the code that taskgraph's macros generate. Not a public
/// API: anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::dsl::private as dsl;
    pub use crate::wire as capnp;
}
