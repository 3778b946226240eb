//! Compile-fail tests of the macros: each `tests/ui/<category>/*.rs` must
//! fail to compile with exactly the errors in its `.stderr` (regenerate
//! with `TRYBUILD=overwrite cargo test -p taskgraph-tests --test ui`, then
//! read the diff as you would code); `tests/ui/pass/*.rs` must compile and
//! run.
//!
//! The `.stderr` files are blessed with the toolchain in
//! `rust-toolchain`-less CI: the machine's one stable Rust.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/message/*.rs");
    t.compile_fail("ui/topology/*.rs");
    t.compile_fail("ui/graph/*.rs");
    t.compile_fail("ui/task/*.rs");
    t.pass("ui/pass/*.rs");
}
