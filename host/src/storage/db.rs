//! The one redb database in the data dir, and the layout of what is stored in it.
//!
//! Every object entry lives in one table under the key `object id (32 bytes) ++ user key`, so an
//! object's keys are adjacent on disk (batched commits of one object touch few pages) and a range
//! over one object can never reach another's.

use super::changes::Alarm;
use crate::names::ObjectId;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

/// Object entries: `id ++ key` → value.
pub(crate) const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// Bytes stored per object (keys plus values), `id` → bytes, of objects last written before
/// [`OBJECTS`] existed. Read only: an object's next write moves its size into [`OBJECTS`], which
/// spares every commit one more insert at a random place.
pub(crate) const OBJECT_SIZES: TableDefinition<&[u8], u64> = TableDefinition::new("object_sizes");
/// Objects by name: `namespace \0 name` → (the bytes it stores, keys plus values, which it counts
/// toward its namespace's quota; when its last write was committed, ms since the epoch). The
/// inventory of `dohost objects`. An object stored before this table existed is in it from its
/// next write, its size until then in [`OBJECT_SIZES`].
pub(crate) const OBJECTS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("objects");
/// Bytes stored per namespace, the sum of its objects' in [`OBJECTS`]: namespace → bytes.
pub(crate) const NAMESPACE_SIZES: TableDefinition<&str, u64> =
    TableDefinition::new("namespace_sizes");
/// Alarms: `id` → the time (8 bytes, big-endian ms) followed by `namespace \0 name`.
pub(crate) const ALARMS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("alarms");
/// Deployed components: namespace → the uploaded wasm bytes.
pub(crate) const COMPONENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("components");
/// Deployment metadata: namespace → JSON ([`crate::registry::DeploymentInfo`]).
pub(crate) const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
/// Deployed apps: app → JSON ([`crate::registry::AppInfo`]). Their classes are in the two tables
/// above like any namespace.
pub(crate) const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// App workers: app → the uploaded wasm bytes.
pub(crate) const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
/// App secrets: `app \0 name` → value.
pub(crate) const SECRETS: TableDefinition<&str, &str> = TableDefinition::new("secrets");

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

    /// Whether the disk had no space left for what was written.
    pub fn is_full(&self) -> bool {
        self.full
    }
}

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        let e = e.into();
        let full =
            matches!(&e, redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull);
        DbError {
            message: e.to_string(),
            full,
        }
    }
}

/// Opens the database on a fresh backend: at start, and again after an I/O failure.
type Open = Box<dyn Fn() -> Result<redb::Database, DbError> + Send + Sync>;

/// The data dir's database.
///
/// After an I/O error redb refuses every later access (`PreviousIo`) until the database is
/// opened again, so a full disk would stop reads too. The handle is therefore replaceable: the
/// first to meet the failure reopens the file (a repair that reads the whole file, while other
/// users of the database wait), and reads then go on as before.
pub struct Db {
    open: Open,
    handle: RwLock<Handle>,
    /// Bytes stored per namespace, as the live objects have submitted them (ahead of the disk),
    /// for the namespace quota: loaded at open, then kept by each object's storage.
    usage: Mutex<HashMap<String, Arc<AtomicI64>>>,
}

struct Handle {
    /// `None` once the database failed and could not be opened again.
    db: Option<redb::Database>,
    /// Counts openings, so that one failure reopens the database once.
    generation: u64,
}

/// The open database, held for reading or writing; others may use it meanwhile, but nobody can
/// replace it.
pub(crate) struct DbGuard<'a> {
    handle: RwLockReadGuard<'a, Handle>,
}

impl std::ops::Deref for DbGuard<'_> {
    type Target = redb::Database;

    fn deref(&self) -> &redb::Database {
        self.handle
            .db
            .as_ref()
            .expect("a guard is only given out for an open database")
    }
}

impl Db {
    /// Opens (or creates) the database at `path` with a page cache of `cache_bytes`, and makes
    /// sure every table exists, so readers never meet a missing table.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, DbError> {
        let path = path.to_owned();
        Db::open_with_backend(
            move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                redb::backends::FileBackend::new(file).map_err(std::io::Error::other)
            },
            cache_bytes,
        )
    }

    /// Opens (or creates) the database on the backends `open_backend` returns: one now, and one
    /// each time it is opened again after an I/O failure. For tests on a
    /// [`SimulatedDisk`](super::SimulatedDisk).
    pub fn open_with_backend<B: redb::StorageBackend>(
        open_backend: impl Fn() -> std::io::Result<B> + Send + Sync + 'static,
        cache_bytes: usize,
    ) -> Result<Self, DbError> {
        let open: Open = Box::new(move || {
            let backend =
                open_backend().map_err(|e| DbError::new(format!("opening the database: {e}")))?;
            Ok(redb::Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(backend)?)
        });
        let db = open()?;
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(OBJECT_SIZES)?;
        txn.open_table(OBJECTS)?;
        txn.open_table(NAMESPACE_SIZES)?;
        txn.open_table(ALARMS)?;
        txn.open_table(COMPONENTS)?;
        txn.open_table(DEPLOYMENTS)?;
        txn.open_table(APPS)?;
        txn.open_table(WORKERS)?;
        txn.open_table(SECRETS)?;
        txn.commit()?;
        let mut usage = HashMap::new();
        for entry in db.begin_read()?.open_table(NAMESPACE_SIZES)?.iter()? {
            let (namespace, bytes) = entry?;
            let bytes = i64::try_from(bytes.value()).unwrap_or(i64::MAX);
            usage.insert(
                namespace.value().to_owned(),
                Arc::new(AtomicI64::new(bytes)),
            );
        }
        Ok(Db {
            open,
            handle: RwLock::new(Handle {
                db: Some(db),
                generation: 0,
            }),
            usage: Mutex::new(usage),
        })
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

    /// A page of `namespace`'s objects in the inventory (see [`OBJECTS`]), in `order`, at most
    /// `limit`; by name, those after `after`. Sorting by size or last write reads every object
    /// of the namespace (keeping only the page).
    pub fn inventory(
        &self,
        namespace: &str,
        order: InventoryOrder,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRow>, DbError> {
        let prefix = object_key(namespace, "");
        let start = match after {
            Some(name) => Bound::Excluded(object_key(namespace, name)),
            None => Bound::Included(prefix.clone()),
        };
        let end = next_prefix(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.read(|db| {
            let mut rows: Vec<ObjectRow> = Vec::new();
            let txn = db.begin_read()?;
            let objects = txn.open_table(OBJECTS)?;
            let range = (bound_slice(&start), bound_slice(&end));
            for entry in objects.range::<&[u8]>(range)? {
                let (key, value) = entry?;
                let name = String::from_utf8_lossy(&key.value()[prefix.len()..]).into_owned();
                let (bytes, last_write_ms) = value.value();
                rows.push(ObjectRow {
                    id: ObjectId::new(namespace, &name),
                    name,
                    bytes,
                    last_write_ms,
                    keys: 0,
                    alarm: None,
                });
                match order {
                    InventoryOrder::Name if rows.len() >= limit => break,
                    InventoryOrder::Name => {}
                    // Keep the page's worth of the largest (or latest) so far.
                    InventoryOrder::Size | InventoryOrder::LastWrite => {
                        if rows.len() > limit.saturating_mul(2).max(1024) {
                            order.sort(&mut rows);
                            rows.truncate(limit);
                        }
                    }
                }
            }
            order.sort(&mut rows);
            rows.truncate(limit);
            let entries = txn.open_table(ENTRIES)?;
            let alarms = txn.open_table(ALARMS)?;
            for row in &mut rows {
                let (lo, hi) = object_range(&row.id, Bound::Unbounded, Bound::Unbounded);
                row.keys = entries
                    .range::<&[u8]>((bound_slice(&lo), bound_slice(&hi)))?
                    .count() as u64;
                row.alarm = alarms
                    .get(row.id.as_bytes().as_slice())?
                    .and_then(|v| decode_alarm(v.value()))
                    .map(|a| a.at);
            }
            Ok(rows)
        })
    }

    /// Deletes a namespace's deployed code and every object of it in the inventory: their
    /// entries, sizes and alarms, in one transaction. Answers the objects deleted. Its objects
    /// must all be asleep (no commit in flight). Blocking.
    pub fn drop_namespace(&self, namespace: &str) -> Result<Vec<ObjectId>, DbError> {
        let prefix = object_key(namespace, "");
        let end = next_prefix(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let range = (Bound::Included(prefix.as_slice()), bound_slice(&end));
        let dropped = self.write(|db| {
            let txn = db.begin_write()?;
            let mut ids = Vec::new();
            {
                let mut objects = txn.open_table(OBJECTS)?;
                for entry in objects.range::<&[u8]>(range)? {
                    let (key, _) = entry?;
                    let name = String::from_utf8_lossy(&key.value()[prefix.len()..]).into_owned();
                    ids.push(ObjectId::new(namespace, &name));
                }
                objects.retain_in::<&[u8], _>(range, |_, _| false)?;
                let mut entries = txn.open_table(ENTRIES)?;
                let mut sizes = txn.open_table(OBJECT_SIZES)?;
                let mut alarms = txn.open_table(ALARMS)?;
                for id in &ids {
                    let (lo, hi) = object_range(id, Bound::Unbounded, Bound::Unbounded);
                    entries
                        .retain_in::<&[u8], _>((bound_slice(&lo), bound_slice(&hi)), |_, _| {
                            false
                        })?;
                    sizes.remove(id.as_bytes().as_slice())?;
                    alarms.remove(id.as_bytes().as_slice())?;
                }
                txn.open_table(NAMESPACE_SIZES)?.remove(namespace)?;
                txn.open_table(COMPONENTS)?.remove(namespace)?;
                txn.open_table(DEPLOYMENTS)?.remove(namespace)?;
            }
            txn.commit()?;
            Ok(ids)
        })?;
        self.namespace_usage(namespace).store(0, Ordering::Relaxed);
        Ok(dropped)
    }

    /// The object's durable size (keys plus values) and the bytes it has counted toward its
    /// namespace: the same, but for an object not written since [`OBJECTS`] existed, which has
    /// counted nothing yet. `key` is its [`object_key`].
    pub fn object_sizes(&self, key: &[u8], id: &ObjectId) -> Result<(u64, u64), DbError> {
        self.read(|db| {
            let txn = db.begin_read()?;
            if let Some(v) = txn.open_table(OBJECTS)?.get(key)? {
                let size = v.value().0;
                return Ok((size, size));
            }
            let legacy = txn.open_table(OBJECT_SIZES)?;
            Ok((
                legacy
                    .get(id.as_bytes().as_slice())?
                    .map_or(0, |v| v.value()),
                0,
            ))
        })
    }

    /// The redb handle, held until the guard is dropped, for the registry's loading at start-up.
    pub(crate) fn redb(&self) -> Result<DbGuard<'_>, DbError> {
        Ok(self.guard()?.0)
    }

    fn guard(&self) -> Result<(DbGuard<'_>, u64), DbError> {
        let handle = self.handle.read().unwrap_or_else(|e| e.into_inner());
        if handle.db.is_some() {
            let generation = handle.generation;
            return Ok((DbGuard { handle }, generation));
        }
        let generation = handle.generation;
        drop(handle);
        self.reopen(generation)?;
        let handle = self.handle.read().unwrap_or_else(|e| e.into_inner());
        match handle.db {
            Some(_) => Ok((DbGuard { handle }, generation + 1)),
            None => Err(DbError::new("the database could not be opened again")),
        }
    }

    /// Reads through `op`; after an I/O failure, opens the database again and reads once more.
    pub(crate) fn read<T>(
        &self,
        op: impl Fn(&redb::Database) -> Result<T, redb::Error>,
    ) -> Result<T, DbError> {
        let (result, generation) = {
            let (db, generation) = self.guard()?;
            (op(&db), generation)
        };
        match result {
            Err(e) if is_io(&e) => {
                self.reopen(generation)?;
                Ok(op(&*self.redb()?)?)
            }
            result => Ok(result?),
        }
    }

    /// Writes through `op`; after an I/O failure, opens the database again for those after.
    pub(crate) fn write<T>(
        &self,
        op: impl FnOnce(&redb::Database) -> Result<T, redb::Error>,
    ) -> Result<T, DbError> {
        let (result, generation) = {
            let (db, generation) = self.guard()?;
            (op(&db), generation)
        };
        if let Err(e) = &result
            && is_io(e)
            && let Err(again) = self.reopen(generation)
        {
            tracing::error!("{again}");
        }
        Ok(result?)
    }

    /// Replaces the handle of `generation`, which failed, unless someone already did.
    fn reopen(&self, generation: u64) -> Result<(), DbError> {
        let mut handle = self.handle.write().unwrap_or_else(|e| e.into_inner());
        if handle.generation != generation {
            return Ok(());
        }
        // Closed first: a file backend holds a lock the new handle needs.
        drop(handle.db.take());
        handle.generation += 1;
        tracing::warn!("the database failed; opening it again");
        handle.db = Some((self.open)()?);
        Ok(())
    }

    /// The durable value of one key of one object.
    pub fn get(&self, id: &ObjectId, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let full = full_key(id, key);
        self.read(|db| {
            let table = db.begin_read()?.open_table(ENTRIES)?;
            Ok(table.get(full.as_slice())?.map(|v| v.value().to_vec()))
        })
    }

    /// The object's durable alarm time.
    pub fn alarm(&self, id: &ObjectId) -> Result<Option<u64>, DbError> {
        self.read(|db| {
            let table = db.begin_read()?.open_table(ALARMS)?;
            let value = table.get(id.as_bytes().as_slice())?;
            Ok(value.and_then(|v| decode_alarm(v.value())).map(|a| a.at))
        })
    }

    /// Every durable alarm, to schedule them at start-up.
    pub fn all_alarms(&self) -> Result<Vec<(ObjectId, Alarm)>, DbError> {
        self.read(|db| {
            let table = db.begin_read()?.open_table(ALARMS)?;
            let mut alarms = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let id = <[u8; 32]>::try_from(k.value())
                    .ok()
                    .map(ObjectId::from_bytes);
                if let (Some(id), Some(alarm)) = (id, decode_alarm(v.value())) {
                    alarms.push((id, alarm));
                }
            }
            Ok(alarms)
        })
    }

    /// Visits the object's durable entries whose keys fall within `(lower, upper)`, ascending or
    /// descending, until `visit` returns false.
    pub fn scan(
        &self,
        id: &ObjectId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), DbError> {
        // Not through `read`: a retry would visit again what `visit` already saw.
        let db = self.redb()?;
        let table = db.begin_read()?.open_table(ENTRIES)?;
        let (lo, hi) = object_range(id, lower, upper);
        let range = table.range::<&[u8]>((bound_slice(&lo), bound_slice(&hi)))?;
        let entries: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for entry in entries {
            let (k, v) = entry?;
            if !visit(&k.value()[32..], v.value()) {
                break;
            }
        }
        Ok(())
    }
}

/// Whether redb failed on I/O, after which it must be opened again.
fn is_io(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

/// The stored form of an alarm.
pub(crate) fn encode_alarm(alarm: &Alarm) -> Vec<u8> {
    let mut v = alarm.at.to_be_bytes().to_vec();
    v.extend_from_slice(alarm.namespace.as_bytes());
    v.push(0);
    v.extend_from_slice(alarm.name.as_bytes());
    v
}

fn decode_alarm(v: &[u8]) -> Option<Alarm> {
    let at = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let rest = std::str::from_utf8(&v[8..]).ok()?;
    let (namespace, name) = rest.split_once('\0')?;
    Some(Alarm {
        at,
        namespace: namespace.into(),
        name: name.into(),
    })
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
    fn sort(self, rows: &mut [ObjectRow]) {
        match self {
            InventoryOrder::Name => {}
            InventoryOrder::Size => rows.sort_by_key(|r| std::cmp::Reverse(r.bytes)),
            InventoryOrder::LastWrite => {
                rows.sort_by_key(|r| std::cmp::Reverse(r.last_write_ms));
            }
        }
    }
}

/// An object's key in [`OBJECTS`]: `namespace \0 name` (a namespace has no zero byte).
pub fn object_key(namespace: &str, name: &str) -> Vec<u8> {
    [namespace.as_bytes(), b"\0", name.as_bytes()].concat()
}

/// The database key of an object's entry: `id ++ key`.
pub fn full_key(id: &ObjectId, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(32 + key.len());
    full.extend_from_slice(id.as_bytes());
    full.extend_from_slice(key);
    full
}

/// A range of keys, owned: `(lower, upper)`.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The bounds of the object's keys within `(lower, upper)`, as full keys: every full key in the
/// result is one of this object's, whatever the user keys (unbounded ends stop at the id's edges).
pub fn object_range(id: &ObjectId, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> KeyRange {
    let lo = match lower {
        Bound::Included(k) => Bound::Included(full_key(id, k)),
        Bound::Excluded(k) => Bound::Excluded(full_key(id, k)),
        Bound::Unbounded => Bound::Included(id.as_bytes().to_vec()),
    };
    let hi = match upper {
        Bound::Included(k) => Bound::Included(full_key(id, k)),
        Bound::Excluded(k) => Bound::Excluded(full_key(id, k)),
        Bound::Unbounded => match next_prefix(id.as_bytes()) {
            Some(next) => Bound::Excluded(next),
            None => Bound::Unbounded,
        },
    };
    (lo, hi)
}

/// The smallest byte string greater than every string starting with `prefix`, if there is one.
pub fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xff {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Borrows a bound on an owned key.
pub fn bound_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_prefix_carries() {
        assert_eq!(next_prefix(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(next_prefix(&[1, 0xff]), Some(vec![2]));
        assert_eq!(next_prefix(&[0xff, 0xff]), None);
        assert_eq!(next_prefix(b""), None);
    }
}
