use taskgraph::message::Message;

pub struct Plain {
    pub x: u32,
}

#[derive(Message)]
pub struct UsesPlain {
    #[capnp(ordinal = 0)]
    pub plain: Plain,
}

#[derive(Message)]
pub struct ListOfPlain {
    #[capnp(ordinal = 0)]
    pub plains: Vec<Plain>,
}

fn main() {}
