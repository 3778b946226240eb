//! Code generation for [taskgraph](https://docs.rs/taskgraph): everything
//! the procedural macros do, as a plain library that can be unit-tested.
//!
//! * [`layout`]: the Cap'n Proto struct layout engine (a port of the
//!   official compiler's algorithm);
//! * [`ids`]: Cap'n Proto type ids;
//! * [`message`]: `#[derive(Message)]`: parse a Rust type into the message
//!   model, check it, lay it out, emit Rust code and `.capnp` text;
//! * [`topology`]: `#[topology(...)]`: link types, their inverses, the
//!   generated links trait and `Topology` impl.

pub mod diag;
pub mod ids;
pub mod layout;
pub mod message;
pub mod topology;
