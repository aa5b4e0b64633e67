//! `dohost:object/storage`: the object's transactional key-value storage and its alarm.

use crate::runtime::bindings::dohost::object::storage as wit_storage;
use crate::runtime::state::HostState;
use crate::storage;

type StorageResult<T> = Result<T, wit_storage::StorageError>;

fn to_wit<T>(r: Result<T, storage::StorageError>) -> StorageResult<T> {
    r.map_err(|e| match e {
        storage::StorageError::LimitExceeded(m) => wit_storage::StorageError::LimitExceeded(m),
        storage::StorageError::InvalidArgument(m) => wit_storage::StorageError::InvalidArgument(m),
        storage::StorageError::Internal(m) => wit_storage::StorageError::Internal(m),
    })
}

impl wit_storage::Host for HostState {
    fn get(&mut self, key: String) -> StorageResult<Option<Vec<u8>>> {
        to_wit(self.storage.get(&key))
    }

    fn get_many(&mut self, keys: Vec<String>) -> StorageResult<Vec<(String, Vec<u8>)>> {
        to_wit(self.storage.get_many(&keys))
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> StorageResult<()> {
        to_wit(self.storage.put(&key, value))
    }

    fn put_many(&mut self, entries: Vec<(String, Vec<u8>)>) -> StorageResult<()> {
        to_wit(self.storage.put_many(entries))
    }

    fn delete(&mut self, key: String) -> StorageResult<bool> {
        to_wit(self.storage.delete(&key))
    }

    fn delete_many(&mut self, keys: Vec<String>) -> StorageResult<u32> {
        to_wit(self.storage.delete_many(&keys))
    }

    fn list(&mut self, o: wit_storage::ListOptions) -> StorageResult<Vec<(String, Vec<u8>)>> {
        to_wit(self.storage.list(&storage::ListOptions {
            prefix: o.prefix,
            start: o.start,
            start_after: o.start_after,
            end: o.end,
            reverse: o.reverse,
            limit: o.limit,
        }))
    }

    fn delete_all(&mut self) -> StorageResult<()> {
        self.storage.delete_all();
        Ok(())
    }

    fn transaction_begin(&mut self) -> StorageResult<()> {
        to_wit(self.storage.begin())
    }

    fn transaction_commit(&mut self) -> StorageResult<()> {
        to_wit(self.storage.commit())
    }

    fn transaction_rollback(&mut self) -> StorageResult<()> {
        to_wit(self.storage.rollback())
    }

    fn get_alarm(&mut self) -> StorageResult<Option<u64>> {
        to_wit(self.storage.get_alarm())
    }

    fn set_alarm(&mut self, scheduled_time_ms: u64) -> StorageResult<()> {
        self.storage.set_alarm(storage::Alarm {
            at: scheduled_time_ms,
            namespace: self.identity.namespace.as_str().into(),
            name: self.identity.name.as_str().into(),
        });
        Ok(())
    }

    fn delete_alarm(&mut self) -> StorageResult<()> {
        self.storage.delete_alarm();
        Ok(())
    }
}
