use taskgraph::message::Message;

#[derive(Message, Clone, Copy)]
pub enum Color {
    Red = 0,
    Green = 1,
}

#[derive(Message)]
pub struct Inner {
    #[capnp(ordinal = 0)]
    pub x: u32,
}

// An enum field needs `enum`: enums live in the data section.
#[derive(Message)]
pub struct ForgotEnum {
    #[capnp(ordinal = 0)]
    pub color: Color,
}

// A struct field must not say `enum`.
#[derive(Message)]
pub struct NotAnEnum {
    #[capnp(ordinal = 0, enum)]
    pub inner: Inner,
}

fn main() {}
