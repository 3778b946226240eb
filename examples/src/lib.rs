//! Shared code of the taskgraph examples.
pub mod regression;
