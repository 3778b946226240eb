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

/// Makes a struct that holds a topology's parameters a topology, declaring
/// its link types: `#[topology(parent <-> children, peers <-> peers, log)]`
/// (an inverse pair, a symmetric link, a link with no inverse; ids in
/// order of first mention). It generates the trait `<Struct>Links`, one
/// method per link, which the user implements; link consts
/// (`Struct::PARENT`, ..., `Struct::LINKS`); and `impl Topology`.
///
/// ```ignore
/// use taskgraph::prelude::*;
///
/// /// A binary tree, the same at every epoch.
/// #[topology(parent <-> children)]
/// pub struct Tree { pub tasks: u64 }
///
/// impl TreeLinks for Tree {
///     fn parent(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
///         if task == 0 { vec![] } else { vec![(task - 1) / 2] }
///     }
///     fn children(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
///         [2 * task + 1, 2 * task + 2].into_iter().filter(|&c| c < self.tasks).collect()
///     }
/// }
/// ```
///
/// Set `TASKGRAPH_DEBUG_MACRO=Tree` while building to print the expansion.
#[proc_macro_attribute]
pub fn topology(attr: TokenStream, item: TokenStream) -> TokenStream {
    taskgraph_codegen::topology::attribute(attr.into(), item.into()).into()
}

/// Declares a graph: its topology, roles (which task ids take each),
/// message types, typed edges and flags. It generates, per role, a handler
/// trait (`<Role>Handlers`) with exactly the handlers the role's edges need
/// and a context (`<Role>Cx`) whose fetch, reply and flag methods exist
/// only for them; and the graph type, with `job`, `graph` (a picture per
/// epoch), `capnp_schema` and the typed edge consts.
///
/// ```ignore
/// taskgraph! {
///     pub graph Regression(topology = Tree) {
///         messages Param, Grad;
///         role Root = 0;
///         role Worker = 1..;
///         Worker fetches Param over parent from Root | Worker;
///         Root | Worker fetch Grad over children from Worker;
///     }
/// }
/// ```
///
/// See `taskgraph_codegen::graph` for the grammar and the expansion. Set
/// `TASKGRAPH_DEBUG_MACRO=Regression` while building to print the
/// expansion.
#[proc_macro]
pub fn taskgraph(input: TokenStream) -> TokenStream {
    taskgraph_codegen::graph::macro_(input.into()).into()
}

/// Binds a struct to a role of a graph: `#[task(Regression::Worker)]`. The
/// struct must then implement the role's handler trait
/// (`WorkerHandlers`), and is what `Regression::job` accepts as the
/// role's tasks. Several roles: `#[task(Regression::Root,
/// Regression::Worker)]`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    taskgraph_codegen::task::attribute(attr.into(), item.into()).into()
}
