use taskgraph::prelude::*;

#[topology(parent <-> children)]
pub struct Tree {
    pub tasks: u64,
}

fn main() {}
