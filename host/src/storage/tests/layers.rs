//! Reads that merge the current event, pending commits and the database.

use super::{Host, all, assert_durable, entries, finish_durably, listed, strings};
use crate::storage::{ListOptions, ObjectStorage};
use futures::executor::block_on;
use std::collections::BTreeMap;

#[test]
fn delete_all_then_puts_and_list_across_pending_clear() {
    let host = Host::new();
    let mut s = host.object("delete-all");
    s.put_many(entries(&[
        ("a", b"durable"),
        ("m", b"durable"),
        ("z", b"durable"),
    ]))
    .unwrap();
    finish_durably(&mut s, &host);

    // Event 1: delete everything, then write some keys back, one of them an old one.
    s.delete_all();
    assert_eq!(s.size(), 0);
    assert!(all(&s).is_empty());
    assert_eq!(s.get("a").unwrap(), None);
    s.put("m", b"new".to_vec()).unwrap();
    s.put("b", b"new".to_vec()).unwrap();
    assert_eq!(s.get("a").unwrap(), None);
    assert_eq!(s.get("m").unwrap(), Some(b"new".to_vec()));
    assert_eq!(s.delete("z"), Ok(false));
    let after_clear = entries(&[("b", b"new"), ("m", b"new")]);
    assert_eq!(all(&s), after_clear);
    assert_eq!(s.size(), 8);
    let cleared = s.finish_event(host.committer()).unwrap();

    // Event 2, with the clear still pending (never awaited here): the durable keys stay hidden
    // from gets, lists in both directions, and batch reads.
    assert_eq!(all(&s), after_clear);
    assert_eq!(s.get("z").unwrap(), None);
    assert_eq!(
        s.get_many(&strings(&["a", "b", "m", "z"])).unwrap(),
        after_clear
    );
    let reversed = ListOptions {
        reverse: true,
        ..ListOptions::default()
    };
    assert_eq!(
        s.list(&reversed).unwrap(),
        entries(&[("m", b"new"), ("b", b"new")])
    );
    s.put("a", b"again".to_vec()).unwrap();
    s.put("c", b"event".to_vec()).unwrap();
    assert_eq!(s.delete("m"), Ok(true));
    let expected = entries(&[("a", b"again"), ("b", b"new"), ("c", b"event")]);
    assert_eq!(all(&s), expected);
    assert_eq!(s.size(), 6 + 4 + 6);
    let second = s.finish_event(host.committer()).unwrap();
    assert_eq!(all(&s), expected);

    // A second delete-all on top of the pending layers, then a rollback of it.
    s.begin().unwrap();
    s.delete_all();
    assert!(all(&s).is_empty());
    s.rollback().unwrap();
    assert_eq!(all(&s), expected);
    assert_eq!(s.size(), 16);

    block_on(cleared).unwrap();
    block_on(second).unwrap();
    s.prune().unwrap();
    assert!(s.last_commit().is_none());
    assert_durable(host, s, "delete-all", &expected, 16);
}

#[test]
fn list_limit_and_reverse_over_every_layer() {
    let host = Host::new();
    let mut s = host.object("layers");
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut put = |s: &mut ObjectStorage, k: &str, v: &str| {
        s.put(k, v.as_bytes().to_vec()).unwrap();
        model.insert(k.to_owned(), v.as_bytes().to_vec());
    };

    // Durable: a c e g i k.
    for k in ["a", "c", "e", "g", "i", "k"] {
        put(&mut s, k, "durable");
    }
    finish_durably(&mut s, &host);
    // Pending (not awaited): b, c replaced, e deleted, j.
    put(&mut s, "b", "pending");
    put(&mut s, "c", "pending");
    assert_eq!(s.delete("e"), Ok(true));
    put(&mut s, "j", "pending");
    let pending = s.finish_event(host.committer()).unwrap();
    // Current event: d, g deleted, j replaced, a replaced, e back, l.
    put(&mut s, "d", "event");
    assert_eq!(s.delete("g"), Ok(true));
    put(&mut s, "j", "event");
    put(&mut s, "a", "event");
    put(&mut s, "e", "event");
    put(&mut s, "l", "event");
    model.remove("g");

    let bounds = [
        None,
        Some("a"),
        Some("c"),
        Some("d"),
        Some("f"),
        Some("l"),
        Some("z"),
    ];
    let mut checked = 0;
    for reverse in [false, true] {
        for limit in [None, Some(0), Some(1), Some(2), Some(3), Some(5), Some(100)] {
            for start in bounds {
                for end in bounds {
                    let options = ListOptions {
                        start: start.map(str::to_owned),
                        end: end.map(str::to_owned),
                        reverse,
                        limit,
                        ..ListOptions::default()
                    };
                    let expected = listed(&model, &options);
                    assert_eq!(s.list(&options).unwrap(), expected, "{options:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 7 * 7 * 7);
    assert_eq!(
        s.list(&ListOptions {
            reverse: true,
            limit: Some(4),
            ..ListOptions::default()
        })
        .unwrap(),
        entries(&[
            ("l", b"event"),
            ("k", b"durable"),
            ("j", b"event"),
            ("i", b"durable")
        ])
    );
    block_on(pending).unwrap();
}
