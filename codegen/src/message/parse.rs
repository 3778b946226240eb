//! From `syn` input to the [message model](super::model), with every
//! problem reported at the user's tokens.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Expr, GenericArgument, Lit, PathArguments, Token, Type, UnOp};

use super::model::*;
use crate::diag::Diagnostics;
use crate::ids;
use crate::names::{camel_case, lower_first};

const FIELD_KEYS: &str = "`ordinal`, `default`, `enum`, `name`";
const TYPE_KEYS: &str = "`id`, `file_id`, `name`, `retired`, `crate`";
const VARIANT_KEYS: &str = "`ordinal`, `name`";

const SUPPORTED: &str = "supported field types: bool, u8, u16, u32, u64, i8, i16, i32, i64, f32, f64, \
String, Vec<u8>, Vec<T>, Option<T>, a type that derives Message, and a fieldless enum that derives \
Message (mark the field #[capnp(enum)])";

/// Field options from `#[capnp(...)]`.
#[derive(Default)]
struct FieldAttrs {
    /// The attribute had a syntax error (already reported): do not also
    /// report what it failed to say.
    broken: bool,
    ordinal: Option<(u32, Span)>,
    default: Option<(DefaultValue, Span)>,
    is_enum: bool,
    name: Option<String>,
}

/// Type options from `#[capnp(...)]`.
#[derive(Default)]
struct TypeAttrs {
    id: Option<u64>,
    file_id: Option<u64>,
    name: Option<(String, Span)>,
    retired: Vec<RetiredSpec>,
    krate: Option<syn::Path>,
}

/// `3: u32` in `retired(...)`.
struct RetiredSpec {
    ordinal: syn::LitInt,
    ty: Type,
}

impl Parse for RetiredSpec {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let ordinal = input.parse()?;
        input.parse::<Token![:]>()?;
        let ty = input.parse()?;
        Ok(RetiredSpec { ordinal, ty })
    }
}

fn capnp_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("capnp"))
}

fn parse_ordinal(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<(u32, Span)> {
    let lit: syn::LitInt = meta.value()?.parse()?;
    let v = lit
        .base10_parse::<u32>()
        .map_err(|_| syn::Error::new(lit.span(), "an ordinal is a number from 0 to 65534"))?;
    if v > 65534 {
        return Err(syn::Error::new(lit.span(), "an ordinal is a number from 0 to 65534"));
    }
    Ok((v, lit.span()))
}

fn parse_default(expr: &Expr) -> syn::Result<DefaultValue> {
    let (negative, lit) = match expr {
        Expr::Lit(l) => (false, &l.lit),
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => match &*u.expr {
            Expr::Lit(l) => (true, &l.lit),
            other => return Err(syn::Error::new_spanned(other, "a default is a literal number or bool")),
        },
        other => return Err(syn::Error::new_spanned(other, "a default is a literal number or bool")),
    };
    let sign = if negative { -1 } else { 1 };
    match lit {
        Lit::Bool(b) if !negative => Ok(DefaultValue::Bool(b.value)),
        Lit::Int(i) => {
            let v: i128 = i.base10_parse()?;
            Ok(DefaultValue::Int(v * sign))
        }
        Lit::Float(f) => {
            let v: f64 = f.base10_parse()?;
            Ok(DefaultValue::Float(v * sign as f64))
        }
        other => Err(syn::Error::new_spanned(other, "a default is a literal number or bool")),
    }
}

fn field_attrs(attrs: &[Attribute], diag: &mut Diagnostics) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in capnp_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("ordinal") {
                out.ordinal = Some(parse_ordinal(&meta)?);
            } else if meta.path.is_ident("default") {
                let expr: Expr = meta.value()?.parse()?;
                out.default = Some((parse_default(&expr)?, expr.span()));
            } else if meta.path.is_ident("enum") {
                out.is_enum = true;
            } else if meta.path.is_ident("name") {
                let s: syn::LitStr = meta.value()?.parse()?;
                out.name = Some(s.value());
            } else {
                return Err(meta.error(format_args!(
                    "unknown field option `{}`; expected one of {FIELD_KEYS}",
                    path_text(&meta.path)
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            out.broken = true;
            diag.push(e);
        }
    }
    out
}

fn variant_attrs(attrs: &[Attribute], diag: &mut Diagnostics) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in capnp_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("ordinal") {
                out.ordinal = Some(parse_ordinal(&meta)?);
            } else if meta.path.is_ident("name") {
                let s: syn::LitStr = meta.value()?.parse()?;
                out.name = Some(s.value());
            } else {
                return Err(meta.error(format_args!(
                    "unknown variant option `{}`; expected one of {VARIANT_KEYS}",
                    path_text(&meta.path)
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            out.broken = true;
            diag.push(e);
        }
    }
    out
}

fn type_attrs(attrs: &[Attribute], diag: &mut Diagnostics) -> TypeAttrs {
    let mut out = TypeAttrs::default();
    for attr in capnp_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("id") || meta.path.is_ident("file_id") {
                let lit: syn::LitInt = meta.value()?.parse()?;
                let v: u64 = lit.base10_parse()?;
                if v >> 63 == 0 {
                    return Err(syn::Error::new(
                        lit.span(),
                        "a Cap'n Proto id has its top bit set (e.g. 0x8000_0000_0000_0001); `capnp id` prints a fresh one",
                    ));
                }
                if meta.path.is_ident("id") {
                    out.id = Some(v);
                } else {
                    out.file_id = Some(v);
                }
            } else if meta.path.is_ident("name") {
                let s: syn::LitStr = meta.value()?.parse()?;
                out.name = Some((s.value(), s.span()));
            } else if meta.path.is_ident("crate") {
                let s: syn::LitStr = meta.value()?.parse()?;
                out.krate = Some(s.parse()?);
            } else if meta.path.is_ident("retired") {
                let content;
                syn::parenthesized!(content in meta.input);
                let specs = Punctuated::<RetiredSpec, Token![,]>::parse_terminated(&content)?;
                out.retired.extend(specs);
            } else {
                return Err(meta.error(format_args!(
                    "unknown option `{}`; expected one of {TYPE_KEYS}",
                    path_text(&meta.path)
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            diag.push(e);
        }
    }
    out
}

/// The runtime's path, from `#[capnp(crate = "...")]` if that can be
/// read, else `::taskgraph` (for the dummy impls of a failed derive,
/// whose errors are reported by [`parse`]).
pub(crate) fn crate_path(attrs: &[Attribute]) -> syn::Path {
    let mut scratch = Diagnostics::new();
    let krate = type_attrs(attrs, &mut scratch).krate;
    let _ = scratch.finish();
    krate.unwrap_or_else(|| syn::parse_quote!(::taskgraph))
}

fn path_text(path: &syn::Path) -> String {
    path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::")
}

/// The single generic argument of `Vec<T>` / `Option<T>`.
fn only_arg(args: &PathArguments) -> Option<&Type> {
    match args {
        PathArguments::AngleBracketed(a) if a.args.len() == 1 => match &a.args[0] {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// Maps a Rust type to its Cap'n Proto side. `is_enum`: the field says its
/// (innermost) named type is a fieldless enum.
pub(crate) fn map_type(ty: &Type, is_enum: bool) -> Result<Ty, syn::Error> {
    let unsupported = |why: &str| syn::Error::new_spanned(ty, format!("{why}; {SUPPORTED}"));
    let path = match ty {
        Type::Path(p) if p.qself.is_none() => &p.path,
        Type::Paren(p) => return map_type(&p.elem, is_enum),
        Type::Group(g) => return map_type(&g.elem, is_enum),
        Type::Reference(_) => {
            return Err(syn::Error::new_spanned(ty, "a message owns its data: use an owned type (String, Vec<T>), not a reference"))
        }
        Type::Array(_) | Type::Slice(_) => {
            return Err(syn::Error::new_spanned(ty, "arrays and slices are not supported: use Vec<T>"))
        }
        Type::Tuple(t) if t.elems.is_empty() => return Err(unsupported("`()` is not a field type")),
        Type::Tuple(_) => {
            return Err(syn::Error::new_spanned(ty, "tuples are not supported: use a message struct with named fields"))
        }
        _ => return Err(unsupported("this type cannot be a message field")),
    };
    let last = path.segments.last().ok_or_else(|| unsupported("empty type path"))?;
    let name = last.ident.to_string();
    let is_plain = path.segments.len() == 1 && matches!(last.arguments, PathArguments::None);
    if is_plain {
        if let Some(p) = Prim::from_rust(&name) {
            if is_enum {
                return Err(syn::Error::new_spanned(ty, format!("`{name}` is not an enum: remove `enum`")));
            }
            return Ok(Ty::Prim(p));
        }
        match name.as_str() {
            "usize" | "isize" => {
                return Err(syn::Error::new_spanned(
                    ty,
                    format!("`{name}` has no fixed size on the wire: use u64 or i64 (or a smaller width)"),
                ))
            }
            "u128" | "i128" => {
                return Err(syn::Error::new_spanned(
                    ty,
                    format!("`{name}` has no Cap'n Proto type: split it into two u64 fields"),
                ))
            }
            "char" => return Err(syn::Error::new_spanned(ty, "`char` is not supported: use u32 or String")),
            "String" => return Ok(Ty::Text),
            "str" => return Err(unsupported("use String")),
            _ => {}
        }
    }
    match (name.as_str(), only_arg(&last.arguments)) {
        ("Vec", Some(inner)) => {
            if !is_enum && matches!(map_type(inner, false), Ok(Ty::Prim(Prim::U8))) {
                return Ok(Ty::Data);
            }
            match map_type(inner, is_enum)? {
                Ty::OptionData(_) | Ty::OptionPointer(_) => Err(syn::Error::new_spanned(
                    inner,
                    "a Cap'n Proto list cannot hold `Option`s; use a list of messages with an optional field",
                )),
                elem => Ok(Ty::List(Box::new(elem))),
            }
        }
        ("Option", Some(inner)) => match map_type(inner, is_enum)? {
            t @ (Ty::Prim(_) | Ty::Enum(_)) => Ok(Ty::OptionData(Box::new(t))),
            Ty::OptionData(_) | Ty::OptionPointer(_) => {
                Err(syn::Error::new_spanned(ty, "`Option<Option<T>>` is not supported"))
            }
            pointer => Ok(Ty::OptionPointer(Box::new(pointer))),
        },
        ("Vec" | "Option", None) => Err(unsupported(&format!("`{name}` needs exactly one type argument"))),
        ("HashMap" | "BTreeMap" | "HashSet" | "BTreeSet" | "VecDeque" | "Box" | "Rc" | "Arc", _) => {
            Err(unsupported(&format!("`{name}` is not supported")))
        }
        _ => {
            if path.segments.iter().any(|s| !matches!(s.arguments, PathArguments::None)) {
                return Err(unsupported("generic message types are not supported"));
            }
            if is_enum {
                Ok(Ty::Enum(ty.clone()))
            } else {
                Ok(Ty::Struct(ty.clone()))
            }
        }
    }
}

fn check_default(ty: &Ty, default: &DefaultValue, span: Span, diag: &mut Diagnostics) {
    let ok = match (ty, default) {
        (Ty::Prim(Prim::Bool), DefaultValue::Bool(_)) => true,
        (Ty::Prim(Prim::F32 | Prim::F64), DefaultValue::Float(_) | DefaultValue::Int(_)) => true,
        (Ty::Prim(p), DefaultValue::Int(v)) => match p.int_range() {
            Some((lo, hi)) if (lo..=hi).contains(v) => true,
            Some((lo, hi)) => {
                diag.error(span, format!("default {v} does not fit {} ({lo}..={hi})", p.rust()));
                return;
            }
            None => false,
        },
        _ => false,
    };
    if !ok {
        let what = match ty {
            Ty::Prim(Prim::Bool) => "the default of a bool field is `true` or `false`".to_owned(),
            Ty::Prim(p) if p.int_range().is_some() => {
                format!("the default of a {} field is an integer literal (e.g. `default = 7`)", p.rust())
            }
            Ty::Prim(p) => format!("the default of a {} field is a number literal", p.rust()),
            _ => "only number and bool fields can have a default (a pointer field defaults to empty, an Option to None)"
                .to_owned(),
        };
        diag.error(span, what);
    }
}

/// Parses one field; `None` if it has errors (already recorded).
fn field(
    member: syn::Member,
    attrs: &[Attribute],
    rust_ty: &Type,
    ordinal_from_variant: Option<(u32, Span)>,
    diag: &mut Diagnostics,
) -> Option<FieldDef> {
    let a = field_attrs(attrs, diag);
    let span = match &member {
        syn::Member::Named(i) => i.span(),
        syn::Member::Unnamed(_) => rust_ty.span(),
    };
    let ty = match map_type(rust_ty, a.is_enum) {
        Ok(t) => t,
        Err(e) => {
            diag.push(e);
            return None;
        }
    };
    let ordinal = match (a.ordinal, ordinal_from_variant) {
        (Some(o), None) | (None, Some(o)) => o.0,
        (Some((_, s)), Some(_)) => {
            diag.error(s, "the ordinal is given twice: on the variant and on its field; keep one");
            return None;
        }
        (None, None) if a.broken => return None,
        (None, None) => {
            let what = match &member {
                syn::Member::Named(i) => format!("field `{i}`"),
                syn::Member::Unnamed(_) => "this field".to_owned(),
            };
            diag.error(
                span,
                format!(
                    "{what} needs an ordinal, its permanent position on the wire: #[capnp(ordinal = N)]{}",
                    if ty.ordinals() == 2 { " (an Option of a number takes N and N + 1)" } else { "" }
                ),
            );
            return None;
        }
    };
    if let Some((d, s)) = &a.default {
        check_default(&ty, d, *s, diag);
    }
    let capnp_name = a.name.unwrap_or_else(|| match &member {
        syn::Member::Named(i) => camel_case(&i.to_string()),
        syn::Member::Unnamed(idx) => format!("f{}", idx.index),
    });
    Some(FieldDef {
        member: Some(member),
        capnp_name,
        ordinal,
        ty,
        rust_ty: rust_ty.clone(),
        default: a.default.map(|d| d.0),
        span,
    })
}

fn retired(specs: &[RetiredSpec], diag: &mut Diagnostics) -> Vec<FieldDef> {
    let mut out = Vec::new();
    for spec in specs {
        let ordinal = match spec.ordinal.base10_parse::<u32>() {
            Ok(o) if o <= 65534 => o,
            _ => {
                diag.error(spec.ordinal.span(), "an ordinal is a number from 0 to 65534");
                continue;
            }
        };
        // A retired field's type only reserves space: a named type is
        // taken to be a struct (a pointer).
        match map_type(&spec.ty, false) {
            Ok(ty) => out.push(FieldDef {
                member: None,
                capnp_name: format!("retired{ordinal}"),
                ordinal,
                ty,
                rust_ty: spec.ty.clone(),
                default: None,
                span: spec.ordinal.span(),
            }),
            Err(e) => diag.push(e),
        }
    }
    out
}

/// Checks that the ordinals of all fields are exactly `0..N`. `complete`:
/// every field of the type is among `items`; when one was left out for
/// an error of its own, a gap may be its ordinal and is not reported
/// (one error per mistake).
fn check_ordinals(items: &[(u32, u32, Span, String)], complete: bool, diag: &mut Diagnostics) {
    // (first ordinal, count, span, description); a count of 2 is an
    // `Option` of a number, whose `none` and `some` take N and N + 1.
    let two = |what: &str, first: u32| {
        format!("{what} is an `Option` of a number, which takes two ordinals: {first} (`none`) and {} (`some`)", first + 1)
    };
    let mut taken: Vec<Option<usize>> = Vec::new();
    for (k, (first, count, span, what)) in items.iter().enumerate() {
        for o in *first..first + count {
            let o = o as usize;
            if taken.len() <= o {
                taken.resize(o + 1, None);
            }
            match taken[o] {
                Some(j) => {
                    let (other_first, other_count, _, other) = &items[j];
                    let why = if *other_count == 2 {
                        let next = items.iter().map(|i| i.0 + i.1).max().unwrap_or(0);
                        format!("; {}: give this field {next}, the next free one", two(other, *other_first))
                    } else if *count == 2 {
                        format!("; {}", two(what, *first))
                    } else {
                        String::new()
                    };
                    diag.error(*span, format!("ordinal {o} is already used by {other}{why}"));
                }
                None => taken[o] = Some(k),
            }
        }
    }
    if !complete {
        return;
    }
    if let Some(missing) = taken.iter().position(Option::is_none) {
        let used = taken.iter().filter(|t| t.is_some()).count();
        // Report at the field with the highest ordinal: that is where the
        // gap shows.
        if let Some((_, _, span, _)) = items.iter().max_by_key(|i| i.0) {
            diag.error(
                *span,
                format!(
                    "ordinals must run from 0 without gaps, but ordinal {missing} is unused: \
                     the {used} ordinals in use should be 0 to {} (to remove a field, keep its \
                     ordinal with #[capnp(retired({missing}: <type>))] on the type)",
                    used - 1
                ),
            );
        }
    }
}

fn describe(f: &FieldDef) -> String {
    match &f.member {
        Some(syn::Member::Named(i)) => format!("`{i}`"),
        Some(syn::Member::Unnamed(i)) => format!("field {}", i.index),
        None => format!("retired field {}", f.ordinal),
    }
}

fn field_items(fields: &[FieldDef]) -> Vec<(u32, u32, Span, String)> {
    fields.iter().map(|f| (f.ordinal, f.ty.ordinals(), f.span, describe(f))).collect()
}

fn check_names<'a>(names: impl Iterator<Item = (&'a str, Span)>, diag: &mut Diagnostics) {
    let mut seen: Vec<&str> = Vec::new();
    for (name, span) in names {
        if name.is_empty() || !name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            diag.error(
                span,
                format!("`{name}` is not a valid Cap'n Proto field name (it must start with a lowercase letter); set one with #[capnp(name = \"...\")]"),
            );
        } else if name.contains('_') {
            diag.error(span, format!("`{name}`: Cap'n Proto names cannot contain underscores"));
        }
        if seen.contains(&name) {
            diag.error(span, format!("two fields are named `{name}` in the schema; rename one with #[capnp(name = \"...\")]"));
        }
        seen.push(name);
    }
}

/// Parses and checks a `#[derive(Message)]` input.
pub fn parse(input: &DeriveInput, diag: &mut Diagnostics) -> Option<MessageDef> {
    let attrs = type_attrs(&input.attrs, diag);
    if !input.generics.params.is_empty() {
        diag.error_at(&input.generics, "generic message types are not supported: a message has one fixed layout");
    }
    let ident = input.ident.clone();
    let (capnp_name, name_span) = attrs.name.clone().unwrap_or_else(|| (ident.to_string(), ident.span()));
    if !capnp_name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) || capnp_name.contains('_') {
        diag.error(
            name_span,
            format!("`{capnp_name}` is not a valid Cap'n Proto type name (UpperCamelCase, no underscores); set one with #[capnp(name = \"...\")]"),
        );
    }
    let file_id = attrs.file_id.unwrap_or_else(|| {
        ids::file_id_for(&std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "taskgraph-unknown".into()))
    });
    let type_id = attrs.id.unwrap_or_else(|| ids::child_id(file_id, &capnp_name));
    let krate = attrs.krate.clone().unwrap_or_else(|| syn::parse_quote!(::taskgraph));
    let retired = retired(&attrs.retired, diag);

    let body = match &input.data {
        Data::Struct(s) => {
            let mut fields = Vec::new();
            let mut complete = true;
            let unit = matches!(s.fields, syn::Fields::Unit);
            if let syn::Fields::Unnamed(u) = &s.fields {
                diag.error_at(u, "tuple structs are not supported: name the fields (each needs an ordinal)");
            }
            if let syn::Fields::Named(named) = &s.fields {
                for f in &named.named {
                    let member = syn::Member::Named(f.ident.clone().expect("named field"));
                    match field(member, &f.attrs, &f.ty, None, diag) {
                        Some(fd) => fields.push(fd),
                        None => complete = false,
                    }
                }
            }
            let mut all = field_items(&fields);
            all.extend(field_items(&retired));
            check_ordinals(&all, complete && retired.len() == attrs.retired.len(), diag);
            check_names(fields.iter().chain(&retired).map(|f| (f.capnp_name.as_str(), f.span)), diag);
            Body::Struct(StructBody { fields, retired, unit })
        }
        Data::Enum(e) => {
            let fieldless = e.variants.iter().all(|v| matches!(v.fields, syn::Fields::Unit));
            if e.variants.is_empty() {
                diag.error_at(&input.ident, "an enum with no variants cannot be a message");
                return None;
            }
            if fieldless {
                if !retired.is_empty() {
                    diag.error(
                        retired[0].span,
                        "`retired` is for fields and union members; a removed enumerant keeps its name and number",
                    );
                }
                let mut enumerants = Vec::new();
                for v in &e.variants {
                    let a = variant_attrs(&v.attrs, diag);
                    let from_discriminant = match &v.discriminant {
                        Some((_, Expr::Lit(syn::ExprLit { lit: Lit::Int(i), .. }))) => match i.base10_parse::<u32>() {
                            Ok(n) if n <= 65534 => Some((n, i.span())),
                            _ => {
                                diag.error(i.span(), "an enumerant number is from 0 to 65534");
                                continue;
                            }
                        },
                        Some((_, other)) => {
                            diag.error_at(other, "use a literal number as the discriminant, or #[capnp(ordinal = N)]");
                            continue;
                        }
                        None => None,
                    };
                    let ordinal = match (a.ordinal, from_discriminant) {
                        (None, None) if a.broken => continue,
                        (Some((o, _)), None) | (None, Some((o, _))) => o,
                        (Some((o, s)), Some((d, _))) if o != d => {
                            diag.error(s, format!("the ordinal {o} differs from the discriminant {d}; keep one"));
                            continue;
                        }
                        (Some((o, _)), Some(_)) => o,
                        (None, None) => {
                            diag.error(
                                v.ident.span(),
                                format!(
                                    "enumerant `{}` needs a permanent number: `{} = N` or #[capnp(ordinal = N)]",
                                    v.ident, v.ident
                                ),
                            );
                            continue;
                        }
                    };
                    let capnp_name = a.name.unwrap_or_else(|| lower_first(&v.ident.to_string()));
                    enumerants.push(Enumerant { ident: v.ident.clone(), capnp_name, ordinal });
                }
                let items: Vec<_> = enumerants
                    .iter()
                    .map(|en| (en.ordinal, 1, en.ident.span(), format!("`{}`", en.ident)))
                    .collect();
                check_ordinals(&items, enumerants.len() == e.variants.len(), diag);
                check_names(enumerants.iter().map(|en| (en.capnp_name.as_str(), en.ident.span())), diag);
                Body::Enum(enumerants)
            } else {
                let mut variants = Vec::new();
                let mut items = Vec::new();
                // Whether every field of every group variant made it.
                let mut group_complete = true;
                for v in &e.variants {
                    let a = variant_attrs(&v.attrs, diag);
                    if let Some((_, d)) = &v.discriminant {
                        diag.error_at(d, "an enum with data takes its numbers from #[capnp(ordinal = N)], not discriminants");
                    }
                    let capnp_name = a.name.clone().unwrap_or_else(|| lower_first(&v.ident.to_string()));
                    let shape = match &v.fields {
                        syn::Fields::Unit => match a.ordinal {
                            Some((o, s)) => {
                                items.push((o, 1, s, format!("`{}`", v.ident)));
                                VariantShape::Unit { ordinal: o }
                            }
                            None if a.broken => continue,
                            None => {
                                diag.error(
                                    v.ident.span(),
                                    format!("variant `{}` needs an ordinal: #[capnp(ordinal = N)]", v.ident),
                                );
                                continue;
                            }
                        },
                        syn::Fields::Named(n) if n.named.is_empty() => {
                            diag.error_at(n, "write a variant without data as `V`, not `V {}`");
                            continue;
                        }
                        syn::Fields::Unnamed(u) if u.unnamed.len() == 1 => {
                            let f = &u.unnamed[0];
                            let member = syn::Member::Unnamed(syn::Index { index: 0, span: f.ty.span() });
                            let Some(mut fd) = field(member, &f.attrs, &f.ty, a.ordinal, diag) else { continue };
                            if let Ty::OptionData(_) = fd.ty {
                                diag.error_at(
                                    &f.ty,
                                    "an Option of a number cannot be a union member (Cap'n Proto has no union directly in a union); use a struct with an optional field",
                                );
                                continue;
                            }
                            fd.capnp_name = capnp_name.clone();
                            fd.span = v.ident.span();
                            items.extend(field_items(std::slice::from_ref(&fd)));
                            VariantShape::Newtype(Box::new(fd))
                        }
                        fields => {
                            if let Some((_, s)) = a.ordinal {
                                diag.error(s, "a variant with several fields is a group: give each field its own ordinal");
                            }
                            let named = matches!(fields, syn::Fields::Named(_));
                            let mut out = Vec::new();
                            for (i, f) in fields.iter().enumerate() {
                                let member = match &f.ident {
                                    Some(id) => syn::Member::Named(id.clone()),
                                    None => syn::Member::Unnamed(syn::Index { index: i as u32, span: f.ty.span() }),
                                };
                                let Some(fd) = field(member, &f.attrs, &f.ty, None, diag) else { continue };
                                if let Ty::OptionData(_) = fd.ty {
                                    diag.error_at(
                                        &f.ty,
                                        "an Option of a number cannot be a field of an enum variant (it would be a union in a union); wrap the variant's data in a message struct",
                                    );
                                    continue;
                                }
                                out.push(fd);
                            }
                            group_complete &= out.len() == fields.len();
                            items.extend(field_items(&out));
                            check_names(out.iter().map(|f| (f.capnp_name.as_str(), f.span)), diag);
                            VariantShape::Fields { named, fields: out }
                        }
                    };
                    variants.push(Variant { ident: v.ident.clone(), capnp_name, shape });
                }
                items.extend(field_items(&retired));
                let complete =
                    group_complete && variants.len() == e.variants.len() && retired.len() == attrs.retired.len();
                check_ordinals(&items, complete, diag);
                check_names(
                    variants
                        .iter()
                        .map(|v| (v.capnp_name.as_str(), v.ident.span()))
                        .chain(retired.iter().map(|f| (f.capnp_name.as_str(), f.span))),
                    diag,
                );
                if e.variants.len() + retired.len() < 2 {
                    diag.error_at(
                        &input.ident,
                        "an enum with data becomes a Cap'n Proto union, which needs at least two variants",
                    );
                }
                Body::Union(UnionBody { variants, retired })
            }
        }
        Data::Union(u) => {
            diag.error_at(u.union_token, "Rust unions cannot be messages: use an enum");
            return None;
        }
    };
    if diag.has_errors() {
        return None;
    }
    Some(MessageDef { ident, vis: input.vis.clone(), krate, capnp_name, type_id, body })
}
