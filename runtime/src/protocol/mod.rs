//! The node-to-node wire protocol, `schemas/taskgraph.capnp`, as capnpc
//! generates it (committed; the test suite checks it is current). Tools
//! and other languages use the schema file itself.

#[allow(clippy::all, clippy::pedantic, missing_docs, missing_debug_implementations, unused_qualifications, unsafe_op_in_unsafe_fn)]
pub mod taskgraph_capnp;
