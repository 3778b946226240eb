//! A walk through taskgraph's typed messages: declare, encode, decode,
//! read without copying, and print the Cap'n Proto schema.
//!
//! Run: `cargo run --release -p taskgraph-examples --example messages`

// Big message buffers: see the workspace Cargo.toml on why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use taskgraph::message::{Frame, Message};

/// A model parameter, as a parameter server would broadcast it.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct Param {
    #[capnp(ordinal = 0)]
    pub epoch: u64,
    #[capnp(ordinal = 1)]
    pub weights: Vec<f32>,
    #[capnp(ordinal = 2, default = 0.1)]
    pub learning_rate: f32,
    #[capnp(ordinal = 3, enum)]
    pub phase: Phase,
    /// `None` or `Some(shard)`: takes ordinals 4 and 5.
    #[capnp(ordinal = 4)]
    pub shard: Option<u32>,
}

/// A fieldless enum: a Cap'n Proto enum.
#[derive(Message, Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Warmup = 0,
    Train = 1,
    Done = 2,
}

fn main() -> taskgraph::Result<()> {
    let p = Param { epoch: 3, weights: vec![0.25; 1_000_000], learning_rate: 0.1, phase: Phase::Train, shard: Some(2) };
    let bytes = p.encode();
    println!("encoded {} values into {} bytes", p.weights.len(), bytes.len());

    let back = Param::decode(&bytes)?;
    assert_eq!(back, p);
    println!("decoded: epoch {}, phase {:?}, shard {:?}", back.epoch, back.phase, back.shard);

    let frame = Frame::<Param>::new(&bytes)?;
    let view = frame.view()?;
    let weights = view.weights()?;
    let slice: &[f32] = weights.as_slice().expect("aligned little-endian data");
    println!("viewed {} weights in place, sum {}", slice.len(), slice.iter().sum::<f32>());

    match Param::decode(&bytes[..bytes.len() / 2]) {
        Err(e) => println!("half a message: {e}"),
        Ok(_) => unreachable!("a truncated frame never decodes"),
    }

    println!("\nThe schema other languages compile:\n\n{}", Param::capnp_schema());
    Ok(())
}
