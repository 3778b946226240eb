use taskgraph::message::Message;

#[derive(Message)]
pub struct Unsupported<'a> {
    #[capnp(ordinal = 0)]
    pub count: usize,
    #[capnp(ordinal = 1)]
    pub letter: char,
    #[capnp(ordinal = 2)]
    pub name: &'a str,
    #[capnp(ordinal = 3)]
    pub pair: (u32, u32),
    #[capnp(ordinal = 4)]
    pub fixed: [u8; 4],
    #[capnp(ordinal = 5)]
    pub map: std::collections::HashMap<String, u32>,
    #[capnp(ordinal = 6)]
    pub huge: u128,
    #[capnp(ordinal = 7)]
    pub maybe_maybe: Option<Option<u32>>,
    #[capnp(ordinal = 8)]
    pub list_of_options: Vec<Option<u32>>,
}

fn main() {}
