use taskgraph::message::Message;

#[derive(Message)]
pub struct BadDefaults {
    #[capnp(ordinal = 0, default = "x")]
    pub name: String,
    #[capnp(ordinal = 1, default = 300)]
    pub small: u8,
    #[capnp(ordinal = 2, default = true)]
    pub count: u32,
    #[capnp(ordinal = 3, default = 1.5)]
    pub whole: i64,
}

fn main() {}
