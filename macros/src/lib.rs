//! Procedural macros of [taskgraph](https://docs.rs/taskgraph). They are
//! thin: parsing, checks and code generation live in `taskgraph-codegen`.
//! Use them through the `taskgraph` crate, which re-exports them.

use proc_macro::TokenStream;

/// Makes a struct or enum a Cap'n Proto message. See
/// `taskgraph::message` for the attributes and the type mapping.
#[proc_macro_derive(Message, attributes(capnp))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    taskgraph_codegen::message::derive(input.into()).into()
}
