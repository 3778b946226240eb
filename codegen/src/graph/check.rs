//! From a parsed [`Decl`] to the checked [`Model`]: names, task id
//! ranges and references, every problem reported at the user's tokens.
//! What fails a check is left out of the model (an edge with an unknown
//! role, a second role of the same name), and the rest is kept.

use std::collections::HashMap;

use proc_macro2::{Ident, Span, TokenStream};
use quote::ToTokens;

use super::model::{Edge, Flag, Message, Model, Range, Role};
use super::parse::{Decl, Stmt};
use crate::diag::Diagnostics;
use crate::names::{is_camel_case, is_keyword, is_snake_case, list, to_snake_case};

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

#[cfg(test)]
mod tests {
    use quote::quote;

    use crate::graph::tests::{errors, graph};

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
    fn a_graph_without_roles_is_an_error() {
        assert_eq!(errors(graph(quote!())), vec!["graph `G` has no roles: declare at least one, e.g. `role Worker = 0..;`"]);
    }
}
