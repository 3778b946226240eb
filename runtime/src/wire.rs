//! The glue between `#[derive(Message)]` output and the `capnp` crate.
//!
//! This is the only module of taskgraph that names `capnp::private` (which
//! is semver-unstable; `capnp` is pinned to an exact version). Generated
//! code reaches it as `::taskgraph::__private::capnp` and uses only the
//! items here, so a `capnp` upgrade touches this file, not macro output.
//!
//! The traits split the Rust types a message may hold by where they live
//! on the wire:
//! * [`DataField`]: a value in the data section (bool, numbers);
//! * [`Enum`](crate::message::Enum): a 16-bit enumerant in the data section;
//! * [`PointerField`]: behind a pointer (text, lists, nested structs);
//! * [`Element`]: what a `Vec<T>` holds.

#![allow(missing_debug_implementations)]

use std::collections::HashSet;
use std::marker::PhantomData;

use capnp::private::layout::ElementSize;
pub use capnp::private::layout::PrimitiveElement;
use capnp::traits::{FromPointerBuilder, FromPointerReader};

pub use capnp::private::layout::{PointerBuilder, PointerReader, StructBuilder, StructReader, StructSize};
pub use capnp::Error;
pub use crate::message::Enum;

use crate::view::{EnumList, List, PrimitiveList, StructList, TextList};

/// The result type of the wire functions.
pub type Result<T> = core::result::Result<T, Error>;

/// A Cap'n Proto struct: what `#[derive(Message)]` implements for a struct
/// or an enum with data.
pub trait Struct: Sized + 'static {
    /// Section sizes, from the layout engine.
    const SIZE: StructSize;
    /// The borrowed view of this struct.
    type View<'a>: From<StructReader<'a>> + Copy;
    /// Writes every field into `b`, a struct of `SIZE`.
    fn write(&self, b: StructBuilder<'_>) -> Result<()>;
    /// Reads every field.
    fn read(r: StructReader<'_>) -> Result<Self>;
    /// How many words the encoded struct takes, including its own sections
    /// (exact for the types we generate; used to size the first segment).
    fn words(&self) -> usize;
}

/// A type with a declaration in a `.capnp` file.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a message type",
    label = "does not derive `Message`",
    note = "derive `Message` for `{Self}`"
)]
pub trait Named: 'static {
    /// Its name in the schema.
    const NAME: &'static str;
    /// Its Cap'n Proto type id.
    const TYPE_ID: u64;
    /// Adds its declaration (and those of the types it uses) to `schema`.
    fn declare(schema: &mut Schema);
}

// ---------------------------------------------------------------------------
// Data section.

/// A value stored in the data section, XOR its default.
pub trait DataField: Copy + 'static {
    /// Reads the value at `offset` (in units of its size).
    fn get(r: &StructReader<'_>, offset: usize, default: Self) -> Self;
    /// Writes the value at `offset`.
    fn set(b: &StructBuilder<'_>, offset: usize, value: Self, default: Self);
}

macro_rules! int_data {
    ($($t:ty),*) => {$(
        impl DataField for $t {
            #[inline]
            fn get(r: &StructReader<'_>, offset: usize, default: Self) -> Self {
                r.get_data_field_mask::<$t>(offset, default)
            }
            #[inline]
            fn set(b: &StructBuilder<'_>, offset: usize, value: Self, default: Self) {
                b.set_data_field_mask::<$t>(offset, value, default)
            }
        }
    )*};
}
int_data!(u8, u16, u32, u64, i8, i16, i32, i64);

impl DataField for f32 {
    #[inline]
    fn get(r: &StructReader<'_>, offset: usize, default: Self) -> Self {
        r.get_data_field_mask::<f32>(offset, default.to_bits())
    }
    #[inline]
    fn set(b: &StructBuilder<'_>, offset: usize, value: Self, default: Self) {
        b.set_data_field_mask::<f32>(offset, value, default.to_bits())
    }
}

impl DataField for f64 {
    #[inline]
    fn get(r: &StructReader<'_>, offset: usize, default: Self) -> Self {
        r.get_data_field_mask::<f64>(offset, default.to_bits())
    }
    #[inline]
    fn set(b: &StructBuilder<'_>, offset: usize, value: Self, default: Self) {
        b.set_data_field_mask::<f64>(offset, value, default.to_bits())
    }
}

impl DataField for bool {
    #[inline]
    fn get(r: &StructReader<'_>, offset: usize, default: Self) -> Self {
        r.get_bool_field_mask(offset, default)
    }
    #[inline]
    fn set(b: &StructBuilder<'_>, offset: usize, value: Self, default: Self) {
        b.set_bool_field_mask(offset, value, default)
    }
}

/// Reads a data field.
#[inline]
pub fn get<T: DataField>(r: &StructReader<'_>, offset: usize, default: T) -> T {
    T::get(r, offset, default)
}

/// Writes a data field.
#[inline]
pub fn set<T: DataField>(b: &StructBuilder<'_>, offset: usize, value: T, default: T) {
    T::set(b, offset, value, default)
}

/// Reads an enum field; an enumerant this program does not know is an
/// error naming the value.
#[inline]
pub fn get_enum<E: Enum>(r: &StructReader<'_>, offset: usize) -> Result<E> {
    let raw = r.get_data_field::<u16>(offset);
    E::from_u16(raw).ok_or_else(|| not_in_schema::<E>(raw))
}

/// The raw number of an enum field.
#[inline]
pub fn get_raw_enum(r: &StructReader<'_>, offset: usize) -> u16 {
    r.get_data_field::<u16>(offset)
}

/// Writes the raw number of an enum field.
#[inline]
pub fn set_raw_enum(b: &StructBuilder<'_>, offset: usize, raw: u16) {
    b.set_data_field::<u16>(offset, raw)
}

/// The enumerant `E::from_u16(raw)` found, or the error naming `raw`.
#[inline]
pub fn enum_from<E: Enum>(found: Option<E>, raw: u16) -> Result<E> {
    found.ok_or_else(|| not_in_schema::<E>(raw))
}

/// Pointer field `index` of a struct being read.
#[inline]
pub fn ptr<'a>(r: &StructReader<'a>, index: usize) -> PointerReader<'a> {
    r.get_pointer_field(index)
}

/// Pointer field `index` of a struct being written.
#[inline]
pub fn ptr_mut<'a>(b: &'a mut StructBuilder<'_>, index: usize) -> PointerBuilder<'a> {
    b.reborrow().get_pointer_field(index)
}

/// Writes an enum field.
#[inline]
pub fn set_enum<E: Enum>(b: &StructBuilder<'_>, offset: usize, value: &E) {
    b.set_data_field::<u16>(offset, value.to_u16())
}

/// Reads a union's discriminant.
#[inline]
pub fn get_which(r: &StructReader<'_>, offset: usize) -> u16 {
    r.get_data_field::<u16>(offset)
}

/// Writes a union's discriminant.
#[inline]
pub fn set_which(b: &StructBuilder<'_>, offset: usize, which: u16) {
    b.set_data_field::<u16>(offset, which)
}

/// Shows an enum (or an `Option` of one) read by a view by its schema
/// name, so that views are `Debug` whether or not the enum is.
pub struct DebugEnum<T>(pub core::result::Result<T, crate::Error>);

impl<E: Enum> core::fmt::Debug for DebugEnum<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Ok(e) => f.write_str(e.capnp_name()),
            Err(err) => write!(f, "Err({err})"),
        }
    }
}

impl<E: Enum> core::fmt::Debug for DebugEnum<Option<E>> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Ok(Some(e)) => write!(f, "Some({})", e.capnp_name()),
            Ok(None) => f.write_str("None"),
            Err(err) => write!(f, "Err({err})"),
        }
    }
}

impl core::fmt::Debug for DebugEnum<Option<bool>> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&self.0, f)
    }
}

macro_rules! debug_option_number {
    ($($t:ty),*) => {$(
        impl core::fmt::Debug for DebugEnum<Option<$t>> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(&self.0, f)
            }
        }
    )*};
}
debug_option_number!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// The error for a discriminant or enumerant this program does not know.
pub fn unknown_which(type_name: &str, which: u16) -> Error {
    Error::from_kind(capnp::ErrorKind::EnumValueOrUnionDiscriminantNotPresent(
        capnp::NotInSchema(which),
    ))
    .context(format!("{type_name}: unknown union member {which}"))
}

fn not_in_schema<E: Enum>(raw: u16) -> Error {
    Error::from_kind(capnp::ErrorKind::EnumValueOrUnionDiscriminantNotPresent(
        capnp::NotInSchema(raw),
    ))
    .context(format!("{}: unknown enumerant {raw}", E::NAME))
}

/// The error of a view accessor.
pub fn view_error(type_name: &'static str, field: &str, e: Error) -> crate::Error {
    crate::error::DecodeError::from_capnp(type_name, in_field(e, type_name, field)).into()
}

/// Adds `Type.field` to the path of an error while it travels up.
pub fn in_field(mut e: Error, type_name: &str, field: &str) -> Error {
    // The path reads outermost first: `in A.b > B.c: what went wrong`.
    // Deep paths keep their innermost steps, where the problem is.
    const MAX_STEPS: usize = 8;
    let place = if field.is_empty() { type_name.to_owned() } else { format!("{type_name}.{field}") };
    e.extra = match e.extra.strip_prefix("in ") {
        None if e.extra.is_empty() => format!("in {place}"),
        None => format!("in {place}: {}", e.extra),
        Some(rest) if rest.starts_with("... > ") => e.extra,
        Some(rest) if rest.matches(" > ").count() + 1 >= MAX_STEPS => format!("in ... > {rest}"),
        Some(rest) => format!("in {place} > {rest}"),
    };
    e
}

trait Context {
    fn context(self, what: String) -> Self;
}

impl Context for Error {
    fn context(mut self, what: String) -> Self {
        self.extra = what;
        self
    }
}

// ---------------------------------------------------------------------------
// Pointer section.

/// A value behind a pointer. A null pointer reads as the empty value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a message",
    label = "not a message type",
    note = "derive `Message` for `{Self}`, or use a supported type (numbers, bool, String, Vec<T>, Option<T>)",
    note = "if `{Self}` is a fieldless enum that derives `Message`, mark the field `#[capnp(ordinal = N, enum)]`"
)]
pub trait PointerField: Sized {
    /// The borrowed form of this value.
    type View<'a>;
    /// Reads an owned copy.
    fn read(p: PointerReader<'_>) -> Result<Self>;
    /// Borrows it from the message.
    fn view(p: PointerReader<'_>) -> Result<Self::View<'_>>;
    /// Writes it (the pointer is null before).
    fn write(&self, p: PointerBuilder<'_>) -> Result<()>;
    /// Words it takes on the wire, behind the pointer.
    fn words(&self) -> usize;
}

/// Reads pointer field `index` of `r`.
#[inline]
pub fn read_ptr<T: PointerField>(r: &StructReader<'_>, index: usize) -> Result<T> {
    T::read(r.get_pointer_field(index))
}

/// Borrows pointer field `index` of `r`.
#[inline]
pub fn view_ptr<'a, T: PointerField>(r: &StructReader<'a>, index: usize) -> Result<T::View<'a>> {
    T::view(r.get_pointer_field(index))
}

/// Writes pointer field `index` of `b`.
#[inline]
pub fn write_ptr<T: PointerField>(b: &mut StructBuilder<'_>, index: usize, value: &T) -> Result<()> {
    value.write(b.reborrow().get_pointer_field(index))
}

/// Words that `value` takes behind its pointer.
#[inline]
pub fn ptr_words<T: PointerField>(value: &T) -> usize {
    value.words()
}

/// Whether pointer field `index` of `r` is null.
#[inline]
pub fn is_null(r: &StructReader<'_>, index: usize) -> bool {
    r.is_pointer_field_null(index)
}

fn words_for_bytes(n: usize) -> usize {
    n.div_ceil(8)
}

impl PointerField for String {
    type View<'a> = &'a str;
    fn read(p: PointerReader<'_>) -> Result<Self> {
        Ok(Self::view(p)?.to_owned())
    }
    fn view(p: PointerReader<'_>) -> Result<&str> {
        Ok(p.get_text(None)?.to_str()?)
    }
    fn write(&self, mut p: PointerBuilder<'_>) -> Result<()> {
        p.set_text(self.as_str().into());
        Ok(())
    }
    fn words(&self) -> usize {
        words_for_bytes(self.len() + 1)
    }
}

impl<T: PointerField> PointerField for Option<T> {
    type View<'a> = Option<T::View<'a>>;
    fn read(p: PointerReader<'_>) -> Result<Self> {
        if p.is_null() {
            Ok(None)
        } else {
            T::read(p).map(Some)
        }
    }
    fn view(p: PointerReader<'_>) -> Result<Option<T::View<'_>>> {
        if p.is_null() {
            Ok(None)
        } else {
            T::view(p).map(Some)
        }
    }
    fn write(&self, p: PointerBuilder<'_>) -> Result<()> {
        match self {
            Some(v) => v.write(p),
            None => Ok(()),
        }
    }
    fn words(&self) -> usize {
        self.as_ref().map_or(0, T::words)
    }
}

impl<T: Element> PointerField for Vec<T> {
    type View<'a> = T::ListView<'a>;
    fn read(p: PointerReader<'_>) -> Result<Self> {
        T::read_list(p)
    }
    fn view(p: PointerReader<'_>) -> Result<T::ListView<'_>> {
        T::view_list(p)
    }
    fn write(&self, p: PointerBuilder<'_>) -> Result<()> {
        T::write_list(self, p)
    }
    fn words(&self) -> usize {
        T::list_words(self)
    }
}

/// Reads a nested struct (null reads as all defaults).
pub fn read_struct<T: Struct>(p: PointerReader<'_>) -> Result<T> {
    T::read(p.get_struct(None)?)
}

/// Borrows a nested struct.
pub fn view_struct<T: Struct>(p: PointerReader<'_>) -> Result<T::View<'_>> {
    Ok(T::View::from(p.get_struct(None)?))
}

/// Writes a nested struct.
pub fn write_struct<T: Struct>(value: &T, p: PointerBuilder<'_>) -> Result<()> {
    value.write(p.init_struct(T::SIZE))
}

/// Words a nested struct takes.
pub fn struct_words<T: Struct>(value: &T) -> usize {
    value.words()
}

// ---------------------------------------------------------------------------
// Lists.

/// What a `Vec<T>` in a message may hold.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an element of a message's list",
    label = "not a message type",
    note = "derive `Message` for `{Self}`, or use a supported element type (numbers, bool, String, Vec<T>, a message type)"
)]
pub trait Element: Sized {
    /// The borrowed form of a list of these.
    type ListView<'a>;
    /// Reads an owned list.
    fn read_list(p: PointerReader<'_>) -> Result<Vec<Self>>;
    /// Borrows a list.
    fn view_list(p: PointerReader<'_>) -> Result<Self::ListView<'_>>;
    /// Writes a list.
    fn write_list(items: &[Self], p: PointerBuilder<'_>) -> Result<()>;
    /// Words the list takes behind its pointer.
    fn list_words(items: &[Self]) -> usize;
}

fn list_len(n: usize) -> Result<u32> {
    // A Cap'n Proto list holds at most 2^29 - 1 elements.
    if n >= 1 << 29 {
        return Err(Error::failed(format!(
            "a list of {n} elements is longer than Cap'n Proto allows (2^29 - 1)"
        )));
    }
    Ok(n as u32)
}

macro_rules! primitive_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            type ListView<'a> = PrimitiveList<'a, $t>;
            fn read_list(p: PointerReader<'_>) -> Result<Vec<Self>> {
                Ok(Self::view_list(p)?.to_vec())
            }
            fn view_list(p: PointerReader<'_>) -> Result<PrimitiveList<'_, $t>> {
                Ok(PrimitiveList::new(FromPointerReader::get_from_pointer(&p, None)?))
            }
            fn write_list(items: &[Self], p: PointerBuilder<'_>) -> Result<()> {
                let mut list: capnp::primitive_list::Builder<'_, $t> =
                    FromPointerBuilder::init_pointer(p, list_len(items.len())?);
                match list.as_slice() {
                    Some(slice) => slice.copy_from_slice(items),
                    None => {
                        for (i, v) in items.iter().enumerate() {
                            list.set(i as u32, *v);
                        }
                    }
                }
                Ok(())
            }
            fn list_words(items: &[Self]) -> usize {
                words_for_bytes(items.len() * core::mem::size_of::<$t>())
            }
        }
    )*};
}
primitive_element!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

impl Element for bool {
    type ListView<'a> = PrimitiveList<'a, bool>;
    fn read_list(p: PointerReader<'_>) -> Result<Vec<Self>> {
        Ok(Self::view_list(p)?.to_vec())
    }
    fn view_list(p: PointerReader<'_>) -> Result<PrimitiveList<'_, bool>> {
        Ok(PrimitiveList::new(FromPointerReader::get_from_pointer(&p, None)?))
    }
    fn write_list(items: &[Self], p: PointerBuilder<'_>) -> Result<()> {
        let mut list: capnp::primitive_list::Builder<'_, bool> =
            FromPointerBuilder::init_pointer(p, list_len(items.len())?);
        for (i, v) in items.iter().enumerate() {
            list.set(i as u32, *v);
        }
        Ok(())
    }
    fn list_words(items: &[Self]) -> usize {
        items.len().div_ceil(64)
    }
}

impl Element for String {
    type ListView<'a> = TextList<'a>;
    fn read_list(p: PointerReader<'_>) -> Result<Vec<Self>> {
        let list: capnp::text_list::Reader<'_> = FromPointerReader::get_from_pointer(&p, None)?;
        let mut out = Vec::with_capacity(list.len() as usize);
        for s in list.iter() {
            out.push(s?.to_str()?.to_owned());
        }
        Ok(out)
    }
    fn view_list(p: PointerReader<'_>) -> Result<TextList<'_>> {
        Ok(TextList::new(FromPointerReader::get_from_pointer(&p, None)?))
    }
    fn write_list(items: &[Self], p: PointerBuilder<'_>) -> Result<()> {
        let mut list: capnp::text_list::Builder<'_> =
            FromPointerBuilder::init_pointer(p, list_len(items.len())?);
        for (i, s) in items.iter().enumerate() {
            list.set(i as u32, capnp::text::Reader::from(s.as_str()));
        }
        Ok(())
    }
    fn list_words(items: &[Self]) -> usize {
        items.len() + items.iter().map(|s| words_for_bytes(s.len() + 1)).sum::<usize>()
    }
}

/// Any pointer, as read from a list of pointers.
pub(crate) struct RawPointer<'a>(pub(crate) PointerReader<'a>);

impl<'a> FromPointerReader<'a> for RawPointer<'a> {
    fn get_from_pointer(reader: &PointerReader<'a>, _default: Option<&'a [capnp::Word]>) -> Result<Self> {
        Ok(RawPointer(*reader))
    }
}

/// The `i`-th pointer of a list of pointers.
pub(crate) fn pointer_element<'a>(list: &capnp::any_pointer_list::Reader<'a>, i: u32) -> Result<PointerReader<'a>> {
    Ok(list.get(i).get_as::<RawPointer<'a>>()?.0)
}

impl<T: Element> Element for Vec<T> {
    type ListView<'a> = List<'a, T>;
    fn read_list(p: PointerReader<'_>) -> Result<Vec<Self>> {
        let list: capnp::any_pointer_list::Reader<'_> = FromPointerReader::get_from_pointer(&p, None)?;
        let mut out = Vec::with_capacity(list.len() as usize);
        for i in 0..list.len() {
            out.push(T::read_list(pointer_element(&list, i)?)?);
        }
        Ok(out)
    }
    fn view_list(p: PointerReader<'_>) -> Result<List<'_, T>> {
        Ok(List::new(FromPointerReader::get_from_pointer(&p, None)?))
    }
    fn write_list(items: &[Self], p: PointerBuilder<'_>) -> Result<()> {
        let mut list = p.init_list(ElementSize::Pointer, list_len(items.len())?);
        for (i, inner) in items.iter().enumerate() {
            T::write_list(inner, list.reborrow().get_pointer_element(i as u32))?;
        }
        Ok(())
    }
    fn list_words(items: &[Self]) -> usize {
        items.len() + items.iter().map(|v| T::list_words(v)).sum::<usize>()
    }
}

/// Reads a list of enums.
pub fn read_enum_list<E: Enum>(p: PointerReader<'_>) -> Result<Vec<E>> {
    let raw: capnp::primitive_list::Reader<'_, u16> = FromPointerReader::get_from_pointer(&p, None)?;
    (0..raw.len()).map(|i| enum_from_raw(raw.get(i))).collect()
}

/// Borrows a list of enums.
pub fn view_enum_list<E: Enum>(p: PointerReader<'_>) -> Result<EnumList<'_, E>> {
    let raw: capnp::primitive_list::Reader<'_, u16> = FromPointerReader::get_from_pointer(&p, None)?;
    Ok(EnumList::new(raw))
}

/// Writes a list of enums.
pub fn write_enum_list<E: Enum>(items: &[E], p: PointerBuilder<'_>) -> Result<()> {
    let mut list: capnp::primitive_list::Builder<'_, u16> =
        FromPointerBuilder::init_pointer(p, list_len(items.len())?);
    for (i, v) in items.iter().enumerate() {
        list.set(i as u32, v.to_u16());
    }
    Ok(())
}

/// Words a list of enums takes.
pub fn enum_list_words<E: Enum>(items: &[E]) -> usize {
    words_for_bytes(items.len() * 2)
}

/// Checks a raw enumerant of a list.
pub(crate) fn enum_from_raw<E: Enum>(raw: u16) -> Result<E> {
    E::from_u16(raw).ok_or_else(|| not_in_schema::<E>(raw))
}

/// Reads a list of structs.
pub fn read_struct_list<T: Struct>(p: PointerReader<'_>) -> Result<Vec<T>> {
    let list = struct_list_reader::<T>(p)?;
    let mut out = Vec::with_capacity(list.len() as usize);
    for item in list.iter() {
        out.push(T::read(item.0)?);
    }
    Ok(out)
}

/// Borrows a list of structs.
pub fn view_struct_list<T: Struct>(p: PointerReader<'_>) -> Result<StructList<'_, T>> {
    Ok(StructList::new(struct_list_reader::<T>(p)?))
}

pub(crate) fn struct_list_reader<T: Struct>(p: PointerReader<'_>) -> Result<capnp::struct_list::Reader<'_, Owned<T>>> {
    FromPointerReader::get_from_pointer(&p, None)
}

/// Writes a list of structs.
pub fn write_struct_list<T: Struct>(items: &[T], p: PointerBuilder<'_>) -> Result<()> {
    let mut list: capnp::struct_list::Builder<'_, Owned<T>> =
        FromPointerBuilder::init_pointer(p, list_len(items.len())?);
    for (i, item) in items.iter().enumerate() {
        item.write(list.reborrow().get(i as u32).0)?;
    }
    Ok(())
}

/// Words a list of structs takes (a tag word, the elements' sections, and
/// what their pointers point at).
pub fn struct_list_words<T: Struct>(items: &[T]) -> usize {
    let own = T::SIZE.data as usize + T::SIZE.pointers as usize;
    1 + items.iter().map(|v| v.words() - own).sum::<usize>() + items.len() * own
}

// ---------------------------------------------------------------------------
// The `capnp` trait family for a derived struct, so that `struct_list` and
// `any_pointer` accept it. Written once here, not in every expansion.

/// Marker standing for a derived struct `T` in the `capnp` traits.
pub struct Owned<T>(PhantomData<fn() -> T>);

/// A derived struct being read, as the `capnp` traits see it.
pub struct OwnedReader<'a, T>(pub StructReader<'a>, PhantomData<fn() -> T>);

impl<T> Clone for OwnedReader<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OwnedReader<'_, T> {}

/// A derived struct being written, as the `capnp` traits see it.
pub struct OwnedBuilder<'a, T>(pub StructBuilder<'a>, PhantomData<fn() -> T>);

impl<T: Struct> capnp::introspect::Introspect for Owned<T> {
    fn introspect() -> capnp::introspect::Type {
        // Derived types carry no reflection data; this only affects
        // `capnp`'s dynamic API, never the encoding.
        capnp::introspect::TypeVariant::AnyPointer.into()
    }
}

impl<T: Struct> capnp::traits::Owned for Owned<T> {
    type Reader<'a> = OwnedReader<'a, T>;
    type Builder<'a> = OwnedBuilder<'a, T>;
}

impl<T: Struct> capnp::traits::OwnedStruct for Owned<T> {
    type Reader<'a> = OwnedReader<'a, T>;
    type Builder<'a> = OwnedBuilder<'a, T>;
}

impl<'a, T> From<StructReader<'a>> for OwnedReader<'a, T> {
    fn from(r: StructReader<'a>) -> Self {
        OwnedReader(r, PhantomData)
    }
}

impl<'a, T> From<StructBuilder<'a>> for OwnedBuilder<'a, T> {
    fn from(b: StructBuilder<'a>) -> Self {
        OwnedBuilder(b, PhantomData)
    }
}

impl<'a, T> capnp::traits::IntoInternalStructReader<'a> for OwnedReader<'a, T> {
    fn into_internal_struct_reader(self) -> StructReader<'a> {
        self.0
    }
}

impl<'a, T: Struct> FromPointerReader<'a> for OwnedReader<'a, T> {
    fn get_from_pointer(reader: &PointerReader<'a>, default: Option<&'a [capnp::Word]>) -> Result<Self> {
        Ok(OwnedReader(reader.get_struct(default)?, PhantomData))
    }
}

impl<'a, T: Struct> FromPointerBuilder<'a> for OwnedBuilder<'a, T> {
    fn init_pointer(builder: PointerBuilder<'a>, _length: u32) -> Self {
        OwnedBuilder(builder.init_struct(T::SIZE), PhantomData)
    }
    fn get_from_pointer(builder: PointerBuilder<'a>, default: Option<&'a [capnp::Word]>) -> Result<Self> {
        Ok(OwnedBuilder(builder.get_struct(T::SIZE, default)?, PhantomData))
    }
}

impl<T: Struct> capnp::traits::HasStructSize for OwnedBuilder<'_, T> {
    const STRUCT_SIZE: StructSize = T::SIZE;
}

impl<T: Struct> capnp::traits::SetterInput<Owned<T>> for OwnedReader<'_, T> {
    fn set_pointer_builder(mut pointer: PointerBuilder<'_>, value: Self, canonicalize: bool) -> Result<()> {
        pointer.set_struct(&value.0, canonicalize)
    }
}


// ---------------------------------------------------------------------------
// Whole messages.

/// Encodes `value` as one standard stream frame (segment table, segments).
///
/// The message is built straight into the returned buffer: its first
/// segment is sized from [`Struct::words`] (exact for derived types) and
/// placed 8 bytes into the output, where the one-segment table goes, so a
/// message that fits one segment is never copied. (If it ever spills into
/// more segments, the frame is assembled by copying, which is correct too.)
pub fn encode<T: Struct>(value: &T) -> Vec<u8> {
    // The root pointer takes one word besides the struct.
    let words = (value.words() + 1).clamp(8, MAX_SEGMENT_WORDS);
    let in_frame = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut message = capnp::message::Builder::new(FrameAllocator::new(words, in_frame.clone()));
    let root: OwnedBuilder<'_, T> = message.init_root();
    if let Err(e) = value.write(root.0) {
        // Writing to an in-memory builder only fails when a value does not
        // fit Cap'n Proto at all (a list of 2^29 elements or more).
        panic!("cannot encode {}: {e}", std::any::type_name::<T>());
    }
    let used = match message.get_segments_for_output() {
        // One segment, and it is the frame's body.
        capnp::OutputSegments::SingleSegment([segment]) if in_frame.get() => segment.len() / 8,
        _ => return capnp::serialize::write_message_to_words(&message),
    };
    let mut frame = message.into_allocator().frame;
    frame[..4].copy_from_slice(&0u32.to_le_bytes());
    frame[4..8].copy_from_slice(&(used as u32).to_le_bytes());
    frame.truncate(8 + used * 8);
    frame
}

/// The largest segment Cap'n Proto's builder takes, in words.
const MAX_SEGMENT_WORDS: usize = (1 << 29) - 1;

/// A `capnp` allocator whose first segment is the body of the output
/// frame. Later segments (only if a size estimate was short) come from the
/// heap.
struct FrameAllocator {
    /// The frame: 8 bytes of segment table, then the first segment.
    frame: Vec<u8>,
    /// The size of the first segment, until it is handed out.
    first_words: Option<u32>,
    /// Whether the first segment was placed in `frame` (shared with
    /// `encode`, which cannot look into the allocator before taking it).
    in_frame: std::rc::Rc<std::cell::Cell<bool>>,
    heap: capnp::message::HeapAllocator,
}

impl FrameAllocator {
    fn new(first_words: usize, in_frame: std::rc::Rc<std::cell::Cell<bool>>) -> Self {
        FrameAllocator { frame: Vec::new(), first_words: Some(first_words as u32), in_frame, heap: Default::default() }
    }

    fn owns(&self, ptr: core::ptr::NonNull<u8>) -> bool {
        self.in_frame.get() && core::ptr::eq(ptr.as_ptr(), self.frame.as_ptr().wrapping_add(8))
    }
}

// SAFETY: every segment handed out is zeroed, at least `minimum_size`
// words long, 8-byte aligned, and stays valid until it is deallocated or
// the allocator is dropped (the frame buffer is never reallocated while a
// builder uses it: it is only resized by `encode`, after the builder is
// gone).
unsafe impl capnp::message::Allocator for FrameAllocator {
    fn allocate_segment(&mut self, minimum_size: u32) -> (core::ptr::NonNull<u8>, u32) {
        if let Some(first_words) = self.first_words.take() {
            let words = first_words.max(minimum_size);
            // Zeroed, as capnp requires: calloc gives fresh pages for free.
            let frame = vec![0u8; 8 + words as usize * 8];
            if frame.as_ptr().align_offset(8) == 0 {
                self.frame = frame;
                self.in_frame.set(true);
                let ptr = core::ptr::NonNull::new(self.frame.as_mut_ptr().wrapping_add(8)).expect("a Vec's pointer is never null");
                return (ptr, words);
            }
        }
        self.heap.allocate_segment(minimum_size)
    }

    unsafe fn deallocate_segment(&mut self, ptr: core::ptr::NonNull<u8>, word_size: u32, words_used: u32) {
        if self.owns(ptr) {
            // The frame buffer is freed with the allocator (or returned).
            return;
        }
        // SAFETY: not ours, so it came from `self.heap` with these sizes.
        unsafe { self.heap.deallocate_segment(ptr, word_size, words_used) }
    }
}

/// The root struct of a parsed message.
pub fn root<'a, S: capnp::message::ReaderSegments>(message: &'a capnp::message::Reader<S>) -> Result<StructReader<'a>> {
    let root: RawPointer<'a> = message.get_root()?;
    root.0.get_struct(None)
}

// ---------------------------------------------------------------------------
// Schema text.

/// The declarations of a `.capnp` file being put together.
#[derive(Debug, Default)]
pub struct Schema {
    seen: HashSet<u64>,
    names: Vec<(String, u64, &'static str)>,
    decls: Vec<String>,
}

impl Schema {
    /// Starts the declaration of type `id`; false if it is already there.
    pub fn enter(&mut self, id: u64, name: &str, rust_type: &'static str) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.names.push((name.to_owned(), id, rust_type));
        true
    }

    /// Adds a finished declaration.
    pub fn push(&mut self, decl: String) {
        self.decls.push(decl);
    }

    /// The complete file, with `file_id`.
    pub fn finish(mut self, file_id: u64) -> String {
        self.names.sort();
        for pair in self.names.windows(2) {
            if pair[0].0 == pair[1].0 {
                panic!(
                    "two message types, {} and {}, are both named `{}` in one Cap'n Proto schema; \
                     give one of them another name with #[capnp(name = \"...\")]",
                    pair[0].2, pair[1].2, pair[0].0
                );
            }
        }
        let mut out = format!(
            "# Generated by taskgraph from Rust types. Do not edit.\n@0x{file_id:016x};\n"
        );
        for d in &self.decls {
            out.push('\n');
            out.push_str(d);
        }
        out
    }
}

/// The `.capnp` file of message type `T` and everything it uses.
pub fn schema_of<T: Named>() -> String {
    let mut s = Schema::default();
    T::declare(&mut s);
    // The file id is derived from the root type's id, so that it is stable.
    let file_id = T::TYPE_ID.rotate_left(17) ^ 0x5bd1_e995_7f4a_7c15 | 1 << 63;
    s.finish(file_id)
}
