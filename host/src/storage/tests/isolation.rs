//! Objects sharing one database, and commits nobody awaited.

use super::{Host, all, entries, finish_durably};
use crate::storage::ListOptions;
use futures::executor::block_on;

#[test]
fn objects_sharing_a_database_are_isolated() {
    let mut host = Host::new();
    let mut a = host.object("alice");
    let mut b = host.object("bob");

    a.put_many(entries(&[("", b"a0"), ("k", b"a1"), ("z", b"a2")]))
        .unwrap();
    b.put_many(entries(&[("k", b"b1"), ("m", b"b2")])).unwrap();
    finish_durably(&mut a, &host);
    let b_pending = b.finish_event(host.committer()).unwrap();
    assert_eq!(a.get("m").unwrap(), None);
    assert_eq!(b.get("z").unwrap(), None);
    assert_eq!(b.get("").unwrap(), None);

    // One object's delete-all leaves the other's keys, durable or pending.
    a.delete_all();
    let a_cleared = a.finish_event(host.committer()).unwrap();
    block_on(a_cleared).unwrap();
    block_on(b_pending).unwrap();
    a.prune().unwrap();
    b.prune().unwrap();
    assert!(all(&a).is_empty());
    assert_eq!(a.size(), 0);
    let b_all = entries(&[("k", b"b1"), ("m", b"b2")]);
    assert_eq!(all(&b), b_all);
    assert_eq!(b.size(), 6);
    a.put("a", b"x".to_vec()).unwrap();
    finish_durably(&mut a, &host);

    drop((a, b));
    host.restart();
    let a = host.object("alice");
    let b = host.object("bob");
    assert_eq!(all(&a), entries(&[("a", b"x")]));
    assert_eq!(a.size(), 2);
    assert_eq!(all(&b), b_all);
    assert_eq!(b.size(), 6);
    // A reverse listing of one object does not run into the keys of the next id.
    let reversed = ListOptions {
        reverse: true,
        ..ListOptions::default()
    };
    assert_eq!(s_keys(&b.list(&reversed).unwrap()), ["m", "k"]);
    assert_eq!(s_keys(&a.list(&reversed).unwrap()), ["a"]);
}

fn s_keys(entries: &[(String, Vec<u8>)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.as_str()).collect()
}

/// `prune` must see a commit as durable even if nobody awaited its outcome (the client went away
/// before the response): otherwise it stays at the front of `pending` for good, and every later
/// layer piles up behind it.
#[test]
fn prune_drops_durable_commits_nobody_awaited() {
    let host = Host::new();
    let mut s = host.object("unawaited");
    s.put("a", b"1".to_vec()).unwrap();
    // The response that would have waited for this commit went away (its client disconnected).
    drop(s.finish_event(host.committer()));
    s.put("b", b"2".to_vec()).unwrap();
    let second = s.finish_event(host.committer()).unwrap();
    // The commit thread applies commits in order: once the second is durable, so is the first.
    block_on(second).unwrap();
    s.prune().unwrap();
    assert!(s.last_commit().is_none(), "durable layers are left pending");
}
