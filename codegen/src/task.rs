//! `#[task(Graph::Role)]`: binds a struct to a role of a graph declared
//! with `taskgraph!`.
//!
//! ```text
//! #[task(Regression::Worker)]
//! pub struct Worker { param: Option<Param> }
//! ```
//!
//! The expansion is the struct, unchanged, and in `const _: () = { ... };`
//!
//! * `impl BoundTo<Regression, { Regression::Worker }> for Worker`: what
//!   `Regression::job` asks of the type that makes `Worker` tasks;
//! * a check, at the struct's name, that `Worker` implements the role's
//!   handler trait (`WorkerHandlers`): if it does not, the error says so
//!   there, naming the handlers it needs.
//!
//! A struct may take several roles: `#[task(G::Root, G::Worker)]`. An
//! unknown role is rustc's "no associated item named `Wroker` found for
//! struct `Regression`", with the similar name it has.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::punctuated::Punctuated;
use syn::{Path, Token};

use crate::diag::Diagnostics;
use crate::dump::{dump, Format};

/// The whole attribute, without the debug dump: the expansion, and the
/// struct's name.
pub fn expand(attr: TokenStream, item: TokenStream) -> (TokenStream, Option<String>) {
    let mut diag = Diagnostics::new();
    let roles = match syn::parse::Parser::parse2(Punctuated::<Path, Token![,]>::parse_terminated, attr) {
        Ok(r) if r.is_empty() => {
            diag.error(Span::call_site(), "name the task's role with its graph: `#[task(Regression::Worker)]`");
            Vec::new()
        }
        Ok(r) => r.into_iter().collect(),
        Err(e) => {
            diag.push(syn::Error::new(e.span(), format!("{e}: expected `#[task(Graph::Role)]`")));
            Vec::new()
        }
    };
    let strukt = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(s)) => {
            if !s.generics.params.is_empty() || s.generics.where_clause.is_some() {
                let g = &s.generics;
                diag.error_at(g, "a #[task] struct cannot be generic: the runtime makes one task type per role");
                None
            } else {
                Some(s)
            }
        }
        Ok(other) => {
            diag.error_at(
                item_head(&other),
                "#[task(Graph::Role)] goes on the struct that does a role's work, as in `pub struct Worker { .. }`",
            );
            None
        }
        Err(e) => {
            diag.push(e);
            None
        }
    };
    let name = strukt.as_ref().map(|s| s.ident.to_string());
    let mut binds = Vec::new();
    for path in &roles {
        if path.segments.len() < 2 {
            diag.error_at(path, format!("name the role with its graph: `#[task(Graph::{})]`", quote!(#path)));
            continue;
        }
        let graph = Path {
            leading_colon: path.leading_colon,
            segments: path.segments.iter().take(path.segments.len() - 1).cloned().collect(),
        };
        if let Some(s) = &strukt {
            let ident = &s.ident;
            // The role as a const argument, at the user's path; the check
            // that the struct does the role's work, at the struct's name.
            let role = quote_spanned! {path.span()=> { #path } };
            let at_struct = respan(graph.clone(), ident.span());
            let check = quote_spanned! {ident.span()=>
                ::taskgraph::__private::dsl::assert_bound::<#at_struct, #ident, #role>()
            };
            binds.push(quote! {
                #[automatically_derived]
                impl ::taskgraph::__private::dsl::BoundTo<#graph, #role> for #ident {}
                const _: () = #check;
            });
        }
    }
    let errors = diag.into_compile_errors();
    let out = quote! {
        #item
        const _: () = {
            #(#binds)*
        };
        #errors
    };
    (out, name)
}

/// `path` with every token at `span`.
fn respan(path: Path, span: Span) -> Path {
    let tokens: TokenStream = path
        .to_token_stream()
        .into_iter()
        .map(|mut t| {
            t.set_span(span);
            t
        })
        .collect();
    syn::parse2(tokens).unwrap_or(path)
}

fn item_head(item: &syn::Item) -> TokenStream {
    match item {
        syn::Item::Enum(e) => {
            let (k, i) = (&e.enum_token, &e.ident);
            quote!(#k #i)
        }
        syn::Item::Union(u) => {
            let (k, i) = (&u.union_token, &u.ident);
            quote!(#k #i)
        }
        syn::Item::Fn(f) => {
            let s = &f.sig;
            quote!(#s)
        }
        syn::Item::Impl(i) => {
            let (k, t) = (&i.impl_token, &i.self_ty);
            quote!(#k #t)
        }
        other => quote!(#other),
    }
}

/// The attribute: tokens in, tokens out. With `TASKGRAPH_DEBUG_MACRO` set
/// to the struct's name, the expansion is also printed to stderr.
pub fn attribute(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (out, name) = expand(attr, item);
    dump("#[task]", name.as_deref(), &out, Format::Pretty);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(attr: TokenStream, item: TokenStream) -> Vec<String> {
        let (out, _) = expand(attr, item);
        let text = out.to_string();
        text.split("compile_error !").skip(1).map(|s| s.split('"').nth(1).unwrap_or("").to_owned()).collect()
    }

    #[test]
    fn binds_each_role() {
        let (out, name) = expand(quote!(g::Regression::Root, Regression::Worker), quote!(pub struct W { x: u32 }));
        assert_eq!(name.as_deref(), Some("W"));
        let text = out.to_string();
        assert!(text.contains("BoundTo < g :: Regression , { g :: Regression :: Root } > for W"), "{text}");
        assert!(text.contains("BoundTo < Regression , { Regression :: Worker } > for W"), "{text}");
        assert!(!text.contains("compile_error"), "{text}");
    }

    #[test]
    fn misuse_is_explained() {
        assert_eq!(errors(quote!(), quote!(struct W;)), vec!["name the task's role with its graph: `#[task(Regression::Worker)]`"]);
        assert_eq!(errors(quote!(Worker), quote!(struct W;)), vec!["name the role with its graph: `#[task(Graph::Worker)]`"]);
        assert_eq!(
            errors(quote!(G::R), quote!(enum W { A })),
            vec!["#[task(Graph::Role)] goes on the struct that does a role's work, as in `pub struct Worker { .. }`"]
        );
        assert_eq!(
            errors(quote!(G::R), quote!(struct W<T>(T);)),
            vec!["a #[task] struct cannot be generic: the runtime makes one task type per role"]
        );
    }
}
