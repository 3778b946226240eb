//! The per-edge traits: for each edge `e` of a graph, `Fetches<E>` (the
//! fetch methods) and `Serves<E>` (the reply methods), both extending
//! `RoleContext`, declared once per graph in the caller's module and
//! implemented by the context of every role that fetches or serves the
//! edge. Code shared by several roles takes `cx: &mut impl FetchesValue`
//! instead of one role's context.
//!
//! The names say what the context's role does with the edge, in the
//! declaration's own words: `Worker fetches Param ...` makes the contexts
//! of `Worker` implement `FetchesParam`, and a role the edge comes `from`
//! serves it (its handler is `serve_param`), so its context implements
//! `ServesParam`. They are the edge's name in UpperCamelCase (`as
//! peer_param` gives `FetchesPeerParam`), not the message's: one message
//! may travel over two edges, with different roles.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};

use super::model::{Edge, Model};
use crate::names::{list, upper, upper_camel_case};

/// `FetchesE` for edge `e`, at the edge's name.
pub(super) fn fetches_trait(e: &Edge) -> Ident {
    format_ident!("Fetches{}", upper_camel_case(&e.name.to_string()), span = e.name.span())
}

/// `ServesE` for edge `e`, at the edge's name.
pub(super) fn serves_trait(e: &Edge) -> Ident {
    format_ident!("Serves{}", upper_camel_case(&e.name.to_string()), span = e.name.span())
}

/// The contexts of roles `rs`, as prose (`` `LeaderCx` and `PeerCx` ``).
fn contexts(m: &Model, rs: &[usize]) -> String {
    list(rs.iter().map(|&r| format!("{}Cx", m.roles[r].name)))
}

/// The roles `rs`, as prose.
fn roles(m: &Model, rs: &[usize]) -> String {
    list(rs.iter().map(|&r| m.roles[r].name.to_string()))
}

/// Both traits of every edge of the graph.
pub(super) fn edge_traits(m: &Model) -> TokenStream {
    let gs = m.name.to_string();
    let traits = m.edges.iter().map(|e| {
        // The graph's visibility, at the edge: rustc shows a trait from its
        // first token to its name (in "`FetchesParam` defines an item
        // `fetch_param`"), which is then the edge's name alone.
        let vis = respan(m.vis.to_token_stream(), e.name.span());
        let ty = &m.messages[e.message].path;
        let (name, msg, link) = (e.name.to_string(), &e.written, &e.link);
        let (fetches, serves) = (fetches_trait(e), serves_trait(e));
        let (fetch, fetch_from) = (format_ident!("fetch_{}", e.name), format_ident!("fetch_{}_from", e.name));
        let (reply, reply_encoded) = (format_ident!("reply_{}", e.name), format_ident!("reply_{}_encoded", e.name));

        let fetches_doc = format!(
            " The fetching side of edge `{name}` of graph `{gs}` (`{msg}` over `{link}`, served by {}): \
             implemented by the context of every role that fetches it ({}). Code shared by those roles \
             takes `cx: &mut impl {fetches}`; the supertrait, `RoleContext`, gives it `task()`, `epoch()`, \
             `record`, `advance_epoch`, ... The handler of what arrives is each role's `on_{name}`.",
            roles(m, &e.sources),
            contexts(m, &e.fetchers),
        );
        let serves_doc = format!(
            " The serving side of edge `{name}` of graph `{gs}` (`{msg}` over `{link}`, fetched by {}): \
             implemented by the context of every role that serves it ({}). Code shared by those roles \
             takes `cx: &mut impl {serves}`; the supertrait, `RoleContext`, gives it `task()`, `epoch()`, \
             `record`, `advance_epoch`, ... A fetch is first each role's `serve_{name}`, which answers now \
             or `Serve::later()` and then with `reply_{name}`.",
            roles(m, &e.fetchers),
            contexts(m, &e.sources),
        );
        let fetch_doc = format!(
            " Fetches `{msg}` (edge `{name}`) from every `{link}` neighbour at this epoch; `on_{name}` follows \
             once for each. Returns how many. A neighbour whose role does not serve the edge fails the job."
        );
        let fetch_from_doc = format!(
            " Fetches `{msg}` (edge `{name}`) from task `from`, which must be a `{link}` neighbour at this epoch \
             (else the job fails, and this returns false)."
        );
        let reply_doc = format!(
            " Answers task `to`'s fetch of `{msg}` (edge `{name}`) for this epoch, now or before it asks \
             (a `serve_{name}` that answered `Serve::later()`)."
        );
        let reply_encoded_doc = format!(" As `{reply}`, with a message encoded beforehand (or a fetched one, forwarded).");

        let not_fetching = format!("`{{Self}}` does not fetch edge `{name}` of graph `{gs}`: it is not `{fetches}`");
        let fetch_note = format!(
            "`{fetches}` is implemented by the contexts of the roles that fetch `{name}`: {}",
            contexts(m, &e.fetchers)
        );
        let not_serving = format!("`{{Self}}` does not serve edge `{name}` of graph `{gs}`: it is not `{serves}`");
        let serve_note = format!(
            "`{serves}` is implemented by the contexts of the roles that serve `{name}`: {}",
            contexts(m, &e.sources)
        );
        let span = e.name.span();
        // A program need not use them: no dead-code warning (in a binary,
        // or for a private graph) for an edge's traits it has no use for.
        quote_spanned! {span=>
            #[doc = #fetches_doc]
            #[allow(dead_code)]
            #[diagnostic::on_unimplemented(
                message = #not_fetching,
                label = "this role does not fetch the edge",
                note = #fetch_note
            )]
            #vis trait #fetches: ::taskgraph::dsl::RoleContext {
                #[doc = #fetch_doc]
                fn #fetch(&mut self) -> usize;
                #[doc = #fetch_from_doc]
                fn #fetch_from(&mut self, from: ::taskgraph::TaskId) -> bool;
            }

            #[doc = #serves_doc]
            #[allow(dead_code)]
            #[diagnostic::on_unimplemented(
                message = #not_serving,
                label = "this role does not serve the edge",
                note = #serve_note
            )]
            #vis trait #serves: ::taskgraph::dsl::RoleContext {
                #[doc = #reply_doc]
                fn #reply(&mut self, to: ::taskgraph::TaskId, message: &#ty);
                #[doc = #reply_encoded_doc]
                fn #reply_encoded(&mut self, to: ::taskgraph::TaskId, message: &::taskgraph::message::Encoded<#ty>);
            }
        }
    });
    quote!(#(#traits)*)
}

/// `tokens`, every one at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let TokenTree::Group(g) = &t {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                t = TokenTree::Group(group);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

/// The impls of the per-edge traits for role `r`'s context `cx`: one for
/// each edge it fetches, one for each it serves.
pub(super) fn edge_impls(m: &Model, r: usize, cx: &Ident) -> TokenStream {
    let (g, p) = (&m.name, quote!(::taskgraph::__private::dsl));
    let fetched = m.edges.iter().filter(|e| e.fetchers.contains(&r)).map(|e| {
        let fetches = fetches_trait(e);
        let (fetch, fetch_from) = (format_ident!("fetch_{}", e.name), format_ident!("fetch_{}_from", e.name));
        let c = upper(&e.name);
        // At the edge: "the trait `FetchesParam` is implemented for
        // `WorkerCx<'_>`" then shows the edge that makes it so.
        quote_spanned! {e.name.span()=>
            impl #fetches for #cx<'_> {
                #[inline]
                fn #fetch(&mut self) -> usize {
                    #p::fetch_all(&mut self.0, #g::#c)
                }
                #[inline]
                fn #fetch_from(&mut self, from: ::taskgraph::TaskId) -> bool {
                    #p::fetch_from(&mut self.0, #g::#c, from)
                }
            }
        }
    });
    let served = m.edges.iter().filter(|e| e.sources.contains(&r)).map(|e| {
        let ty = &m.messages[e.message].path;
        let serves = serves_trait(e);
        let (reply, reply_encoded) = (format_ident!("reply_{}", e.name), format_ident!("reply_{}_encoded", e.name));
        let c = upper(&e.name);
        // As the context's own methods: `for<'__a>` keeps a type that is not
        // a message to its one error, `assert_message`'s.
        quote_spanned! {e.name.span()=>
            impl #serves for #cx<'_>
            where
                for<'__a> #ty: ::taskgraph::Message,
            {
                #[inline]
                fn #reply(&mut self, to: ::taskgraph::TaskId, message: &#ty) {
                    #p::reply(&mut self.0, #g::#c, to, message)
                }
                #[inline]
                fn #reply_encoded(&mut self, to: ::taskgraph::TaskId, message: &::taskgraph::message::Encoded<#ty>) {
                    #p::reply_encoded(&mut self.0, #g::#c, to, message)
                }
            }
        }
    });
    quote!(#(#fetched)* #(#served)*)
}
