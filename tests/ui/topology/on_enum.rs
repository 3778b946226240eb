use taskgraph::prelude::*;

#[topology(parent <-> children)]
pub enum Tree {
    Small,
    Big,
}

#[topology(next)]
pub union Bits {
    a: u32,
    b: f32,
}

#[topology(next)]
pub fn ring() {}

// The items are still there.
fn main() {
    let _ = Tree::Small;
    let _ = Bits { a: 1 };
    ring();
}
