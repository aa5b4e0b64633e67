//! Durable object storage: the database, the group-commit thread, and each live object's view.
//!
//! The modules form one stack, each using only those below it: `changes` (what an event writes),
//! `db` (the tables), `committer` (the thread writing them), `object` (a live object's view).
//! `limits` (what a call may ask for, and why it was refused) sits between `db` and `object`.
//! `simulated` is a disk in memory for tests (power cuts, a full disk); the host never uses it.

mod backup;
mod changes;
mod committer;
mod db;
mod limits;
mod object;
mod simulated;

pub use backup::{BackupSize, check_backup, write_backup};
pub use changes::{Alarm, Changeset};
pub use committer::{AlarmSink, CommitFailed, CommitOutcome, Committer, FULL_RETRY};
pub(crate) use db::{APPS, COMPONENTS, DEPLOYMENTS, SECRETS, WORKERS};
pub use db::{Db, DbError, InventoryOrder, ObjectRow};
pub use limits::{
    DEFAULT_MAX_BATCH, DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_OBJECT_BYTES,
    MAX_TRANSACTION_DEPTH, StorageError, StorageLimits,
};
pub use object::{ListOptions, ObjectStorage};
pub use simulated::{SimulatedDisk, SimulatedFile, Sync};

/// How object keys are laid out in the database, and how `list` options become a key range: the
/// pure logic under every read and listing. Public only so that it can be fuzzed on its own
/// (`fuzz/fuzz_targets/storage_keys.rs`); the host itself uses it through [`ObjectStorage`].
pub mod keys {
    pub use super::db::{KeyRange, bound_slice, full_key, next_prefix, object_range};
    pub use super::object::{list_bounds, range_is_empty};
}

#[cfg(test)]
mod tests;
