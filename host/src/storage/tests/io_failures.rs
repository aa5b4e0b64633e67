//! The database after an I/O failure: redb refuses every later access until it is opened again,
//! which [`Db`] does, so a full disk stops writes and nothing else.

use crate::names::ObjectId;
use crate::storage::db::ENTRIES;
use crate::storage::{Db, ObjectStore, SimulatedDisk};

fn insert(db: &Db, key: &[u8], value: &[u8]) -> Result<(), crate::storage::DbError> {
    db.write(|db| {
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?.insert(key, value)?;
        Ok(txn.commit()?)
    })
}

#[test]
fn reads_go_on_after_a_write_fails_for_a_full_disk_and_writes_resume_with_space() {
    let disk = SimulatedDisk::new();
    let file = disk.file();
    let db = Db::open_with_backend(move || Ok(file.clone()), 1 << 20).expect("open");
    let id = ObjectId::new("io-failures", "a");
    let key = crate::storage::keys::full_key(&id, b"k");
    insert(&db, &key, b"before").expect("a write with space");

    disk.set_full(true);
    let failed = insert(&db, &key, &vec![7; 1 << 20]).expect_err("a megabyte needs new blocks");
    assert!(failed.is_full(), "{failed}");
    assert_eq!(
        db.get(&id, b"k").expect("a read after the failure"),
        Some(b"before".to_vec())
    );

    disk.set_full(false);
    insert(&db, &key, b"after").expect("a write once there is space");
    assert_eq!(db.get(&id, b"k").unwrap(), Some(b"after".to_vec()));
    drop(db);
    // What was written is durable, and the database opens cleanly.
    disk.cut_power();
    let file = disk.file();
    let db = Db::open_with_backend(move || Ok(file.clone()), 1 << 20).expect("open again");
    assert_eq!(db.get(&id, b"k").unwrap(), Some(b"after".to_vec()));
}
