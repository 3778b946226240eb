use taskgraph::message::Message;

#[derive(Message)]
pub struct Misspelled {
    #[capnp(ordnal = 0)]
    pub a: u32,
}

#[derive(Message)]
#[capnp(id = 0x1234)]
pub struct IdWithoutTopBit {
    #[capnp(ordinal = 0)]
    pub a: u32,
}

#[derive(Message)]
#[capnp(colour = "red")]
pub struct UnknownTypeOption {
    #[capnp(ordinal = 0)]
    pub a: u32,
}

#[derive(Message)]
pub struct BadOrdinal {
    #[capnp(ordinal = "zero")]
    pub a: u32,
}

fn main() {}
