//! The object's private, transactional key-value storage.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, StorageError};
use dohost_shared_object_bindings::dohost::object::storage as wit;

/// The object's private key-value storage, from [`State::storage`](crate::State::storage).
///
/// Keys are UTF-8 strings ordered by their bytes; values are bytes. The typed methods
/// ([`get`](Self::get), [`put`](Self::put), ...) store values as JSON through serde; the `_bytes`
/// methods store raw bytes. Each object sees only its own keys.
///
/// Every call goes straight to the host, and reads see the current event's earlier writes. All
/// writes of one event are committed together when its handler (such as
/// [`fetch`](crate::DurableObject::fetch)) returns `Ok`, and the response is only sent once they
/// are durable. If the event fails
/// (`Err`, a panic, or an exhausted CPU or memory limit) all its writes are discarded.
///
/// Limits: a key is at most 2 KiB, a key and value together at most 2 MiB, a batch at most 128
/// keys; exceeding one gives [`StorageError::LimitExceeded`] and changes nothing.
///
/// A zero-sized handle: copy it freely.
#[derive(Clone, Copy, Debug)]
pub struct Storage {
    _private: (),
}

/// Which keys [`Storage::list`] returns, built like
/// `ListOptions::new().prefix("user:").limit(10)`.
///
/// With nothing set, every key is returned in ascending order.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    prefix: Option<String>,
    start: Option<String>,
    start_after: Option<String>,
    end: Option<String>,
    reverse: bool,
    limit: Option<u32>,
}

/// Defines the [`ListOptions`] setters of its `Option<String>` fields, which all work alike: each
/// takes the field's name and doc comment.
macro_rules! string_setters {
    ($($(#[doc = $doc:literal])* $field:ident,)*) => {$(
        $(#[doc = $doc])*
        #[must_use]
        pub fn $field(mut self, $field: impl Into<String>) -> Self {
            self.$field = Some($field.into());
            self
        }
    )*};
}

impl ListOptions {
    /// Options that select every key, in ascending order.
    pub fn new() -> Self {
        Self::default()
    }

    string_setters! {
        /// Only keys that begin with `prefix`.
        prefix,
        /// Only keys greater than or equal to `start`. Exclusive with
        /// [`start_after`](Self::start_after).
        start,
        /// Only keys strictly greater than `start_after`: pass the last key of one page to get the
        /// next. Exclusive with [`start`](Self::start).
        start_after,
        /// Only keys strictly less than `end`.
        end,
    }

    /// Descending order when `true`; the [`limit`](Self::limit) then keeps the greatest keys.
    #[must_use]
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// At most `limit` entries.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

impl From<ListOptions> for wit::ListOptions {
    fn from(o: ListOptions) -> Self {
        wit::ListOptions {
            prefix: o.prefix,
            start: o.start,
            start_after: o.start_after,
            end: o.end,
            reverse: o.reverse,
            limit: o.limit,
        }
    }
}

impl From<wit::StorageError> for StorageError {
    fn from(e: wit::StorageError) -> Self {
        match e {
            wit::StorageError::LimitExceeded(m) => StorageError::LimitExceeded(m),
            wit::StorageError::InvalidArgument(m) => StorageError::InvalidArgument(m),
            wit::StorageError::Internal(m) => StorageError::Internal(m),
        }
    }
}

/// Calls a storage import and converts its error.
fn host<T>(result: std::result::Result<T, wit::StorageError>) -> Result<T> {
    result.map_err(|e| StorageError::from(e).into())
}

/// Parses every value of `entries` as JSON.
fn parse_entries<T: DeserializeOwned>(entries: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, T)>> {
    entries
        .into_iter()
        .map(|(key, value)| Ok((key, serde_json::from_slice(&value)?)))
        .collect()
}

fn owned_keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

impl Storage {
    pub(crate) fn new() -> Self {
        Storage { _private: () }
    }

    /// The value stored under `key`, parsed from JSON, or `None` if there is none.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_bytes(key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` as JSON under `key`, replacing any earlier value.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.put_bytes(key, &serde_json::to_vec(value)?)
    }

    /// The bytes stored under `key`, or `None` if there are none.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        host(wit::get(key))
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn put_bytes(&self, key: &str, value: &[u8]) -> Result<()> {
        host(wit::put(key, value))
    }

    /// Deletes `key`. Returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        host(wit::delete(key))
    }

    /// The values, parsed from JSON, of those of `keys` that exist, in ascending key order. At
    /// most 128 keys.
    pub fn get_many<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<Vec<(String, T)>> {
        parse_entries(self.get_many_bytes(keys)?)
    }

    /// The bytes of those of `keys` that exist, in ascending key order. At most 128 keys.
    pub fn get_many_bytes(&self, keys: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
        host(wit::get_many(&owned_keys(keys)))
    }

    /// Stores every entry's value as JSON, all or none. At most 128 entries.
    pub fn put_many<T: Serialize>(&self, entries: &[(&str, T)]) -> Result<()> {
        let entries = entries
            .iter()
            .map(|(key, value)| Ok(((*key).to_owned(), serde_json::to_vec(value)?)))
            .collect::<Result<Vec<_>>>()?;
        host(wit::put_many(&entries))
    }

    /// Stores every entry's bytes, all or none. At most 128 entries.
    pub fn put_many_bytes(&self, entries: &[(&str, &[u8])]) -> Result<()> {
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_vec()))
            .collect();
        host(wit::put_many(&entries))
    }

    /// Deletes every one of `keys`. Returns how many of them existed. At most 128 keys.
    pub fn delete_many(&self, keys: &[&str]) -> Result<u32> {
        host(wit::delete_many(&owned_keys(keys)))
    }

    /// The entries selected by `options`, values parsed from JSON, ordered by key.
    pub fn list<T: DeserializeOwned>(&self, options: ListOptions) -> Result<Vec<(String, T)>> {
        parse_entries(self.list_bytes(options)?)
    }

    /// The entries selected by `options`, as bytes, ordered by key.
    pub fn list_bytes(&self, options: ListOptions) -> Result<Vec<(String, Vec<u8>)>> {
        host(wit::list(&options.into()))
    }

    /// Deletes every key of this object.
    pub fn delete_all(&self) -> Result<()> {
        host(wit::delete_all())
    }

    /// Runs `f` inside a storage transaction: its writes are kept if it returns `Ok` and all
    /// undone if it returns `Err`, which is then returned.
    ///
    /// Why, when events already run one at a time and fail as a whole? So that `fetch` can
    /// catch a failed step, answer something sensible (say a 409) and still commit its other
    /// writes, without leaving half of the step behind. Transactions nest: `f` may call
    /// `transaction` again.
    ///
    /// # Panics
    ///
    /// If `f` panics the whole event fails, which discards its writes anyway. If the host cannot
    /// undo the transaction (only possible if `f` closed it itself with
    /// [`commit_transaction`](Self::commit_transaction) or
    /// [`rollback_transaction`](Self::rollback_transaction), or on a host fault), this panics
    /// rather than let the event commit half of `f`'s writes.
    pub fn transaction<R>(&self, f: impl FnOnce(&Storage) -> Result<R>) -> Result<R> {
        self.begin_transaction()?;
        let outcome = f(self).and_then(|value| self.commit_transaction().map(|()| value));
        if outcome.is_err() {
            // A refused commit leaves the transaction open: close it, or every later write of
            // the event would silently belong to it and be undone when the event ends.
            if let Err(e) = self.rollback_transaction() {
                panic!("could not roll back a failed storage transaction: {e}");
            }
        }
        outcome
    }

    /// When the object's alarm is set to fire, in milliseconds since the Unix epoch, or `None` if
    /// no alarm is set.
    pub fn get_alarm(&self) -> Result<Option<u64>> {
        host(wit::get_alarm())
    }

    /// Sets the object's one alarm to fire at `scheduled_time_ms` (milliseconds since the Unix
    /// epoch, see [`now_ms`](crate::now_ms); a time in the past fires at once), replacing any
    /// earlier alarm.
    ///
    /// The host then calls [`DurableObject::alarm`](crate::DurableObject::alarm) at or after
    /// that time, waking the object if it sleeps, even after a restart of the host: this is how
    /// an object does work later without a request, such as expiring a session. Like every write
    /// it takes effect when the event commits, and is undone with its transaction or event.
    pub fn set_alarm(&self, scheduled_time_ms: u64) -> Result<()> {
        host(wit::set_alarm(scheduled_time_ms))
    }

    /// Cancels the object's alarm, if any. Takes effect when the event commits.
    pub fn delete_alarm(&self) -> Result<()> {
        host(wit::delete_alarm())
    }

    /// Opens a transaction by hand; prefer [`transaction`](Self::transaction).
    ///
    /// Every write made after this call belongs to the innermost open transaction until it is
    /// committed or rolled back. Transactions nest, at most 64 deep; one still open when the
    /// event ends is rolled back. This is the raw host call, for code that cannot be written as a
    /// closure.
    pub fn begin_transaction(&self) -> Result<()> {
        host(wit::transaction_begin())
    }

    /// Keeps the writes of the innermost open transaction as part of the event (or of the
    /// enclosing transaction). Fails with [`StorageError::InvalidArgument`] if none is open.
    pub fn commit_transaction(&self) -> Result<()> {
        host(wit::transaction_commit())
    }

    /// Undoes every write of the innermost open transaction and closes it. Fails with
    /// [`StorageError::InvalidArgument`] if none is open.
    pub fn rollback_transaction(&self) -> Result<()> {
        host(wit::transaction_rollback())
    }
}
