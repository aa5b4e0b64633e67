//! The SDK's error types.

use crate::{CallError, FetchError, StreamError};
use std::fmt;

/// Why the host refused a storage call. A refused call changes nothing.
///
/// The variants mirror the WIT `storage-error`, so an object can react differently to a limit it
/// can design around ([`LimitExceeded`](Self::LimitExceeded)) and a host fault it cannot
/// ([`Internal`](Self::Internal)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// A size limit was exceeded: a key over 2 KiB, a key and value together over 2 MiB, more
    /// than 128 keys in one batch, or the object's storage quota. The text says which.
    LimitExceeded(String),
    /// The arguments make no sense, e.g. a list with both `start` and `start_after`, or a commit
    /// with no open transaction. The text says why.
    InvalidArgument(String),
    /// The host could not read its database. The event should fail: return the error from the
    /// handler (such as [`fetch`](crate::DurableObject::fetch)).
    Internal(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::LimitExceeded(m) => write!(f, "storage limit exceeded: {m}"),
            StorageError::InvalidArgument(m) => write!(f, "invalid storage argument: {m}"),
            StorageError::Internal(m) => write!(f, "internal storage error: {m}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Why the host refused a WebSocket call. A refused call changes nothing.
///
/// The variants mirror the WIT `websocket-error`. [`NotFound`](Self::NotFound) is the one to
/// expect in normal operation: a client may disconnect at any moment, so sending to a socket
/// found a moment ago can still fail, and a broadcast usually skips such sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebSocketError {
    /// The socket is not one of this object's open sockets: it closed, or never was.
    NotFound,
    /// A size limit: over 10 tags, a tag over 256 bytes, an attachment over 16 KiB, an
    /// auto-response text over 2,048 bytes. The text says which.
    LimitExceeded(String),
    /// The call makes no sense here, e.g. accepting outside a WebSocket upgrade request, or a
    /// close code outside 1000 and 3000..=4999. The text says why.
    InvalidArgument(String),
}

impl fmt::Display for WebSocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebSocketError::NotFound => f.write_str("no such open WebSocket"),
            WebSocketError::LimitExceeded(m) => write!(f, "WebSocket limit exceeded: {m}"),
            WebSocketError::InvalidArgument(m) => write!(f, "invalid WebSocket argument: {m}"),
        }
    }
}

impl std::error::Error for WebSocketError {}

/// Everything that can go wrong in an object, so that `?` works on storage calls, WebSocket
/// calls, stub calls, outbound requests, JSON and your own messages alike inside every handler of
/// [`DurableObject`](crate::DurableObject).
#[derive(Debug)]
pub enum Error {
    /// The host refused a storage call.
    Storage(StorageError),
    /// The host refused a WebSocket call.
    WebSocket(WebSocketError),
    /// A call through a [`Stub`](crate::Stub) failed.
    Call(CallError),
    /// The host refused a stream call.
    Stream(StreamError),
    /// An outbound request ([`fetch`](crate::fetch)) failed.
    Fetch(FetchError),
    /// A value could not be converted to or from JSON: a stored value or request body that does
    /// not match the type asked for, or a value that cannot be serialized.
    Json(serde_json::Error),
    /// Any other failure, described by its message.
    Message(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Storage(e) => e.fmt(f),
            Error::WebSocket(e) => e.fmt(f),
            Error::Call(e) => e.fmt(f),
            Error::Stream(e) => e.fmt(f),
            Error::Fetch(e) => e.fmt(f),
            Error::Json(e) => write!(f, "JSON error: {e}"),
            Error::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage(e) => Some(e),
            Error::WebSocket(e) => Some(e),
            Error::Call(e) => Some(e),
            Error::Stream(e) => Some(e),
            Error::Fetch(e) => Some(e),
            Error::Json(e) => Some(e),
            Error::Message(_) => None,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

impl From<WebSocketError> for Error {
    fn from(e: WebSocketError) -> Self {
        Error::WebSocket(e)
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        Error::Call(e)
    }
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Self {
        Error::Fetch(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Message(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Message(message.to_owned())
    }
}

/// The SDK's result type: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;
