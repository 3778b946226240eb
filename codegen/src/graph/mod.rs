//! `taskgraph!`: a graph's roles, messages, typed edges and flags.
//!
//! ```text
//! taskgraph! {
//!     /// W1: a regression over a binary tree.
//!     pub graph Regression(topology = Tree) {
//!         messages Param, Grad;
//!         role Root = 0;
//!         role Worker = 1..;
//!         Worker fetches Param over parent from Root | Worker;
//!         Root | Worker fetch Grad over children from Worker;
//!         Root flags stop over children to Worker;
//!     }
//! }
//! ```
//!
//! * `messages` lists the graph's message types (paths; edges name them by
//!   their last segment);
//! * `role R = 0;`, `= 1..;`, `= 1..8;`, `= 1..=7;`: which task ids take
//!   role `R` (together the ranges cover `0..` or `0..n` once);
//!   `role R = 1.. replicated(Update);`: its tasks have hot backups, kept
//!   up to date with `Update` messages (one of the graph's `messages`);
//! * `A | B fetches M over link from C | D [as name];`: tasks of role A or
//!   B fetch `M` over `link` (a link of the topology) from neighbours of
//!   role C or D. The edge is named after the message (`param` for
//!   `Param`) unless `as` names it; names are unique in a graph;
//! * `A flags name over link to B;`: tasks of role A flag their
//!   neighbours over `link`, of role B, with a few bytes.
//!
//! The expansion, for graph `G` with roles `R`, in the caller's scope:
//!
//! * `struct G`, with the role ids (`G::Worker`), the edges as typed
//!   consts (`G::PARAM: Edge<Param>`), `G::job(topology, tasks, GTasks
//!   { .. })`, `G::graph(&topology, tasks, epoch)` (a picture),
//!   `G::capnp_schema()`, `G::write_capnp_schema(dir)`, `G::role_of(task)`;
//! * `struct GTasks<..>`: one task constructor per role (a missing one is
//!   a compile error);
//! * per role, `trait RHandlers` with exactly the handlers its edges need
//!   (`on_<edge>` for what it fetches, `serve_<edge>` for what it serves,
//!   `on_<flag>` for flags it receives, `apply_update` for a replicated
//!   role, plus `enter_epoch`; optional lifecycle events, among them a
//!   replicated role's `became_primary` and `became_backup`), and
//!   `struct RCx` whose `fetch_<edge>`,
//!   `reply_<edge>` and `flag_<flag>` methods exist only for the role's
//!   edges (and `replicate` only for a replicated role);
//! * per edge `e`, `trait FetchesE` (`fetch_<e>`, `fetch_<e>_from`) and
//!   `trait ServesE` (`reply_<e>`, `reply_<e>_encoded`), both extending
//!   `RoleContext`, implemented by the context of every role that fetches
//!   or serves `e` (`edges.rs`): code shared by roles takes `&mut impl
//!   FetchesParam`;
//! * in `const _: () = { ... };` blocks: `impl Graph for G`, the glue
//!   from the runtime to each role's trait, and checks: every message is a
//!   `Message`, every link exists (a const evaluation that fails naming
//!   the topology's links, at the link's token).
//!
//! The per-role names (`WorkerHandlers`, `WorkerCx`) and the per-edge
//! traits live in the caller's module: two graphs with a role, or an
//! edge, of the same name need a module each.
//!
//! Pipeline: [`parse`](fn@parse) (`parse.rs`, into a [`Decl`]) →
//! [`check`](fn@check) (`check.rs`, into a [`Model`], whose types are in
//! `model.rs`) → [`emit`](fn@emit) (`emit.rs` for the graph-wide items,
//! `edges.rs` for the per-edge traits, `role.rs` for each role's), collecting every problem in a
//! [`Diagnostics`]. With errors, the expansion still declares the struct,
//! the traits and the contexts (every handler with a default body), so
//! the user's code sees the names it expects and the errors are the
//! macro's.

mod check;
mod edges;
mod emit;
mod model;
mod parse;
mod role;

pub use check::check;
pub use emit::emit;
pub use model::Model;
pub use parse::{parse, Decl};

use proc_macro2::TokenStream;
use quote::quote;

use crate::diag::Diagnostics;
use crate::dump::{dump, Format};

/// The whole macro, without the debug dump: the expansion, and the
/// graph's name if it could be read.
pub fn expand(input: TokenStream) -> (TokenStream, Option<String>) {
    let mut diag = Diagnostics::new();
    let Some(decl) = parse(input, &mut diag) else {
        return (diag.into_compile_errors(), None);
    };
    let name = decl.name.to_string();
    let model = check(decl, &mut diag);
    let out = emit(&model);
    let errors = diag.into_compile_errors();
    (quote!(#out #errors), Some(name))
}

/// `taskgraph!`: tokens in, tokens out. With `TASKGRAPH_DEBUG_MACRO` set to
/// the graph's name, the expansion is also printed to stderr.
pub fn macro_(input: TokenStream) -> TokenStream {
    let (out, name) = expand(input);
    dump("taskgraph!", name.as_deref(), &out, Format::Pretty);
    out
}

/// What the tests of `parse.rs` and `check.rs` share.
#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::{check, parse};
    use crate::diag::Diagnostics;

    /// The errors of parsing and checking `input`, in order.
    pub(super) fn errors(input: TokenStream) -> Vec<String> {
        let mut diag = Diagnostics::new();
        if let Some(decl) = parse(input, &mut diag) {
            check(decl, &mut diag);
        }
        match diag.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    /// A graph `G` over `Tree` with this body.
    pub(super) fn graph(body: TokenStream) -> TokenStream {
        quote!(pub graph G(topology = Tree) { #body })
    }
}
