//! Where objects' durable state lives, behind one trait: the embedded redb database ([`Db`], one
//! machine, the default) or PostgreSQL ([`Postgres`], a cluster). Everything above it — each live
//! object's view, the committer, the data API — is the same for both.
//!
//! [`Db`]: super::Db
//! [`Postgres`]: super::Postgres

use super::changes::{Alarm, Changeset};
use super::db::{DbError, InventoryOrder, ObjectRow};
use crate::names::ObjectId;
use std::ops::Bound;

/// One object's commit, as the committer hands it to the store within a batch.
pub struct Commit<'a> {
    pub id: &'a ObjectId,
    /// Its key in the objects table ([`super::db::object_key`]): `namespace \0 name`.
    pub object: &'a [u8],
    pub changes: &'a Changeset,
    /// The object's size once this commit is applied (keys plus values).
    pub size: u64,
    /// The epoch of the object's shard when the object started: a store that fences checks it in
    /// the commit's transaction (see `cluster`). 0 where there is no cluster.
    pub epoch: u64,
}

/// The durable state of every object: entries, sizes, alarms.
pub trait ObjectStore: Send + Sync {
    /// The durable value of one key of one object.
    fn get(&self, id: &ObjectId, key: &[u8]) -> Result<Option<Vec<u8>>, DbError>;

    /// Visits the object's durable entries whose keys fall within `(lower, upper)`, ascending or
    /// descending, until `visit` returns false.
    fn scan(
        &self,
        id: &ObjectId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), DbError>;

    /// The object's durable alarm time.
    fn alarm(&self, id: &ObjectId) -> Result<Option<u64>, DbError>;

    /// The durable alarms this host fires: every one on a single machine; in a cluster, those of
    /// the shards it owns.
    fn all_alarms(&self) -> Result<Vec<(ObjectId, Alarm)>, DbError>;

    /// The object's durable size (keys plus values) and the bytes it has counted toward its
    /// namespace. `key` is its [`object_key`](super::db::object_key).
    fn object_sizes(&self, key: &[u8], id: &ObjectId) -> Result<(u64, u64), DbError>;

    /// A page of `namespace`'s objects, in `order`, at most `limit`; by name, those after `after`.
    fn inventory(
        &self,
        namespace: &str,
        order: InventoryOrder,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRow>, DbError>;

    /// Deletes every object of `namespace` (entries, sizes, alarms) in one transaction; answers
    /// the objects deleted. They must all be asleep.
    fn drop_objects(&self, namespace: &str) -> Result<Vec<ObjectId>, DbError>;

    /// Bytes stored per namespace, for the quotas at start.
    fn namespace_sizes(&self) -> Result<Vec<(String, u64)>, DbError>;

    /// Writes a batch of commits in one durable transaction. Answers, per commit, whether the
    /// fence refused it (its shard has another owner now); those are not written, the others are.
    fn commit(&self, batch: &[Commit<'_>]) -> Result<Vec<bool>, DbError>;
}
