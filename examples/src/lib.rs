//! Shared code of the taskgraph examples.
