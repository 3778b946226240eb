//! From `taskgraph!`'s tokens to a [`Decl`]: the header, then each
//! `;`-terminated statement on its own, so that one statement's syntax
//! error does not hide the others'.

use proc_macro2::{Ident, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, LitInt, Path, Token, Visibility};

use super::model::Range;
use crate::diag::Diagnostics;

/// A parsed `taskgraph!` input, before checks.
#[derive(Debug)]
pub struct Decl {
    pub(super) attrs: Vec<Attribute>,
    pub(super) vis: Visibility,
    pub(super) name: Ident,
    pub(super) topology: syn::Type,
    pub(super) stmts: Vec<Stmt>,
}

/// One `;`-terminated statement of a graph.
#[derive(Debug)]
pub(super) enum Stmt {
    Messages(Vec<Path>),
    Role { name: Ident, range: Range, replicated: Option<Ident> },
    Edge { fetchers: Vec<Ident>, message: Ident, link: Ident, sources: Vec<Ident>, alias: Option<Ident> },
    Flag { senders: Vec<Ident>, name: Ident, link: Ident, receivers: Vec<Ident> },
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

#[cfg(test)]
mod tests {
    use quote::quote;

    use crate::graph::tests::{errors, graph};

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
}
