//! Shared code of the taskgraph examples.
pub mod allreduce;
pub mod regression;
pub mod regression_by_hand;
