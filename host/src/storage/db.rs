//! The one redb database in the data dir, and the layout of what is stored in it.
//!
//! Every object entry lives in one table under the key `object id (32 bytes) ++ user key`, so an
//! object's keys are adjacent on disk (batched commits of one object touch few pages) and a range
//! over one object can never reach another's.

use super::changes::Alarm;
use super::store::{Commit, DbError, InventoryOrder, ObjectRow, ObjectStore, object_key};
use crate::names::ObjectId;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

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
/// A cluster node's state kept on its machine: `log_applied` → the last entry of the cluster's
/// log of deploys applied to this data dir's registry.
pub(crate) const CLUSTER: TableDefinition<&str, i64> = TableDefinition::new("cluster");

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        let e = e.into();
        let full =
            matches!(&e, redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull);
        DbError::failed(e.to_string(), full)
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
        txn.open_table(CLUSTER)?;
        txn.commit()?;
        Ok(Db {
            open,
            handle: RwLock::new(Handle {
                db: Some(db),
                generation: 0,
            }),
        })
    }

    /// Deletes a namespace's deployed code (its objects are the store's: see
    /// [`super::Storage::drop_namespace`]).
    pub fn drop_deployment(&self, namespace: &str) -> Result<(), DbError> {
        self.write(|db| {
            let txn = db.begin_write()?;
            txn.open_table(COMPONENTS)?.remove(namespace)?;
            txn.open_table(DEPLOYMENTS)?.remove(namespace)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// The last entry of the cluster's log of deploys applied here (0: none).
    pub fn cluster_log_applied(&self) -> Result<i64, DbError> {
        self.read(|db| {
            let table = db.begin_read()?.open_table(CLUSTER)?;
            Ok(table.get("log_applied")?.map_or(0, |v| v.value()))
        })
    }

    /// Records that the cluster's log of deploys is applied here up to `seq`.
    pub fn set_cluster_log_applied(&self, seq: i64) -> Result<(), DbError> {
        self.write(|db| {
            let txn = db.begin_write()?;
            txn.open_table(CLUSTER)?.insert("log_applied", seq)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Every durable alarm, to schedule them at start-up (a cluster's node schedules those of
    /// each shard as it takes it instead: `cluster::membership`).
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
}

impl ObjectStore for Db {
    fn get(&self, id: &ObjectId, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let full = full_key(id, key);
        self.read(|db| {
            let table = db.begin_read()?.open_table(ENTRIES)?;
            Ok(table.get(full.as_slice())?.map(|v| v.value().to_vec()))
        })
    }

    fn alarm(&self, id: &ObjectId) -> Result<Option<u64>, DbError> {
        self.read(|db| {
            let table = db.begin_read()?.open_table(ALARMS)?;
            let value = table.get(id.as_bytes().as_slice())?;
            Ok(value.and_then(|v| decode_alarm(v.value())).map(|a| a.at))
        })
    }

    fn scan(
        &self,
        id: &ObjectId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
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

    fn inventory(
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

    fn drop_objects(&self, namespace: &str) -> Result<Vec<ObjectId>, DbError> {
        let prefix = object_key(namespace, "");
        let end = next_prefix(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let range = (Bound::Included(prefix.as_slice()), bound_slice(&end));
        self.write(|db| {
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
            }
            txn.commit()?;
            Ok(ids)
        })
    }

    fn object_sizes(&self, key: &[u8], id: &ObjectId) -> Result<(u64, u64), DbError> {
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

    fn namespace_sizes(&self) -> Result<Vec<(String, u64)>, DbError> {
        self.read(|db| {
            let table = db.begin_read()?.open_table(NAMESPACE_SIZES)?;
            let mut sizes = Vec::new();
            for entry in table.iter()? {
                let (namespace, bytes) = entry?;
                sizes.push((namespace.value().to_owned(), bytes.value()));
            }
            Ok(sizes)
        })
    }

    fn commit(&self, batch: &[Commit<'_>]) -> Result<Vec<bool>, DbError> {
        self.write(|db| write_batch(db, batch))?;
        Ok(vec![false; batch.len()])
    }
}

/// Applies a batch of commits in one redb transaction (see `committer`).
fn write_batch(db: &redb::Database, batch: &[Commit<'_>]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut legacy_sizes = txn.open_table(OBJECT_SIZES)?;
        let mut alarms = txn.open_table(ALARMS)?;
        let mut objects = txn.open_table(OBJECTS)?;
        let written_at = crate::clock::now_ms();
        // What the batch changes in each namespace's size.
        let mut grown: HashMap<&[u8], i128> = HashMap::new();
        for &Commit {
            id,
            object,
            changes,
            size,
            ..
        } in batch
        {
            let counted = match objects.get(object)? {
                Some(v) => v.value().0,
                None => {
                    // Its size moves here from the old table, if it was ever written there.
                    let legacy = legacy_sizes.get(id.as_bytes().as_slice())?.is_some();
                    if legacy {
                        legacy_sizes.remove(id.as_bytes().as_slice())?;
                    }
                    0
                }
            };
            if counted != size {
                let namespace = object.split(|&b| b == 0).next().unwrap_or_default();
                *grown.entry(namespace).or_default() += i128::from(size) - i128::from(counted);
            }
            // An object that stores nothing and has no alarm leaves the inventory.
            let keep = size > 0
                || match &changes.alarm {
                    Some(alarm) => alarm.is_some(),
                    None => alarms.get(id.as_bytes().as_slice())?.is_some(),
                };
            if keep {
                objects.insert(object, (size, written_at))?;
            } else {
                objects.remove(object)?;
            }
            if changes.clear {
                let (lo, hi) = object_range(id, Bound::Unbounded, Bound::Unbounded);
                let range = (bound_slice(&lo), bound_slice(&hi));
                entries.retain_in::<&[u8], _>(range, |_, _| false)?;
            }
            for (key, value) in &changes.writes {
                let full = full_key(id, key);
                match value {
                    Some(v) => {
                        entries.insert(full.as_slice(), v.as_slice())?;
                    }
                    None => {
                        entries.remove(full.as_slice())?;
                    }
                }
            }
            match &changes.alarm {
                Some(Some(alarm)) => {
                    alarms.insert(id.as_bytes().as_slice(), encode_alarm(alarm).as_slice())?;
                }
                Some(None) => {
                    alarms.remove(id.as_bytes().as_slice())?;
                }
                None => {}
            }
        }
        let mut namespaces = txn.open_table(NAMESPACE_SIZES)?;
        for (namespace, grown) in grown {
            // Namespaces are ASCII; this never falls back.
            let namespace = std::str::from_utf8(namespace).unwrap_or_default();
            let before = namespaces.get(namespace)?.map_or(0, |v| v.value());
            let after = u64::try_from((i128::from(before) + grown).max(0)).unwrap_or(u64::MAX);
            namespaces.insert(namespace, after)?;
        }
    }
    txn.commit()?;
    Ok(())
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
