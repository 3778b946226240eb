//! Code generation for [taskgraph](https://docs.rs/taskgraph): everything
//! the procedural macros do, as a plain library that can be unit-tested.
//!
//! * [`layout`]: the Cap'n Proto struct layout engine (a port of the
//!   official compiler's algorithm);
//! * [`ids`]: Cap'n Proto type ids;
//! * [`message`]: `#[derive(Message)]`: parse a Rust type into the message
//!   model, check it, lay it out, emit Rust code and `.capnp` text;
//! * [`topology`]: `#[topology(...)]`: link types, their inverses, the
//!   generated links trait and `Topology` impl;
//! * [`graph`]: `taskgraph!`: roles, typed edges and flags, the per-role
//!   handler traits and contexts, and the glue to the runtime;
//! * [`task`]: `#[task(Graph::Role)]`: binding a struct to a role;
//! * [`names`]: the naming helpers they share (cases, keywords);
//! * [`dump`]: the `TASKGRAPH_DEBUG_MACRO` expansion dump;
//! * [`diag`]: the diagnostics every macro collects.

pub mod diag;
pub mod dump;
pub mod graph;
pub mod ids;
pub mod layout;
pub mod message;
pub mod names;
pub mod task;
pub mod topology;

/// Formats generated code for people (the `TASKGRAPH_DEBUG_MACRO` dumps and
/// the expansion snapshots); tokens that do not parse as a file are shown
/// as they are.
pub fn pretty(tokens: &proc_macro2::TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}
