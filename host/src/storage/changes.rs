//! What one event changes in an object's storage: the unit the object hands to the committer and
//! the committer writes. The bottom of the storage modules, so that every other one can use it.

use std::collections::BTreeMap;
use std::sync::Arc;

/// An object's alarm: when, and whom to wake (the scheduler needs the address, not just the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// A set of writes: `None` deletes. With `clear`, every key not in `writes` is gone. `alarm` is
/// `Some(new)` if the alarm was set (`Some(None)`: deleted); `delete_all` leaves the alarm alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changeset {
    pub clear: bool,
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub alarm: Option<Option<Alarm>>,
}

impl Changeset {
    /// `Some(value)` if this layer decides the key (`Some(None)`: deleted), `None` to look below.
    pub(super) fn lookup(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        match self.writes.get(key) {
            Some(v) => Some(v.as_deref()),
            None if self.clear => Some(None),
            None => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.clear && self.writes.is_empty() && self.alarm.is_none()
    }
}
