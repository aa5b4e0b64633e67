//! Transactions and the boundaries of events: open, committed, rolled back, discarded.

use super::{Host, all, assert_durable, entries, finish_durably, is_invalid};
use crate::storage::ListOptions;
use futures::executor::block_on;

#[test]
fn commit_or_rollback_without_transaction_is_invalid() {
    let host = Host::new();
    let mut s = host.object("no-tx");
    assert!(is_invalid(s.commit()));
    assert!(is_invalid(s.rollback()));
    s.begin().unwrap();
    s.put("a", b"1".to_vec()).unwrap();
    s.commit().unwrap();
    assert!(is_invalid(s.commit()));
    assert!(is_invalid(s.rollback()));
    // The refused calls changed nothing.
    assert_eq!(all(&s), entries(&[("a", b"1")]));
}

#[test]
fn list_with_start_and_start_after_is_invalid() {
    let host = Host::new();
    let mut s = host.object("list-args");
    s.put("a", b"1".to_vec()).unwrap();
    let both = ListOptions {
        start: Some("a".into()),
        start_after: Some("a".into()),
        ..ListOptions::default()
    };
    assert!(is_invalid(s.list(&both)));
    // Even when the range or the limit would make the listing empty.
    let empty = ListOptions {
        end: Some(String::new()),
        limit: Some(0),
        ..both
    };
    assert!(is_invalid(s.list(&empty)));
}

#[test]
fn open_transaction_is_rolled_back_at_finish_event() {
    let host = Host::new();
    let mut s = host.object("open-tx");
    s.put("base", b"0".to_vec()).unwrap();
    finish_durably(&mut s, &host);

    // Writes before the first begin are kept; everything inside the open transactions is not,
    // even what a nested commit merged into them.
    s.put("a", b"1".to_vec()).unwrap();
    s.begin().unwrap();
    s.put("b", b"2".to_vec()).unwrap();
    s.delete("base").unwrap();
    s.begin().unwrap();
    s.put("c", b"3".to_vec()).unwrap();
    s.commit().unwrap();
    s.begin().unwrap();
    s.delete_all();
    assert!(all(&s).is_empty());
    let outcome = s.finish_event(host.committer());
    assert!(outcome.is_some());
    let expected = entries(&[("a", b"1"), ("base", b"0")]);
    assert_eq!(all(&s), expected);
    assert_eq!(s.size(), 2 + 5);
    // The next event starts with no transaction open.
    assert!(is_invalid(s.commit()));
    block_on(outcome.unwrap()).unwrap();
    s.prune().unwrap();

    // An event whose every write sits in an open transaction commits nothing.
    s.begin().unwrap();
    s.put("d", b"4".to_vec()).unwrap();
    assert!(s.finish_event(host.committer()).is_none());
    assert_durable(host, s, "open-tx", &expected, 7);
}

#[test]
fn discarded_event_leaves_nothing() {
    let host = Host::new();
    let mut s = host.object("discard");
    s.put("a", b"1".to_vec()).unwrap();
    let first = s.finish_event(host.committer());
    s.put("b", b"2".to_vec()).unwrap();
    s.delete_all();
    s.begin().unwrap();
    s.put("c", b"3".to_vec()).unwrap();
    s.discard_event();
    assert_eq!(all(&s), entries(&[("a", b"1")]));
    assert_eq!(s.size(), 2);
    assert!(
        is_invalid(s.rollback()),
        "the discarded transaction is closed"
    );
    // A failed event's response waits for the commit it may have read from.
    let gate = s
        .last_commit()
        .expect("the first commit is pending or unpruned");
    assert!(futures::future::Shared::ptr_eq(
        &gate,
        first.as_ref().unwrap()
    ));
    block_on(gate).unwrap();
}
