//! The storage key encoding and `list`: for arbitrary object ids, keys and list options, the
//! database range holds exactly the keys a plain filter selects, and never another object's; and
//! `ObjectStorage::list`, merging the event's writes and pending commits over a real redb,
//! agrees with a `BTreeMap` model (with neighbouring objects' keys right next to it on disk).
#![no_main]

use arbitrary::Arbitrary;
use dohost::names::ObjectId;
use dohost::storage::keys::{
    bound_slice, full_key, list_bounds, next_prefix, object_range, range_is_empty,
};
use dohost::storage::{Committer, Db, ListOptions, ObjectStorage, StorageError, StorageLimits};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

#[derive(Arbitrary, Debug, Clone)]
struct Options {
    prefix: Option<String>,
    start: Option<String>,
    start_after: Option<String>,
    end: Option<String>,
    reverse: bool,
    limit: Option<u8>,
}

impl Options {
    fn to_list(&self) -> ListOptions {
        ListOptions {
            prefix: self.prefix.clone(),
            start: self.start.clone(),
            start_after: self.start_after.clone(),
            end: self.end.clone(),
            reverse: self.reverse,
            limit: self.limit.map(u32::from),
        }
    }

    /// The model: whether `list` selects `key`.
    fn selects(&self, key: &str) -> bool {
        self.prefix
            .as_ref()
            .is_none_or(|p| key.starts_with(p.as_str()))
            && self.start.as_ref().is_none_or(|s| key >= s.as_str())
            && self.start_after.as_ref().is_none_or(|s| key > s.as_str())
            && self.end.as_ref().is_none_or(|e| key < e.as_str())
    }

    /// The model's listing of `entries`.
    fn list(&self, entries: &BTreeMap<String, Vec<u8>>) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = entries
            .iter()
            .filter(|(k, _)| self.selects(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.reverse {
            out.reverse();
        }
        out.truncate(self.limit.map_or(usize::MAX, usize::from));
        out
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Put(String, u8),
    Delete(String),
    DeleteAll,
    Begin,
    Commit,
    Rollback,
    /// The event succeeds; `true` waits until it is durable, `false` leaves a pending layer.
    Finish(bool),
    /// The event fails.
    Discard,
    List(Options),
}

#[derive(Arbitrary, Debug)]
struct Input {
    id: [u8; 32],
    keys: BTreeSet<String>,
    others: Vec<([u8; 32], String)>,
    options: Options,
    /// The fill byte of the stored object's id (0x00 and 0xff put it at the edges).
    fill: u8,
    neighbour_keys: Vec<String>,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    pure(&input);
    if !input.ops.is_empty() {
        stored(&input);
    }
});

fn contains(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>), key: &[u8]) -> bool {
    let above = match &range.0 {
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match &range.1 {
        Bound::Included(u) => key <= u.as_slice(),
        Bound::Excluded(u) => key < u.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}

/// The encoding alone, against a filter.
fn pure(input: &Input) {
    let id = ObjectId::from_bytes(input.id);
    let options = input.options.to_list();
    let bounds = match list_bounds(&options) {
        Ok(b) => b,
        Err(StorageError::InvalidArgument(_)) => {
            assert!(options.start.is_some() && options.start_after.is_some());
            return;
        }
        Err(e) => panic!("list_bounds: {e}"),
    };
    let expected: BTreeSet<Vec<u8>> = input
        .keys
        .iter()
        .filter(|k| input.options.selects(k))
        .map(|k| full_key(&id, k.as_bytes()))
        .collect();
    // The user-level bounds select exactly the model's keys.
    for k in &input.keys {
        assert_eq!(
            contains(&bounds, k.as_bytes()),
            input.options.selects(k),
            "{k:?}"
        );
    }
    if range_is_empty(&bounds.0, &bounds.1) {
        assert!(expected.is_empty(), "an empty range, yet {expected:?}");
        return;
    }
    let range = object_range(&id, bound_slice(&bounds.0), bound_slice(&bounds.1));
    // Every full key on disk: this object's and other objects' (random, and the adjacent ids).
    let mut all: BTreeSet<Vec<u8>> = input
        .keys
        .iter()
        .map(|k| full_key(&id, k.as_bytes()))
        .collect();
    for (other, key) in &input.others {
        if *other != input.id {
            all.insert(full_key(&ObjectId::from_bytes(*other), key.as_bytes()));
        }
    }
    for neighbour in [step(input.id, true), step(input.id, false)]
        .into_iter()
        .flatten()
    {
        for key in &input.keys {
            all.insert(full_key(&ObjectId::from_bytes(neighbour), key.as_bytes()));
        }
        all.insert(neighbour.to_vec());
    }
    // A BTreeSet range panics on reversed bounds, as a database range may: it must not here.
    let got: BTreeSet<Vec<u8>> = all
        .range::<[u8], _>((bound_slice(&range.0), bound_slice(&range.1)))
        .cloned()
        .collect();
    assert_eq!(got, expected);
    // The whole-object range holds every key of the object and nothing else.
    let whole = object_range(&id, Bound::Unbounded, Bound::Unbounded);
    for k in &all {
        assert_eq!(contains(&whole, k), k.starts_with(&input.id), "{k:?}");
    }
    // next_prefix is the prefix with its last non-0xff byte incremented, the rest dropped.
    for key in input
        .keys
        .iter()
        .map(String::as_bytes)
        .chain([input.id.as_slice()])
    {
        match next_prefix(key) {
            Some(next) => {
                let cut = next.len() - 1;
                assert_eq!(next[..cut], key[..cut]);
                assert_eq!(next[cut], key[cut] + 1);
                assert!(key[cut + 1..].iter().all(|&b| b == 0xff));
            }
            None => assert!(key.iter().all(|&b| b == 0xff)),
        }
    }
}

/// The id one above (`up`) or below, if any.
fn step(mut id: [u8; 32], up: bool) -> Option<[u8; 32]> {
    for b in id.iter_mut().rev() {
        let (v, carry) = if up {
            b.overflowing_add(1)
        } else {
            b.overflowing_sub(1)
        };
        *b = v;
        if !carry {
            return Some(id);
        }
    }
    None
}

/// A database with its commit thread, for the whole fuzzing run.
struct Host {
    db: Arc<Db>,
    committer: Committer,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory").keep();
        let db = Arc::new(Db::open(&dir.join("fuzz.redb"), 64 << 20).expect("open the database"));
        let (committer, _thread) =
            Committer::start(db.clone(), Box::new(|_, _| {})).expect("start the commit thread");
        Host { db, committer }
    })
}

/// Short keys, so that they collide and nest as prefixes.
fn short(key: &str) -> String {
    key.chars().take(6).collect()
}

/// `ObjectStorage` over a real database, against a model.
fn stored(input: &Input) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = host();
    // A fresh object each run: a counter in steps of 4 (so that no run's neighbours are another
    // run's object), then the fill byte.
    let mut id = [input.fill; 32];
    id[..8].copy_from_slice(&(NEXT.fetch_add(1, Ordering::Relaxed) * 4).to_be_bytes());
    let limits = StorageLimits::default();
    for neighbour in [step(id, true), step(id, false)].into_iter().flatten() {
        let mut s = ObjectStorage::open(ObjectId::from_bytes(neighbour), host.db.clone(), limits)
            .expect("open");
        for key in input.neighbour_keys.iter().take(8) {
            s.put(&short(key), b"neighbour".to_vec()).expect("put");
        }
        if let Some(outcome) = s.finish_event(&host.committer) {
            block_on(outcome).expect("commit");
        }
    }
    let id = ObjectId::from_bytes(id);
    let mut s = ObjectStorage::open(id, host.db.clone(), limits).expect("open");
    let mut committed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut current = committed.clone();
    let mut savepoints: Vec<BTreeMap<String, Vec<u8>>> = Vec::new();
    for op in input.ops.iter().take(64) {
        match op {
            Op::Put(k, v) => {
                s.put(&short(k), vec![*v]).expect("put");
                current.insert(short(k), vec![*v]);
            }
            Op::Delete(k) => {
                let existed = s.delete(&short(k)).expect("delete");
                assert_eq!(existed, current.remove(&short(k)).is_some());
            }
            Op::DeleteAll => {
                s.delete_all();
                current.clear();
            }
            Op::Begin => {
                if savepoints.len() < 64 {
                    s.begin().expect("begin");
                    savepoints.push(current.clone());
                }
            }
            Op::Commit => {
                assert_eq!(s.commit().is_ok(), savepoints.pop().is_some());
            }
            Op::Rollback => {
                assert_eq!(s.rollback().is_ok(), savepoints.first().is_some());
                if let Some(saved) = savepoints.pop() {
                    current = saved;
                }
            }
            Op::Finish(wait) => {
                if let Some(saved) = savepoints.drain(..).next() {
                    current = saved;
                }
                let outcome = s.finish_event(&host.committer);
                if let (true, Some(outcome)) = (wait, outcome) {
                    block_on(outcome).expect("commit");
                    s.prune().expect("prune");
                }
                committed = current.clone();
            }
            Op::Discard => {
                s.discard_event();
                savepoints.clear();
                current = committed.clone();
            }
            Op::List(o) => match s.list(&o.to_list()) {
                Ok(got) => assert_eq!(got, o.list(&current), "{o:?}"),
                Err(StorageError::InvalidArgument(_)) => {
                    assert!(o.start.is_some() && o.start_after.is_some())
                }
                Err(e) => panic!("list: {e}"),
            },
        }
    }
    // Whatever was committed is durable, and only that.
    s.discard_event();
    block_on(s.settle());
    s.prune().expect("prune");
    drop(s);
    let fresh = ObjectStorage::open(id, host.db.clone(), limits).expect("open");
    let all = fresh.list(&ListOptions::default()).expect("list");
    assert_eq!(all, Options::list(&no_options(), &committed));
    let size: u64 = committed
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum();
    assert_eq!(fresh.size(), size);
}

fn no_options() -> Options {
    Options {
        prefix: None,
        start: None,
        start_after: None,
        end: None,
        reverse: false,
        limit: None,
    }
}
