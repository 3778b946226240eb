//! Decoding arbitrary bytes as every test message type, owned and through
//! views, must never panic (nor abort, overflow the stack, or allocate
//! without bound).
//!
//! `cargo +nightly fuzz run decode` from the repository root (see
//! fuzz/README.md). The normal test suite runs a bounded version of the
//! same check (`tests/tests/decode_garbage.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    taskgraph_tests::decode_everything(data);
});
