//! Backups: a consistent snapshot of the whole database (objects' storage, alarms, deployed code,
//! apps and their secrets) written to a file of its own while the host serves, and the check a
//! restore makes before it puts such a file in place.
//!
//! The snapshot is one redb read transaction: it sees every table as of one commit, and writers
//! go on meanwhile (redb keeps the pages it reads alive until it ends). The copy is written in
//! transactions of bounded size, so that a large database does not sit in memory.

use super::db::{
    ALARMS, APPS, COMPONENTS, DEPLOYMENTS, Db, ENTRIES, NAMESPACE_SIZES, OBJECT_SIZES, OBJECTS,
    SECRETS, WORKERS,
};
use super::store::DbError;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// Bytes copied in one write transaction of the backup.
const CHUNK_BYTES: usize = 64 << 20;

/// What a backup holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupSize {
    pub entries: u64,
    pub bytes: u64,
}

/// Writes a snapshot of `db` to a new database file at `to`, which must not exist. Blocking.
pub fn write_backup(db: &Db, to: &Path) -> Result<BackupSize, DbError> {
    let source = db.redb()?;
    let snapshot = source.begin_read()?;
    let target = redb::Database::builder().create(to)?;
    let mut size = BackupSize::default();
    copy(&snapshot, &target, ENTRIES, &mut size)?;
    copy(&snapshot, &target, OBJECT_SIZES, &mut size)?;
    copy(&snapshot, &target, OBJECTS, &mut size)?;
    copy(&snapshot, &target, NAMESPACE_SIZES, &mut size)?;
    copy(&snapshot, &target, ALARMS, &mut size)?;
    copy(&snapshot, &target, COMPONENTS, &mut size)?;
    copy(&snapshot, &target, DEPLOYMENTS, &mut size)?;
    copy(&snapshot, &target, APPS, &mut size)?;
    copy(&snapshot, &target, WORKERS, &mut size)?;
    copy(&snapshot, &target, SECRETS, &mut size)?;
    Ok(size)
}

/// Copies one table of the snapshot, in transactions of about [`CHUNK_BYTES`].
fn copy<K, V>(
    snapshot: &redb::ReadTransaction,
    target: &redb::Database,
    table: TableDefinition<K, V>,
    size: &mut BackupSize,
) -> Result<(), DbError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let source = snapshot.open_table(table)?;
    let mut rows = source.iter()?;
    loop {
        let txn = target.begin_write()?;
        let mut more = false;
        {
            let mut copied = txn.open_table(table)?;
            let mut bytes = 0;
            for row in rows.by_ref() {
                let (k, v) = row?;
                let (key, value) = (k.value(), v.value());
                let n = K::as_bytes(&key).as_ref().len() + V::as_bytes(&value).as_ref().len();
                copied.insert(key, value)?;
                bytes += n;
                size.entries += 1;
                size.bytes += n as u64;
                if bytes >= CHUNK_BYTES {
                    more = true;
                    break;
                }
            }
        }
        txn.commit()?;
        if !more {
            return Ok(());
        }
    }
}

/// Checks that `path` is a dohost backup that opens cleanly, and says what it holds: what a
/// restore does before it puts the file in place. Blocking.
pub fn check_backup(path: &Path) -> Result<BackupSize, DbError> {
    let db = redb::Database::open(path)?;
    let txn = db.begin_read()?;
    let mut size = BackupSize::default();
    let mut count = |table: TableDefinition<&[u8], &[u8]>| -> Result<(), DbError> {
        for row in txn.open_table(table)?.iter()? {
            let (k, v) = row?;
            size.entries += 1;
            size.bytes += (k.value().len() + v.value().len()) as u64;
        }
        Ok(())
    };
    count(ENTRIES)?;
    count(ALARMS)?;
    // A backup has every table, even empty ones: this fails on a database that is not ours.
    txn.open_table(COMPONENTS)?;
    txn.open_table(DEPLOYMENTS)?;
    txn.open_table(OBJECT_SIZES)?;
    Ok(size)
}
