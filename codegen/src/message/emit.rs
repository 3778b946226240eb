//! From the checked model and its layout to Rust code.
//!
//! Generated code reaches the runtime only through
//! `<krate>::__private::capnp` and wraps its trait impls in
//! `const _: () = { ... };`. The view type is the one item it adds to the
//! user's module: `<Name>View<'a>`.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::model::*;
use crate::layout::{Layout, UnionLayout};

/// Where one field lives.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// A data field at this offset.
    Data(u32),
    /// A pointer at this index.
    Pointer(u32),
    /// An `Option` of a number: discriminant offset, codes, value offset.
    OptionData { which: u32, none: u16, some: u16, offset: u32 },
}

/// Walks the layout's pre-order lists alongside the model.
struct Cursor<'a> {
    layout: &'a Layout,
    field: usize,
    union: usize,
}

impl<'a> Cursor<'a> {
    fn new(layout: &'a Layout) -> Self {
        Cursor { layout, field: 0, union: 0 }
    }
    fn next_field(&mut self) -> u32 {
        let off = self.layout.fields[self.field];
        self.field += 1;
        off
    }
    fn next_union(&mut self) -> &'a UnionLayout {
        let u = &self.layout.unions[self.union];
        self.union += 1;
        u
    }
    /// The place of `f`, consuming its entries.
    fn place(&mut self, f: &FieldDef) -> Place {
        match &f.ty {
            Ty::OptionData(_) => {
                let u = self.next_union();
                let _void = self.next_field();
                let offset = self.next_field();
                Place::OptionData {
                    which: u.discriminant_offset,
                    none: u.member_codes[0],
                    some: u.member_codes[1],
                    offset,
                }
            }
            Ty::Prim(_) | Ty::Enum(_) => Place::Data(self.next_field()),
            _ => Place::Pointer(self.next_field()),
        }
    }
}

struct Ctx<'a> {
    w: TokenStream,
    krate: &'a syn::Path,
    name: &'a str,
}

fn lit_u32(v: u32) -> Literal {
    Literal::usize_unsuffixed(v as usize)
}

/// The Rust literal of a data field's default (zero when none).
fn default_tokens(p: Prim, d: Option<&DefaultValue>) -> TokenStream {
    let neg = |v: i128| v < 0;
    match (p, d) {
        (Prim::Bool, Some(DefaultValue::Bool(b))) => quote!(#b),
        (Prim::Bool, _) => quote!(false),
        (Prim::F32, Some(DefaultValue::Float(v))) => float32(*v),
        (Prim::F32, Some(DefaultValue::Int(v))) => float32(*v as f64),
        (Prim::F64, Some(DefaultValue::Float(v))) => float64(*v),
        (Prim::F64, Some(DefaultValue::Int(v))) => float64(*v as f64),
        (Prim::F32, _) => quote!(0.0f32),
        (Prim::F64, _) => quote!(0.0f64),
        (p, Some(DefaultValue::Int(v))) => {
            let ty = format_ident!("{}", p.rust());
            let abs = Literal::u128_unsuffixed(v.unsigned_abs());
            if neg(*v) {
                quote!((-(#abs as i128) as #ty))
            } else {
                quote!((#abs as #ty))
            }
        }
        (p, _) => {
            let ty = format_ident!("{}", p.rust());
            quote!((0 as #ty))
        }
    }
}

fn float32(v: f64) -> TokenStream {
    let l = Literal::f32_suffixed((v as f32).abs());
    if v < 0.0 {
        quote!((-#l))
    } else {
        quote!(#l)
    }
}

fn float64(v: f64) -> TokenStream {
    let l = Literal::f64_suffixed(v.abs());
    if v < 0.0 {
        quote!((-#l))
    } else {
        quote!(#l)
    }
}

fn field_label(f: &FieldDef) -> String {
    match &f.member {
        Some(syn::Member::Named(i)) => i.to_string(),
        Some(syn::Member::Unnamed(i)) => i.index.to_string(),
        None => f.capnp_name.clone(),
    }
}

/// Reads a value of `f` at `place` from `r` (a `StructReader`).
fn read_expr(cx: &Ctx<'_>, f: &FieldDef, place: Place) -> TokenStream {
    let w = &cx.w;
    let (name, label) = (cx.name, field_label(f));
    let ty = &f.rust_ty;
    let sp = ty.span();
    let ctx = quote!(|e| #w::in_field(e, #name, #label));
    match (&f.ty, place) {
        (Ty::Prim(p), Place::Data(off)) => {
            let d = default_tokens(*p, f.default.as_ref());
            let off = lit_u32(off);
            quote_spanned!(sp=> #w::get::<#ty>(&r, #off, #d))
        }
        (Ty::Enum(_), Place::Data(off)) => {
            let off = lit_u32(off);
            quote_spanned!(sp=> #w::enum_from::<#ty>(<#ty as #w::Enum>::from_u16(#w::get_raw_enum(&r, #off)), #w::get_raw_enum(&r, #off)).map_err(#ctx)?)
        }
        (Ty::OptionData(inner), Place::OptionData { which, none, some, offset }) => {
            let which = lit_u32(which);
            let offset = lit_u32(offset);
            let value = match &**inner {
                Ty::Prim(p) => {
                    let d = default_tokens(*p, None);
                    let pt = format_ident!("{}", p.rust());
                    quote!(#w::get::<#pt>(&r, #offset, #d))
                }
                Ty::Enum(et) => quote_spanned!(sp=> #w::enum_from::<#et>(<#et as #w::Enum>::from_u16(#w::get_raw_enum(&r, #offset)), #w::get_raw_enum(&r, #offset)).map_err(#ctx)?),
                _ => unreachable!("OptionData holds a number or an enum"),
            };
            quote! {
                match #w::get_which(&r, #which) {
                    #none => ::core::option::Option::None,
                    #some => ::core::option::Option::Some(#value),
                    other => return ::core::result::Result::Err((#ctx)(#w::unknown_which(#name, other))),
                }
            }
        }
        (_, Place::Pointer(idx)) => {
            let idx = lit_u32(idx);
            quote_spanned!(sp=> <#ty as #w::PointerField>::read(#w::ptr(&r, #idx)).map_err(#ctx)?)
        }
        _ => unreachable!("place matches type"),
    }
}

/// Writes `val` (an expression of type `&T`) for `f` at `place` into `b`.
fn write_stmt(cx: &Ctx<'_>, f: &FieldDef, place: Place, val: &TokenStream) -> TokenStream {
    let w = &cx.w;
    let (name, label) = (cx.name, field_label(f));
    let ty = &f.rust_ty;
    let sp = ty.span();
    match (&f.ty, place) {
        (Ty::Prim(p), Place::Data(off)) => {
            let d = default_tokens(*p, f.default.as_ref());
            let off = lit_u32(off);
            quote_spanned!(sp=> #w::set::<#ty>(&b, #off, *#val, #d);)
        }
        (Ty::Enum(_), Place::Data(off)) => {
            let off = lit_u32(off);
            quote_spanned!(sp=> #w::set_raw_enum(&b, #off, <#ty as #w::Enum>::to_u16(#val));)
        }
        (Ty::OptionData(inner), Place::OptionData { which, none, some, offset }) => {
            let which = lit_u32(which);
            let offset = lit_u32(offset);
            let set = match &**inner {
                Ty::Prim(p) => {
                    let d = default_tokens(*p, None);
                    let pt = format_ident!("{}", p.rust());
                    quote!(#w::set::<#pt>(&b, #offset, *v, #d);)
                }
                Ty::Enum(et) => quote_spanned!(sp=> #w::set_raw_enum(&b, #offset, <#et as #w::Enum>::to_u16(v));),
                _ => unreachable!("OptionData holds a number or an enum"),
            };
            quote! {
                match #val {
                    ::core::option::Option::None => #w::set_which(&b, #which, #none),
                    ::core::option::Option::Some(v) => {
                        #w::set_which(&b, #which, #some);
                        #set
                    }
                }
            }
        }
        (_, Place::Pointer(idx)) => {
            let idx = lit_u32(idx);
            quote_spanned!(sp=> <#ty as #w::PointerField>::write(#val, #w::ptr_mut(&mut b, #idx)).map_err(|e| #w::in_field(e, #name, #label))?;)
        }
        _ => unreachable!("place matches type"),
    }
}

/// Words behind the pointer of `f`, if it is a pointer.
fn words_expr(cx: &Ctx<'_>, f: &FieldDef, place: Place, val: &TokenStream) -> Option<TokenStream> {
    let w = &cx.w;
    let ty = &f.rust_ty;
    match place {
        Place::Pointer(_) => Some(quote_spanned!(ty.span()=> <#ty as #w::PointerField>::words(#val))),
        _ => None,
    }
}

/// The view accessor of a struct field.
fn view_accessor(cx: &Ctx<'_>, f: &FieldDef, place: Place) -> Option<TokenStream> {
    let w = &cx.w;
    let krate = cx.krate;
    let Some(syn::Member::Named(ident)) = &f.member else { return None };
    let (name, label) = (cx.name, field_label(f));
    let ty = &f.rust_ty;
    let sp = ty.span();
    let err = quote!(|e| #w::view_error(#name, #label, e));
    let doc = format!("Field `{label}` (`@{}` on the wire).", f.ordinal);
    Some(match (&f.ty, place) {
        (Ty::Prim(p), Place::Data(off)) => {
            let d = default_tokens(*p, f.default.as_ref());
            let off = lit_u32(off);
            quote_spanned! {sp=>
                #[doc = #doc]
                pub fn #ident(&self) -> #ty { #w::get::<#ty>(&self.r, #off, #d) }
            }
        }
        (Ty::Enum(_), Place::Data(off)) => {
            let off = lit_u32(off);
            quote_spanned! {sp=>
                #[doc = #doc]
                pub fn #ident(&self) -> ::core::result::Result<#ty, #krate::Error> {
                    let raw = #w::get_raw_enum(&self.r, #off);
                    #w::enum_from::<#ty>(<#ty as #w::Enum>::from_u16(raw), raw).map_err(#err)
                }
            }
        }
        (Ty::OptionData(_), Place::OptionData { .. }) => {
            let read = read_expr(cx, f, place);
            quote_spanned! {sp=>
                #[doc = #doc]
                pub fn #ident(&self) -> ::core::result::Result<#ty, #krate::Error> {
                    let r = self.r;
                    let read = || -> #w::Result<#ty> { ::core::result::Result::Ok(#read) };
                    read().map_err(#err)
                }
            }
        }
        (_, Place::Pointer(idx)) => {
            let idx = lit_u32(idx);
            quote_spanned! {sp=>
                #[doc = #doc]
                pub fn #ident(&self) -> ::core::result::Result<<#ty as #w::PointerField>::View<'a>, #krate::Error> {
                    <#ty as #w::PointerField>::view(#w::ptr(&self.r, #idx)).map_err(#err)
                }
            }
        }
        _ => unreachable!("place matches type"),
    })
}

/// The `.capnp` text of a type, in pieces: literal text and references to
/// other message types (whose names are only known through their impls).
#[derive(Default)]
struct Text {
    pieces: Vec<Piece>,
}

enum Piece {
    Lit(String),
    Name(syn::Type),
}

impl Text {
    fn push(&mut self, s: &str) {
        match self.pieces.last_mut() {
            Some(Piece::Lit(l)) => l.push_str(s),
            _ => self.pieces.push(Piece::Lit(s.to_owned())),
        }
    }
    fn push_type(&mut self, ty: &Ty) {
        match ty {
            Ty::Prim(p) => self.push(p.capnp()),
            Ty::Text => self.push("Text"),
            Ty::Data => self.push("Data"),
            Ty::List(inner) => {
                self.push("List(");
                self.push_type(inner);
                self.push(")");
            }
            Ty::Enum(t) | Ty::Struct(t) => self.pieces.push(Piece::Name(t.clone())),
            Ty::OptionPointer(inner) | Ty::OptionData(inner) => self.push_type(inner),
        }
    }
    /// The user types this text names, in order.
    fn names(&self) -> impl Iterator<Item = &syn::Type> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Name(t) => Some(t),
            Piece::Lit(_) => None,
        })
    }
    fn field(&mut self, indent: &str, f: &FieldDef) {
        match &f.ty {
            Ty::OptionData(inner) => {
                self.push(&format!(
                    "{indent}{} :union {{\n{indent}  none @{} :Void;\n{indent}  some @{} :",
                    f.capnp_name,
                    f.ordinal,
                    f.ordinal + 1
                ));
                self.push_type(inner);
                self.push(&format!(";\n{indent}}}\n"));
            }
            ty => {
                self.push(&format!("{indent}{} @{} :", f.capnp_name, f.ordinal));
                self.push_type(ty);
                if let Some(d) = &f.default {
                    let text = match d {
                        DefaultValue::Bool(b) => b.to_string(),
                        DefaultValue::Int(i) => i.to_string(),
                        DefaultValue::Float(v) => format!("{v:?}"),
                    };
                    self.push(&format!(" = {text}"));
                }
                self.push(";\n");
            }
        }
    }
    fn tokens(&self, w: &TokenStream) -> TokenStream {
        let pushes = self.pieces.iter().map(|p| match p {
            Piece::Lit(s) => quote!(t.push_str(#s);),
            Piece::Name(ty) => quote!(t.push_str(<#ty as #w::Named>::NAME);),
        });
        quote! {
            let mut t = ::std::string::String::new();
            #(#pushes)*
        }
    }
}

/// The whole `.capnp` declaration of `def` (for tests and tools).
pub fn schema_text(def: &MessageDef) -> String {
    declaration(def)
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Lit(s) => s.clone(),
            Piece::Name(t) => quote!(#t).to_string(),
        })
        .collect()
}

fn declaration(def: &MessageDef) -> Text {
    let mut t = Text::default();
    match &def.body {
        Body::Enum(enumerants) => {
            t.push(&format!("enum {} @0x{:016x} {{\n", def.capnp_name, def.type_id));
            let mut sorted: Vec<_> = enumerants.iter().collect();
            sorted.sort_by_key(|e| e.ordinal);
            for e in sorted {
                t.push(&format!("  {} @{};\n", e.capnp_name, e.ordinal));
            }
        }
        Body::Struct(s) => {
            t.push(&format!("struct {} @0x{:016x} {{\n", def.capnp_name, def.type_id));
            for f in s.fields.iter().chain(&s.retired) {
                t.field("  ", f);
            }
        }
        Body::Union(u) => {
            t.push(&format!("struct {} @0x{:016x} {{\n  union {{\n", def.capnp_name, def.type_id));
            for v in &u.variants {
                match &v.shape {
                    VariantShape::Unit { ordinal } => t.push(&format!("    {} @{ordinal} :Void;\n", v.capnp_name)),
                    VariantShape::Newtype(f) => t.field("    ", f),
                    VariantShape::Fields { fields, .. } => {
                        t.push(&format!("    {} :group {{\n", v.capnp_name));
                        for f in fields {
                            t.field("      ", f);
                        }
                        t.push("    }\n");
                    }
                }
            }
            for f in &u.retired {
                t.field("    ", f);
            }
            t.push("  }\n");
        }
    }
    t.push("}\n");
    t
}

fn named_impl(cx: &Ctx<'_>, def: &MessageDef) -> TokenStream {
    let w = &cx.w;
    let ident = &def.ident;
    let name = &def.capnp_name;
    let id = Literal::u64_suffixed(def.type_id);
    let text = declaration(def);
    let build = text.tokens(w);
    let mut seen = Vec::new();
    let deps = text.names().filter(|t| {
        let s = quote!(#t).to_string();
        !seen.contains(&s) && {
            seen.push(s);
            true
        }
    });
    let deps: Vec<_> = deps.collect();
    quote! {
        impl #w::Named for #ident {
            const NAME: &'static str = #name;
            const TYPE_ID: u64 = #id;
            fn declare(schema: &mut #w::Schema) {
                if !schema.enter(#id, #name, ::core::any::type_name::<Self>()) {
                    return;
                }
                #build
                schema.push(t);
                #(<#deps as #w::Named>::declare(schema);)*
            }
        }
    }
}

/// Emits everything for a checked message type.
pub fn emit(def: &MessageDef, layout: Option<&Layout>) -> TokenStream {
    let krate = &def.krate;
    let cx = Ctx { w: quote!(#krate::__private::capnp), krate, name: &def.capnp_name };
    let w = &cx.w;
    let ident = &def.ident;
    let named = named_impl(&cx, def);
    let body = match (&def.body, layout) {
        (Body::Enum(enumerants), _) => {
            let to = enumerants.iter().map(|e| {
                let (v, n) = (&e.ident, e.ordinal as u16);
                quote!(#ident::#v => #n)
            });
            let from = enumerants.iter().map(|e| {
                let (v, n) = (&e.ident, e.ordinal as u16);
                quote!(#n => ::core::option::Option::Some(#ident::#v))
            });
            let names = enumerants.iter().map(|e| {
                let (v, n) = (&e.ident, &e.capnp_name);
                quote!(#ident::#v => #n)
            });
            quote! {
                impl #krate::message::Enum for #ident {
                    fn to_u16(&self) -> u16 {
                        match self { #(#to,)* }
                    }
                    fn capnp_name(&self) -> &'static str {
                        match self { #(#names,)* }
                    }
                    fn from_u16(value: u16) -> ::core::option::Option<Self> {
                        match value { #(#from,)* _ => ::core::option::Option::None }
                    }
                }
                impl #w::Element for #ident {
                    type ListView<'a> = #krate::view::EnumList<'a, #ident>;
                    fn read_list(p: #w::PointerReader<'_>) -> #w::Result<::std::vec::Vec<Self>> {
                        #w::read_enum_list(p)
                    }
                    fn view_list(p: #w::PointerReader<'_>) -> #w::Result<Self::ListView<'_>> {
                        #w::view_enum_list(p)
                    }
                    fn write_list(items: &[Self], p: #w::PointerBuilder<'_>) -> #w::Result<()> {
                        #w::write_enum_list(items, p)
                    }
                    fn list_words(items: &[Self]) -> usize {
                        #w::enum_list_words(items)
                    }
                }
            }
        }
        (Body::Struct(s), Some(layout)) => struct_impls(&cx, def, s, layout),
        (Body::Union(u), Some(layout)) => union_impls(&cx, def, u, layout),
        (_, None) => unreachable!("structs have a layout"),
    };
    let view = view_type(&cx, def, layout);
    quote! {
        const _: () = {
            #named
            #body
        };
        #view
    }
}

fn size_tokens(w: &TokenStream, layout: &Layout) -> TokenStream {
    let (d, p) = (layout.data_words, layout.pointers);
    quote!(#w::StructSize { data: #d, pointers: #p })
}

fn common_struct_impls(cx: &Ctx<'_>, def: &MessageDef) -> TokenStream {
    let w = &cx.w;
    let krate = cx.krate;
    let ident = &def.ident;
    let view = format_ident!("{}View", ident);
    quote! {
        impl #krate::message::Message for #ident {}
        impl #w::PointerField for #ident {
            type View<'a> = #view<'a>;
            fn read(p: #w::PointerReader<'_>) -> #w::Result<Self> { #w::read_struct(p) }
            fn view(p: #w::PointerReader<'_>) -> #w::Result<#view<'_>> { #w::view_struct::<Self>(p) }
            fn write(&self, p: #w::PointerBuilder<'_>) -> #w::Result<()> { #w::write_struct(self, p) }
            fn words(&self) -> usize { #w::struct_words(self) }
        }
        impl #w::Element for #ident {
            type ListView<'a> = #krate::view::StructList<'a, #ident>;
            fn read_list(p: #w::PointerReader<'_>) -> #w::Result<::std::vec::Vec<Self>> { #w::read_struct_list(p) }
            fn view_list(p: #w::PointerReader<'_>) -> #w::Result<Self::ListView<'_>> { #w::view_struct_list(p) }
            fn write_list(items: &[Self], p: #w::PointerBuilder<'_>) -> #w::Result<()> { #w::write_struct_list(items, p) }
            fn list_words(items: &[Self]) -> usize { #w::struct_list_words(items) }
        }
    }
}

fn struct_impls(cx: &Ctx<'_>, def: &MessageDef, s: &StructBody, layout: &Layout) -> TokenStream {
    let w = &cx.w;
    let ident = &def.ident;
    let view = format_ident!("{}View", ident);
    let size = size_tokens(w, layout);
    let own_words = layout.data_words as usize + layout.pointers as usize;
    let mut cursor = Cursor::new(layout);
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut words = Vec::new();
    for f in &s.fields {
        let place = cursor.place(f);
        let member = f.member.as_ref().expect("struct fields have names");
        let val = quote!((&self.#member));
        let read = read_expr(cx, f, place);
        reads.push(quote!(#member: #read));
        writes.push(write_stmt(cx, f, place, &val));
        words.extend(words_expr(cx, f, place, &val));
    }
    let construct = if s.unit { quote!(#ident) } else { quote!(#ident { #(#reads,)* }) };
    let common = common_struct_impls(cx, def);
    quote! {
        impl #w::Struct for #ident {
            const SIZE: #w::StructSize = #size;
            type View<'a> = #view<'a>;
            // `b` is not mutated without a pointer field, and not used at all
            // without fields.
            #[allow(unused_mut, unused_variables)]
            fn write(&self, mut b: #w::StructBuilder<'_>) -> #w::Result<()> {
                #(#writes)*
                ::core::result::Result::Ok(())
            }
            // `r` is not used by a struct without fields.
            #[allow(unused_variables)]
            fn read(r: #w::StructReader<'_>) -> #w::Result<Self> {
                ::core::result::Result::Ok(#construct)
            }
            fn words(&self) -> usize {
                #own_words #(+ #words)*
            }
        }
        #common
    }
}

fn union_impls(cx: &Ctx<'_>, def: &MessageDef, u: &UnionBody, layout: &Layout) -> TokenStream {
    let w = &cx.w;
    let ident = &def.ident;
    let name = cx.name;
    let view = format_ident!("{}View", ident);
    let size = size_tokens(w, layout);
    let own_words = layout.data_words as usize + layout.pointers as usize;
    let mut cursor = Cursor::new(layout);
    let the_union = cursor.next_union();
    let which = lit_u32(the_union.discriminant_offset);
    let mut read_arms = Vec::new();
    let mut write_arms = Vec::new();
    let mut words_arms = Vec::new();
    for (k, v) in u.variants.iter().enumerate() {
        let code = the_union.member_codes[k];
        let vi = &v.ident;
        match &v.shape {
            VariantShape::Unit { .. } => {
                let _void = cursor.next_field();
                read_arms.push(quote!(#code => #ident::#vi));
                write_arms.push(quote!(#ident::#vi => { #w::set_which(&b, #which, #code); }));
                words_arms.push(quote!(#ident::#vi => 0));
            }
            VariantShape::Newtype(f) => {
                let place = cursor.place(f);
                let read = read_expr(cx, f, place);
                let val = quote!(v0);
                let write = write_stmt(cx, f, place, &val);
                let words = words_expr(cx, f, place, &val).unwrap_or_else(|| quote!(0));
                read_arms.push(quote!(#code => #ident::#vi(#read)));
                write_arms.push(quote!(#ident::#vi(v0) => { #w::set_which(&b, #which, #code); #write }));
                words_arms.push(quote!(#ident::#vi(v0) => #words));
            }
            VariantShape::Fields { named, fields } => {
                let places: Vec<Place> = fields.iter().map(|f| cursor.place(f)).collect();
                let binds: Vec<_> = (0..fields.len()).map(|i| format_ident!("v{i}")).collect();
                let members: Vec<_> = fields.iter().map(|f| f.member.clone().expect("variant fields")).collect();
                let reads = fields.iter().zip(&places).map(|(f, p)| read_expr(cx, f, *p));
                let writes = fields.iter().zip(&places).zip(&binds).map(|((f, p), b)| write_stmt(cx, f, *p, &quote!(#b)));
                let words: Vec<_> = fields
                    .iter()
                    .zip(&places)
                    .zip(&binds)
                    .filter_map(|((f, p), b)| words_expr(cx, f, *p, &quote!(#b)))
                    .collect();
                let pattern = if *named {
                    quote!(#ident::#vi { #(#members: #binds),* })
                } else {
                    quote!(#ident::#vi(#(#binds),*))
                };
                let construct = if *named {
                    quote!(#ident::#vi { #(#members: #reads),* })
                } else {
                    quote!(#ident::#vi(#(#reads),*))
                };
                read_arms.push(quote!(#code => #construct));
                // The `words` arm uses only the bindings of pointer fields;
                // the `write` arm uses them all and has the allow only to
                // match it (the two share the pattern).
                write_arms.push(quote!(#[allow(unused_variables)] #pattern => { #w::set_which(&b, #which, #code); #(#writes)* }));
                words_arms.push(quote!(#[allow(unused_variables)] #pattern => 0 #(+ #words)*));
            }
        }
    }
    let common = common_struct_impls(cx, def);
    quote! {
        impl #w::Struct for #ident {
            const SIZE: #w::StructSize = #size;
            type View<'a> = #view<'a>;
            // `b` is mutated only by a variant with a pointer field.
            #[allow(unused_mut)]
            fn write(&self, mut b: #w::StructBuilder<'_>) -> #w::Result<()> {
                match self { #(#write_arms)* }
                ::core::result::Result::Ok(())
            }
            fn read(r: #w::StructReader<'_>) -> #w::Result<Self> {
                ::core::result::Result::Ok(match #w::get_which(&r, #which) {
                    #(#read_arms,)*
                    other => return ::core::result::Result::Err(#w::unknown_which(#name, other)),
                })
            }
            fn words(&self) -> usize {
                #own_words + match self { #(#words_arms,)* }
            }
        }
        #common
    }
}

fn view_type(cx: &Ctx<'_>, def: &MessageDef, layout: Option<&Layout>) -> TokenStream {
    let (Some(layout), Body::Struct(_) | Body::Union(_)) = (layout, &def.body) else {
        return TokenStream::new();
    };
    let w = &cx.w;
    let krate = cx.krate;
    let ident = &def.ident;
    let vis = &def.vis;
    let view = format_ident!("{}View", ident);
    let name = cx.name;
    let doc = format!(
        "A borrowed view of a [`{ident}`] in a received message: fields are read from the \
         message's bytes when asked for. Generated by `#[derive(Message)]`."
    );
    let mut accessors = Vec::new();
    let mut debug_fields = Vec::new();
    if let Body::Struct(s) = &def.body {
        let mut cursor = Cursor::new(layout);
        for f in &s.fields {
            let place = cursor.place(f);
            if let Some(a) = view_accessor(cx, f, place) {
                accessors.push(a);
                let member = f.member.as_ref().expect("named");
                let label = field_label(f);
                let ty = &f.rust_ty;
                debug_fields.push(match (&f.ty, place) {
                    (Ty::Enum(_) | Ty::OptionData(_), _) => quote!(.field(#label, &#w::DebugEnum(self.#member()))),
                    (_, Place::Pointer(idx)) => {
                        // Through the trait, not the accessor: a field type
                        // that is not a message is then reported once.
                        let idx = lit_u32(idx);
                        quote_spanned!(ty.span()=> .field(#label, &<#ty as #w::PointerField>::view(#w::ptr(&self.r, #idx))))
                    }
                    _ => quote!(.field(#label, &self.#member())),
                });
            }
        }
    }
    quote! {
        #[doc = #doc]
        #[derive(Clone, Copy)]
        #vis struct #view<'a> {
            r: #w::StructReader<'a>,
        }

        impl<'a> ::core::convert::From<#w::StructReader<'a>> for #view<'a> {
            fn from(r: #w::StructReader<'a>) -> Self {
                #view { r }
            }
        }

        // The user's code need not call every accessor.
        #[allow(dead_code)]
        impl<'a> #view<'a> {
            #(#accessors)*

            /// An owned copy of the whole message.
            pub fn decode(&self) -> ::core::result::Result<#ident, #krate::Error> {
                <#ident as #w::Struct>::read(self.r).map_err(|e| #w::view_error(#name, "", e))
            }
        }

        impl ::core::fmt::Debug for #view<'_> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#view)) #(#debug_fields)* .finish()
            }
        }
    }
}

/// What a failed derive emits besides its errors: the impls a successful
/// one would have made, with bodies that never run (the crate does not
/// compile), so that the type's uses elsewhere (as a field, in a graph's
/// `messages`, `encode()`) raise no error of their own. Nothing for a
/// generic type, whose impls could not be written without its bounds.
pub fn dummy(input: &syn::DeriveInput, krate: &syn::Path) -> TokenStream {
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        return TokenStream::new();
    }
    let w = quote!(#krate::__private::capnp);
    let ident = &input.ident;
    let name = ident.to_string();
    let never = quote!(::core::unreachable!("a failed #[derive(Message)] does not compile"));
    let named = quote! {
        impl #w::Named for #ident {
            const NAME: &'static str = #name;
            const TYPE_ID: u64 = 0x8000_0000_0000_0000;
            fn declare(_: &mut #w::Schema) {}
        }
    };
    let fieldless_enum = match &input.data {
        syn::Data::Enum(e) => !e.variants.is_empty() && e.variants.iter().all(|v| matches!(v.fields, syn::Fields::Unit)),
        _ => false,
    };
    if fieldless_enum {
        return quote! {
            const _: () = {
                #named
                impl #krate::message::Enum for #ident {
                    fn to_u16(&self) -> u16 { #never }
                    fn capnp_name(&self) -> &'static str { #never }
                    fn from_u16(_: u16) -> ::core::option::Option<Self> { #never }
                }
                impl #w::Element for #ident {
                    type ListView<'a> = #krate::view::EnumList<'a, #ident>;
                    fn read_list(_: #w::PointerReader<'_>) -> #w::Result<::std::vec::Vec<Self>> { #never }
                    fn view_list(_: #w::PointerReader<'_>) -> #w::Result<Self::ListView<'_>> { #never }
                    fn write_list(_: &[Self], _: #w::PointerBuilder<'_>) -> #w::Result<()> { #never }
                    fn list_words(_: &[Self]) -> usize { #never }
                }
            };
        };
    }
    let vis = &input.vis;
    let view = format_ident!("{}View", ident);
    quote! {
        const _: () = {
            #named
            impl #w::Struct for #ident {
                const SIZE: #w::StructSize = #w::StructSize { data: 0, pointers: 0 };
                type View<'a> = #view<'a>;
                fn write(&self, _: #w::StructBuilder<'_>) -> #w::Result<()> { #never }
                fn read(_: #w::StructReader<'_>) -> #w::Result<Self> { #never }
                fn words(&self) -> usize { #never }
            }
            impl #krate::message::Message for #ident {}
            impl #w::PointerField for #ident {
                type View<'a> = #view<'a>;
                fn read(_: #w::PointerReader<'_>) -> #w::Result<Self> { #never }
                fn view(_: #w::PointerReader<'_>) -> #w::Result<#view<'_>> { #never }
                fn write(&self, _: #w::PointerBuilder<'_>) -> #w::Result<()> { #never }
                fn words(&self) -> usize { #never }
            }
            impl #w::Element for #ident {
                type ListView<'a> = #krate::view::StructList<'a, #ident>;
                fn read_list(_: #w::PointerReader<'_>) -> #w::Result<::std::vec::Vec<Self>> { #never }
                fn view_list(_: #w::PointerReader<'_>) -> #w::Result<Self::ListView<'_>> { #never }
                fn write_list(_: &[Self], _: #w::PointerBuilder<'_>) -> #w::Result<()> { #never }
                fn list_words(_: &[Self]) -> usize { #never }
            }
        };
        #[doc(hidden)]
        #[derive(Clone, Copy)]
        #[allow(non_camel_case_types)]
        #vis struct #view<'a> {
            _r: #w::StructReader<'a>,
        }
        impl<'a> ::core::convert::From<#w::StructReader<'a>> for #view<'a> {
            fn from(r: #w::StructReader<'a>) -> Self {
                #view { _r: r }
            }
        }
        #[allow(dead_code)]
        impl #view<'_> {
            pub fn decode(&self) -> ::core::result::Result<#ident, #krate::Error> { #never }
        }
        impl ::core::fmt::Debug for #view<'_> {
            fn fmt(&self, _: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result { #never }
        }
    }
}
