//! The checked graph model: what [`check`](fn@super::check) makes of a
//! parsed `taskgraph!` and [`emit`](fn@super::emit) turns into code. Roles,
//! edges and flags refer to each other by index.

use proc_macro2::{Ident, TokenStream};
use syn::{Attribute, Path, Visibility};

/// A checked graph.
#[derive(Debug)]
pub struct Model {
    pub(super) attrs: Vec<Attribute>,
    pub(super) vis: Visibility,
    pub(super) name: Ident,
    pub(super) topology: syn::Type,
    pub(super) messages: Vec<Message>,
    pub(super) roles: Vec<Role>,
    pub(super) edges: Vec<Edge>,
    pub(super) flags: Vec<Flag>,
    /// Whether the input had errors: then every handler gets a default
    /// body, so that only the macro's errors show.
    pub(super) lenient: bool,
}

/// One of the graph's message types.
#[derive(Debug)]
pub(super) struct Message {
    pub(super) path: Path,
    /// Its last segment.
    pub(super) name: Ident,
}

/// A role and the task ids that take it.
#[derive(Debug)]
pub(super) struct Role {
    pub(super) name: Ident,
    pub(super) range: Range,
    /// The update message (an index into the messages) of a replicated
    /// role.
    pub(super) replicated: Option<usize>,
}

/// A typed edge: `fetchers` fetch `message` over `link` from `sources`.
#[derive(Debug)]
pub(super) struct Edge {
    pub(super) name: Ident,
    pub(super) message: usize,
    /// The message as written in the edge.
    pub(super) written: Ident,
    pub(super) link: Ident,
    pub(super) fetchers: Vec<usize>,
    pub(super) sources: Vec<usize>,
}

/// A flag: `senders` flag their `receivers` neighbours over `link`.
#[derive(Debug)]
pub(super) struct Flag {
    pub(super) name: Ident,
    pub(super) link: Ident,
    pub(super) senders: Vec<usize>,
    pub(super) receivers: Vec<usize>,
}

/// A role's task ids as written.
#[derive(Debug, Clone)]
pub(super) struct Range {
    pub(super) first: u64,
    /// One past the last; `None` for open.
    pub(super) end: Option<u64>,
    pub(super) tokens: TokenStream,
}

impl Range {
    /// The ids as the messages and docs show them: `0`, `1..8`, `1..`.
    pub(super) fn text(&self) -> String {
        match self.end {
            Some(end) if end == self.first + 1 => format!("{}", self.first),
            Some(end) => format!("{}..{end}", self.first),
            None => format!("{}..", self.first),
        }
    }
}
