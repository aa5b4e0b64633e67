//! Durable object storage: the database, the group-commit thread, and each live object's view.

mod committer;
mod db;
mod object;

pub use committer::{AlarmSink, CommitFailed, CommitOutcome, Committer};
pub(crate) use db::{COMPONENTS, DEPLOYMENTS};
pub use db::{Db, DbError};
pub use object::{Alarm, Changeset, ListOptions, ObjectStorage, StorageError, StorageLimits};

#[cfg(test)]
mod tests;
