//! `dohost:object/storage`: the object's transactional key-value storage and its alarm. The same
//! interface in 0.2.0 and 0.3.0, implemented once for both.

use crate::runtime::state::HostState;
use crate::storage;

macro_rules! storage_host {
    ($version:ident) => {
        mod $version {
            use super::HostState;
            use crate::runtime::bindings::$version::dohost::object::storage::{
                Host, ListOptions, StorageError,
            };
            use crate::storage;

            type StorageResult<T> = Result<T, StorageError>;

            fn to_wit<T>(r: Result<T, storage::StorageError>) -> StorageResult<T> {
                r.map_err(|e| match e {
                    storage::StorageError::LimitExceeded(m) => StorageError::LimitExceeded(m),
                    storage::StorageError::InvalidArgument(m) => StorageError::InvalidArgument(m),
                    storage::StorageError::Internal(m) => StorageError::Internal(m),
                })
            }

            impl Host for HostState {
                fn get(&mut self, key: String) -> StorageResult<Option<Vec<u8>>> {
                    to_wit(self.storage().and_then(|s| s.get(&key)))
                }

                fn get_many(&mut self, keys: Vec<String>) -> StorageResult<Vec<(String, Vec<u8>)>> {
                    to_wit(self.storage().and_then(|s| s.get_many(&keys)))
                }

                fn put(&mut self, key: String, value: Vec<u8>) -> StorageResult<()> {
                    to_wit(self.storage().and_then(|s| s.put(&key, value)))
                }

                fn put_many(&mut self, entries: Vec<(String, Vec<u8>)>) -> StorageResult<()> {
                    to_wit(self.storage().and_then(|s| s.put_many(entries)))
                }

                fn delete(&mut self, key: String) -> StorageResult<bool> {
                    to_wit(self.storage().and_then(|s| s.delete(&key)))
                }

                fn delete_many(&mut self, keys: Vec<String>) -> StorageResult<u32> {
                    to_wit(self.storage().and_then(|s| s.delete_many(&keys)))
                }

                fn list(&mut self, o: ListOptions) -> StorageResult<Vec<(String, Vec<u8>)>> {
                    let options = storage::ListOptions {
                        prefix: o.prefix,
                        start: o.start,
                        start_after: o.start_after,
                        end: o.end,
                        reverse: o.reverse,
                        limit: o.limit,
                    };
                    to_wit(self.storage().and_then(|s| s.list(&options)))
                }

                fn delete_all(&mut self) -> StorageResult<()> {
                    to_wit(self.storage().map(|s| s.delete_all()))
                }

                fn transaction_begin(&mut self) -> StorageResult<()> {
                    to_wit(self.storage().and_then(|s| s.begin()))
                }

                fn transaction_commit(&mut self) -> StorageResult<()> {
                    to_wit(self.storage().and_then(|s| s.commit()))
                }

                fn transaction_rollback(&mut self) -> StorageResult<()> {
                    to_wit(self.storage().and_then(|s| s.rollback()))
                }

                fn get_alarm(&mut self) -> StorageResult<Option<u64>> {
                    to_wit(self.storage().and_then(|s| s.get_alarm()))
                }

                fn set_alarm(&mut self, scheduled_time_ms: u64) -> StorageResult<()> {
                    let alarm = self.alarm_at(scheduled_time_ms);
                    to_wit(self.storage().map(|s| s.set_alarm(alarm)))
                }

                fn delete_alarm(&mut self) -> StorageResult<()> {
                    to_wit(self.storage().map(|s| s.delete_alarm()))
                }
            }
        }
    };
}

storage_host!(v0_2);
storage_host!(v0_3);

impl HostState {
    /// This object's alarm at `at`: the scheduler needs its address, not just its id.
    fn alarm_at(&self, at: u64) -> storage::Alarm {
        storage::Alarm {
            at,
            namespace: self.identity.namespace.as_str().into(),
            name: self.identity.name.as_str().into(),
        }
    }
}
