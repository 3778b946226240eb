//! The message model: what `#[derive(Message)]` knows about a type after
//! parsing and checking, before any code is emitted.

use proc_macro2::Span;
use syn::{Ident, Path, Type, Visibility};

use crate::layout::{self, Member, SlotKind};

/// A message type: a struct, a fieldless enum, or an enum with data.
#[derive(Debug)]
pub struct MessageDef {
    /// The Rust type's name.
    pub ident: Ident,
    /// Its visibility (the view type gets the same).
    pub vis: Visibility,
    /// Where the `taskgraph` crate is (`::taskgraph` unless renamed).
    pub krate: Path,
    /// Its name in the schema.
    pub capnp_name: String,
    /// Its Cap'n Proto type id.
    pub type_id: u64,
    /// What it holds.
    pub body: Body,
}

/// The three kinds of message type.
#[derive(Debug)]
pub enum Body {
    /// A struct with named fields (or none).
    Struct(StructBody),
    /// A fieldless enum: a Cap'n Proto enum.
    Enum(Vec<Enumerant>),
    /// An enum with data: a struct that is one unnamed union.
    Union(UnionBody),
}

/// The fields of a struct.
#[derive(Debug)]
pub struct StructBody {
    /// The Rust fields, in declaration order.
    pub fields: Vec<FieldDef>,
    /// Ordinals kept for removed fields.
    pub retired: Vec<FieldDef>,
    /// `struct Ping;`
    pub unit: bool,
}

/// The variants of an enum with data.
#[derive(Debug)]
pub struct UnionBody {
    /// The Rust variants, in declaration order.
    pub variants: Vec<Variant>,
    /// Ordinals kept for removed variants.
    pub retired: Vec<FieldDef>,
}

/// One variant of an enum with data.
#[derive(Debug)]
pub struct Variant {
    /// The Rust variant's name.
    pub ident: Ident,
    /// Its name in the schema.
    pub capnp_name: String,
    /// What it holds.
    pub shape: VariantShape,
}

/// What a variant holds.
#[derive(Debug)]
pub enum VariantShape {
    /// Nothing: a `Void` member.
    Unit {
        /// The member's ordinal.
        ordinal: u32,
    },
    /// `V(T)`: a plain member of type `T`.
    Newtype(Box<FieldDef>),
    /// `V { a: A, b: B }` or `V(A, B)`: a group.
    Fields {
        /// Named (`{}`) or positional (`()`).
        named: bool,
        /// The fields.
        fields: Vec<FieldDef>,
    },
}

/// One enumerant of a fieldless enum.
#[derive(Debug)]
pub struct Enumerant {
    /// The Rust variant's name.
    pub ident: Ident,
    /// Its name in the schema.
    pub capnp_name: String,
    /// Its number.
    pub ordinal: u32,
}

/// One field.
#[derive(Debug)]
pub struct FieldDef {
    /// The Rust field (`None` for a retired field; the index for a tuple
    /// variant's field).
    pub member: Option<syn::Member>,
    /// Its name in the schema.
    pub capnp_name: String,
    /// Its ordinal; an `Option` of a number takes this one and the next.
    pub ordinal: u32,
    /// How it maps to Cap'n Proto.
    pub ty: Ty,
    /// The Rust type as written.
    pub rust_ty: Type,
    /// A declared default, for numbers and bools.
    pub default: Option<DefaultValue>,
    /// Where the field is, for errors.
    pub span: Span,
}

/// A primitive default value, checked against the field's type.
#[derive(Debug, Clone)]
pub enum DefaultValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer (fits the field's type).
    Int(i128),
    /// A float.
    Float(f64),
}

/// The Cap'n Proto side of a field's type.
#[derive(Debug, Clone)]
pub enum Ty {
    /// A number or bool.
    Prim(Prim),
    /// A fieldless enum (16 bits).
    Enum(Type),
    /// `String`.
    Text,
    /// `Vec<u8>`.
    Data,
    /// `Vec<T>`.
    List(Box<Ty>),
    /// A nested message (a struct or an enum with data).
    Struct(Type),
    /// `Option<T>` of a pointer type: null is `None`.
    OptionPointer(Box<Ty>),
    /// `Option<T>` of a number, bool or enum: a two-member union.
    OptionData(Box<Ty>),
}

/// The primitive types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// The variants are the Rust types of the same names: a doc each would
// only repeat it.
#[allow(missing_docs)]
pub enum Prim {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Prim {
    /// The Rust type's name.
    pub fn from_rust(name: &str) -> Option<Prim> {
        Some(match name {
            "bool" => Prim::Bool,
            "u8" => Prim::U8,
            "u16" => Prim::U16,
            "u32" => Prim::U32,
            "u64" => Prim::U64,
            "i8" => Prim::I8,
            "i16" => Prim::I16,
            "i32" => Prim::I32,
            "i64" => Prim::I64,
            "f32" => Prim::F32,
            "f64" => Prim::F64,
            _ => return None,
        })
    }

    /// The Rust type's name.
    pub fn rust(self) -> &'static str {
        match self {
            Prim::Bool => "bool",
            Prim::U8 => "u8",
            Prim::U16 => "u16",
            Prim::U32 => "u32",
            Prim::U64 => "u64",
            Prim::I8 => "i8",
            Prim::I16 => "i16",
            Prim::I32 => "i32",
            Prim::I64 => "i64",
            Prim::F32 => "f32",
            Prim::F64 => "f64",
        }
    }

    /// The Cap'n Proto type's name.
    pub fn capnp(self) -> &'static str {
        match self {
            Prim::Bool => "Bool",
            Prim::U8 => "UInt8",
            Prim::U16 => "UInt16",
            Prim::U32 => "UInt32",
            Prim::U64 => "UInt64",
            Prim::I8 => "Int8",
            Prim::I16 => "Int16",
            Prim::I32 => "Int32",
            Prim::I64 => "Int64",
            Prim::F32 => "Float32",
            Prim::F64 => "Float64",
        }
    }

    /// log2 of its size in bits.
    pub fn lg_bits(self) -> u8 {
        match self {
            Prim::Bool => 0,
            Prim::U8 | Prim::I8 => 3,
            Prim::U16 | Prim::I16 => 4,
            Prim::U32 | Prim::I32 | Prim::F32 => 5,
            Prim::U64 | Prim::I64 | Prim::F64 => 6,
        }
    }

    /// The range of an integer type.
    pub fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            Prim::U8 => (0, u8::MAX.into()),
            Prim::U16 => (0, u16::MAX.into()),
            Prim::U32 => (0, u32::MAX.into()),
            Prim::U64 => (0, u64::MAX.into()),
            Prim::I8 => (i8::MIN.into(), i8::MAX.into()),
            Prim::I16 => (i16::MIN.into(), i16::MAX.into()),
            Prim::I32 => (i32::MIN.into(), i32::MAX.into()),
            Prim::I64 => (i64::MIN.into(), i64::MAX.into()),
            _ => return None,
        })
    }
}

impl Ty {
    /// What a field of this type occupies (for `OptionData`, the `some`
    /// member).
    pub fn slot(&self) -> SlotKind {
        match self {
            Ty::Prim(p) => SlotKind::Data(p.lg_bits()),
            Ty::Enum(_) => SlotKind::Data(4),
            Ty::OptionData(inner) => inner.slot(),
            _ => SlotKind::Pointer,
        }
    }

    /// How many ordinals a field of this type takes.
    pub fn ordinals(&self) -> u32 {
        match self {
            Ty::OptionData(_) => 2,
            _ => 1,
        }
    }
}

impl FieldDef {
    /// The layout member for this field.
    pub fn layout_member(&self) -> Member {
        match &self.ty {
            Ty::OptionData(inner) => Member::Union(layout::Union {
                members: vec![
                    Member::Field(layout::Field { ordinal: self.ordinal, kind: SlotKind::Void }),
                    Member::Field(layout::Field { ordinal: self.ordinal + 1, kind: inner.slot() }),
                ],
            }),
            ty => Member::Field(layout::Field { ordinal: self.ordinal, kind: ty.slot() }),
        }
    }
}

impl MessageDef {
    /// The shape the layout engine lays out (`None` for a fieldless enum).
    pub fn layout_shape(&self) -> Option<layout::StructShape> {
        match &self.body {
            Body::Enum(_) => None,
            Body::Struct(s) => Some(layout::StructShape {
                members: s.fields.iter().chain(&s.retired).map(FieldDef::layout_member).collect(),
            }),
            Body::Union(u) => {
                let mut members: Vec<Member> = u
                    .variants
                    .iter()
                    .map(|v| match &v.shape {
                        VariantShape::Unit { ordinal } => {
                            Member::Field(layout::Field { ordinal: *ordinal, kind: SlotKind::Void })
                        }
                        VariantShape::Newtype(f) => f.layout_member(),
                        VariantShape::Fields { fields, .. } => {
                            Member::Group(fields.iter().map(FieldDef::layout_member).collect())
                        }
                    })
                    .collect();
                members.extend(u.retired.iter().map(FieldDef::layout_member));
                Some(layout::StructShape { members: vec![Member::Union(layout::Union { members })] })
            }
        }
    }
}
