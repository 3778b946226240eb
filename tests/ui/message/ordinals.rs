use taskgraph::message::Message;

#[derive(Message)]
pub struct NoOrdinal {
    #[capnp(ordinal = 0)]
    pub a: u32,
    pub b: u32,
}

#[derive(Message)]
pub struct Duplicate {
    #[capnp(ordinal = 0)]
    pub a: u32,
    #[capnp(ordinal = 0)]
    pub b: u32,
}

#[derive(Message)]
pub struct Gap {
    #[capnp(ordinal = 0)]
    pub a: u32,
    #[capnp(ordinal = 2)]
    pub b: u32,
}

#[derive(Message)]
pub struct OptionTakesTwo {
    #[capnp(ordinal = 0)]
    pub a: Option<u32>,
    #[capnp(ordinal = 1)]
    pub b: u32,
}

fn main() {}
