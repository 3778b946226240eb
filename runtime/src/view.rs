//! Borrowed views of received messages: read a field, or a whole list,
//! straight from the message's bytes, without copying.
//!
//! `#[derive(Message)]` on `Param` generates `ParamView<'a>`, with one
//! accessor per field; pointer fields return the types here. Get a view
//! from bytes with [`Frame`](crate::message::Frame):
//!
//! ```
//! use taskgraph::message::{Frame, Message};
//!
//! #[derive(Message, Debug, PartialEq)]
//! pub struct Param {
//!     #[capnp(ordinal = 0)]
//!     pub w: Vec<f32>,
//! }
//!
//! let bytes = Param { w: vec![1.0; 1000] }.encode();
//! let frame = Frame::<Param>::new(&bytes)?;
//! let view = frame.view()?;
//! let w: &[f32] = view.w()?.as_slice().expect("aligned little-endian data");
//! assert_eq!(w.len(), 1000);
//! # Ok::<(), taskgraph::Error>(())
//! ```

use std::fmt;
use std::marker::PhantomData;


use crate::error::{DecodeError, Error};
use crate::message::Enum;
use crate::wire::{self, Element, PrimitiveElement, Struct};

fn err<T: ?Sized>(e: capnp::Error) -> Error {
    DecodeError::from_capnp(std::any::type_name::<T>(), e).into()
}

/// A borrowed list of numbers or bools.
pub struct PrimitiveList<'a, T: PrimitiveElement> {
    inner: capnp::primitive_list::Reader<'a, T>,
}

impl<'a, T: PrimitiveElement + Copy + 'a> PrimitiveList<'a, T> {
    pub(crate) fn new(inner: capnp::primitive_list::Reader<'a, T>) -> Self {
        PrimitiveList { inner }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.len() as usize
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }
    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len()).then(|| self.inner.get(i as u32))
    }
    /// The elements in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = T> + '_ {
        (0..self.inner.len()).map(move |i| self.inner.get(i))
    }
    /// The elements as a slice of the message's bytes, with no copy.
    ///
    /// `None` for a list of bools (bit-packed), for a list written by a
    /// newer schema with wider elements, or for a message whose bytes are
    /// not aligned for `T`.
    pub fn as_slice(&self) -> Option<&'a [T]> {
        let slice = self.inner.as_slice()?;
        // SAFETY: `as_slice` builds the slice from the list's raw bytes,
        // which borrow the message's segment for `'a`
        // (`ListReader::into_raw_bytes(self) -> &'a [u8]`); only the
        // signature of `as_slice` ties it to `&self`. The pointer, length
        // and alignment are those `capnp` already checked.
        Some(unsafe { std::slice::from_raw_parts(slice.as_ptr(), slice.len()) })
    }
    /// An owned copy.
    pub fn to_vec(&self) -> Vec<T> {
        match self.as_slice() {
            Some(s) => s.to_vec(),
            None => self.iter().collect(),
        }
    }
}

impl<'a, T: PrimitiveElement + Copy + fmt::Debug + 'a> fmt::Debug for PrimitiveList<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A borrowed list of text.
#[derive(Clone, Copy)]
pub struct TextList<'a> {
    inner: capnp::text_list::Reader<'a>,
}

impl<'a> TextList<'a> {
    pub(crate) fn new(inner: capnp::text_list::Reader<'a>) -> Self {
        TextList { inner }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.len() as usize
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }
    /// Element `i` (an error if it is not UTF-8), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<Result<&'a str, Error>> {
        (i < self.len()).then(|| text_at(self.inner, i as u32))
    }
    /// The elements in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Result<&'a str, Error>> + 'a {
        let inner = self.inner;
        (0..inner.len()).map(move |i| text_at(inner, i))
    }
}

fn text_at(list: capnp::text_list::Reader<'_>, i: u32) -> Result<&str, Error> {
    let get = || -> wire::Result<&str> { Ok(list.get(i)?.to_str()?) };
    get().map_err(err::<str>)
}

impl fmt::Debug for TextList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A borrowed list of enums.
pub struct EnumList<'a, E> {
    raw: capnp::primitive_list::Reader<'a, u16>,
    _e: PhantomData<fn() -> E>,
}

impl<E> Clone for EnumList<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for EnumList<'_, E> {}

impl<'a, E: Enum> EnumList<'a, E> {
    pub(crate) fn new(raw: capnp::primitive_list::Reader<'a, u16>) -> Self {
        EnumList { raw, _e: PhantomData }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.raw.len() as usize
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }
    /// Element `i` (an error if this program does not know the
    /// enumerant), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<Result<E, Error>> {
        (i < self.len()).then(|| wire::enum_from_raw(self.raw.get(i as u32)).map_err(err::<E>))
    }
    /// The elements in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Result<E, Error>> + 'a {
        let raw = self.raw;
        (0..raw.len()).map(move |i| wire::enum_from_raw(raw.get(i)).map_err(err::<E>))
    }
}

impl<E: Enum> fmt::Debug for EnumList<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|e| wire::DebugEnum(e))).finish()
    }
}

/// A borrowed list of messages; each element is the message's view.
pub struct StructList<'a, T: Struct> {
    inner: capnp::struct_list::Reader<'a, wire::Owned<T>>,
}

impl<T: Struct> Clone for StructList<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Struct> Copy for StructList<'_, T> {}

impl<'a, T: Struct> StructList<'a, T> {
    pub(crate) fn new(inner: capnp::struct_list::Reader<'a, wire::Owned<T>>) -> Self {
        StructList { inner }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.len() as usize
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }
    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T::View<'a>> {
        (i < self.len()).then(|| T::View::from(self.inner.get(i as u32).0))
    }
    /// The elements in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = T::View<'a>> + 'a {
        let inner = self.inner;
        (0..inner.len()).map(move |i| T::View::from(inner.get(i).0))
    }
}

impl<'a, T: Struct> fmt::Debug for StructList<'a, T>
where
    T::View<'a>: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A borrowed list of lists.
pub struct List<'a, T> {
    inner: capnp::any_pointer_list::Reader<'a>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for List<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for List<'_, T> {}

impl<'a, T: Element> List<'a, T> {
    pub(crate) fn new(inner: capnp::any_pointer_list::Reader<'a>) -> Self {
        List { inner, _t: PhantomData }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.inner.len() as usize
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }
    /// Element `i` (a view of the inner list), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<Result<T::ListView<'a>, Error>> {
        (i < self.len()).then(|| inner_list::<T>(self.inner, i as u32))
    }
    /// The elements in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Result<T::ListView<'a>, Error>> + 'a {
        let inner = self.inner;
        (0..inner.len()).map(move |i| inner_list::<T>(inner, i))
    }
}

fn inner_list<T: Element>(list: capnp::any_pointer_list::Reader<'_>, i: u32) -> Result<T::ListView<'_>, Error> {
    wire::pointer_element(&list, i).and_then(T::view_list).map_err(err::<Vec<T>>)
}

impl<'a, T: Element> fmt::Debug for List<'a, T>
where
    T::ListView<'a>: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
