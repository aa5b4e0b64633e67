//! The limits on keys, entries, batches, the quota and transaction depth; a refusal changes nothing.

use super::{Host, all, entries, finish_durably, is_invalid, is_limit};
use crate::names::ObjectIdentity;
use crate::storage::{ObjectStorage, StorageLimits};
use futures::executor::block_on;

#[test]
fn key_limit() {
    let host = Host::new();
    let mut s = host.object("keys");
    let ok = "k".repeat(2048);
    let long = "k".repeat(2049);

    s.put(&ok, b"v".to_vec()).unwrap();
    assert_eq!(s.get(&ok).unwrap(), Some(b"v".to_vec()));
    assert!(is_limit(s.put(&long, b"v".to_vec())));
    assert!(is_limit(s.get(&long)));
    assert!(is_limit(s.delete(&long)));
    assert!(is_limit(s.get_many(&[ok.clone(), long.clone()])));
    assert!(is_limit(s.delete_many(&[ok.clone(), long.clone()])));
    // The refused delete-many deleted nothing, not even the valid key before the long one.
    assert_eq!(all(&s), vec![(ok.clone(), b"v".to_vec())]);
    assert_eq!(s.size(), 2049);

    // A multibyte key is measured in bytes: 1024 two-byte characters fit, 1025 do not.
    s.put(&"é".repeat(1024), Vec::new()).unwrap();
    assert!(is_limit(s.put(&"é".repeat(1025), Vec::new())));

    finish_durably(&mut s, &host);
    assert_eq!(s.delete(&ok), Ok(true));
    finish_durably(&mut s, &host);
}

const MIB2: usize = 2 * 1024 * 1024;

#[test]
fn entry_limit() {
    let mut host = Host::new();
    let mut s = host.object("entries");

    s.put("k", vec![7; MIB2 - 1]).unwrap();
    assert!(is_limit(s.put("k", vec![7; MIB2])));
    assert_eq!(s.get("k").unwrap().map(|v| v.len()), Some(MIB2 - 1));
    let key = "x".repeat(2048);
    s.put(&key, vec![1; MIB2 - 2048]).unwrap();
    assert!(is_limit(s.put(&key, vec![1; MIB2 - 2047])));
    assert!(is_limit(s.put_many(vec![("y".into(), vec![0; MIB2])])));
    assert_eq!(s.size(), 2 * MIB2 as u64);

    // Both full-size entries reach the disk intact.
    finish_durably(&mut s, &host);
    drop(s);
    host.restart();
    let s = host.object("entries");
    assert_eq!(s.size(), 2 * MIB2 as u64);
    assert_eq!(s.get("k").unwrap(), Some(vec![7; MIB2 - 1]));
    assert_eq!(s.get(&key).unwrap(), Some(vec![1; MIB2 - 2048]));
    assert_eq!(s.get("y").unwrap(), None);
}

#[test]
fn batch_limit() {
    let host = Host::new();
    let mut s = host.object("batches");
    let keys = |n: usize| (0..n).map(|i| format!("k{i:03}")).collect::<Vec<_>>();
    let batch = |n: usize| {
        keys(n)
            .into_iter()
            .map(|k| (k, b"v".to_vec()))
            .collect::<Vec<_>>()
    };

    assert!(is_limit(s.put_many(batch(129))));
    assert_eq!(s.size(), 0);
    assert!(all(&s).is_empty());
    s.put_many(batch(128)).unwrap();
    assert_eq!(all(&s), batch(128));

    assert_eq!(s.get_many(&keys(128)).unwrap(), batch(128));
    assert!(is_limit(s.get_many(&keys(129))));

    assert!(is_limit(s.delete_many(&keys(129))));
    assert_eq!(all(&s).len(), 128);
    assert_eq!(s.delete_many(&keys(128)), Ok(128));
    assert!(all(&s).is_empty());
    assert_eq!(s.size(), 0);

    // The limit counts keys given, repeats included.
    assert!(is_limit(s.get_many(&vec!["a".to_owned(); 129])));
}

#[test]
fn quota_refusal_changes_nothing() {
    let mut host = Host::new();
    let limits = StorageLimits {
        max_object_bytes: 100,
        ..StorageLimits::default()
    };
    let mut s = host.object_with("quota", limits);

    // 40 durable bytes, 30 pending, 29 in the event: 99.
    s.put("a", vec![1; 39]).unwrap();
    finish_durably(&mut s, &host);
    s.put("b", vec![2; 29]).unwrap();
    let pending = s.finish_event(host.committer());
    s.put("c", vec![3; 28]).unwrap();
    assert_eq!(s.size(), 99);
    let before = all(&s);

    // Over the quota: refused, whether it adds a key, grows one, or sits in a batch.
    assert!(is_limit(s.put("d", vec![4; 2])));
    assert!(is_limit(s.put("a", vec![1; 41])));
    assert!(is_limit(s.put_many(vec![
        ("e".into(), Vec::new()),
        ("f".into(), Vec::new())
    ])));
    assert_eq!(s.size(), 99);
    assert_eq!(all(&s), before);
    assert_eq!(s.get("d").unwrap(), None);
    assert_eq!(s.get("e").unwrap(), None);

    // Exactly at the quota is fine; a key repeated in a batch counts once; replacing and
    // shrinking are measured against the old value.
    s.put("d", Vec::new()).unwrap();
    assert_eq!(s.size(), 100);
    s.put_many(vec![("c".into(), vec![9; 29]), ("c".into(), vec![8; 28])])
        .unwrap();
    assert_eq!(s.size(), 100);
    s.put("a", vec![1; 9]).unwrap();
    assert_eq!(s.size(), 70);
    s.put_many(vec![("x".into(), vec![0; 29])]).unwrap();
    assert_eq!(s.size(), 100);
    let full = all(&s);

    // The size survives the commit and a restart, and still bounds the next event.
    block_on(pending.unwrap()).unwrap();
    finish_durably(&mut s, &host);
    drop(s);
    host.restart();
    let mut s = host.object_with("quota", limits);
    assert_eq!(s.size(), 100);
    assert_eq!(all(&s), full);
    assert!(is_limit(s.put("y", Vec::new())));
    assert_eq!(s.size(), 100);
    assert_eq!(s.delete("x"), Ok(true));
    s.put("y", vec![0; 29]).unwrap();
    assert_eq!(s.size(), 100);
}

#[test]
fn put_many_with_one_bad_entry_writes_nothing() {
    let mut host = Host::new();
    let mut s = host.object("bad-entry");
    s.put("keep", b"old".to_vec()).unwrap();
    let good = |k: &str| (k.to_owned(), b"new".to_vec());

    let bad_batches = [
        vec![good("keep"), good("a"), ("k".repeat(2049), Vec::new())],
        vec![("k".repeat(2049), Vec::new()), good("keep"), good("a")],
        vec![good("keep"), ("big".into(), vec![0; MIB2]), good("a")],
    ];
    for batch in bad_batches {
        assert!(is_limit(s.put_many(batch)));
        assert_eq!(all(&s), entries(&[("keep", b"old")]));
        assert_eq!(s.size(), 7);
    }
    // Nothing of them reaches the disk either.
    finish_durably(&mut s, &host);
    drop(s);
    host.restart();
    let s = host.object("bad-entry");
    assert_eq!(all(&s), entries(&[("keep", b"old")]));
}

#[test]
fn transaction_depth_limit() {
    let host = Host::new();
    let mut s = host.object("depth");
    for i in 0..64 {
        s.begin().unwrap();
        s.put(&format!("k{i:02}"), vec![i]).unwrap();
    }
    assert!(is_limit(s.begin()));
    // The refused begin opened nothing: 64 rollbacks close everything, a 65th is refused.
    for _ in 0..64 {
        s.rollback().unwrap();
    }
    assert!(is_invalid(s.rollback()));
    assert!(all(&s).is_empty());
}

/// The objects of one namespace share its quota: what one stores, another cannot; deleting frees
/// room; a refused put changes nothing; the count survives a restart, from the disk.
#[test]
fn namespace_quota() {
    let mut host = Host::new();
    let limits = StorageLimits {
        max_namespace_bytes: 1000,
        ..StorageLimits::default()
    };
    let mut a = host.object_with("a", limits);
    let mut b = host.object_with("b", limits);
    a.put("k", vec![1; 599]).unwrap();
    finish_durably(&mut a, &host);
    // 600 + 401 > 1000, across objects.
    assert!(is_limit(b.put("k", vec![2; 400])));
    assert_eq!(b.size(), 0);
    b.put("k", vec![2; 399]).unwrap();
    finish_durably(&mut b, &host);
    assert_eq!(host.running().storage.namespace_size("storage-tests"), 1000);
    // Full: growth is refused, a shrinking write is not.
    assert!(is_limit(a.put("k2", vec![])));
    a.put("k", vec![1; 99]).unwrap();
    finish_durably(&mut a, &host);
    assert_eq!(host.running().storage.namespace_size("storage-tests"), 500);
    // Another namespace is not affected.
    let other = ObjectIdentity::new("other", "a");
    let mut c = ObjectStorage::open(&other, &host.running().storage, 0, limits).unwrap();
    c.put("k", vec![3; 900]).unwrap();
    finish_durably(&mut c, &host);

    // From the disk after a restart: the sizes, and the quota.
    drop((a, b, c));
    host.restart();
    assert_eq!(host.running().storage.namespace_size("storage-tests"), 500);
    assert_eq!(host.running().storage.namespace_size("other"), 901);
    let mut b = host.object_with("b", limits);
    assert!(is_limit(b.put("more", vec![0; 500])));
    b.delete_all();
    finish_durably(&mut b, &host);
    assert_eq!(host.running().storage.namespace_size("storage-tests"), 100);
    b.put("more", vec![0; 896]).unwrap();
}

/// An object last written before the objects table existed has its size only in the old table:
/// it is opened with that size, counted toward its namespace from its next write, and that write
/// moves its size into the objects table.
#[test]
fn an_object_sized_in_the_old_table_moves_on_its_next_write() {
    use crate::storage::db::{ENTRIES, OBJECT_SIZES, full_key};
    use redb::ReadableDatabase;
    let mut host = Host::new();
    let id = ObjectIdentity::new("storage-tests", "old").id;
    host.running()
        .storage
        .local
        .write(|db| {
            let txn = db.begin_write()?;
            let full = full_key(&id, b"k");
            txn.open_table(ENTRIES)?
                .insert(full.as_slice(), [7u8; 699].as_slice())?;
            txn.open_table(OBJECT_SIZES)?
                .insert(id.as_bytes().as_slice(), 700)?;
            txn.commit()?;
            Ok(())
        })
        .unwrap();
    let mut old = host.object("old");
    assert_eq!(old.size(), 700);
    assert_eq!(host.running().storage.namespace_size("storage-tests"), 0);
    old.put("k2", vec![1; 10]).unwrap();
    finish_durably(&mut old, &host);
    assert_eq!(host.running().storage.namespace_size("storage-tests"), 712);

    drop(old);
    host.restart();
    let legacy = host
        .running()
        .storage
        .local
        .read(|db| {
            let txn = db.begin_read()?;
            Ok(txn
                .open_table(OBJECT_SIZES)?
                .get(id.as_bytes().as_slice())?
                .is_some())
        })
        .unwrap();
    assert!(!legacy, "the old table still has its size");
    assert_eq!(host.object("old").size(), 712);
    assert_eq!(host.running().storage.namespace_size("storage-tests"), 712);
}
