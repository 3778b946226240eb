//! Typed messages that travel as Cap'n Proto.
//!
//! `#[derive(Message)]` on a plain Rust struct or enum makes it a Cap'n
//! Proto struct (a fieldless enum becomes a Cap'n Proto enum). The derive
//! computes the wire layout itself, with the official compiler's
//! algorithm, so building a crate that uses it needs no `capnp` binary;
//! [`Message::capnp_schema`] gives the `.capnp` file that other languages
//! compile to read the same bytes.
//!
//! # Declaring a message
//!
//! ```
//! use taskgraph::message::Message;
//!
//! #[derive(Message, Debug, Clone, PartialEq)]
//! pub struct Gradient {
//!     #[capnp(ordinal = 0)]
//!     pub step: u64,
//!     #[capnp(ordinal = 1)]
//!     pub values: Vec<f32>,
//!     #[capnp(ordinal = 2, default = 1.0)]
//!     pub scale: f32,
//!     #[capnp(ordinal = 3)]
//!     pub note: Option<String>,
//!     /// An `Option` of a number takes two ordinals: `none` and `some`.
//!     #[capnp(ordinal = 4)]
//!     pub shard: Option<u32>,
//! }
//!
//! let g = Gradient { step: 7, values: vec![0.5; 4], scale: 1.0, note: None, shard: Some(3) };
//! let bytes = g.encode();
//! assert_eq!(Gradient::decode(&bytes)?, g);
//! # Ok::<(), taskgraph::Error>(())
//! ```
//!
//! Every field has an explicit, permanent **ordinal**: its `@N` in Cap'n
//! Proto. Ordinals run from 0 with no gap; an `Option` of a number or enum
//! takes two (`N` for `none`, `N + 1` for `some`). Where a field sits on
//! the wire depends on the fields with lower ordinals, so the ordinals, not
//! the order of the Rust fields, fix the wire format.
//!
//! # Evolving a message
//!
//! * Add a field with the next free ordinal. Old readers skip it; new
//!   readers of old bytes see its default.
//! * Reorder or rename Rust fields freely: the ordinals stay.
//! * Never reuse an ordinal or change a field's type. To remove a field,
//!   keep its slot: `#[capnp(retired(3: u32))]` on the type reserves
//!   ordinal 3 as a `u32` that nobody reads or writes.
//! * Renaming the type changes its derived Cap'n Proto type id (which is
//!   in the schema, not on the wire); pin it with `#[capnp(id = 0x...)]`.
//!
//! # Type mapping
//!
//! | Rust | Cap'n Proto |
//! |---|---|
//! | `bool`, `u8`..`u64`, `i8`..`i64`, `f32`, `f64` | `Bool`, `UInt8`..`UInt64`, `Int8`..`Int64`, `Float32`, `Float64` |
//! | `String` | `Text` |
//! | `Vec<u8>` | `Data` |
//! | `Vec<T>` | `List(T)` |
//! | a `Message` struct or an enum with data | a struct (behind a pointer) |
//! | a fieldless enum (mark the field `#[capnp(enum)]`) | an enum |
//! | `Option<T>` of a pointer type | the same pointer, null for `None` |
//! | `Option<T>` of a number, bool or enum | `union { none @N :Void; some @N+1 :T; }` |
//! | an enum with data | a struct holding an unnamed union; a variant with named fields is a group |
//!
//! A field whose type is a fieldless enum must say so with
//! `#[capnp(ordinal = N, enum)]`: an enum lives in the data section while
//! a struct lives behind a pointer, and a derive cannot see how another
//! type is declared. Forgetting it is a compile error.

use std::marker::PhantomData;
use std::ops::Deref;

use crate::error::{DecodeError, DecodeErrorKind, Error};
use crate::wire::{self, Named, Struct};

pub use taskgraph_macros::Message;

/// A Cap'n Proto struct: derive it with `#[derive(Message)]`.
///
/// The supertraits are implementation details of the derive.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a taskgraph message",
    label = "not a message",
    note = "derive it: `#[derive(Message)]` on the type makes it a Cap'n Proto message"
)]
pub trait Message: Struct + Named {
    /// Encodes `self` as one standard Cap'n Proto stream frame (segment
    /// table, then segments, unpacked), as `capnp::serialize::write_message`
    /// writes it.
    ///
    /// # Panics
    ///
    /// If a list holds 2^29 elements or more, which Cap'n Proto cannot
    /// express.
    fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes one frame with the default [`Limits`]. Never panics: any
    /// input that is not a valid message of this type is an error.
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Self::decode_with(bytes, &Limits::default())
    }

    /// Decodes one frame with the given limits.
    fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Self, Error> {
        Frame::<Self>::with_limits(bytes, limits)?.decode()
    }

    /// A complete `.capnp` file (with a file id) declaring this type and
    /// every type it uses, which `capnp compile` accepts.
    fn capnp_schema() -> String {
        wire::schema_of::<Self>()
    }
}

/// A fieldless enum that travels as a Cap'n Proto enum (16 bits).
/// Derive it with `#[derive(Message)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a fieldless enum that derives `Message`",
    label = "the field is marked `enum`",
    note = "remove `enum` from `#[capnp(...)]` unless `{Self}` is a fieldless enum deriving `Message`"
)]
pub trait Enum: Sized + Named {
    /// The enumerant's number.
    fn to_u16(&self) -> u16;
    /// The enumerant's name in the schema.
    fn capnp_name(&self) -> &'static str;
    /// The enumerant with that number, if this program knows it.
    fn from_u16(value: u16) -> Option<Self>;
}

/// Bounds on what a decoder accepts from untrusted bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame accepted, in bytes. Default 64 MiB (Cap'n Proto's
    /// own default); raise it deliberately for bulk data.
    pub max_bytes: usize,
    /// The deepest nesting of structs and lists accepted. Default 64.
    pub max_depth: u32,
    /// How many times over its own size a reader may read a message
    /// (pointers that alias one another make a small message read as a
    /// huge one). Default 8.
    pub read_amplification: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 64 << 20, max_depth: 64, read_amplification: 8 }
    }
}

impl Limits {
    /// Default limits, but frames of up to `max_bytes`.
    pub fn max_bytes(max_bytes: usize) -> Self {
        Limits { max_bytes, ..Limits::default() }
    }

    fn reader_options(&self, message_bytes: usize) -> capnp::message::ReaderOptions {
        let words = (message_bytes / 8).max(1024);
        let mut options = capnp::message::ReaderOptions::new();
        options
            .traversal_limit_in_words(Some(words.saturating_mul(self.read_amplification.max(1) as usize)))
            .nesting_limit(self.max_depth.min(i32::MAX as u32) as i32);
        options
    }
}

/// The bytes of a frame, 8-byte aligned as Cap'n Proto needs: borrowed
/// when the caller's bytes already are, copied once when not.
enum Bytes<'a> {
    Borrowed(&'a [u8]),
    Copied(Vec<capnp::Word>, usize),
}

impl Deref for Bytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Copied(words, len) => &capnp::Word::words_to_bytes(words)[..*len],
        }
    }
}

/// A received frame of message type `T`, checked and ready to read.
///
/// [`view`](Frame::view) borrows fields straight from the bytes (no copy
/// of a big list); [`decode`](Frame::decode) makes an owned `T`.
pub struct Frame<'a, T> {
    message: capnp::message::Reader<capnp::serialize::BufferSegments<Bytes<'a>>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Frame<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("type", &std::any::type_name::<T>()).finish_non_exhaustive()
    }
}

impl<'a, T: Message> Frame<'a, T> {
    /// Checks the frame's segment table with the default [`Limits`].
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::with_limits(bytes, &Limits::default())
    }

    /// Checks the frame's segment table with the given limits. The bytes
    /// must hold exactly one frame.
    pub fn with_limits(bytes: &'a [u8], limits: &Limits) -> Result<Self, Error> {
        let name = std::any::type_name::<T>();
        if bytes.len() > limits.max_bytes {
            return Err(DecodeError::new(
                name,
                DecodeErrorKind::TooLarge,
                format!("{} bytes, limit {}", bytes.len(), limits.max_bytes),
            )
            .into());
        }
        let options = limits.reader_options(bytes.len());
        let capnp_err = |e| Error::from(DecodeError::from_capnp(name, e));
        let bytes = if bytes.as_ptr().align_offset(8) == 0 {
            Bytes::Borrowed(bytes)
        } else {
            let mut words = capnp::Word::allocate_zeroed_vec(bytes.len().div_ceil(8));
            capnp::Word::words_to_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
            Bytes::Copied(words, bytes.len())
        };
        // Parse the segment table once to learn where the frame ends.
        let mut rest: &[u8] = &bytes;
        capnp::serialize::read_message_from_flat_slice_no_alloc(&mut rest, options).map_err(capnp_err)?;
        if !rest.is_empty() {
            return Err(DecodeError::new(
                name,
                DecodeErrorKind::TrailingBytes,
                format!("{} bytes after a frame of {}", rest.len(), bytes.len() - rest.len()),
            )
            .into());
        }
        let segments = capnp::serialize::BufferSegments::new(bytes, options).map_err(capnp_err)?;
        Ok(Frame { message: capnp::message::Reader::new(segments, options), _t: PhantomData })
    }

    /// A borrowed view of the message: fields are read from the bytes when
    /// asked for, lists of numbers can be had as slices.
    pub fn view(&self) -> Result<T::View<'_>, Error> {
        let root = wire::root(&self.message).map_err(|e| DecodeError::from_capnp(std::any::type_name::<T>(), e))?;
        Ok(T::View::from(root))
    }

    /// An owned copy of the message.
    pub fn decode(&self) -> Result<T, Error> {
        let name = std::any::type_name::<T>();
        let root = wire::root(&self.message).map_err(|e| DecodeError::from_capnp(name, e))?;
        T::read(root).map_err(|e| DecodeError::from_capnp(name, e).into())
    }
}

/// A message already encoded, to send to many receivers (or to forward)
/// without encoding it again. Cheap to clone.
pub struct Encoded<M> {
    pub(crate) frame: std::sync::Arc<Vec<u8>>,
    _m: PhantomData<fn() -> M>,
}

impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Encoded { frame: self.frame.clone(), _m: PhantomData }
    }
}

impl<M> std::fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded<{}>({} bytes)", std::any::type_name::<M>(), self.frame.len())
    }
}

impl<M: Message> Encoded<M> {
    /// Encodes `message` once.
    pub fn new(message: &M) -> Self {
        Encoded { frame: std::sync::Arc::new(message.encode()), _m: PhantomData }
    }

    /// A frame that has been checked to be an `M`.
    pub(crate) fn from_checked(frame: std::sync::Arc<Vec<u8>>) -> Self {
        Encoded { frame, _m: PhantomData }
    }

    /// The frame's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.frame
    }
}
