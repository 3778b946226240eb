//! Shared code of the taskgraph examples.
pub mod regression;
pub mod regression_by_hand;
