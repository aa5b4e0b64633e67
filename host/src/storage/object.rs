//! One object's view of its storage while it is live: the current event's writes, the commits it
//! has handed to the committer that may not be durable yet, and the database below them.
//!
//! Reads go through those three layers top-down, so an event sees its own writes and those of
//! earlier events even while their commits are still being flushed (the object runs its next event
//! without waiting for the disk; only the *responses* wait, see [`ObjectStorage::finish_event`]).

use super::Storage;
use super::changes::{Alarm, Changeset};
use super::committer::{CommitFailed, CommitOutcome, Committer};
use super::db::{KeyRange, bound_slice, next_prefix};
use super::limits::{MAX_TRANSACTION_DEPTH, StorageError, StorageLimits};
use super::store::ObjectStore;
use super::store::{DbError, object_key};
use crate::names::{ObjectId, ObjectIdentity};
use futures::FutureExt;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Which keys `list` returns; see the WIT `list-options`.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub start_after: Option<String>,
    pub end: Option<String>,
    pub reverse: bool,
    pub limit: Option<u32>,
}

struct Pending {
    changes: Arc<Changeset>,
    outcome: CommitOutcome,
}

/// A live object's storage. Owned by the object's event loop; one event at a time.
pub struct ObjectStorage {
    id: ObjectId,
    /// Its key in the objects table, which counts its size toward its namespace's.
    object: Arc<[u8]>,
    store: Arc<dyn ObjectStore>,
    /// Its shard's epoch when it started, which its commits carry (see [`super::Commit::epoch`]).
    epoch: u64,
    limits: StorageLimits,
    /// Size once every submitted commit is applied.
    committed_size: u64,
    /// What the namespace stores (all its objects' submitted sizes), and this object's part of it.
    namespace_used: Arc<AtomicI64>,
    counted: u64,
    /// Submitted commits, oldest first, until they are known to be durable.
    pending: VecDeque<Pending>,
    /// The current event's writes, and its size counting them.
    event: Changeset,
    event_size: u64,
    /// Open explicit transactions: the event's writes and size when each began.
    savepoints: Vec<(Changeset, u64)>,
    /// Whether the current event was refused a write for the quota.
    hit_quota: bool,
    /// Whether the current event set or deleted the alarm, even in a part of it already
    /// committed before a call.
    alarm_touched: bool,
}

type Entries = Vec<(String, Vec<u8>)>;

impl ObjectStorage {
    /// Opens the object's storage, reading its size for the quotas. `epoch` is its shard's (0
    /// without a cluster).
    pub fn open(
        object: &ObjectIdentity,
        storage: &Storage,
        epoch: u64,
        limits: StorageLimits,
    ) -> Result<Self, DbError> {
        let id = object.id;
        let key = object_key(&object.namespace, &object.name);
        let (committed_size, counted) = storage.objects.object_sizes(&key, &id)?;
        Ok(ObjectStorage {
            id,
            object: key.into(),
            namespace_used: storage.namespace_usage(&object.namespace),
            counted,
            store: storage.objects.clone(),
            epoch,
            limits,
            committed_size,
            pending: VecDeque::new(),
            event: Changeset::default(),
            event_size: committed_size,
            savepoints: Vec::new(),
            hit_quota: false,
            alarm_touched: false,
        })
    }

    /// Its shard's epoch when it started or last reset (0 without a cluster).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes stored, counting the current event's writes.
    pub fn size(&self) -> u64 {
        self.event_size
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let layers = self.pending.iter().map(|p| &*p.changes);
        for layer in std::iter::once(&self.event).chain(layers.rev()) {
            if let Some(found) = layer.lookup(key) {
                return Ok(found.map(<[u8]>::to_vec));
            }
        }
        self.store.get(&self.id, key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.limits.check_key(key)?;
        Ok(self.lookup(key.as_bytes())?)
    }

    /// The existing ones of `keys`, ascending.
    pub fn get_many(&self, keys: &[String]) -> Result<Entries, StorageError> {
        self.limits.check_batch(keys.len())?;
        keys.iter().try_for_each(|k| self.limits.check_key(k))?;
        let mut found = BTreeMap::new();
        for key in keys {
            if let Some(v) = self.lookup(key.as_bytes())? {
                found.insert(key.clone(), v);
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.put_many(vec![(key.to_owned(), value)])
    }

    /// Stores every entry, or none if any is refused.
    pub fn put_many(&mut self, entries: Vec<(String, Vec<u8>)>) -> Result<(), StorageError> {
        self.limits.check_batch(entries.len())?;
        entries
            .iter()
            .try_for_each(|(k, v)| self.limits.check_entry(k, v))?;
        // The size after the batch, counting keys repeated within it once.
        let mut batch: BTreeMap<&str, usize> = BTreeMap::new();
        let mut size = self.event_size;
        for (k, v) in &entries {
            let old = match batch.get(k.as_str()) {
                Some(len) => Some(*len),
                None => self.lookup(k.as_bytes())?.map(|old| old.len()),
            };
            if let Some(old) = old {
                size -= (k.len() + old) as u64;
            }
            size += (k.len() + v.len()) as u64;
            batch.insert(k, v.len());
        }
        let namespace_size = || {
            let used = self.namespace_used.load(Ordering::Relaxed);
            u64::try_from(used - self.counted as i64 + size as i64).unwrap_or(0)
        };
        let checked = self.limits.check_quota(size).and_then(|()| {
            // Only growth is refused: an object of a namespace over its quota may still shrink.
            if size > self.event_size {
                self.limits.check_namespace_quota(namespace_size())
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            self.hit_quota = true;
            return Err(e);
        }
        for (k, v) in entries {
            self.event.writes.insert(k.into_bytes(), Some(v));
        }
        self.event_size = size;
        Ok(())
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&mut self, key: &str) -> Result<bool, StorageError> {
        self.limits.check_key(key)?;
        self.remove(key)
    }

    fn remove(&mut self, key: &str) -> Result<bool, StorageError> {
        let Some(old) = self.lookup(key.as_bytes())? else {
            return Ok(false);
        };
        self.event_size -= (key.len() + old.len()) as u64;
        self.event.writes.insert(key.as_bytes().to_vec(), None);
        Ok(true)
    }

    /// Deletes every one of `keys`; how many existed.
    pub fn delete_many(&mut self, keys: &[String]) -> Result<u32, StorageError> {
        self.limits.check_batch(keys.len())?;
        keys.iter().try_for_each(|k| self.limits.check_key(k))?;
        let mut n = 0;
        for key in keys {
            n += u32::from(self.remove(key)?);
        }
        Ok(n)
    }

    /// Deletes every key of the object (not its alarm).
    pub fn delete_all(&mut self) {
        self.event.clear = true;
        self.event.writes.clear();
        self.event_size = 0;
    }

    /// When the alarm is set to fire, through the same layers as every read.
    pub fn get_alarm(&self) -> Result<Option<u64>, StorageError> {
        let layers = self.pending.iter().map(|p| &*p.changes);
        for layer in std::iter::once(&self.event).chain(layers.rev()) {
            if let Some(alarm) = &layer.alarm {
                return Ok(alarm.as_ref().map(|a| a.at));
            }
        }
        Ok(self.store.alarm(&self.id)?)
    }

    /// Sets the alarm, replacing any other; written with the event.
    pub fn set_alarm(&mut self, alarm: Alarm) {
        self.event.alarm = Some(Some(alarm));
        self.alarm_touched = true;
    }

    /// Cancels the alarm; written with the event.
    pub fn delete_alarm(&mut self) {
        self.event.alarm = Some(None);
        self.alarm_touched = true;
    }

    /// Whether the current event set or deleted the alarm.
    pub fn alarm_changed(&self) -> bool {
        self.alarm_touched
    }

    /// The entries selected by `options`, in key order (descending with `reverse`).
    pub fn list(&self, options: &ListOptions) -> Result<Entries, StorageError> {
        let (lower, upper) = list_bounds(options)?;
        let limit = options.limit.map_or(usize::MAX, |l| l as usize);
        if limit == 0 || range_is_empty(&lower, &upper) {
            return Ok(Vec::new());
        }
        let bounds = (bound_slice(&lower), bound_slice(&upper));

        // Everything above the database, merged oldest to newest, within the range.
        let mut overlay: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        let mut cleared = false;
        let layers = self.pending.iter().map(|p| &*p.changes);
        for layer in layers.chain(std::iter::once(&self.event)) {
            if layer.clear {
                overlay.clear();
                cleared = true;
            }
            for (k, v) in layer.writes.range::<[u8], _>(bounds) {
                overlay.insert(k, v.as_deref());
            }
        }
        let mut overlay: Vec<(&[u8], Option<&[u8]>)> = overlay.into_iter().collect();
        if options.reverse {
            overlay.reverse();
        }

        let mut out = Vec::new();
        let mut next = 0; // overlay[..next] is merged
        // Does `a` come before `b` in the listing order?
        let before = |a: &[u8], b: &[u8]| if options.reverse { a > b } else { a < b };
        let mut more = true;
        if !cleared {
            self.store.scan(
                &self.id,
                bounds.0,
                bounds.1,
                options.reverse,
                &mut |k, v| {
                    while next < overlay.len() && before(overlay[next].0, k) {
                        let (ok, ov) = overlay[next];
                        next += 1;
                        more = emit(&mut out, limit, ok, ov);
                        if !more {
                            return false;
                        }
                    }
                    // An overlay entry for the same key replaces the durable one.
                    let value = match overlay.get(next) {
                        Some(&(ok, ov)) if ok == k => {
                            next += 1;
                            ov
                        }
                        _ => Some(v),
                    };
                    more = emit(&mut out, limit, k, value);
                    more
                },
            )?;
        }
        if more {
            for &(k, v) in &overlay[next..] {
                if !emit(&mut out, limit, k, v) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Opens a nested transaction.
    pub fn begin(&mut self) -> Result<(), StorageError> {
        if self.savepoints.len() >= MAX_TRANSACTION_DEPTH {
            return Err(StorageError::LimitExceeded(format!(
                "transactions nest at most {MAX_TRANSACTION_DEPTH} deep"
            )));
        }
        self.savepoints.push((self.event.clone(), self.event_size));
        Ok(())
    }

    /// Keeps the innermost transaction's writes.
    pub fn commit(&mut self) -> Result<(), StorageError> {
        self.savepoints
            .pop()
            .map(|_| ())
            .ok_or_else(|| StorageError::InvalidArgument("no transaction is open".into()))
    }

    /// Undoes the innermost transaction's writes.
    pub fn rollback(&mut self) -> Result<(), StorageError> {
        let (event, size) = self
            .savepoints
            .pop()
            .ok_or_else(|| StorageError::InvalidArgument("no transaction is open".into()))?;
        self.event = event;
        self.event_size = size;
        Ok(())
    }

    /// Forgets the current event's writes (the event failed).
    pub fn discard_event(&mut self) {
        self.hit_quota = false;
        self.alarm_touched = false;
        self.event = Changeset::default();
        self.event_size = self.committed_size;
        self.savepoints.clear();
    }

    /// Ends a successful event: hands its writes to the committer, and returns what its response
    /// must wait for: the commit of its own writes or, for an event that wrote nothing, the newest
    /// earlier commit it may have read from. Transactions left open are rolled back.
    pub fn finish_event(&mut self, committer: &Committer) -> Option<CommitOutcome> {
        self.hit_quota = false;
        self.alarm_touched = false;
        if let Some((event, size)) = self.savepoints.drain(..).next() {
            self.event = event;
            self.event_size = size;
        }
        self.submit(committer)
    }

    /// Commits the current event's writes so far, before a call leaves the object (the output
    /// gate covers calls): returns what the call must wait for, as [`Self::finish_event`] does.
    /// The event goes on; only its later writes are discarded if it fails. Refused inside a
    /// transaction, whose writes are not the event's yet.
    pub fn commit_before_call(
        &mut self,
        committer: &Committer,
    ) -> Result<Option<CommitOutcome>, StorageError> {
        if self.in_transaction() {
            return Err(StorageError::InvalidArgument(
                "a call cannot leave inside an open transaction: commit or roll it back first"
                    .into(),
            ));
        }
        Ok(self.submit(committer))
    }

    /// Whether a transaction is open: its writes are not the event's yet, so nothing may leave.
    pub fn in_transaction(&self) -> bool {
        !self.savepoints.is_empty()
    }

    /// Hands the current event's writes to the committer; what an output must wait for.
    fn submit(&mut self, committer: &Committer) -> Option<CommitOutcome> {
        if self.event.is_empty() {
            return self.last_commit();
        }
        let changes = Arc::new(std::mem::take(&mut self.event));
        self.committed_size = self.event_size;
        self.count(self.committed_size);
        let outcome = committer.submit(
            self.id,
            self.object.clone(),
            changes.clone(),
            self.committed_size,
            self.epoch,
        );
        self.pending.push_back(Pending {
            changes,
            outcome: outcome.clone(),
        });
        Some(outcome)
    }

    /// Whether the current event was refused a write for exceeding the object's quota.
    pub fn hit_quota(&self) -> bool {
        self.hit_quota
    }

    /// The newest commit not yet known to be durable: what an output of the object must wait for.
    pub fn last_commit(&self) -> Option<CommitOutcome> {
        self.pending.back().map(|p| p.outcome.clone())
    }

    /// Drops the commits known to be durable. Fails if one of them failed: the object must then
    /// be [`reset`](Self::reset), since later events may have read what never reached the disk.
    pub fn prune(&mut self) -> Result<(), CommitFailed> {
        while let Some(front) = self.pending.front() {
            // Poll rather than `peek`: `peek` only sees outcomes some other clone has awaited,
            // and nobody awaits the outcome of a response whose client went away.
            match front.outcome.clone().now_or_never() {
                Some(Ok(_)) => {
                    self.pending.pop_front();
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(())
    }

    /// Waits until every submitted commit has been decided.
    pub async fn settle(&self) {
        if let Some(last) = self.pending.back() {
            let _ = last.outcome.clone().await;
        }
    }

    /// Starts again from what is durable, after a failed commit; lets the committer accept this
    /// object's commits again. `epoch`: its shard's now (the failure may have been the fence's).
    pub fn reset(&mut self, committer: &Committer, epoch: u64) -> Result<(), DbError> {
        self.pending.clear();
        self.epoch = epoch;
        let (committed_size, counted) = self.store.object_sizes(&self.object, &self.id)?;
        self.committed_size = committed_size;
        self.count(counted);
        self.discard_event();
        committer.forgive(self.id);
        Ok(())
    }

    /// Makes `size` this object's part of its namespace's size.
    fn count(&mut self, size: u64) {
        let grown = size as i64 - self.counted as i64;
        self.namespace_used.fetch_add(grown, Ordering::Relaxed);
        self.counted = size;
    }
}

/// Adds an entry to a listing unless it is a deletion; whether the listing wants more.
fn emit(out: &mut Entries, limit: usize, key: &[u8], value: Option<&[u8]>) -> bool {
    if let Some(value) = value {
        // Keys only ever enter storage as UTF-8 strings.
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    out.len() < limit
}

/// The key range `list` covers, from its options; `start` with `start_after` is refused.
pub fn list_bounds(o: &ListOptions) -> Result<KeyRange, StorageError> {
    let mut lower = match (&o.start, &o.start_after) {
        (Some(_), Some(_)) => {
            return Err(StorageError::InvalidArgument(
                "list takes `start` or `start-after`, not both".into(),
            ));
        }
        (Some(s), None) => Bound::Included(s.as_bytes().to_vec()),
        (None, Some(s)) => Bound::Excluded(s.as_bytes().to_vec()),
        (None, None) => Bound::Unbounded,
    };
    let mut upper = match &o.end {
        Some(e) => Bound::Excluded(e.as_bytes().to_vec()),
        None => Bound::Unbounded,
    };
    if let Some(prefix) = &o.prefix {
        let p = prefix.as_bytes();
        let below_prefix = match &lower {
            Bound::Unbounded => true,
            Bound::Included(k) | Bound::Excluded(k) => k.as_slice() < p,
        };
        if below_prefix {
            lower = Bound::Included(p.to_vec());
        }
        if let Some(next) = next_prefix(p) {
            let above = match &upper {
                Bound::Unbounded => true,
                Bound::Included(k) | Bound::Excluded(k) => k.as_slice() > next.as_slice(),
            };
            if above {
                upper = Bound::Excluded(next);
            }
        }
    }
    Ok((lower, upper))
}

/// Whether no key lies between the bounds (so that no range is built the wrong way round).
pub fn range_is_empty(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l), Bound::Excluded(u)) | (Bound::Excluded(l), Bound::Included(u)) => {
            l >= u
        }
        // (l, u) holds no key if u is l or l followed by a zero byte.
        (Bound::Excluded(l), Bound::Excluded(u)) => {
            l >= u || (u.len() == l.len() + 1 && u.starts_with(l) && u[l.len()] == 0)
        }
    }
}
