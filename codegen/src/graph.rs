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
//!   `G::capnp_schema()`, `G::role_of(task)`;
//! * `struct GTasks<..>`: one task constructor per role (a missing one is
//!   a compile error);
//! * per role, `trait RHandlers` with exactly the handlers its edges need
//!   (`on_<edge>` for what it fetches, `serve_<edge>` for what it serves,
//!   `on_<flag>` for flags it receives, plus `enter_epoch` and optional
//!   lifecycle events), and `struct RCx` whose `fetch_<edge>`,
//!   `reply_<edge>` and `flag_<flag>` methods exist only for the role's
//!   edges;
//! * in `const _: () = { ... };`: `impl Graph for G`, the glue from the
//!   runtime to each role's trait, and checks: every message is a
//!   `Message`, every link exists (a const evaluation that fails naming
//!   the topology's links, at the link's token).
//!
//! The per-role names (`WorkerHandlers`, `WorkerCx`) live in the
//! caller's module: two graphs with a role of the same name need a module
//! each.
//!
//! Pipeline: [`parse`] → [`check`] → [`emit`], collecting every problem in
//! a [`Diagnostics`]. With errors, the expansion still declares the
//! struct, the traits and the contexts (every handler with a default
//! body), so the user's code sees the names it expects and the errors are
//! the macro's.

use std::collections::HashMap;

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, LitInt, Path, Token, Visibility};

use crate::diag::Diagnostics;
use crate::topology::{is_keyword, is_snake_case, to_snake_case, DEBUG_ENV};

/// A parsed `taskgraph!` input, before checks.
#[derive(Debug)]
pub struct Decl {
    attrs: Vec<Attribute>,
    vis: Visibility,
    name: Ident,
    topology: syn::Type,
    stmts: Vec<Stmt>,
}

/// One `;`-terminated statement of a graph.
#[derive(Debug)]
enum Stmt {
    Messages(Vec<Path>),
    Role { name: Ident, range: Range, replicated: Option<Ident> },
    Edge { fetchers: Vec<Ident>, message: Ident, link: Ident, sources: Vec<Ident>, alias: Option<Ident> },
    Flag { senders: Vec<Ident>, name: Ident, link: Ident, receivers: Vec<Ident> },
}

/// A role's task ids as written.
#[derive(Debug, Clone)]
struct Range {
    first: u64,
    /// One past the last; `None` for open.
    end: Option<u64>,
    tokens: TokenStream,
}

impl Range {
    fn text(&self) -> String {
        match self.end {
            Some(end) if end == self.first + 1 => format!("{}", self.first),
            Some(end) => format!("{}..{end}", self.first),
            None => format!("{}..", self.first),
        }
    }
}

const SYNTAX: &str = "expected `graph Name(topology = Topology) { messages A, B; role R = 0; role S = 1..; S fetches A over link from R; }`";

/// Parses the whole input; statements with syntax errors are reported and
/// left out.
pub fn parse(input: TokenStream, diag: &mut Diagnostics) -> Option<Decl> {
    let header = |s: ParseStream<'_>| -> syn::Result<(Vec<Attribute>, Visibility, Ident, syn::Type, TokenStream)> {
        let attrs = s.call(Attribute::parse_outer)?;
        let vis: Visibility = s.parse()?;
        let kw: Ident = s.parse().map_err(|e| syn::Error::new(e.span(), SYNTAX))?;
        if kw != "graph" {
            return Err(syn::Error::new(kw.span(), format!("expected `graph`, found `{kw}`: {SYNTAX}")));
        }
        let name: Ident = s.parse()?;
        let args;
        syn::parenthesized!(args in s);
        let key: Ident = args.parse()?;
        if key != "topology" {
            return Err(syn::Error::new(key.span(), "expected `topology = <the topology's type>`"));
        }
        args.parse::<Token![=]>()?;
        let topology: syn::Type = args.parse()?;
        if !args.is_empty() {
            return Err(args.error("expected `)`: a graph takes one argument, `topology = <type>`"));
        }
        let body;
        syn::braced!(body in s);
        let body: TokenStream = body.parse()?;
        if !s.is_empty() {
            return Err(s.error("one `taskgraph!` declares one graph: nothing may follow its `{ ... }`"));
        }
        Ok((attrs, vis, name, topology, body))
    };
    let (attrs, vis, name, topology, body) = match header.parse2(input) {
        Ok(h) => h,
        Err(e) => {
            diag.push(e);
            return None;
        }
    };
    let tokens: Vec<TokenTree> = body.into_iter().collect();
    let mut stmts = Vec::new();
    for chunk in tokens.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ';')) {
        if chunk.is_empty() {
            continue;
        }
        let stream: TokenStream = chunk.iter().cloned().collect();
        match parse_stmt.parse2(stream) {
            Ok(s) => stmts.push(s),
            Err(e) => diag.push(e),
        }
    }
    Some(Decl { attrs, vis, name, topology, stmts })
}

fn parse_stmt(s: ParseStream<'_>) -> syn::Result<Stmt> {
    let first: Ident = s.parse().map_err(|e| {
        syn::Error::new(e.span(), "expected a statement: `messages A, B`, `role R = 0..`, `R fetches M over link from S` or `R flags name over link to S`")
    })?;
    if first == "messages" {
        let list = s.parse_terminated(Path::parse_mod_style, Token![,])?;
        if list.is_empty() {
            return Err(syn::Error::new(first.span(), "`messages` needs at least one message type: `messages Param, Grad;`"));
        }
        return Ok(Stmt::Messages(list.into_iter().collect()));
    }
    if first == "role" {
        let name: Ident = s.parse()?;
        s.parse::<Token![=]>().map_err(|e| syn::Error::new(e.span(), "expected `=` and the role's task ids: `role Worker = 1..;`"))?;
        let range = parse_range(s)?;
        let replicated = if s.peek(syn::Ident) {
            let kw: Ident = s.parse()?;
            if kw != "replicated" {
                return Err(syn::Error::new(kw.span(), "expected `;`, or `replicated(Update)` for a role whose tasks have hot backups"));
            }
            let inner;
            syn::parenthesized!(inner in s);
            let update: Ident = inner.parse().map_err(|e| {
                syn::Error::new(e.span(), "expected the role's update message: `replicated(Update)` (one of the graph's `messages`)")
            })?;
            Some(update)
        } else {
            None
        };
        end(s)?;
        return Ok(Stmt::Role { name, range, replicated });
    }
    let mut roles = vec![first];
    while s.peek(Token![|]) {
        s.parse::<Token![|]>()?;
        roles.push(s.parse()?);
    }
    let verb: Ident = s.parse().map_err(|e| syn::Error::new(e.span(), "expected `fetches` or `flags` after the roles"))?;
    match verb.to_string().as_str() {
        "fetches" | "fetch" => {
            let message: Ident = s.parse()?;
            keyword(s, "over", "expected `over <link>`: `Worker fetches Param over parent from Root`")?;
            let link: Ident = s.parse()?;
            keyword(s, "from", "expected `from <roles>`: `Worker fetches Param over parent from Root | Worker`")?;
            let sources = role_set(s)?;
            let alias = if s.peek(Token![as]) {
                s.parse::<Token![as]>()?;
                Some(s.parse::<Ident>()?)
            } else {
                None
            };
            end(s)?;
            Ok(Stmt::Edge { fetchers: roles, message, link, sources, alias })
        }
        "flags" | "flag" => {
            let name: Ident = s.parse()?;
            keyword(s, "over", "expected `over <link>`: `Root flags stop over children to Worker`")?;
            let link: Ident = s.parse()?;
            keyword(s, "to", "expected `to <roles>`: `Root flags stop over children to Worker`")?;
            let receivers = role_set(s)?;
            end(s)?;
            Ok(Stmt::Flag { senders: roles, name, link, receivers })
        }
        other => Err(syn::Error::new(
            verb.span(),
            format!("expected `fetches` or `flags`, found `{other}` (roles are separated by `|`)"),
        )),
    }
}

fn keyword(s: ParseStream<'_>, word: &str, help: &str) -> syn::Result<()> {
    let ok = s.fork().parse::<Ident>().is_ok_and(|i| i == word);
    if !ok {
        return Err(s.error(help));
    }
    s.parse::<Ident>()?;
    Ok(())
}

fn role_set(s: ParseStream<'_>) -> syn::Result<Vec<Ident>> {
    let mut roles = vec![s.parse::<Ident>()?];
    while s.peek(Token![|]) {
        s.parse::<Token![|]>()?;
        roles.push(s.parse()?);
    }
    Ok(roles)
}

fn end(s: ParseStream<'_>) -> syn::Result<()> {
    if s.is_empty() {
        Ok(())
    } else {
        Err(s.error("unexpected tokens: a statement ends with `;`"))
    }
}

fn parse_range(s: ParseStream<'_>) -> syn::Result<Range> {
    let lit: LitInt = s.parse().map_err(|e| syn::Error::new(e.span(), "expected task ids: `0`, `1..`, `1..8` or `1..=7`"))?;
    let first: u64 = lit.base10_parse()?;
    let mut tokens = lit.to_token_stream();
    let end = if s.peek(Token![..=]) {
        let dots: Token![..=] = s.parse()?;
        let last: LitInt = s.parse()?;
        let v: u64 = last.base10_parse()?;
        tokens.extend(quote!(#dots #last));
        Some(v.checked_add(1).ok_or_else(|| syn::Error::new(last.span(), "task ids are u64"))?)
    } else if s.peek(Token![..]) {
        let dots: Token![..] = s.parse()?;
        tokens.extend(dots.to_token_stream());
        if s.peek(LitInt) {
            let end: LitInt = s.parse()?;
            tokens.extend(end.to_token_stream());
            Some(end.base10_parse()?)
        } else {
            None
        }
    } else {
        Some(first.checked_add(1).ok_or_else(|| syn::Error::new(lit.span(), "task ids are u64"))?)
    };
    Ok(Range { first, end, tokens })
}

/// A checked graph.
#[derive(Debug)]
pub struct Model {
    attrs: Vec<Attribute>,
    vis: Visibility,
    name: Ident,
    topology: syn::Type,
    messages: Vec<Message>,
    roles: Vec<Role>,
    edges: Vec<Edge>,
    flags: Vec<Flag>,
    /// Whether the input had errors: then every handler gets a default
    /// body, so that only the macro's errors show.
    lenient: bool,
}

#[derive(Debug)]
struct Message {
    path: Path,
    /// Its last segment.
    name: Ident,
}

#[derive(Debug)]
struct Role {
    name: Ident,
    range: Range,
    /// The update message (an index into the messages) of a replicated
    /// role.
    replicated: Option<usize>,
}

#[derive(Debug)]
struct Edge {
    name: Ident,
    message: usize,
    /// The message as written in the edge.
    written: Ident,
    link: Ident,
    fetchers: Vec<usize>,
    sources: Vec<usize>,
}

#[derive(Debug)]
struct Flag {
    name: Ident,
    link: Ident,
    senders: Vec<usize>,
    receivers: Vec<usize>,
}

fn list(names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => "none".into(),
        1 => names[0].clone(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

fn is_camel_case(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase()) && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Checks names, ranges and references.
pub fn check(decl: Decl, diag: &mut Diagnostics) -> Model {
    let mut messages: Vec<Message> = Vec::new();
    let mut roles: Vec<Role> = Vec::new();
    let mut seen_messages = false;
    for stmt in &decl.stmts {
        match stmt {
            Stmt::Messages(paths) => {
                if seen_messages {
                    diag.error_at(&paths[0], "the graph lists its messages twice: one `messages A, B, C;` statement");
                }
                seen_messages = true;
                for p in paths {
                    let name = p.segments.last().expect("a parsed path has a segment").ident.clone();
                    if let Some(m) = messages.iter().find(|m| m.name == name) {
                        diag.error_at(p, format!("`{name}` is listed twice (as `{}` already)", m.path.to_token_stream()));
                        continue;
                    }
                    messages.push(Message { path: p.clone(), name });
                }
            }
            Stmt::Role { name, range, .. } => {
                let s = name.to_string();
                if !is_camel_case(&s) {
                    diag.error(
                        name.span(),
                        format!("role names are UpperCamelCase (they name types: `{s}Handlers`, `{s}Cx`), and `{s}` is not"),
                    );
                }
                if roles.iter().any(|r| r.name == *name) {
                    diag.error(name.span(), format!("role `{name}` is declared twice"));
                    continue;
                }
                roles.push(Role { name: name.clone(), range: range.clone(), replicated: None });
            }
            _ => {}
        }
    }
    if !seen_messages && decl.stmts.iter().any(|s| matches!(s, Stmt::Edge { .. })) {
        diag.error(decl.name.span(), format!("graph `{}` has edges but no `messages A, B;` statement listing their message types", decl.name));
    }
    if roles.is_empty() {
        diag.error(decl.name.span(), format!("graph `{}` has no roles: declare at least one, e.g. `role Worker = 0..;`", decl.name));
    }
    check_ranges(&roles, diag);
    for stmt in &decl.stmts {
        let Stmt::Role { name, replicated: Some(update), .. } = stmt else { continue };
        match messages.iter().position(|m| m.name == *update) {
            Some(i) => {
                if let Some(r) = roles.iter_mut().find(|r| r.name == *name) {
                    r.replicated = Some(i);
                }
            }
            None => diag.error(
                update.span(),
                format!(
                    "unknown message `{update}`: the messages of `{}` are {} (add it to `messages`)",
                    decl.name,
                    list(messages.iter().map(|m| m.name.to_string()))
                ),
            ),
        }
    }

    let role_names = || list(roles.iter().map(|r| r.name.to_string()));
    let find_roles = |set: &[Ident], diag: &mut Diagnostics| -> Vec<usize> {
        let mut out = Vec::new();
        for r in set {
            match roles.iter().position(|x| x.name == *r) {
                Some(i) if out.contains(&i) => diag.error(r.span(), format!("role `{r}` is named twice here")),
                Some(i) => out.push(i),
                None => diag.error(r.span(), format!("unknown role `{r}`: the roles of `{}` are {}", decl.name, role_names())),
            }
        }
        out
    };

    let mut edges: Vec<Edge> = Vec::new();
    let mut flags: Vec<Flag> = Vec::new();
    let mut names: HashMap<String, Span> = HashMap::new();
    let mut name_ok = |name: &Ident, what: &str, diag: &mut Diagnostics| -> bool {
        let s = name.to_string();
        if !is_snake_case(&s) || is_keyword(&s) {
            diag.error(name.span(), format!("{what} names are snake_case identifiers (they name methods), and `{s}` is not"));
            return false;
        }
        if names.insert(s.clone(), name.span()).is_some() {
            diag.error(
                name.span(),
                format!("two edges or flags are named `{s}`: name this one with `as <name>` (an edge) or another name (a flag)"),
            );
            return false;
        }
        true
    };
    for stmt in &decl.stmts {
        match stmt {
            Stmt::Edge { fetchers, message, link, sources, alias } => {
                let f = find_roles(fetchers, diag);
                let s = find_roles(sources, diag);
                let m = messages.iter().position(|m| m.name == *message);
                if m.is_none() && seen_messages {
                    diag.error(
                        message.span(),
                        format!(
                            "unknown message `{message}`: the messages of `{}` are {} (add it to `messages`)",
                            decl.name,
                            list(messages.iter().map(|m| m.name.to_string()))
                        ),
                    );
                }
                let name = match alias {
                    Some(a) => a.clone(),
                    None => match to_snake_case(&message.to_string()) {
                        Some(s) => Ident::new(&s, message.span()),
                        None => {
                            diag.error(message.span(), format!("name this edge: `... as <name>` (`{message}` makes no snake_case name)"));
                            continue;
                        }
                    },
                };
                let ok = name_ok(&name, "edge", diag);
                if let (Some(m), true, false, false) = (m, ok, f.is_empty(), s.is_empty()) {
                    edges.push(Edge { name, message: m, written: message.clone(), link: link.clone(), fetchers: f, sources: s });
                }
            }
            Stmt::Flag { senders, name, link, receivers } => {
                let f = find_roles(senders, diag);
                let r = find_roles(receivers, diag);
                if name_ok(name, "flag", diag) && !f.is_empty() && !r.is_empty() {
                    flags.push(Flag { name: name.clone(), link: link.clone(), senders: f, receivers: r });
                }
            }
            _ => {}
        }
    }
    if flags.len() > 256 {
        diag.error(decl.name.span(), "a graph has at most 256 flags");
        flags.truncate(256);
    }
    Model {
        attrs: decl.attrs,
        vis: decl.vis,
        name: decl.name,
        topology: decl.topology,
        messages,
        roles,
        edges,
        flags,
        lenient: diag.has_errors(),
    }
}

/// The ranges, by first task id, must cover `0, 1, 2, ...` once each.
fn check_ranges(roles: &[Role], diag: &mut Diagnostics) {
    let mut empty = false;
    for r in roles.iter().filter(|r| r.range.end.is_some_and(|end| end <= r.range.first)) {
        empty = true;
        let first = r.range.first;
        diag.error_at(
            &r.range.tokens,
            format!(
                "the task ids `{}` are empty: a role needs at least one task (`{first}`, `{first}..{}` or `{first}..={first}` for task {first})",
                r.range.text(),
                first + 1
            ),
        );
    }
    let mut sorted: Vec<&Role> = roles.iter().filter(|r| r.range.end.is_none_or(|end| end > r.range.first)).collect();
    sorted.sort_by_key(|r| r.range.first);
    let mut next = 0u64;
    let mut prev: Option<&Role> = None;
    for r in sorted {
        if let Some(p) = prev {
            let overlaps = p.range.end.is_none_or(|end| end > r.range.first);
            if overlaps {
                diag.error_at(
                    &r.range.tokens,
                    format!(
                        "the tasks of role `{}` ({}) overlap those of role `{}` ({}): each task has one role",
                        r.name,
                        r.range.text(),
                        p.name,
                        p.range.text()
                    ),
                );
                prev = Some(r);
                next = r.range.end.unwrap_or(u64::MAX);
                continue;
            }
        }
        // (With an empty range, a gap is what it was meant to cover.)
        if r.range.first > next && !empty {
            let gap = Range { first: next, end: Some(r.range.first), tokens: TokenStream::new() };
            diag.error_at(
                &r.range.tokens,
                format!(
                    "no role has task{} {}: the roles' task ids must follow each other from 0 (this role starts at {})",
                    if r.range.first - next > 1 { "s" } else { "" },
                    gap.text(),
                    r.range.first
                ),
            );
        }
        next = r.range.end.unwrap_or(u64::MAX);
        prev = Some(r);
    }
}

fn upper(name: &Ident) -> Ident {
    Ident::new(&name.to_string().to_uppercase(), name.span())
}

fn role_field(role: &Ident) -> Ident {
    let snake = to_snake_case(&role.to_string()).unwrap_or_else(|| role.to_string().to_lowercase());
    if is_keyword(&snake) {
        Ident::new_raw(&snake, role.span())
    } else {
        Ident::new(&snake, role.span())
    }
}

/// The graph's `.capnp` file id: derived from its name, so that it is
/// stable.
fn file_id(name: &str) -> u64 {
    crate::ids::child_id(0x8e3c_5a1d_07b2_f9e1, &format!("taskgraph graph {name}"))
}

/// The expansion.
pub fn emit(m: &Model) -> TokenStream {
    let g = &m.name;
    let vis = &m.vis;
    let attrs = &m.attrs;
    let topo = &m.topology;
    let gs = g.to_string();
    let job_name = to_snake_case(&gs).unwrap_or_else(|| gs.to_lowercase());
    let tasks_struct = format_ident!("{}Tasks", g);
    let p = quote!(::taskgraph::__private::dsl);

    let role_ids: Vec<u32> = (0..m.roles.len() as u32).collect();
    let role_consts = m.roles.iter().zip(&role_ids).map(|(r, id)| {
        let name = &r.name;
        let doc = format!(" Role `{name}`, of tasks `{}`.", r.range.text());
        quote! { #[doc = #doc] pub const #name: u32 = #id; }
    });
    let edge_consts = m.edges.iter().enumerate().map(|(i, e)| {
        let c = upper(&e.name);
        let (i, name) = (i as u32, e.name.to_string());
        let ty = &m.messages[e.message].path;
        let doc = format!(" Edge `{name}`: `{}` over `{}`.", e.written, e.link);
        quote! { #[doc = #doc] pub const #c: ::taskgraph::Edge<#ty> = ::taskgraph::Edge::new(#i, #name); }
    });

    let role_refs = |rs: &[usize]| {
        let ids = rs.iter().map(|&r| r as u32);
        quote!(&[#(#ids),*])
    };
    // A link's id in the spec (never failing there), and a check of each
    // link named, spanned at the name: an unknown one is one error there,
    // listing the topology's links.
    let link_id = |link: &Ident| {
        let name = link.to_string();
        quote!(#p::link_index(<#topo as ::taskgraph::dsl::LinkSet>::LINKS, #name))
    };
    let link_checks = m.edges.iter().map(|e| &e.link).chain(m.flags.iter().map(|f| &f.link)).map(|link| {
        let name = link.to_string();
        let span = link.span();
        let graph = Ident::new(&g.to_string(), span);
        quote_spanned! {span=>
            const _: u32 = ::taskgraph::__private::dsl::link_id(
                <<#graph as ::taskgraph::dsl::Graph>::Topology as ::taskgraph::dsl::LinkSet>::LINKS,
                #name,
                <<#graph as ::taskgraph::dsl::Graph>::Topology as ::taskgraph::dsl::LinkSet>::UNKNOWN_LINK,
            );
        }
    });
    let role_specs = m.roles.iter().map(|r| {
        let name = r.name.to_string();
        let first = r.range.first;
        let end = match r.range.end {
            Some(e) => quote!(::core::option::Option::Some(#e)),
            None => quote!(::core::option::Option::None),
        };
        let replicated = r.replicated.is_some();
        quote!(::taskgraph::dsl::RoleSpec { name: #name, first: #first, end: #end, replicated: #replicated })
    });
    let edge_specs = m.edges.iter().map(|e| {
        let name = e.name.to_string();
        let message = e.written.to_string();
        let link = link_id(&e.link);
        let (f, s) = (role_refs(&e.fetchers), role_refs(&e.sources));
        quote!(::taskgraph::dsl::EdgeSpec { name: #name, message: #message, link: #link, fetchers: #f, sources: #s })
    });
    let flag_specs = m.flags.iter().map(|f| {
        let name = f.name.to_string();
        let link = link_id(&f.link);
        let (s, r) = (role_refs(&f.senders), role_refs(&f.receivers));
        quote!(::taskgraph::dsl::FlagSpec { name: #name, link: #link, senders: #s, receivers: #r })
    });

    let message_checks = m.messages.iter().map(|msg| {
        let path = &msg.path;
        quote_spanned! {msg.name.span()=> #p::assert_message::<#path>(); }
    });
    let declares = m.messages.iter().map(|msg| {
        let path = &msg.path;
        quote!(<#path as ::taskgraph::__private::capnp::Named>::declare(&mut schema);)
    });
    let fid = file_id(&gs);
    // `for<'a>` keeps rustc from rejecting the bound where it is written
    // when a type is not a message: the one error is `assert_message`'s.
    let all_messages_bound: Vec<TokenStream> = m
        .messages
        .iter()
        .map(|msg| {
            let path = &msg.path;
            quote!(for<'__a> #path: ::taskgraph::Message,)
        })
        .collect();
    let schema_file = format!("{job_name}.capnp");
    let schema_file_doc = format!(" `{schema_file}`, and returns its path.");

    // job(): one constructor per role.
    let fs: Vec<Ident> = (0..m.roles.len()).map(|i| format_ident!("__F{}", i)).collect();
    let ts: Vec<Ident> = (0..m.roles.len()).map(|i| format_ident!("__T{}", i)).collect();
    let fields: Vec<Ident> = m.roles.iter().map(|r| role_field(&r.name)).collect();
    let makers: Vec<Ident> = (0..m.roles.len()).map(|i| format_ident!("__make{}", i)).collect();
    let handler_traits: Vec<Ident> = m.roles.iter().map(|r| format_ident!("{}Handlers", r.name)).collect();
    let field_docs = m.roles.iter().map(|r| format!(" Makes the task of each `{}` task id ({}).", r.name, r.range.text()));
    let arms = role_ids.iter().zip(&ts).zip(&makers).enumerate().map(|(i, ((id, t), mk))| {
        let pat = if i + 1 == m.roles.len() { quote!(_) } else { quote!(#id) };
        quote!(#pat => #p::adapt::<#g, #t, #id>(#mk(task)),)
    });
    let tasks_doc = format!(
        " The task constructors of a `{gs}` job, one per role: `{gs}::job(topology, tasks, {tasks_struct} {{ {} }})`.",
        fields.iter().map(|f| format!("{f}: |task| ...")).collect::<Vec<_>>().join(", ")
    );
    let job_where = fs.iter().zip(&ts).zip(&role_ids).zip(&handler_traits).map(|(((f, t), id), h)| {
        quote! {
            #f: ::core::ops::Fn(::taskgraph::TaskId) -> #t + ::core::marker::Send + ::core::marker::Sync + 'static,
            #t: #p::BoundTo<#g, #id> + #h,
        }
    });

    let roles_out = m.roles.iter().enumerate().map(|(i, _)| emit_role(m, i));
    let graph_doc = format!(" Graph `{gs}`, declared with `taskgraph!`.");
    let tasks_generics = &fs;

    quote! {
        #(#attrs)*
        #[doc = #graph_doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #vis struct #g;

        #[doc = #tasks_doc]
        #[derive(Debug)]
        #vis struct #tasks_struct<#(#tasks_generics),*> {
            #(#[doc = #field_docs] pub #fields: #tasks_generics,)*
        }

        #(#roles_out)*

        const _: () = {
            #[allow(non_upper_case_globals)]
            impl #g {
                #(#role_consts)*
                #(#edge_consts)*

                /// A job of this graph: `tasks` tasks linked by `topology`, each made by
                /// its role's constructor. Its name is the graph's in snake_case (change
                /// it with `Job::named`).
                pub fn job<#(#fs, #ts),*>(topology: #topo, tasks: u64, make: #tasks_struct<#(#fs),*>) -> ::taskgraph::Job
                where
                    #(#job_where)*
                    #(#all_messages_bound)*
                {
                    let #tasks_struct { #(#fields: #makers),* } = make;
                    #p::job::<#g>(topology, tasks, move |task, role| match role {
                        #(#arms)*
                    })
                }

                /// The graph at `epoch` for a job of `tasks` tasks: render it with
                /// `to_mermaid()` or `to_dot()`.
                pub fn graph(topology: &#topo, tasks: u64, epoch: ::taskgraph::Epoch) -> ::taskgraph::dsl::GraphPicture {
                    <Self as ::taskgraph::dsl::Graph>::SPEC.picture(topology, tasks, epoch)
                }

                /// The role of `task` (compare with the role consts), if it has one.
                pub fn role_of(task: ::taskgraph::TaskId) -> ::core::option::Option<u32> {
                    <Self as ::taskgraph::dsl::Graph>::SPEC.role_of(task)
                }

                /// One `.capnp` file declaring every message type of this graph, for
                /// programs in other languages.
                pub fn capnp_schema() -> ::std::string::String
                where
                    #(#all_messages_bound)*
                {
                    let mut schema = ::taskgraph::__private::capnp::Schema::default();
                    #(#declares)*
                    schema.finish(#fid)
                }

                /// Writes [`capnp_schema`](Self::capnp_schema) to `dir` as
                #[doc = #schema_file_doc]
                pub fn write_capnp_schema(dir: impl ::core::convert::AsRef<::std::path::Path>) -> ::std::io::Result<::std::path::PathBuf>
                where
                    #(#all_messages_bound)*
                {
                    let path = dir.as_ref().join(#schema_file);
                    ::std::fs::write(&path, Self::capnp_schema())?;
                    ::std::result::Result::Ok(path)
                }
            }

            impl ::taskgraph::dsl::Graph for #g {
                const SPEC: &'static ::taskgraph::dsl::GraphSpec = &::taskgraph::dsl::GraphSpec {
                    name: #gs,
                    job: #job_name,
                    roles: &[#(#role_specs),*],
                    edges: &[#(#edge_specs),*],
                    flags: &[#(#flag_specs),*],
                    links: <#topo as ::taskgraph::dsl::LinkSet>::LINKS,
                };
                type Topology = #topo;
            }

            const _: () = {
                #(#message_checks)*
            };
            #(#link_checks)*
        };
    }
}

/// One role's handler trait, context and glue.
fn emit_role(m: &Model, r: usize) -> TokenStream {
    let g = &m.name;
    let vis = &m.vis;
    let role = &m.roles[r];
    let rn = &role.name;
    let id = r as u32;
    let handlers = format_ident!("{}Handlers", rn, span = rn.span());
    let cx = format_ident!("{}Cx", rn, span = rn.span());
    let p = quote!(::taskgraph::__private::dsl);
    let lenient = m.lenient;
    let body = |default: TokenStream| if lenient { quote!({ #default }) } else { quote!(;) };

    let fetches: Vec<(usize, &Edge)> = m.edges.iter().enumerate().filter(|(_, e)| e.fetchers.contains(&r)).collect();
    let serves: Vec<(usize, &Edge)> = m.edges.iter().enumerate().filter(|(_, e)| e.sources.contains(&r)).collect();
    let sends: Vec<(usize, &Flag)> = m.flags.iter().enumerate().filter(|(_, f)| f.senders.contains(&r)).collect();
    let takes: Vec<(usize, &Flag)> = m.flags.iter().enumerate().filter(|(_, f)| f.receivers.contains(&r)).collect();
    let roles_text = |rs: &[usize]| list(rs.iter().map(|&i| m.roles[i].name.to_string()));
    let mut used: Vec<usize> = fetches.iter().chain(&serves).map(|(_, e)| e.message).chain(role.replicated).collect();
    used.sort_unstable();
    used.dedup();
    let bounds: Vec<TokenStream> = used
        .iter()
        .map(|&i| {
            let path = &m.messages[i].path;
            quote!(for<'__a> #path: ::taskgraph::Message,)
        })
        .collect();

    let mut required: Vec<String> = vec!["enter_epoch".into()];
    let mut methods = Vec::new();
    let mut cx_methods = Vec::new();
    let mut fetched_arms = Vec::new();
    let mut serve_arms = Vec::new();
    let mut flag_arms = Vec::new();

    for (i, e) in &fetches {
        let ty = &m.messages[e.message].path;
        let on = format_ident!("on_{}", e.name, span = e.written.span());
        let arg = &e.name;
        let c = upper(&e.name);
        let doc = format!(
            " A `{}` this task fetched over `{}` (edge `{}`) has arrived from task `from` (a {}): exactly once per fetch.",
            e.written,
            e.link,
            e.name,
            roles_text(&e.sources)
        );
        required.push(on.to_string());
        let b = body(quote!(let _ = (cx, from, #arg);));
        let span = e.written.span();
        methods.push(quote_spanned! {span=>
            #[doc = #doc]
            fn #on(&mut self, cx: &mut #cx<'_>, from: ::taskgraph::TaskId, #arg: ::taskgraph::dsl::Fetched<#ty>) #b
        });
        let i = *i as u32;
        fetched_arms.push(quote! {
            #i => if let ::core::option::Option::Some(message) = #p::deliver(&mut cx.0, #g::#c, &data) {
                T::#on(task, &mut cx, data.from(), message)
            },
        });
        let fetch = format_ident!("fetch_{}", e.name);
        let fetch_from = format_ident!("fetch_{}_from", e.name);
        let doc_all = format!(
            " Fetches `{}` (edge `{}`) from every `{}` neighbour at this epoch; `on_{}` follows once for each. Returns how many. \
             A neighbour whose role does not serve the edge fails the job.",
            e.written, e.name, e.link, e.name
        );
        let doc_one = format!(
            " Fetches `{}` (edge `{}`) from task `from`, which must be a `{}` neighbour at this epoch (else the job fails, and this returns false).",
            e.written, e.name, e.link
        );
        cx_methods.push(quote! {
            #[doc = #doc_all]
            pub fn #fetch(&mut self) -> usize {
                #p::fetch_all(&mut self.0, #g::#c)
            }
            #[doc = #doc_one]
            pub fn #fetch_from(&mut self, from: ::taskgraph::TaskId) -> bool {
                #p::fetch_from(&mut self.0, #g::#c, from)
            }
        });
    }
    for (i, e) in &serves {
        let ty = &m.messages[e.message].path;
        let serve = format_ident!("serve_{}", e.name, span = e.written.span());
        let c = upper(&e.name);
        let doc = format!(
            " Task `to` (a {}) fetches this task's `{}` (edge `{}`): answer `Serve::now(&message)`, or `Serve::later()` and `cx.reply_{}(to, ..)` in a later handler of this epoch. Called once per epoch and fetching task.",
            roles_text(&e.fetchers),
            e.written,
            e.name,
            e.name
        );
        required.push(serve.to_string());
        let b = body(quote!(let _ = (cx, to); ::taskgraph::dsl::Serve::later()));
        let span = e.written.span();
        methods.push(quote_spanned! {span=>
            #[doc = #doc]
            fn #serve(&mut self, cx: &mut #cx<'_>, to: ::taskgraph::TaskId) -> ::taskgraph::dsl::Serve<#ty> #b
        });
        let i = *i as u32;
        serve_arms.push(quote! {
            #i => {
                let answer = T::#serve(task, &mut cx, request.from);
                #p::serve(&mut cx.0, #g::#c, request, answer)
            }
        });
        let reply = format_ident!("reply_{}", e.name);
        let reply_encoded = format_ident!("reply_{}_encoded", e.name);
        let doc = format!(
            " Answers task `to`'s fetch of `{}` (edge `{}`) for this epoch, now or before it asks (a `serve_{}` that answered `Serve::later()`).",
            e.written, e.name, e.name
        );
        let doc_enc = format!(" As `reply_{}`, with a message encoded beforehand (or a fetched one, forwarded).", e.name);
        cx_methods.push(quote! {
            #[doc = #doc]
            pub fn #reply(&mut self, to: ::taskgraph::TaskId, message: &#ty) {
                #p::reply(&mut self.0, #g::#c, to, message)
            }
            #[doc = #doc_enc]
            pub fn #reply_encoded(&mut self, to: ::taskgraph::TaskId, message: &::taskgraph::message::Encoded<#ty>) {
                #p::reply_encoded(&mut self.0, #g::#c, to, message)
            }
        });
    }
    for (i, f) in &sends {
        let flag = format_ident!("flag_{}", f.name);
        let doc = format!(
            " Flags every `{}` neighbour (a {}) with `meta` (a few bytes): their `on_{}` follows. Returns how many.",
            f.link,
            roles_text(&f.receivers),
            f.name
        );
        let i = *i as u32;
        cx_methods.push(quote! {
            #[doc = #doc]
            pub fn #flag(&mut self, meta: &[u8]) -> usize {
                #p::flag(&mut self.0, #i, meta)
            }
        });
    }
    for (i, f) in &takes {
        let on = format_ident!("on_{}", f.name, span = f.name.span());
        let doc = format!(" Task `from` (a {}) flagged this task `{}`, with `meta`.", roles_text(&f.senders), f.name);
        required.push(on.to_string());
        let b = body(quote!(let _ = (cx, from, meta);));
        let span = f.name.span();
        methods.push(quote_spanned! {span=>
            #[doc = #doc]
            fn #on(&mut self, cx: &mut #cx<'_>, from: ::taskgraph::TaskId, meta: &[u8]) #b
        });
        let i = *i as u32;
        flag_arms.push(quote!(#i => T::#on(task, &mut cx, from, meta),));
    }

    let mut replication_dispatch = TokenStream::new();
    if let Some(u) = role.replicated {
        let ty = &m.messages[u].path;
        let span = m.messages[u].name.span();
        required.extend(["became_primary".to_string(), "became_backup".to_string(), "apply_update".to_string()]);
        let b_primary = body(quote!(let _ = (cx, term);));
        let b_backup = body(quote!(let _ = cx;));
        let b_apply = body(quote!(let _ = (cx, update);));
        methods.push(quote_spanned! {span=>
            /// This node is now the task's primary, with `term`: at the start, or taking
            /// over from a dead primary with the state its updates built (the role is
            /// replicated). `enter_epoch` for the current epoch follows: the epoch is redone
            /// from that state.
            fn became_primary(&mut self, cx: &mut #cx<'_>, term: u64) #b_primary
            /// This node holds the task as a hot backup: it applies the primary's updates
            /// (`apply_update`) until it takes over or the job ends. Its actions are dropped.
            fn became_backup(&mut self, cx: &mut #cx<'_>) #b_backup
            /// On a backup: an update the primary made with `cx.replicate(..)`, in order.
            fn apply_update(&mut self, cx: &mut #cx<'_>, update: #ty) #b_apply
            /// The task's whole state as one update, for a backup that joins late
            /// (`None`: the primary keeps every update and replays them instead).
            fn snapshot(&self) -> ::core::option::Option<#ty> {
                ::core::option::Option::None
            }
        });
        cx_methods.push(quote! {
            /// Sends `update` to this task's backups, which apply it in `apply_update`, in
            /// order; it reaches them before anything this task does next becomes visible
            /// to other tasks (a reply, a flag, a record, an epoch advance).
            pub fn replicate(&mut self, update: &#ty) {
                #p::replicate(&mut self.0, update)
            }
        });
        replication_dispatch = quote! {
            fn became_primary(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, term: u64) {
                T::became_primary(task, &mut #cx(cx), term)
            }
            fn became_backup(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>) {
                T::became_backup(task, &mut #cx(cx))
            }
            fn apply_update(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, update: &[u8]) {
                let update = #p::update::<#ty>(update);
                T::apply_update(task, &mut #cx(cx), update)
            }
            fn snapshot(task: &T) -> ::core::option::Option<::std::vec::Vec<u8>> {
                T::snapshot(task).map(|s| ::taskgraph::Message::encode(&s))
            }
        };
    }

    let gs = g.to_string();
    let trait_doc = format!(
        " The handlers of `{rn}` tasks (tasks {}) of graph `{gs}`, generated by `taskgraph!` from the role's edges: \
         implement it for the struct bound with `#[task({gs}::{rn})]`.",
        role.range.text()
    );
    let names = required.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let msg = format!("`{{Self}}` does not implement `{handlers}`, the handlers of role `{rn}` of graph `{gs}`");
    let note = format!("write `impl {handlers} for {{Self}}` with {names}");
    let cx_doc = format!(
        " What a `{rn}` handler can see and do: everything of [`TaskCx`](::taskgraph::dsl::TaskCx) (it dereferences to it), \
         and the fetch, reply and flag methods of the role's edges."
    );
    let enter_b = body(quote!(let _ = (cx, epoch);));

    quote! {
        #[doc = #trait_doc]
        #[diagnostic::on_unimplemented(message = #msg, label = "not a complete task of this role", note = #note)]
        #vis trait #handlers: 'static {
            /// The task has just been made on this node (at the start of the job, or when
            /// this node takes it over from a dead one).
            fn init(&mut self, cx: &mut #cx<'_>) {
                let _ = cx;
            }
            /// The job entered `epoch`.
            fn enter_epoch(&mut self, cx: &mut #cx<'_>, epoch: ::taskgraph::Epoch) #enter_b
            #(#methods)*
            /// A neighbour's node is gone and no node holds its task now.
            fn neighbour_failed(&mut self, cx: &mut #cx<'_>, link: ::taskgraph::LinkType, task: ::taskgraph::TaskId) {
                let _ = (cx, link, task);
            }
            /// A neighbour's task has a new primary node, with `term` (a spare or a hot
            /// backup took it over); fetches to it are resent.
            fn neighbour_restarted(&mut self, cx: &mut #cx<'_>, link: ::taskgraph::LinkType, task: ::taskgraph::TaskId, term: u64) {
                let _ = (cx, link, task, term);
            }
            /// The job is over: the last chance to save work.
            fn exit(&mut self, cx: &mut #cx<'_>) {
                let _ = cx;
            }
        }

        #[doc = #cx_doc]
        #vis struct #cx<'a>(::taskgraph::dsl::TaskCx<'a>);

        impl<'a> ::core::ops::Deref for #cx<'a> {
            type Target = ::taskgraph::dsl::TaskCx<'a>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }
        impl ::core::ops::DerefMut for #cx<'_> {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }
        impl ::core::fmt::Debug for #cx<'_> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl #cx<'_>
        where
            #(#bounds)*
        {
            #(#cx_methods)*
        }

        const _: () = {
            impl<T: #handlers> #p::Dispatch<T, #id> for #g
            where
                #(#bounds)*
            {
                fn init(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>) {
                    T::init(task, &mut #cx(cx))
                }
                fn enter_epoch(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, epoch: ::taskgraph::Epoch) {
                    T::enter_epoch(task, &mut #cx(cx), epoch)
                }
                #[allow(unused_mut)]
                fn fetched(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, data: ::taskgraph::Received) {
                    let mut cx = #cx(cx);
                    match data.edge() {
                        #(#fetched_arms)*
                        _ => #p::unexpected_data(&mut cx.0, &data),
                    }
                }
                #[allow(unused_mut)]
                fn serve(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, request: ::taskgraph::ServeRequest) {
                    let mut cx = #cx(cx);
                    match request.edge {
                        #(#serve_arms)*
                        _ => #p::unexpected_request(&mut cx.0, request),
                    }
                }
                #[allow(unused_mut, unused_variables)]
                fn flagged(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, from: ::taskgraph::TaskId, flag: u32, meta: &[u8]) {
                    let mut cx = #cx(cx);
                    match flag {
                        #(#flag_arms)*
                        _ => {}
                    }
                }
                fn neighbour_failed(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, link: ::taskgraph::LinkType, neighbour: ::taskgraph::TaskId) {
                    T::neighbour_failed(task, &mut #cx(cx), link, neighbour)
                }
                fn neighbour_restarted(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>, link: ::taskgraph::LinkType, neighbour: ::taskgraph::TaskId, term: u64) {
                    T::neighbour_restarted(task, &mut #cx(cx), link, neighbour, term)
                }
                fn exit(task: &mut T, cx: ::taskgraph::dsl::TaskCx<'_>) {
                    T::exit(task, &mut #cx(cx))
                }
                #replication_dispatch
            }
        };
    }
}

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
    if let (Ok(want), Some(name)) = (std::env::var(DEBUG_ENV), name) {
        if want == name {
            eprintln!("taskgraph! expansion of `{name}` ({DEBUG_ENV}):\n{}", crate::pretty(&out));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(input: TokenStream) -> Vec<String> {
        let mut diag = Diagnostics::new();
        if let Some(decl) = parse(input, &mut diag) {
            check(decl, &mut diag);
        }
        match diag.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn graph(body: TokenStream) -> TokenStream {
        quote!(pub graph G(topology = Tree) { #body })
    }

    #[test]
    fn the_reference_graph_is_accepted() {
        let e = errors(graph(quote! {
            messages Param, Grad, crate::m::Other;
            role Root = 0;
            role Worker = 1..;
            Worker fetches Param over parent from Root | Worker;
            Root | Worker fetch Grad over children from Worker;
            Worker fetches Other over parent from Root as other_one;
            Root flags stop over children to Worker;
        }));
        assert_eq!(e, Vec::<String>::new());
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = errors(graph(quote! {
            messages Param, Grad;
            role Root = 0;
            role Worker = 1..;
            Wroker fetches Param over parent from Root;
            Worker fetches Parm over parent from Root;
            Root flags stop over children to Leaf;
        }));
        assert_eq!(
            e,
            vec![
                "unknown role `Wroker`: the roles of `G` are `Root` and `Worker`",
                "unknown message `Parm`: the messages of `G` are `Param` and `Grad` (add it to `messages`)",
                "unknown role `Leaf`: the roles of `G` are `Root` and `Worker`",
            ]
        );
    }

    #[test]
    fn ranges_must_cover_the_tasks_once() {
        let e = errors(graph(quote! {
            role A = 0..4;
            role B = 3..;
        }));
        assert_eq!(e, vec!["the tasks of role `B` (3..) overlap those of role `A` (0..4): each task has one role"]);
        let e = errors(graph(quote! {
            role A = 1..=3;
            role B = 6..;
        }));
        assert_eq!(
            e,
            vec![
                "no role has task 0: the roles' task ids must follow each other from 0 (this role starts at 1)",
                "no role has tasks 4..6: the roles' task ids must follow each other from 0 (this role starts at 6)",
            ]
        );
        let e = errors(graph(quote! {
            role A = 0..;
            role B = 5..7;
        }));
        assert_eq!(e, vec!["the tasks of role `B` (5..7) overlap those of role `A` (0..): each task has one role"]);
        assert_eq!(
            errors(graph(quote!(role B = 0..3; role A = 3..3; role C = 3..;))),
            vec!["the task ids `3..3` are empty: a role needs at least one task (`3`, `3..4` or `3..=3` for task 3)"]
        );
        assert_eq!(errors(graph(quote!(role A = 0..2; role B = 2; role C = 3..=9;))), Vec::<String>::new());
    }

    #[test]
    fn names_are_checked() {
        let e = errors(graph(quote! {
            messages Param, Param;
            role worker = 0..;
            role worker = 0..;
        }));
        assert_eq!(
            e,
            vec![
                "`Param` is listed twice (as `Param` already)",
                "role names are UpperCamelCase (they name types: `workerHandlers`, `workerCx`), and `worker` is not",
                "role names are UpperCamelCase (they name types: `workerHandlers`, `workerCx`), and `worker` is not",
                "role `worker` is declared twice",
            ]
        );
        let e = errors(graph(quote! {
            messages Param;
            role W = 0..;
            W fetches Param over a from W;
            W fetches Param over b from W;
            W flags Stop over a to W | W;
        }));
        assert_eq!(
            e,
            vec![
                "two edges or flags are named `param`: name this one with `as <name>` (an edge) or another name (a flag)",
                "role `W` is named twice here",
                "flag names are snake_case identifiers (they name methods), and `Stop` is not",
            ]
        );
    }

    #[test]
    fn syntax_errors_say_what_was_expected() {
        let e = errors(graph(quote! {
            role A = 0..;
            A fetch Param from A;
            A sends x over y to A;
            A fetches Param over l from A extra;
        }));
        assert_eq!(
            e,
            vec![
                "expected `over <link>`: `Worker fetches Param over parent from Root`",
                "expected `fetches` or `flags`, found `sends` (roles are separated by `|`)",
                "unexpected tokens: a statement ends with `;`",
            ]
        );
        let e = errors(graph(quote!(role A = 0..; A fetches Param over l from A;)));
        assert_eq!(e, vec!["graph `G` has edges but no `messages A, B;` statement listing their message types"]);
        let e = errors(quote!(pub grph G(topology = T) {}));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("expected `graph`, found `grph`"), "{e:?}");
        let e = errors(quote!(graph G(topo = T) {}));
        assert_eq!(e, vec!["expected `topology = <the topology's type>`"]);
    }

    #[test]
    fn a_graph_without_roles_is_an_error() {
        assert_eq!(errors(graph(quote!())), vec!["graph `G` has no roles: declare at least one, e.g. `role Worker = 0..;`"]);
    }
}
