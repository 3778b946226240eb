//! From the checked [`Model`] to the expansion. The graph-wide items are
//! made here; each role's trait, context and dispatch in [`super::role`].

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use super::edges::edge_traits;
use super::model::Model;
use super::role::emit_role;
use crate::names::{role_field, snake_or_lower, upper};

/// The graph's `.capnp` file id: derived from its name, so that it is
/// stable.
fn file_id(name: &str) -> u64 {
    crate::ids::child_id(0x8e3c_5a1d_07b2_f9e1, &format!("taskgraph graph {name}"))
}

/// The expansion: the graph's struct and tasks struct, each role's part
/// (in `role.rs`), and in `const _: () = { ... };` the graph's consts and
/// functions, `impl Graph` and the checks of messages and links.
pub fn emit(m: &Model) -> TokenStream {
    let g = &m.name;
    let vis = &m.vis;
    let attrs = &m.attrs;
    let topo = &m.topology;
    let gs = g.to_string();
    let job_name = snake_or_lower(&gs);
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
    let edge_traits = edge_traits(m);
    let graph_doc = format!(" Graph `{gs}`, declared with `taskgraph!`.");
    let tasks_generics = &fs;

    quote! {
        // The contexts' common methods (`cx.epoch()`, `cx.fail_job(..)`) are
        // `RoleContext`'s: in scope here, under no name.
        #[allow(unused_imports)]
        use ::taskgraph::dsl::RoleContext as _;

        #(#attrs)*
        #[doc = #graph_doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #vis struct #g;

        #[doc = #tasks_doc]
        #[derive(Debug)]
        #vis struct #tasks_struct<#(#tasks_generics),*> {
            #(#[doc = #field_docs] pub #fields: #tasks_generics,)*
        }

        #edge_traits

        #(#roles_out)*

        const _: () = {
            // The role consts are named as the roles (`G::Worker`).
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
