//! What a storage call may ask for, and how a refusal is reported.

use super::store::DbError;

/// The default [`StorageLimits::max_key_bytes`].
pub const DEFAULT_MAX_KEY_BYTES: usize = 2048;
/// The default [`StorageLimits::max_entry_bytes`].
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 2 * 1024 * 1024;
/// The default [`StorageLimits::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 128;
/// The default [`StorageLimits::max_object_bytes`].
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Storage limits, the same for every object of a host.
#[derive(Debug, Clone, Copy)]
pub struct StorageLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest key plus value, in bytes.
    pub max_entry_bytes: usize,
    /// Most keys in one `get-many`, `put-many` or `delete-many`.
    pub max_batch: usize,
    /// Most bytes (keys plus values) one object may store.
    pub max_object_bytes: u64,
    /// Most bytes all objects of one namespace may store together: object names are free, so a
    /// client could otherwise fill the disk one quota at a time.
    pub max_namespace_bytes: u64,
}

impl Default for StorageLimits {
    fn default() -> Self {
        StorageLimits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_namespace_bytes: u64::MAX,
        }
    }
}

/// Deepest nesting of explicit transactions.
pub const MAX_TRANSACTION_DEPTH: usize = 64;

/// Why a storage call was refused; it changed nothing. Mirrors the WIT `storage-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<DbError> for StorageError {
    fn from(e: DbError) -> Self {
        StorageError::Internal(e.to_string())
    }
}

impl StorageLimits {
    pub(super) fn check_key(&self, key: &str) -> Result<(), StorageError> {
        at_most(key.len(), self.max_key_bytes, |n, max| {
            format!("key is {n} bytes; the limit is {max} bytes")
        })
    }

    pub(super) fn check_batch(&self, n: usize) -> Result<(), StorageError> {
        at_most(n, self.max_batch, |n, max| {
            format!("{n} keys in one call; the limit is {max}")
        })
    }

    pub(super) fn check_entry(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.check_key(key)?;
        at_most(key.len() + value.len(), self.max_entry_bytes, |n, max| {
            format!("key plus value is {n} bytes; the limit is {max} bytes")
        })
    }

    pub(super) fn check_quota(&self, new_size: u64) -> Result<(), StorageError> {
        at_most(new_size, self.max_object_bytes, |n, max| {
            format!("the object would store {n} bytes; its quota is {max} bytes")
        })
    }

    pub(super) fn check_namespace_quota(&self, new_size: u64) -> Result<(), StorageError> {
        at_most(new_size, self.max_namespace_bytes, |n, max| {
            format!(
                "the namespace's objects would store {n} bytes together; its quota is {max} \
                 bytes (--max-namespace-storage)"
            )
        })
    }
}

/// Refuses `n` above `max`, with the message `describe(n, max)`.
fn at_most<N: PartialOrd>(
    n: N,
    max: N,
    describe: impl FnOnce(N, N) -> String,
) -> Result<(), StorageError> {
    if n > max {
        return Err(StorageError::LimitExceeded(describe(n, max)));
    }
    Ok(())
}
