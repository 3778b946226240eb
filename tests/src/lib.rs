//! Message types shared by the taskgraph integration tests, the fuzz
//! target and the benchmarks: together they use every field kind the
//! derive supports.

use taskgraph::message::Message;

pub mod bench_support;
pub mod bins;
pub mod capnp_tool;
pub mod chaos;
pub mod etcd;
pub mod golden;
pub mod jobs;
pub mod wait;

/// A small nested message.
#[derive(Message, Debug, Clone, PartialEq, Default)]
pub struct Inner {
    #[capnp(ordinal = 0)]
    pub id: u32,
    #[capnp(ordinal = 1)]
    pub label: String,
}

/// A fieldless enum: a Cap'n Proto enum.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Color {
    #[default]
    Red = 0,
    Green = 1,
    Blue = 2,
}

/// An enum with data: a struct holding one union.
#[derive(Message, Debug, Clone, PartialEq, Default)]
pub enum Shape {
    #[default]
    #[capnp(ordinal = 0)]
    Empty,
    #[capnp(ordinal = 1)]
    Circle(f64),
    Rect {
        #[capnp(ordinal = 2)]
        w: f32,
        #[capnp(ordinal = 3)]
        h: f32,
    },
    #[capnp(ordinal = 4)]
    Named(String),
    #[capnp(ordinal = 5)]
    Nested(Inner),
    Pair(#[capnp(ordinal = 6)] u16, #[capnp(ordinal = 7, enum)] Color),
}

/// Every field kind, with ordinals that differ from declaration order.
#[derive(Message, Debug, Clone, PartialEq, Default)]
pub struct Everything {
    #[capnp(ordinal = 0)]
    pub flag: bool,
    #[capnp(ordinal = 1)]
    pub u8v: u8,
    #[capnp(ordinal = 2)]
    pub u16v: u16,
    #[capnp(ordinal = 3)]
    pub u32v: u32,
    #[capnp(ordinal = 4)]
    pub u64v: u64,
    #[capnp(ordinal = 5)]
    pub i8v: i8,
    #[capnp(ordinal = 6)]
    pub i16v: i16,
    #[capnp(ordinal = 7)]
    pub i32v: i32,
    #[capnp(ordinal = 8)]
    pub i64v: i64,
    #[capnp(ordinal = 9)]
    pub f32v: f32,
    #[capnp(ordinal = 10)]
    pub f64v: f64,
    #[capnp(ordinal = 11)]
    pub text: String,
    #[capnp(ordinal = 12)]
    pub data: Vec<u8>,
    #[capnp(ordinal = 13)]
    pub floats: Vec<f32>,
    #[capnp(ordinal = 14)]
    pub bools: Vec<bool>,
    #[capnp(ordinal = 15)]
    pub names: Vec<String>,
    #[capnp(ordinal = 16)]
    pub inner: Inner,
    #[capnp(ordinal = 17)]
    pub inners: Vec<Inner>,
    #[capnp(ordinal = 18, enum)]
    pub color: Color,
    /// Takes ordinals 19 (none) and 20 (some).
    #[capnp(ordinal = 19)]
    pub maybe_count: Option<u64>,
    #[capnp(ordinal = 21)]
    pub maybe_inner: Option<Inner>,
    #[capnp(ordinal = 22, default = 42)]
    pub with_default: i32,
    #[capnp(ordinal = 24)]
    pub shape: Shape,
    /// Declared after `shape` but numbered before it: fills a hole.
    #[capnp(ordinal = 23)]
    pub flag2: bool,
    #[capnp(ordinal = 25)]
    pub colors: Vec<Color>,
    #[capnp(ordinal = 26)]
    pub matrix: Vec<Vec<f64>>,
    #[capnp(ordinal = 27)]
    pub blobs: Vec<Vec<u8>>,
    #[capnp(ordinal = 28, enum)]
    pub maybe_color: Option<Color>,
    #[capnp(ordinal = 30, default = -1.5)]
    pub scale: f64,
    #[capnp(ordinal = 31, default = true)]
    pub on: bool,
    #[capnp(ordinal = 32)]
    pub maybe_text: Option<String>,
    #[capnp(ordinal = 33)]
    pub shapes: Vec<Shape>,
}

impl Everything {
    /// A value with every field set to something other than its default.
    pub fn sample() -> Self {
        Everything {
            flag: true,
            u8v: 200,
            u16v: 60000,
            u32v: 4_000_000_000,
            u64v: u64::MAX - 1,
            i8v: -100,
            i16v: -30000,
            i32v: -2_000_000_000,
            i64v: i64::MIN + 1,
            f32v: 3.5,
            f64v: -1e300,
            text: "héllo, wörld".into(),
            data: vec![0, 1, 2, 255],
            floats: vec![1.0, -2.5, f32::MAX],
            bools: vec![true, false, true, true, false, false, false, false, true],
            names: vec!["a".into(), String::new(), "ccc".into()],
            inner: Inner { id: 7, label: "seven".into() },
            inners: vec![Inner { id: 1, label: "one".into() }, Inner { id: 2, label: "two".into() }],
            color: Color::Blue,
            maybe_count: Some(0),
            maybe_inner: Some(Inner { id: 9, label: String::new() }),
            with_default: 0,
            shape: Shape::Rect { w: 2.0, h: 0.5 },
            flag2: true,
            colors: vec![Color::Green, Color::Red, Color::Blue],
            matrix: vec![vec![1.0, 2.0], vec![], vec![3.0]],
            blobs: vec![vec![1, 2, 3], vec![]],
            maybe_color: Some(Color::Red),
            scale: 0.0,
            on: false,
            maybe_text: Some(String::new()),
            shapes: vec![
                Shape::Empty,
                Shape::Circle(1.5),
                Shape::Named("n".into()),
                Shape::Nested(Inner { id: 3, label: "x".into() }),
                Shape::Pair(5, Color::Green),
            ],
        }
    }
}

/// A dense vector, as gradients and parameters travel.
#[derive(Message, Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    #[capnp(ordinal = 0)]
    pub step: u64,
    #[capnp(ordinal = 1)]
    pub values: Vec<f32>,
}

/// A recursive message, for nesting limits.
#[derive(Message, Debug, Clone, PartialEq, Default)]
pub struct Tree {
    #[capnp(ordinal = 0)]
    pub children: Vec<Tree>,
}

impl Tree {
    /// A chain `depth` levels deep.
    pub fn chain(depth: usize) -> Tree {
        let mut t = Tree::default();
        for _ in 0..depth {
            t = Tree { children: vec![t] };
        }
        t
    }
}

/// Decodes `bytes` as every shared message type, owned and through a view
/// (reading every field), and reports whether anything panicked. Used by
/// the bounded fuzz test and the cargo-fuzz target.
pub fn decode_everything(bytes: &[u8]) {
    use taskgraph::message::Frame;
    let _ = Everything::decode(bytes);
    let _ = Shape::decode(bytes);
    let _ = Tensor::decode(bytes);
    let _ = Tree::decode(bytes);
    if let Ok(frame) = Frame::<Everything>::new(bytes) {
        if let Ok(view) = frame.view() {
            // Debug reads every field through the view.
            let _ = format!("{view:?}");
        }
    }
    if let Ok(frame) = Frame::<Tensor>::new(bytes) {
        if let Ok(view) = frame.view() {
            if let Ok(values) = view.values() {
                let _ = values.as_slice();
                let _ = values.iter().count();
            }
        }
    }
}
