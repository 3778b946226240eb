//! Encode and decode of a message holding 1 000 000 f32 values, against a
//! plain memcpy of the same bytes measured in the same run.
//!
//! `cargo bench -p taskgraph-tests --bench message`
//!
//! Prints medians over many repetitions and the ratio of each operation to
//! its baseline:
//! * `memcpy`: `copy_from_slice` of the 4 MB into a buffer allocated once;
//! * `alloc+memcpy`: the same into a fresh `Vec` each time, as `encode`
//!   must return one (page faults included).
//!
//! Target (issue 2): encode, or view-decode, within 3x of memcpy.

use std::hint::black_box;
use std::time::{Duration, Instant};

use taskgraph::message::{Frame, Message};
use taskgraph_tests::Tensor;

const N: usize = 1_000_000;
const REPS: usize = 200;

fn median(mut f: impl FnMut()) -> Duration {
    for _ in 0..10 {
        f();
    }
    let mut times: Vec<Duration> = (0..REPS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[REPS / 2]
}

fn main() {
    let t = Tensor { step: 1, values: (0..N).map(|i| i as f32 * 0.5).collect() };
    let encoded = t.encode();
    let bytes = N * 4;

    let mut dst = vec![0f32; N];
    let memcpy = median(|| {
        dst.copy_from_slice(black_box(&t.values));
        black_box(&dst);
    });
    let alloc_memcpy = median(|| {
        black_box(black_box(&t.values).to_vec());
    });
    let encode = median(|| {
        black_box(black_box(&t).encode());
    });
    let decode = median(|| {
        black_box(Tensor::decode(black_box(&encoded)).unwrap());
    });
    let view = median(|| {
        let frame = Frame::<Tensor>::new(black_box(&encoded)).unwrap();
        let view = frame.view().unwrap();
        let values = view.values().unwrap();
        black_box(values.as_slice().unwrap());
    });
    let view_sum = median(|| {
        let frame = Frame::<Tensor>::new(black_box(&encoded)).unwrap();
        let view = frame.view().unwrap();
        let values = view.values().unwrap();
        black_box(values.as_slice().unwrap().iter().sum::<f32>());
    });
    let plain_sum = median(|| {
        black_box(black_box(&t.values).iter().sum::<f32>());
    });

    let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    println!("message of {N} f32 ({bytes} bytes), medians of {REPS} runs");
    println!("{:<28} {:>12} {:>10} {:>10}", "operation", "median", "GB/s", "ratio");
    let row = |name: &str, d: Duration, base: Duration, base_name: &str| {
        println!(
            "{:<28} {:>12.3?} {:>10.2} {:>9.2}x  (vs {base_name})",
            name,
            d,
            gbs(d),
            d.as_secs_f64() / base.as_secs_f64()
        );
    };
    row("memcpy", memcpy, memcpy, "memcpy");
    row("alloc+memcpy", alloc_memcpy, memcpy, "memcpy");
    row("encode", encode, memcpy, "memcpy");
    row("encode", encode, alloc_memcpy, "alloc+memcpy");
    row("decode (owned Vec<f32>)", decode, memcpy, "memcpy");
    row("decode (owned Vec<f32>)", decode, alloc_memcpy, "alloc+memcpy");
    row("view (zero-copy &[f32])", view, memcpy, "memcpy");
    row("view + sum", view_sum, plain_sum, "sum of a Vec");
}
