use taskgraph::message::Message;

#[derive(Message)]
pub struct Generic<T> {
    #[capnp(ordinal = 0)]
    pub value: T,
}

#[derive(Message)]
pub struct Tuple(u32, u32);

#[derive(Message)]
pub enum Numberless {
    Red,
    Green,
}

#[derive(Message)]
pub enum OneVariant {
    #[capnp(ordinal = 0)]
    Only(u32),
}

#[derive(Message)]
pub enum UnionInUnion {
    #[capnp(ordinal = 0)]
    A(Option<u32>),
    B {
        #[capnp(ordinal = 1)]
        x: Option<u32>,
    },
}

#[derive(Message)]
pub struct snake_name {
    #[capnp(ordinal = 0)]
    pub x: u32,
}

fn main() {}
