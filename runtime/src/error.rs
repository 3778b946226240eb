//! taskgraph's error type.

use std::fmt;

/// What can go wrong in taskgraph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not a valid message of the expected type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The coordinator failed.
    #[error(transparent)]
    Coord(#[from] crate::coord::CoordError),
    /// A received message was read as another edge's.
    #[error("expected a message of edge `{expected}`, got one of edge {got}")]
    WrongEdge {
        /// The edge asked for.
        expected: &'static str,
        /// The edge it came over.
        got: u32,
    },
    /// An operating-system resource (a socket, a thread) failed.
    #[error("{0}")]
    Io(String),
    /// A node failed in a way that stopped the job.
    #[error("{0}")]
    Node(String),
    /// A job that cannot run as configured (e.g. tasks without a role).
    #[error("{0}")]
    Job(String),
    /// The job did not end in time.
    #[error("{0}")]
    Timeout(String),
}

/// A message could not be decoded. Decoding never panics: every problem
/// with the input ends here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// The Rust type that was being decoded.
    pub type_name: &'static str,
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// Where and how, for people (e.g. `in Param.w: ...`).
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode {}: {}", self.type_name, self.kind)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// The kinds of [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Larger than [`Limits::max_bytes`](crate::message::Limits::max_bytes).
    #[error("the message is larger than the limit")]
    TooLarge,
    /// Shorter than its segment table says, or empty.
    #[error("the message is truncated")]
    Truncated,
    /// Nested deeper than [`Limits::max_depth`](crate::message::Limits::max_depth).
    #[error("the message is nested too deeply")]
    TooDeep,
    /// Reading it would touch more data than the message holds many times
    /// over (pointers that alias one another).
    #[error("the message reads more data than the traversal limit allows")]
    TraversalLimit,
    /// An enumerant or union member this program does not know (sent by a
    /// newer version of the type, or garbage).
    #[error("an enumerant or union member is unknown")]
    Unknown,
    /// Text that is not UTF-8.
    #[error("text is not valid UTF-8")]
    Utf8,
    /// Bytes after the end of the message.
    #[error("there are bytes after the end of the message")]
    TrailingBytes,
    /// Anything else: a pointer out of bounds, a wrong pointer kind, ...
    #[error("the message is malformed")]
    Malformed,
}

impl DecodeError {
    pub(crate) fn new(type_name: &'static str, kind: DecodeErrorKind, detail: impl Into<String>) -> Self {
        DecodeError { type_name, kind, detail: detail.into() }
    }

    pub(crate) fn from_capnp(type_name: &'static str, e: capnp::Error) -> Self {
        use capnp::ErrorKind as K;
        let kind = match &e.kind {
            K::MessageTooLarge(_) | K::MessageSizeOverflow => DecodeErrorKind::TooLarge,
            K::MessageEndsPrematurely(..) | K::PrematureEndOfFile | K::EmptySlice | K::EmptyBuffer => {
                DecodeErrorKind::Truncated
            }
            K::NestingLimitExceeded | K::MessageIsTooDeeplyNested | K::MessageIsTooDeeplyNestedOrContainsCycles => {
                DecodeErrorKind::TooDeep
            }
            K::ReadLimitExceeded => DecodeErrorKind::TraversalLimit,
            K::EnumValueOrUnionDiscriminantNotPresent(_) => DecodeErrorKind::Unknown,
            K::TextContainsNonUtf8Data(_) => DecodeErrorKind::Utf8,
            _ => DecodeErrorKind::Malformed,
        };
        // capnp's text for an unknown enumerant repeats itself; ours (in
        // `extra`) says which type and value.
        let detail = match kind {
            DecodeErrorKind::Unknown if !e.extra.is_empty() => e.extra,
            _ => e.to_string(),
        };
        DecodeError::new(type_name, kind, detail)
    }
}

/// `Result<T, taskgraph::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
