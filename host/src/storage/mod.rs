//! Durable object storage: the database, the group-commit thread, and each live object's view.
//!
//! The modules form one stack, each using only those below it: `changes` (what an event writes),
//! `store` (the trait of where objects' state lives, with its two implementations: `db`, the
//! embedded redb database, and `postgres`, for a cluster), `committer` (the thread writing
//! batches to the store), `object` (a live object's view). `limits` (what a call may ask for, and
//! why it was refused) sits between the stores and `object`. `simulated` is a disk in memory for
//! tests (power cuts, a full disk); the host never uses it.

mod backup;
mod changes;
mod committer;
mod db;
mod limits;
mod object;
mod postgres;
mod simulated;
mod store;

pub use self::postgres::{Postgres, SHARDS, db_error, shard_of};
pub use backup::{BackupSize, check_backup, write_backup};
pub use changes::{Alarm, Changeset};
pub use committer::{AlarmSink, CommitFailed, CommitOutcome, Committer, FULL_RETRY};
pub use db::Db;
pub(crate) use db::{APPS, COMPONENTS, DEPLOYMENTS, SECRETS, WORKERS};
pub use limits::{
    DEFAULT_MAX_BATCH, DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_OBJECT_BYTES,
    MAX_TRANSACTION_DEPTH, StorageError, StorageLimits,
};
pub use object::{ListOptions, ObjectStorage};
pub use simulated::{SimulatedDisk, SimulatedFile, Sync};
pub use store::{Commit, DbError, InventoryOrder, ObjectRow, ObjectStore};

use crate::names::ObjectId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// The host's storage: this machine's database, and the store of objects' state (the same
/// database on one machine; PostgreSQL in a cluster).
#[derive(Clone)]
pub struct Storage {
    /// The registry of deployments (in a cluster, this node's copy of them), and backups.
    pub local: Arc<Db>,
    pub objects: Arc<dyn ObjectStore>,
    /// Bytes stored per namespace, as the live objects have submitted them (ahead of the store),
    /// for the namespace quota: loaded at start, then kept by each object's storage.
    usage: Arc<Mutex<HashMap<String, Arc<AtomicI64>>>>,
}

impl Storage {
    /// Storage on one machine: objects' state in `db` too.
    pub fn local(db: Db) -> Result<Storage, DbError> {
        let db = Arc::new(db);
        Storage::new(db.clone(), db)
    }

    /// Storage with objects' state in `objects`.
    pub fn new(local: Arc<Db>, objects: Arc<dyn ObjectStore>) -> Result<Storage, DbError> {
        let usage = objects
            .namespace_sizes()?
            .into_iter()
            .map(|(namespace, bytes)| {
                let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                (namespace, Arc::new(AtomicI64::new(bytes)))
            })
            .collect();
        Ok(Storage {
            local,
            objects,
            usage: Arc::new(Mutex::new(usage)),
        })
    }

    /// Whether objects' state lives in this machine's database (backups copy it).
    pub fn is_local(&self) -> bool {
        let objects: *const dyn ObjectStore = &*self.objects;
        std::ptr::addr_eq(objects, Arc::as_ptr(&self.local))
    }

    /// The bytes `namespace` stores, as its live objects submitted them: shared by them, each
    /// adding what its commits change.
    pub(crate) fn namespace_usage(&self, namespace: &str) -> Arc<AtomicI64> {
        let mut usage = self.usage.lock().unwrap();
        usage.entry(namespace.to_owned()).or_default().clone()
    }

    /// The bytes `namespace` stores (see [`Self::namespace_usage`]).
    pub fn namespace_size(&self, namespace: &str) -> u64 {
        let used = self.namespace_usage(namespace).load(Ordering::Relaxed);
        u64::try_from(used).unwrap_or(0)
    }

    /// Deletes every object of `namespace`, then its deployed code; answers the objects deleted.
    /// Its objects must all be asleep. Objects first: if the host stops in between, the
    /// namespace is still deployed, and deleting it again finishes the job. Blocking.
    pub fn drop_namespace(&self, namespace: &str) -> Result<Vec<ObjectId>, DbError> {
        let dropped = self.objects.drop_objects(namespace)?;
        self.namespace_usage(namespace).store(0, Ordering::Relaxed);
        self.local.drop_deployment(namespace)?;
        Ok(dropped)
    }
}

/// How object keys are laid out in the database, and how `list` options become a key range: the
/// pure logic under every read and listing. Public only so that it can be fuzzed on its own
/// (`fuzz/fuzz_targets/storage_keys.rs`); the host itself uses it through [`ObjectStorage`].
pub mod keys {
    pub use super::db::{KeyRange, bound_slice, full_key, next_prefix, object_range};
    pub use super::object::{list_bounds, range_is_empty};
}

#[cfg(test)]
mod tests;
