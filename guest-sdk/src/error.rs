//! The SDK's error types.

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
    /// The host could not read its database. The event should fail: return the error from
    /// [`fetch`](crate::DurableObject::fetch).
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

/// Everything that can go wrong in an object, so that `?` works on storage calls, JSON and your
/// own messages alike inside [`fetch`](crate::DurableObject::fetch).
#[derive(Debug)]
pub enum Error {
    /// The host refused a storage call.
    Storage(StorageError),
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
            Error::Json(e) => write!(f, "JSON error: {e}"),
            Error::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage(e) => Some(e),
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
