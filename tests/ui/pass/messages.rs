//! Every supported shape compiles, including a renamed crate path and
//! retired fields.
use taskgraph::message::Message;

#[derive(Message, Clone, Copy, Debug, PartialEq)]
pub enum Level {
    #[capnp(ordinal = 1)]
    High,
    #[capnp(ordinal = 0)]
    Low,
}

#[derive(Message, Debug, PartialEq)]
#[capnp(retired(1: u32, 3: Option<u8>), name = "Renamed", id = 0xf00d_0000_0000_0001)]
pub struct Evolved {
    #[capnp(ordinal = 0)]
    pub a: u64,
    #[capnp(ordinal = 2, name = "bee")]
    pub b: Vec<Vec<String>>,
    #[capnp(ordinal = 5, enum)]
    pub level: Option<Level>,
    #[capnp(ordinal = 7, enum)]
    pub levels: Vec<Level>,
    #[capnp(ordinal = 8)]
    pub r#type: bool,
}

#[derive(Message, Debug, PartialEq)]
pub struct Ping;

#[derive(Message, Debug, PartialEq)]
pub enum Command {
    #[capnp(ordinal = 0)]
    Stop,
    #[capnp(ordinal = 1)]
    Go(Evolved),
    Move {
        #[capnp(ordinal = 2)]
        dx: i32,
        #[capnp(ordinal = 3)]
        dy: i32,
    },
}

fn main() {
    let e = Evolved { a: 1, b: vec![vec!["x".into()]], level: Some(Level::High), levels: vec![Level::Low], r#type: true };
    assert_eq!(Evolved::decode(&e.encode()).unwrap(), e);
    assert!(Evolved::capnp_schema().contains("struct Renamed @0xf00d000000000001"));
    assert_eq!(Ping::decode(&Ping.encode()).unwrap(), Ping);
    let c = Command::Move { dx: -1, dy: 2 };
    assert_eq!(Command::decode(&c.encode()).unwrap(), c);
}
