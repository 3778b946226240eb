//! `#[topology(...)]`: a struct that holds a topology's parameters,
//! declaring its link types and their inverses.
//!
//! ```text
//! #[topology(parent <-> children, peers <-> peers, log)]
//! pub struct Tree { pub tasks: u64 }
//! ```
//!
//! Each entry is an inverse pair `a <-> b`, a symmetric link `a <-> a`
//! (its own inverse), or a link `a` with no inverse. Link ids follow the
//! order of first mention. The expansion is the struct, unchanged, and:
//!
//! * `<vis> trait TreeLinks` with one method per link,
//!   `fn parent(&self, task: TaskId, epoch: Epoch) -> Vec<TaskId>`;
//! * in `const _: () = { ... };`: the associated consts `Tree::PARENT`,
//!   ... and `Tree::LINKS`, and `impl Topology for Tree` dispatching
//!   `neighbours` to the `TreeLinks` methods.
//!
//! So the user's `impl TreeLinks for Tree` is what makes `Tree` a topology,
//! and rustc checks it at the user's tokens: a missing method is "not all
//! trait items implemented", a wrong signature is "incompatible type for
//! trait".
//!
//! The pipeline: [`parse_links`] (syntax, into [`Entry`]s) → [`check`]
//! (names, duplicates, inverses, into [`Link`]s) → [`emit`]. Every problem
//! is collected in a [`Diagnostics`]; when there are any, the expansion is
//! still the struct and, as far as the links could be made out, the trait,
//! the consts and a stub `Topology` impl, beside the `compile_error!`s, so
//! that the user's own code (and their IDE) sees the names it expects and
//! the only errors are the attribute's.

use std::collections::HashMap;

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};

use crate::diag::Diagnostics;
use crate::dump::{dump, Format};
use crate::names::{is_keyword, to_snake_case, upper};

// Where they were public before they moved to `dump` and `names`.
pub use crate::dump::DEBUG_ENV;
pub use crate::names::is_snake_case;

const FORMS: &str = "`name <-> inverse` (an inverse pair), `name <-> name` (a symmetric link) or `name` (no inverse)";

/// One comma-separated entry of the attribute.
#[derive(Debug, Clone)]
pub enum Entry {
    /// `a`: a link with no inverse.
    Plain(Ident),
    /// `a <-> b`: an inverse pair, or a symmetric link when `a == b`.
    Pair(Ident, Ident),
}

impl Entry {
    fn text(&self) -> String {
        match self {
            Entry::Plain(a) => a.to_string(),
            Entry::Pair(a, b) => format!("{a} <-> {b}"),
        }
    }
}

/// A checked link.
#[derive(Debug, Clone)]
pub struct Link {
    /// Its name, at the user's first mention.
    pub name: Ident,
    /// Its id: its position in order of first mention.
    pub id: u32,
    /// Its inverse's id (its own for a symmetric link).
    pub inverse: Option<u32>,
}

impl Link {
    /// The name of its associated const (`PARENT` for `parent`), or `None`
    /// if its name was rejected and has no sensible one.
    fn const_name(&self) -> Option<Ident> {
        let name = self.name.to_string();
        (is_snake_case(&name) && name != "links").then(|| upper(&self.name))
    }
}

/// Splits the attribute's arguments into entries, reporting syntax errors.
/// Malformed entries are left out; the rest are still returned.
pub fn parse_links(attr: TokenStream, diag: &mut Diagnostics) -> Vec<Entry> {
    let tokens: Vec<TokenTree> = attr.into_iter().collect();
    if tokens.is_empty() {
        diag.error(
            Span::call_site(),
            "a topology needs at least one link: #[topology(parent <-> children)], #[topology(peers <-> peers)] or #[topology(next)]",
        );
        return Vec::new();
    }
    let mut entries = Vec::new();
    let mut rest = &tokens[..];
    while !rest.is_empty() {
        let end = rest.iter().position(|t| is_punct(t, ',')).unwrap_or(rest.len());
        let (entry, after) = rest.split_at(end);
        if entry.is_empty() {
            diag.error(after[0].span(), format!("expected a link before this comma: {FORMS}"));
        } else if let Some(e) = parse_entry(entry, diag) {
            entries.push(e);
        }
        rest = after.get(1..).unwrap_or(&[]);
    }
    entries
}

fn is_punct(t: &TokenTree, c: char) -> bool {
    matches!(t, TokenTree::Punct(p) if p.as_char() == c)
}

/// The position of the first `<->` in `tokens`.
fn find_arrow(tokens: &[TokenTree]) -> Option<usize> {
    tokens.windows(3).position(|w| is_punct(&w[0], '<') && is_punct(&w[1], '-') && is_punct(&w[2], '>'))
}

fn error_at_tokens(diag: &mut Diagnostics, tokens: &[TokenTree], message: impl std::fmt::Display) {
    let stream: TokenStream = tokens.iter().cloned().collect();
    diag.error_at(stream, message);
}

fn parse_entry(tokens: &[TokenTree], diag: &mut Diagnostics) -> Option<Entry> {
    let Some(at) = find_arrow(tokens) else {
        return match tokens {
            [TokenTree::Ident(a)] => Some(Entry::Plain(a.clone())),
            [TokenTree::Ident(_), rest @ ..] if rest.iter().any(|t| matches!(t, TokenTree::Punct(_))) => {
                error_at_tokens(
                    diag,
                    rest,
                    "expected `<->` between a link and its inverse, as in `parent <-> children` (or a comma between links)",
                );
                None
            }
            _ => {
                error_at_tokens(diag, tokens, format!("expected {FORMS}"));
                None
            }
        };
    };
    let arrow = &tokens[at..at + 3];
    let (left, right) = (&tokens[..at], &tokens[at + 3..]);
    if left.is_empty() || right.is_empty() {
        let missing = if left.is_empty() { "before" } else { "after" };
        error_at_tokens(
            diag,
            arrow,
            format!("`<->` needs a link on each side, found none {missing} it: write `name <-> inverse`, or `name <-> name` for a symmetric link"),
        );
        return None;
    }
    let side = |side: &[TokenTree], diag: &mut Diagnostics| match side {
        [TokenTree::Ident(a)] => Some(a.clone()),
        [TokenTree::Ident(_), rest @ ..] if find_arrow(rest).is_some() => {
            error_at_tokens(diag, rest, "a link has one inverse: write one pair per entry, as in `a <-> b, c <-> d`");
            None
        }
        _ => {
            error_at_tokens(diag, side, "expected a link name (a snake_case identifier)");
            None
        }
    };
    let a = side(left, diag);
    let b = side(right, diag);
    Some(Entry::Pair(a?, b?))
}

/// Checks a link's name; `false` if it cannot be a method name at all.
fn check_name(name: &Ident, owner: &str, diag: &mut Diagnostics) -> bool {
    let s = name.to_string();
    if is_keyword(&s) {
        diag.error(
            name.span(),
            format!(
                "`{s}` is a Rust keyword and cannot name a link (a link's name becomes a method of `{owner}Links`)"
            ),
        );
        return false;
    }
    if !is_snake_case(&s) {
        let hint = match to_snake_case(&s) {
            Some(snake) => format!(": write `{snake}`"),
            None => String::new(),
        };
        diag.error(
            name.span(),
            format!(
                "link names are snake_case (a link's name becomes a method of `{owner}Links`), and `{s}` is not{hint}"
            ),
        );
    } else if s == "links" {
        diag.error(
            name.span(),
            format!(
                "a link cannot be named `links`: its const would clash with `{owner}::LINKS`, the list of all links"
            ),
        );
    }
    true
}

/// Where a name was first declared.
struct Seen {
    /// That entry, as written.
    entry: String,
    /// The other side of its `<->`, if any.
    partner: Option<String>,
}

/// Numbers a link at its first mention, unless its name is unusable.
fn add(
    name: &Ident,
    entry: &Entry,
    partner: Option<&Ident>,
    owner: &str,
    links: &mut Vec<Link>,
    seen: &mut HashMap<String, Seen>,
    diag: &mut Diagnostics,
) -> Option<usize> {
    seen.insert(name.to_string(), Seen { entry: entry.text(), partner: partner.map(Ident::to_string) });
    if !check_name(name, owner, diag) {
        return None;
    }
    links.push(Link { name: name.clone(), id: links.len() as u32, inverse: None });
    Some(links.len() - 1)
}

/// Checks the entries and numbers the links. Errors are reported at the
/// user's tokens; the links returned are what could be made of the rest
/// (each name once, keywords left out), so that the expansion can still
/// name every method the user implements.
pub fn check(entries: &[Entry], owner: &str, diag: &mut Diagnostics) -> Vec<Link> {
    let mut links: Vec<Link> = Vec::new();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    for entry in entries {
        match entry {
            Entry::Plain(a) => match seen.get(&a.to_string()) {
                Some(first) => duplicate(a, None, first, diag),
                None => {
                    add(a, entry, None, owner, &mut links, &mut seen, diag);
                }
            },
            Entry::Pair(a, b) if a == b => match seen.get(&a.to_string()) {
                Some(first) => duplicate(a, Some(b), first, diag),
                None => {
                    if let Some(i) = add(a, entry, Some(b), owner, &mut links, &mut seen, diag) {
                        links[i].inverse = Some(i as u32);
                    }
                }
            },
            Entry::Pair(a, b) => {
                let (first_a, first_b) = (seen.get(&a.to_string()), seen.get(&b.to_string()));
                let pairs_with = |first: Option<&Seen>, partner: &Ident| {
                    first.is_some_and(|f| f.partner.as_deref() == Some(partner.to_string().as_str()))
                };
                // `a <-> b` twice (either way round): one error for the entry.
                if pairs_with(first_a, b) && pairs_with(first_b, a) {
                    diag.error_at(
                        quote!(#a #b),
                        format!(
                            "`{}` is declared twice (first as `{}`): one declaration sets both directions",
                            entry.text(),
                            first_a.map_or("", |f| f.entry.as_str()),
                        ),
                    );
                    continue;
                }
                if let Some(first) = first_a {
                    duplicate(a, Some(b), first, diag);
                }
                if let Some(first) = first_b {
                    duplicate(b, Some(a), first, diag);
                }
                let (new_a, new_b) = (first_a.is_none(), first_b.is_none());
                let ia = if new_a { add(a, entry, Some(b), owner, &mut links, &mut seen, diag) } else { None };
                let ib = if new_b { add(b, entry, Some(a), owner, &mut links, &mut seen, diag) } else { None };
                if let (Some(ia), Some(ib)) = (ia, ib) {
                    links[ia].inverse = Some(ib as u32);
                    links[ib].inverse = Some(ia as u32);
                }
            }
        }
    }
    links
}

/// Reports the second declaration of `name`, whose other side is
/// `partner`.
fn duplicate(name: &Ident, partner: Option<&Ident>, first: &Seen, diag: &mut Diagnostics) {
    let partner = partner.map(Ident::to_string);
    let me = name.to_string();
    match (&first.partner, &partner) {
        (Some(p), Some(q)) if p != q && *p == me => diag.error(
            name.span(),
            format!("`{name}` is its own inverse (`{name} <-> {name}`), so it cannot also be the inverse of `{q}`: a link has at most one inverse"),
        ),
        (Some(p), Some(q)) if p != q && *q == me => diag.error(
            name.span(),
            format!("`{name}` cannot be its own inverse: it is already the inverse of `{p}` (a link has at most one inverse)"),
        ),
        (Some(p), Some(q)) if p != q => diag.error(
            name.span(),
            format!("`{name}` cannot be the inverse of both `{p}` and `{q}`: a link has at most one inverse"),
        ),
        _ => diag.error(
            name.span(),
            format!("link `{name}` is declared twice (first in `{}`): declare each link once", first.entry),
        ),
    }
}

/// The generated items (beside the user's struct): the links trait, the
/// link consts and the `Topology` impl. `complete` is false when the
/// attribute had errors (see [`expand`]).
pub fn emit(item: &syn::ItemStruct, links: &[Link], complete: bool) -> TokenStream {
    let ident = &item.ident;
    let vis = &item.vis;
    let owner = ident.to_string();
    let links_trait = format_ident!("{}Links", ident);
    let by_id = |id: Option<u32>| id.map(|i| links[i as usize].name.to_string());

    let methods = links.iter().map(|l| {
        let name = &l.name;
        let inverse = match by_id(l.inverse) {
            Some(_) if l.inverse == Some(l.id) => "it is its own inverse".to_owned(),
            Some(inv) => format!("its inverse is `{inv}`"),
            None => "it has no inverse".to_owned(),
        };
        let doc = format!(" The `{name}` neighbours of `task` at `epoch`; {inverse}.");
        // A rejected name (already an error) keeps its method, so that the
        // user's impl still matches; rustc need not warn about it too.
        let allow = (!is_snake_case(&name.to_string())).then(|| quote!(#[allow(non_snake_case)]));
        // The user's span, so that rustc's "`parent` from trait" and "type in
        // trait" notes point at the link in the attribute.
        quote_spanned! {name.span()=>
            #[doc = #doc]
            #allow
            fn #name(&self, task: ::taskgraph::TaskId, epoch: ::taskgraph::Epoch) -> ::std::vec::Vec<::taskgraph::TaskId>;
        }
    });
    let names: Vec<String> = links.iter().map(|l| format!("`{}`", l.name)).collect();
    let trait_doc = format!(
        " The links of the `{owner}` topology, generated by `#[topology]`: implement one method per link ({}), \
         and `{owner}` is a `taskgraph::Topology`.",
        names.join(", ")
    );
    let on_unimplemented_msg = format!("`{{Self}}` does not implement `{links_trait}`, so it is not a topology yet");
    let on_unimplemented_note = format!(
        "`#[topology]` declared the links of `{owner}`: implement `{links_trait}` for it, with one method per link ({})",
        names.join(", ")
    );

    let unknown = format!("no such link in `{owner}`: its links are {}", names.join(", "));
    let link_expr = |l: &Link| {
        let (id, name) = (l.id, l.name.to_string());
        match l.inverse {
            Some(inv) => quote!(::taskgraph::LinkType::with_inverse(#id, #name, #inv)),
            None => quote!(::taskgraph::LinkType::new(#id, #name)),
        }
    };
    let consts = links.iter().filter_map(|l| {
        let c = l.const_name()?;
        let value = link_expr(l);
        let doc = match by_id(l.inverse) {
            Some(inv) if l.inverse == Some(l.id) => format!(" The `{inv}` link (id {}); it is its own inverse.", l.id),
            Some(inv) => format!(" The `{}` link (id {}); its inverse is `{inv}`.", l.name, l.id),
            None => format!(" The `{}` link (id {}); it has no inverse.", l.name, l.id),
        };
        Some(quote! {
            #[doc = #doc]
            pub const #c: ::taskgraph::LinkType = #value;
        })
    });
    let all = links.iter().map(link_expr);
    let n = links.len();
    // One coercion, at the struct's name: if `TreeLinks` is not
    // implemented at all, that is one error there. With errors in the
    // attribute, the impl is a stub that does not need the trait (the
    // build fails anyway), so the user sees only those errors.
    let body = if complete {
        let arms = links.iter().map(|l| {
            let (id, name) = (l.id, &l.name);
            quote!(#id => #links_trait::#name(links, task, epoch),)
        });
        let this = quote_spanned!(ident.span()=> self);
        quote! {
            let links: &dyn #links_trait = #this;
            match link {
                #(#arms)*
                _ => ::std::vec::Vec::new(),
            }
        }
    } else {
        quote! {
            let _ = (link, task, epoch);
            ::std::vec::Vec::new()
        }
    };

    quote! {
        #[doc = #trait_doc]
        #[diagnostic::on_unimplemented(message = #on_unimplemented_msg, note = #on_unimplemented_note)]
        #vis trait #links_trait {
            #(#methods)*
        }

        const _: () = {
            impl #ident {
                #(#consts)*
                /// All links of this topology, by id.
                pub const LINKS: [::taskgraph::LinkType; #n] = [#(#all),*];
            }

            #[automatically_derived]
            impl ::taskgraph::dsl::LinkSet for #ident {
                const LINKS: &'static [::taskgraph::LinkType] = &Self::LINKS;
                const UNKNOWN_LINK: &'static str = #unknown;
            }

            #[automatically_derived]
            impl ::taskgraph::Topology for #ident {
                fn links(&self) -> &[::taskgraph::LinkType] {
                    &Self::LINKS
                }
                fn neighbours(
                    &self,
                    link: u32,
                    task: ::taskgraph::TaskId,
                    epoch: ::taskgraph::Epoch,
                ) -> ::std::vec::Vec<::taskgraph::TaskId> {
                    #body
                }
            }
        };
    }
}

/// The whole attribute, without the debug dump: the expansion, and the
/// struct's name if the item is a struct.
pub fn expand(attr: TokenStream, item: TokenStream) -> (TokenStream, Option<String>) {
    let mut diag = Diagnostics::new();
    let (strukt, owner) = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(s)) => {
            let owner = s.ident.to_string();
            let g = &s.generics;
            if !g.params.is_empty() || g.where_clause.is_some() {
                let w = &g.where_clause;
                let at = if g.params.is_empty() { quote!(#w) } else { quote!(#g) };
                diag.error_at(
                    at,
                    "a #[topology] struct cannot be generic: its links trait and link consts are made for one type; \
                     hold the topology's parameters in fields",
                );
                (None, Some(owner))
            } else {
                (Some(s), Some(owner))
            }
        }
        Ok(syn::Item::Enum(e)) => {
            let (kw, ident) = (&e.enum_token, &e.ident);
            diag.error_at(quote!(#kw #ident), on_what("an enum"));
            (None, Some(ident.to_string()))
        }
        Ok(syn::Item::Union(u)) => {
            let (kw, ident) = (&u.union_token, &u.ident);
            diag.error_at(quote!(#kw #ident), on_what("a union"));
            (None, Some(ident.to_string()))
        }
        Ok(_) => {
            diag.error(Span::call_site(), on_what("this item"));
            (None, None)
        }
        Err(e) => {
            diag.push(e);
            (None, None)
        }
    };
    let entries = parse_links(attr, &mut diag);
    let links = check(&entries, owner.as_deref().unwrap_or("Topology"), &mut diag);
    let complete = !diag.has_errors();
    let generated = strukt.map(|s| emit(&s, &links, complete));
    let errors = diag.into_compile_errors();
    (quote!(#item #generated #errors), owner)
}

fn on_what(what: &str) -> String {
    format!("#[topology] goes on a struct that holds the topology's parameters, as in `pub struct Tree {{ pub tasks: u64 }}`, not on {what}")
}

/// The attribute: tokens in, tokens out. With `TASKGRAPH_DEBUG_MACRO` set
/// to the struct's name, the expansion is also printed to stderr.
pub fn attribute(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (out, owner) = expand(attr, item);
    dump("#[topology]", owner.as_deref(), &out, Format::Tokens);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link as (name, id, inverse).
    type Summary = (String, u32, Option<u32>);

    fn links_of(attr: TokenStream) -> (Vec<Summary>, Vec<String>) {
        let mut diag = Diagnostics::new();
        let entries = parse_links(attr, &mut diag);
        let links = check(&entries, "Tree", &mut diag);
        let errors = match diag.finish() {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (links.into_iter().map(|l| (l.name.to_string(), l.id, l.inverse)).collect(), errors)
    }

    fn ok(attr: TokenStream) -> Vec<Summary> {
        let (links, errors) = links_of(attr);
        assert!(errors.is_empty(), "{errors:?}");
        links
    }

    fn errors(attr: TokenStream) -> Vec<String> {
        links_of(attr).1
    }

    fn l(name: &str, id: u32, inverse: Option<u32>) -> Summary {
        (name.to_owned(), id, inverse)
    }

    #[test]
    fn ids_follow_first_mention() {
        assert_eq!(ok(quote!(parent <-> children)), vec![l("parent", 0, Some(1)), l("children", 1, Some(0))]);
        assert_eq!(
            ok(quote!(log, peers <-> peers, up <-> down,)),
            vec![l("log", 0, None), l("peers", 1, Some(1)), l("up", 2, Some(3)), l("down", 3, Some(2))]
        );
    }

    #[test]
    fn the_arrow_may_be_spaced() {
        let attr: TokenStream = "a<->b, c < - > d".parse().unwrap();
        assert_eq!(ok(attr), vec![l("a", 0, Some(1)), l("b", 1, Some(0)), l("c", 2, Some(3)), l("d", 3, Some(2))]);
    }

    #[test]
    fn an_empty_list_is_an_error() {
        assert_eq!(errors(quote!()).len(), 1);
        assert!(errors(quote!())[0].contains("at least one link"));
    }

    #[test]
    fn missing_sides_and_bad_syntax() {
        assert_eq!(
            errors(quote!(<-> b, a <->, a -> b, a b, , c)),
            vec![
                "`<->` needs a link on each side, found none before it: write `name <-> inverse`, or `name <-> name` for a symmetric link",
                "`<->` needs a link on each side, found none after it: write `name <-> inverse`, or `name <-> name` for a symmetric link",
                "expected `<->` between a link and its inverse, as in `parent <-> children` (or a comma between links)",
                "expected `name <-> inverse` (an inverse pair), `name <-> name` (a symmetric link) or `name` (no inverse)",
                "expected a link before this comma: `name <-> inverse` (an inverse pair), `name <-> name` (a symmetric link) or `name` (no inverse)",
            ]
        );
        assert_eq!(
            errors(quote!(a <-> b <-> c)),
            vec!["a link has one inverse: write one pair per entry, as in `a <-> b, c <-> d`"]
        );
        // What did parse is still numbered.
        assert_eq!(links_of(quote!(<-> b, c)).0, vec![l("c", 0, None)]);
    }

    #[test]
    fn duplicates_and_double_inverses() {
        assert_eq!(
            errors(quote!(parent <-> children, parent)),
            vec!["link `parent` is declared twice (first in `parent <-> children`): declare each link once"]
        );
        assert_eq!(
            errors(quote!(parent <-> children, children <-> parent)),
            vec!["`children <-> parent` is declared twice (first as `parent <-> children`): one declaration sets both directions"]
        );
        assert_eq!(
            errors(quote!(parent <-> children, kids <-> parent)),
            vec!["`parent` cannot be the inverse of both `children` and `kids`: a link has at most one inverse"]
        );
        assert_eq!(
            errors(quote!(peers <-> peers, others <-> peers)),
            vec!["`peers` is its own inverse (`peers <-> peers`), so it cannot also be the inverse of `others`: a link has at most one inverse"]
        );
        assert_eq!(
            errors(quote!(up <-> down, up <-> up)),
            vec![
                "`up` cannot be its own inverse: it is already the inverse of `down` (a link has at most one inverse)"
            ]
        );
        // Every name still has a method (`kids` has no inverse).
        assert_eq!(
            links_of(quote!(parent <-> children, kids <-> parent)).0,
            vec![l("parent", 0, Some(1)), l("children", 1, Some(0)), l("kids", 2, None)]
        );
    }

    #[test]
    fn names_are_snake_case_identifiers() {
        assert_eq!(
            errors(quote!(Parent <-> childNodes, links, r#type, x__y)),
            vec![
                "link names are snake_case (a link's name becomes a method of `TreeLinks`), and `Parent` is not: write `parent`",
                "link names are snake_case (a link's name becomes a method of `TreeLinks`), and `childNodes` is not: write `child_nodes`",
                "a link cannot be named `links`: its const would clash with `Tree::LINKS`, the list of all links",
                "link names are snake_case (a link's name becomes a method of `TreeLinks`), and `r#type` is not",
                "link names are snake_case (a link's name becomes a method of `TreeLinks`), and `x__y` is not: write `x_y`",
            ]
        );
        let attr: TokenStream = "type <-> a".parse().unwrap();
        assert_eq!(
            errors(attr),
            vec!["`type` is a Rust keyword and cannot name a link (a link's name becomes a method of `TreeLinks`)"]
        );
    }

    fn expansion(attr: TokenStream, item: TokenStream) -> String {
        expand(attr, item).0.to_string()
    }

    #[test]
    fn emits_the_struct_trait_consts_and_impl() {
        let out = expansion(
            quote!(parent <-> children),
            quote!(
                pub struct Tree {
                    pub tasks: u64,
                }
            ),
        );
        for want in [
            "pub struct Tree { pub tasks : u64 , } # [doc",
            "pub trait TreeLinks",
            "fn parent (& self , task : :: taskgraph :: TaskId , epoch : :: taskgraph :: Epoch) -> :: std :: vec :: Vec < :: taskgraph :: TaskId > ;",
            "pub const PARENT : :: taskgraph :: LinkType = :: taskgraph :: LinkType :: with_inverse (0u32 , \"parent\" , 1u32) ;",
            "pub const CHILDREN : :: taskgraph :: LinkType = :: taskgraph :: LinkType :: with_inverse (1u32 , \"children\" , 0u32) ;",
            "pub const LINKS : [:: taskgraph :: LinkType ; 2usize]",
            "impl :: taskgraph :: Topology for Tree",
            "let links : & dyn TreeLinks = self ;",
            "0u32 => TreeLinks :: parent (links , task , epoch) ,",
            "_ => :: std :: vec :: Vec :: new () ,",
            "The `parent` neighbours of `task` at `epoch`; its inverse is `children`.",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn the_trait_has_the_struct_visibility() {
        let out = expansion(
            quote!(next),
            quote!(
                pub(crate) struct Ring;
            ),
        );
        assert!(out.contains("pub (crate) trait RingLinks"), "{out}");
        assert!(out.contains("LinkType :: new (0u32 , \"next\")"), "{out}");
        let out = expansion(
            quote!(next),
            quote!(
                struct Ring;
            ),
        );
        assert!(out.contains("trait RingLinks") && !out.contains("pub trait"), "{out}");
    }

    #[test]
    fn a_wrong_item_keeps_the_item_beside_the_error() {
        for (item, want) in [
            (
                quote!(
                    pub enum Tree {
                        A,
                    }
                ),
                "not on an enum",
            ),
            (
                quote!(
                    pub union Tree {
                        a: u32,
                    }
                ),
                "not on a union",
            ),
            (
                quote!(
                    pub fn tree() {}
                ),
                "not on this item",
            ),
            (
                quote!(
                    pub struct Tree<T> {
                        t: T,
                    }
                ),
                "cannot be generic",
            ),
            (
                quote!(
                    pub struct Tree<'a> {
                        t: &'a u32,
                    }
                ),
                "cannot be generic",
            ),
        ] {
            let out = expansion(quote!(parent <-> children), item.clone());
            assert!(out.starts_with(&item.to_string()), "{out}");
            assert!(out.contains("compile_error") && out.contains(want), "{out}");
            assert!(!out.contains("trait TreeLinks"), "{out}");
        }
    }

    #[test]
    fn bad_links_still_emit_what_they_can() {
        let out = expansion(
            quote!(parent <-> children, parent),
            quote!(
                pub struct Tree;
            ),
        );
        assert!(out.contains("compile_error") && out.contains("pub trait TreeLinks"), "{out}");
        assert!(out.contains("fn children"), "{out}");
        // The impl does not use the trait, so the user sees only the
        // attribute's errors.
        assert!(out.contains("impl :: taskgraph :: Topology for Tree") && !out.contains("dyn TreeLinks"), "{out}");
        // A rejected name keeps its method (so the user's impl still
        // matches) but gets no const.
        let out = expansion(
            quote!(Parent),
            quote!(
                pub struct Tree;
            ),
        );
        assert!(out.contains("fn Parent") && out.contains("non_snake_case") && !out.contains("const PARENT"), "{out}");
    }

    #[test]
    fn errors_are_all_collected() {
        let (out, owner) = expand(
            quote!(A, a, a),
            quote!(
                enum E {
                    X,
                }
            ),
        );
        assert_eq!(owner.as_deref(), Some("E"));
        assert_eq!(out.to_string().matches("compile_error").count(), 3, "{out}");
    }
}
