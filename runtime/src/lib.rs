//! # taskgraph
//!
//! A framework for fault-tolerant distributed iterative programs: an
//! application is a graph of tasks that exchange typed messages in epochs.
//!
//! This crate is what applications depend on. Today it holds:
//!
//! * [`message`]: typed messages that travel as Cap'n Proto, declared with
//!   `#[derive(Message)]` on plain Rust types.
//!
//! The runtime (nodes, epochs, exactly-once fetch, failover) and the graph
//! DSL are being built; see the repository's README for the status.

#![warn(missing_docs)]

// Lets `::taskgraph::...` paths in macro output resolve inside this crate.
extern crate self as taskgraph;

mod error;
pub mod message;
pub mod view;
#[doc(hidden)]
pub mod wire;

pub use error::{DecodeError, DecodeErrorKind, Error, Result};
pub use message::Message;

/// Items used by the code that taskgraph's macros generate. Not a public
/// API: anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::wire as capnp;
}
