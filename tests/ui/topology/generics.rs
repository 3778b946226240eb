use taskgraph::prelude::*;

#[topology(parent <-> children)]
pub struct Tree<T> {
    pub tasks: T,
}

#[topology(parent <-> children)]
pub struct Borrowed<'a> {
    pub shape: &'a [u64],
}

// The structs are still there.
fn main() {
    let _ = Tree { tasks: 1u64 };
    let _ = Borrowed { shape: &[] };
}
