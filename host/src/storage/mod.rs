//! Durable object storage: the database, the group-commit thread, and each live object's view.

mod committer;
mod db;
mod object;

pub use committer::{AlarmSink, CommitFailed, CommitOutcome, Committer};
pub(crate) use db::{COMPONENTS, DEPLOYMENTS};
pub use db::{Db, DbError};
pub use object::{Alarm, Changeset, ListOptions, ObjectStorage, StorageError, StorageLimits};

/// How object keys are laid out in the database, and how `list` options become a key range: the
/// pure logic under every read and listing. Public only so that it can be fuzzed on its own
/// (`fuzz/fuzz_targets/storage_keys.rs`); the host itself uses it through [`ObjectStorage`].
pub mod keys {
    pub use super::db::{KeyRange, bound_slice, full_key, next_prefix, object_range};
    pub use super::object::{list_bounds, range_is_empty};
}

#[cfg(test)]
mod tests;
