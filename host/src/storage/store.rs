//! Where objects' durable state lives, behind one trait: the embedded redb database ([`Db`], one
//! machine, the default) or PostgreSQL ([`Postgres`], a cluster). Everything above it — each live
//! object's view, the committer, the data API — is the same for both.
//!
//! [`Db`]: super::Db
//! [`Postgres`]: super::Postgres

use super::changes::Changeset;
use crate::names::ObjectId;
use std::ops::Bound;

/// One object's commit, as the committer hands it to the store within a batch.
pub struct Commit<'a> {
    pub id: &'a ObjectId,
    /// Its key in the objects table ([`object_key`]): `namespace \0 name`.
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

    /// The object's durable size (keys plus values) and the bytes it has counted toward its
    /// namespace. `key` is its [`object_key`].
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

/// A failure of the database itself (I/O, corruption, a full disk). Nothing a guest did wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("database error: {message}")]
pub struct DbError {
    message: String,
    full: bool,
}

impl DbError {
    pub fn new(message: impl Into<String>) -> Self {
        DbError {
            message: message.into(),
            full: false,
        }
    }

    /// A failure of the store's own; `full` when the disk had no space for what was written.
    pub(super) fn failed(message: String, full: bool) -> Self {
        DbError { message, full }
    }

    /// Whether the disk had no space left for what was written.
    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// One object of the inventory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectRow {
    pub name: String,
    #[serde(serialize_with = "hex_id")]
    pub id: ObjectId,
    /// Keys plus values.
    pub bytes: u64,
    pub keys: u64,
    /// When its last write was committed, ms since the epoch.
    pub last_write_ms: u64,
    /// When its alarm is set to fire, if it has one.
    pub alarm: Option<u64>,
}

fn hex_id<S: serde::Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

/// The order of the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryOrder {
    Name,
    /// Largest first.
    Size,
    /// Latest first.
    LastWrite,
}

impl InventoryOrder {
    pub(super) fn sort(self, rows: &mut [ObjectRow]) {
        match self {
            InventoryOrder::Name => {}
            InventoryOrder::Size => rows.sort_by_key(|r| std::cmp::Reverse(r.bytes)),
            InventoryOrder::LastWrite => {
                rows.sort_by_key(|r| std::cmp::Reverse(r.last_write_ms));
            }
        }
    }
}

/// An object's key in the stores' table of objects: `namespace \0 name` (a namespace has no zero
/// byte).
pub fn object_key(namespace: &str, name: &str) -> Vec<u8> {
    [namespace.as_bytes(), b"\0", name.as_bytes()].concat()
}
