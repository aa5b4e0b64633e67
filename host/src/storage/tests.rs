//! Tests of the storage layer: a model test of [`ObjectStorage`] over random events (against a
//! plain `BTreeMap`, through pending commits, failed events, transactions and restarts), and unit
//! tests of the limits and of the corners the model reaches only rarely.

use super::{
    CommitOutcome, Committer, Db, ListOptions, ObjectStorage, StorageError, StorageLimits,
};
use crate::names::ObjectId;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Helpers shared by every test.

/// A database with its commit thread, as the host runs them.
struct Host {
    db: Arc<Db>,
    committer: Committer,
    thread: JoinHandle<()>,
}

impl Host {
    fn start(path: &Path) -> Host {
        let db = Arc::new(Db::open(path).expect("open the database"));
        let (committer, thread) =
            Committer::start(db.clone(), Box::new(|_, _| {})).expect("start the commit thread");
        Host {
            db,
            committer,
            thread,
        }
    }

    fn object(&self, id: ObjectId, limits: StorageLimits) -> ObjectStorage {
        ObjectStorage::open(id, self.db.clone(), limits).expect("open object storage")
    }

    /// Ends the commit thread and closes the database. Every `ObjectStorage` must be gone.
    fn stop(self) {
        drop(self.committer);
        self.thread.join().expect("the commit thread panicked");
        let db = Arc::try_unwrap(self.db)
            .ok()
            .expect("nothing else holds the database");
        drop(db);
    }
}

/// Reopens the database at `path` and checks that object `id` holds exactly `expected`, of
/// `size` bytes: what survived is what was committed.
fn assert_reopened(path: &Path, id: ObjectId, expected: &[(String, Vec<u8>)], size: u64) {
    let host = Host::start(path);
    let s = host.object(id, StorageLimits::default());
    assert_eq!(all(&s), expected);
    assert_eq!(s.size(), size);
    drop(s);
    host.stop();
}

/// A database file in a fresh temporary directory.
fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("dohost.redb");
    (dir, path)
}

fn object_id(name: &str) -> ObjectId {
    ObjectId::new("storage-tests", name)
}

/// Ends the event successfully and waits until its writes are durable.
fn finish_durably(s: &mut ObjectStorage, host: &Host) {
    if let Some(outcome) = s.finish_event(&host.committer) {
        block_on(outcome).expect("the commit succeeds");
    }
    s.prune().expect("no commit failed");
    assert!(s.last_commit().is_none(), "every awaited commit is pruned");
}

/// Every entry of the object, ascending.
fn all(s: &ObjectStorage) -> Vec<(String, Vec<u8>)> {
    s.list(&ListOptions::default()).expect("list everything")
}

fn entries(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn is_limit<T>(r: Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::LimitExceeded(_)))
}

fn is_invalid<T>(r: Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::InvalidArgument(_)))
}

// ---------------------------------------------------------------------------------------------
// The model test.

/// Small limits, so that random operations meet every one of them often.
const MODEL_LIMITS: StorageLimits = StorageLimits {
    max_key_bytes: 4,
    max_entry_bytes: 8,
    max_batch: 4,
    max_object_bytes: 60,
};

/// Keys that share prefixes and sort next to each other; "abcde" is over the key limit, "a\0" is
/// the smallest key above "a", and the others have 2-, 3- and 4-byte UTF-8 characters.
const KEYS: &[&str] = &[
    "", "a", "a\0", "ab", "abc", "abcde", "b", "ba", "c", "é", "éa", "ê", "€", "𝄞",
];

/// Bounds and prefixes for `list`: the keys and a few strings that are not keys.
const BOUNDS: &[&str] = &[
    "",
    "a",
    "a\0",
    "aa",
    "ab",
    "abc",
    "abcde",
    "b",
    "ba",
    "bb",
    "c",
    "d",
    "é",
    "éa",
    "ê",
    "€",
    "𝄞",
    "\u{10FFFF}",
];

#[derive(Debug, Clone)]
enum Op {
    Get(String),
    GetMany(Vec<String>),
    Put(String, Vec<u8>),
    PutMany(Vec<(String, Vec<u8>)>),
    Delete(String),
    DeleteMany(Vec<String>),
    List(ListOptions),
    DeleteAll,
    Begin,
    Commit,
    Rollback,
}

/// What a successful operation returned.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Unit,
    Value(Option<Vec<u8>>),
    Entries(Vec<(String, Vec<u8>)>),
    Deleted(bool),
    Count(u32),
}

/// Why an operation was refused. `Internal` errors fail the test outright.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refused {
    Limit,
    Invalid,
}

/// How long the test waits for a finished event's commit.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Not at all: later events read through the pending layer.
    No,
    /// For this event's outcome only, as its response would; then prune.
    Own,
    /// For every outstanding outcome of the object; then prune, which must drop every layer.
    All,
}

#[derive(Debug, Clone)]
enum Step {
    /// An operation of the current event of object 0 or 1.
    Op(usize, Op),
    /// The object's current event succeeds.
    Finish(usize, Wait),
    /// The object's current event fails.
    Discard(usize),
    /// Waits for every commit of both objects, and prunes.
    Settle,
    /// Restarts the host on the same database file; events in progress are lost.
    Reopen,
}

/// One object's expected state.
#[derive(Debug, Clone, Default)]
struct Model {
    /// What the object holds once every finished event is applied.
    committed: BTreeMap<String, Vec<u8>>,
    /// `committed` plus the current event's writes.
    current: BTreeMap<String, Vec<u8>>,
    /// Whether the current event has written anything (so it has a commit of its own).
    wrote: bool,
    /// Open transactions: `current` and `wrote` when each began.
    txs: Vec<(BTreeMap<String, Vec<u8>>, bool)>,
}

impl Model {
    fn size(&self) -> u64 {
        self.current
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn check_key(key: &str) -> Result<(), Refused> {
        if key.len() > MODEL_LIMITS.max_key_bytes {
            return Err(Refused::Limit);
        }
        Ok(())
    }

    fn check_keys(keys: &[String]) -> Result<(), Refused> {
        if keys.len() > MODEL_LIMITS.max_batch {
            return Err(Refused::Limit);
        }
        keys.iter().try_for_each(|k| Self::check_key(k))
    }

    fn apply(&mut self, op: &Op) -> Result<Out, Refused> {
        match op {
            Op::Get(key) => {
                Self::check_key(key)?;
                Ok(Out::Value(self.current.get(key).cloned()))
            }
            Op::GetMany(keys) => {
                Self::check_keys(keys)?;
                let found: BTreeMap<String, Vec<u8>> = keys
                    .iter()
                    .filter_map(|k| Some((k.clone(), self.current.get(k)?.clone())))
                    .collect();
                Ok(Out::Entries(found.into_iter().collect()))
            }
            Op::Put(key, value) => self.put_many(&[(key.clone(), value.clone())]),
            Op::PutMany(batch) => self.put_many(batch),
            Op::Delete(key) => {
                Self::check_key(key)?;
                let existed = self.current.remove(key).is_some();
                self.wrote |= existed;
                Ok(Out::Deleted(existed))
            }
            Op::DeleteMany(keys) => {
                Self::check_keys(keys)?;
                let n = keys
                    .iter()
                    .filter(|k| self.current.remove(*k).is_some())
                    .count();
                self.wrote |= n > 0;
                Ok(Out::Count(u32::try_from(n).unwrap()))
            }
            Op::List(options) => self.list(options).map(Out::Entries),
            Op::DeleteAll => {
                self.current.clear();
                self.wrote = true;
                Ok(Out::Unit)
            }
            Op::Begin => {
                if self.txs.len() >= super::MAX_TRANSACTION_DEPTH {
                    return Err(Refused::Limit);
                }
                self.txs.push((self.current.clone(), self.wrote));
                Ok(Out::Unit)
            }
            Op::Commit => {
                self.txs.pop().ok_or(Refused::Invalid)?;
                Ok(Out::Unit)
            }
            Op::Rollback => {
                let (current, wrote) = self.txs.pop().ok_or(Refused::Invalid)?;
                self.current = current;
                self.wrote = wrote;
                Ok(Out::Unit)
            }
        }
    }

    fn put_many(&mut self, batch: &[(String, Vec<u8>)]) -> Result<Out, Refused> {
        if batch.len() > MODEL_LIMITS.max_batch {
            return Err(Refused::Limit);
        }
        for (k, v) in batch {
            Self::check_key(k)?;
            if k.len() + v.len() > MODEL_LIMITS.max_entry_bytes {
                return Err(Refused::Limit);
            }
        }
        let before = self.current.clone();
        self.current.extend(batch.iter().cloned());
        if self.size() > MODEL_LIMITS.max_object_bytes {
            self.current = before;
            return Err(Refused::Limit);
        }
        self.wrote |= !batch.is_empty();
        Ok(Out::Unit)
    }

    fn list(&self, o: &ListOptions) -> Result<Vec<(String, Vec<u8>)>, Refused> {
        if o.start.is_some() && o.start_after.is_some() {
            return Err(Refused::Invalid);
        }
        // `str` orders by bytes, as the storage does.
        let mut out: Vec<(String, Vec<u8>)> = self
            .current
            .iter()
            .filter(|(k, _)| {
                o.prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str()))
                    && o.start.as_ref().is_none_or(|s| *k >= s)
                    && o.start_after.as_ref().is_none_or(|s| *k > s)
                    && o.end.as_ref().is_none_or(|e| *k < e)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if o.reverse {
            out.reverse();
        }
        if let Some(limit) = o.limit {
            out.truncate(limit as usize);
        }
        Ok(out)
    }

    /// The event succeeded; transactions left open are rolled back. Whether it wrote.
    fn finish(&mut self) -> bool {
        if let Some((current, wrote)) = self.txs.drain(..).next() {
            self.current = current;
            self.wrote = wrote;
        }
        self.committed = self.current.clone();
        std::mem::take(&mut self.wrote)
    }

    /// The event failed (or the host restarted in the middle of it).
    fn discard(&mut self) {
        self.current = self.committed.clone();
        self.txs.clear();
        self.wrote = false;
    }
}

fn run_op(s: &mut ObjectStorage, op: &Op) -> Result<Out, StorageError> {
    Ok(match op {
        Op::Get(key) => Out::Value(s.get(key)?),
        Op::GetMany(keys) => Out::Entries(s.get_many(keys)?),
        Op::Put(key, value) => {
            s.put(key, value.clone())?;
            Out::Unit
        }
        Op::PutMany(batch) => {
            s.put_many(batch.clone())?;
            Out::Unit
        }
        Op::Delete(key) => Out::Deleted(s.delete(key)?),
        Op::DeleteMany(keys) => Out::Count(s.delete_many(keys)?),
        Op::List(options) => Out::Entries(s.list(options)?),
        Op::DeleteAll => {
            s.delete_all();
            Out::Unit
        }
        Op::Begin => {
            s.begin()?;
            Out::Unit
        }
        Op::Commit => {
            s.commit()?;
            Out::Unit
        }
        Op::Rollback => {
            s.rollback()?;
            Out::Unit
        }
    })
}

/// The system under test: two objects sharing one database and commit thread.
struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    ids: [ObjectId; 2],
    host: Option<Host>,
    objects: Vec<ObjectStorage>,
    /// Per object, the outcomes of its finished events the test has not awaited yet.
    outcomes: [Vec<CommitOutcome>; 2],
    models: [Model; 2],
}

impl Harness {
    fn new() -> Harness {
        let (dir, path) = temp_db();
        let host = Host::start(&path);
        let ids = [object_id("model-0"), object_id("model-1")];
        let objects = ids
            .iter()
            .map(|&id| host.object(id, MODEL_LIMITS))
            .collect();
        Harness {
            _dir: dir,
            path,
            ids,
            host: Some(host),
            objects,
            outcomes: Default::default(),
            models: Default::default(),
        }
    }

    /// Awaits every outstanding outcome of the object, oldest first, and prunes.
    fn settle(&mut self, obj: usize) -> Result<(), TestCaseError> {
        for outcome in self.outcomes[obj].drain(..) {
            prop_assert!(block_on(outcome).is_ok(), "a commit failed");
        }
        let s = &mut self.objects[obj];
        prop_assert!(s.prune().is_ok(), "prune reports a failed commit");
        prop_assert!(
            s.last_commit().is_none(),
            "every commit is durable and awaited, yet a pending layer is left"
        );
        Ok(())
    }

    /// Compares everything the object holds, and its size, with the model.
    fn check_all(&self, obj: usize, when: &str) -> Result<(), TestCaseError> {
        let s = &self.objects[obj];
        let model = &self.models[obj];
        let expected: Vec<_> = model
            .current
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        prop_assert_eq!(all(s), expected, "object {} contents {}", obj, when);
        prop_assert_eq!(s.size(), model.size(), "object {} size {}", obj, when);
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Op(obj, op) => {
                let obj = *obj;
                let expected = self.models[obj].apply(op);
                let actual = match run_op(&mut self.objects[obj], op) {
                    Ok(out) => Ok(out),
                    Err(StorageError::LimitExceeded(_)) => Err(Refused::Limit),
                    Err(StorageError::InvalidArgument(_)) => Err(Refused::Invalid),
                    Err(e @ StorageError::Internal(_)) => {
                        return Err(TestCaseError::fail(format!("{op:?}: {e}")));
                    }
                };
                prop_assert_eq!(actual, expected, "object {}: {:?}", obj, op);
                prop_assert_eq!(
                    self.objects[obj].size(),
                    self.models[obj].size(),
                    "object {} size after {:?}",
                    obj,
                    op
                );
            }
            Step::Finish(obj, wait) => {
                let obj = *obj;
                let wrote = self.models[obj].finish();
                let host = self.host.as_ref().expect("the host is running");
                let s = &mut self.objects[obj];
                let before = s.last_commit();
                let outcome = s.finish_event(&host.committer);
                if wrote {
                    // Its own commit, not an earlier one.
                    let own = outcome.as_ref().is_some_and(|o| {
                        before
                            .as_ref()
                            .is_none_or(|b| !futures::future::Shared::ptr_eq(o, b))
                    });
                    prop_assert!(own, "an event that wrote must wait for its own commit");
                } else {
                    // Nothing to commit: it waits for the newest earlier commit, if any.
                    let same = match (&outcome, &before) {
                        (None, None) => true,
                        (Some(o), Some(b)) => futures::future::Shared::ptr_eq(o, b),
                        _ => false,
                    };
                    prop_assert!(
                        same,
                        "an event that wrote nothing waits for the last commit"
                    );
                }
                if let Some(outcome) = outcome {
                    if let Wait::Own = wait {
                        prop_assert!(block_on(outcome.clone()).is_ok(), "a commit failed");
                        prop_assert!(s.prune().is_ok(), "prune reports a failed commit");
                    }
                    self.outcomes[obj].push(outcome);
                }
                if let Wait::All = wait {
                    self.settle(obj)?;
                }
                self.check_all(obj, "after finish_event")?;
            }
            Step::Discard(obj) => {
                self.models[*obj].discard();
                self.objects[*obj].discard_event();
                self.check_all(*obj, "after discard_event")?;
            }
            Step::Settle => {
                self.settle(0)?;
                self.settle(1)?;
            }
            Step::Reopen => self.reopen()?,
        }
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.settle(0)?;
        self.settle(1)?;
        self.objects.clear();
        self.host.take().expect("the host is running").stop();
        let host = Host::start(&self.path);
        self.objects = self
            .ids
            .iter()
            .map(|&id| host.object(id, MODEL_LIMITS))
            .collect();
        self.host = Some(host);
        for obj in 0..2 {
            self.models[obj].discard();
            self.check_all(obj, "after a restart")?;
        }
        Ok(())
    }
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

fn bound() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.25, prop::sample::select(BOUNDS).prop_map(str::to_owned))
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 0..=6)
}

fn list_options() -> impl Strategy<Value = ListOptions> {
    (
        bound(),
        bound(),
        bound(),
        bound(),
        any::<bool>(),
        prop::option::weighted(0.3, 0u32..5),
    )
        .prop_map(
            |(prefix, start, start_after, end, reverse, limit)| ListOptions {
                prefix,
                start,
                start_after,
                end,
                reverse,
                limit,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    // Batches go one past the model's limit of 4.
    prop_oneof![
        3 => key().prop_map(Op::Get),
        2 => prop::collection::vec(key(), 0..=5).prop_map(Op::GetMany),
        6 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => prop::collection::vec((key(), value()), 0..=5).prop_map(Op::PutMany),
        2 => key().prop_map(Op::Delete),
        1 => prop::collection::vec(key(), 0..=5).prop_map(Op::DeleteMany),
        5 => list_options().prop_map(Op::List),
        1 => Just(Op::DeleteAll),
        3 => Just(Op::Begin),
        2 => Just(Op::Commit),
        2 => Just(Op::Rollback),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let obj = 0usize..2;
    let wait = prop_oneof![3 => Just(Wait::No), 1 => Just(Wait::Own), 1 => Just(Wait::All)];
    prop_oneof![
        30 => (obj.clone(), op()).prop_map(|(o, op)| Step::Op(o, op)),
        4 => (obj.clone(), wait).prop_map(|(o, w)| Step::Finish(o, w)),
        1 => obj.prop_map(Step::Discard),
        1 => Just(Step::Settle),
        1 => Just(Step::Reopen),
    ]
}

fn model_config() -> ProptestConfig {
    ProptestConfig {
        // PROPTEST_CASES raises it for a longer hunt; PROPTEST_RNG_SEED replays a run.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(64),
        // A failure prints its minimal sequence; no regression file is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(model_config())]

    /// Random events on two objects sharing a database, checked step by step against a model.
    #[test]
    fn storage_matches_model(
        initial in [prop::collection::vec((key(), value()), 0..12), prop::collection::vec((key(), value()), 0..12)],
        steps in prop::collection::vec(step(), 1..120),
    ) {
        let mut h = Harness::new();
        // A first event gives each object some durable keys (the puts are checked like any other:
        // some are refused).
        for (obj, puts) in initial.into_iter().enumerate() {
            for (k, v) in puts {
                h.step(&Step::Op(obj, Op::Put(k, v)))?;
            }
            h.step(&Step::Finish(obj, Wait::All))?;
        }
        for step in &steps {
            h.step(step)?;
        }
        // Whatever was finished is durable.
        h.reopen()?;
        let Harness { objects, host, .. } = h;
        drop(objects);
        host.expect("the host is running").stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Limits.

#[test]
fn key_limit() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("keys"), StorageLimits::default());
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
    drop(s);
    host.stop();
}

const MIB2: usize = 2 * 1024 * 1024;

#[test]
fn entry_limit() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("entries"), StorageLimits::default());

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
    host.stop();
    let host = Host::start(&path);
    let s = host.object(object_id("entries"), StorageLimits::default());
    assert_eq!(s.size(), 2 * MIB2 as u64);
    assert_eq!(s.get("k").unwrap(), Some(vec![7; MIB2 - 1]));
    assert_eq!(s.get(&key).unwrap(), Some(vec![1; MIB2 - 2048]));
    assert_eq!(s.get("y").unwrap(), None);
    drop(s);
    host.stop();
}

#[test]
fn batch_limit() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("batches"), StorageLimits::default());
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
    drop(s);
    host.stop();
}

#[test]
fn quota_refusal_changes_nothing() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let limits = StorageLimits {
        max_object_bytes: 100,
        ..StorageLimits::default()
    };
    let id = object_id("quota");
    let mut s = host.object(id, limits);

    // 40 durable bytes, 30 pending, 29 in the event: 99.
    s.put("a", vec![1; 39]).unwrap();
    finish_durably(&mut s, &host);
    s.put("b", vec![2; 29]).unwrap();
    let pending = s.finish_event(&host.committer);
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
    host.stop();
    let host = Host::start(&path);
    let mut s = host.object(id, limits);
    assert_eq!(s.size(), 100);
    assert_eq!(all(&s), full);
    assert!(is_limit(s.put("y", Vec::new())));
    assert_eq!(s.size(), 100);
    assert_eq!(s.delete("x"), Ok(true));
    s.put("y", vec![0; 29]).unwrap();
    assert_eq!(s.size(), 100);
    drop(s);
    host.stop();
}

#[test]
fn put_many_with_one_bad_entry_writes_nothing() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("bad-entry"), StorageLimits::default());
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
    host.stop();
    let host = Host::start(&path);
    let s = host.object(object_id("bad-entry"), StorageLimits::default());
    assert_eq!(all(&s), entries(&[("keep", b"old")]));
    drop(s);
    host.stop();
}

#[test]
fn transaction_depth_limit() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("depth"), StorageLimits::default());
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
    drop(s);
    host.stop();
}

// ---------------------------------------------------------------------------------------------
// Transactions and event boundaries.

#[test]
fn commit_or_rollback_without_transaction_is_invalid() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("no-tx"), StorageLimits::default());
    assert!(is_invalid(s.commit()));
    assert!(is_invalid(s.rollback()));
    s.begin().unwrap();
    s.put("a", b"1".to_vec()).unwrap();
    s.commit().unwrap();
    assert!(is_invalid(s.commit()));
    assert!(is_invalid(s.rollback()));
    // The refused calls changed nothing.
    assert_eq!(all(&s), entries(&[("a", b"1")]));
    drop(s);
    host.stop();
}

#[test]
fn list_with_start_and_start_after_is_invalid() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("list-args"), StorageLimits::default());
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
    drop(s);
    host.stop();
}

#[test]
fn open_transaction_is_rolled_back_at_finish_event() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let id = object_id("open-tx");
    let mut s = host.object(id, StorageLimits::default());
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
    let outcome = s.finish_event(&host.committer);
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
    assert!(s.finish_event(&host.committer).is_none());
    assert_eq!(all(&s), expected);

    drop(s);
    host.stop();
    assert_reopened(&path, id, &expected, 7);
}

#[test]
fn discarded_event_leaves_nothing() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("discard"), StorageLimits::default());
    s.put("a", b"1".to_vec()).unwrap();
    let first = s.finish_event(&host.committer);
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
    drop(s);
    host.stop();
}

// ---------------------------------------------------------------------------------------------
// Reads across layers.

#[test]
fn delete_all_then_puts_and_list_across_pending_clear() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let id = object_id("delete-all");
    let mut s = host.object(id, StorageLimits::default());
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
    let cleared = s.finish_event(&host.committer).unwrap();

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
    let second = s.finish_event(&host.committer).unwrap();
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
    assert_eq!(all(&s), expected);
    drop(s);
    host.stop();
    assert_reopened(&path, id, &expected, 16);
}

#[test]
fn list_limit_and_reverse_over_every_layer() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("layers"), StorageLimits::default());
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
    let pending = s.finish_event(&host.committer).unwrap();
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
                    let mut expected: Vec<_> = model
                        .iter()
                        .filter(|(k, _)| start.is_none_or(|b| k.as_str() >= b))
                        .filter(|(k, _)| end.is_none_or(|b| k.as_str() < b))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if reverse {
                        expected.reverse();
                    }
                    expected.truncate(limit.map_or(usize::MAX, |l| l as usize));
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
    drop(s);
    host.stop();
}

// ---------------------------------------------------------------------------------------------
// Isolation.

#[test]
fn objects_sharing_a_database_are_isolated() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let limits = StorageLimits::default();
    let (ida, idb) = (object_id("alice"), object_id("bob"));
    let mut a = host.object(ida, limits);
    let mut b = host.object(idb, limits);

    a.put_many(entries(&[("", b"a0"), ("k", b"a1"), ("z", b"a2")]))
        .unwrap();
    b.put_many(entries(&[("k", b"b1"), ("m", b"b2")])).unwrap();
    finish_durably(&mut a, &host);
    let b_pending = b.finish_event(&host.committer).unwrap();
    assert_eq!(a.get("m").unwrap(), None);
    assert_eq!(b.get("z").unwrap(), None);
    assert_eq!(b.get("").unwrap(), None);

    // One object's delete-all leaves the other's keys, durable or pending.
    a.delete_all();
    let a_cleared = a.finish_event(&host.committer).unwrap();
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
    host.stop();
    let host = Host::start(&path);
    let a = host.object(ida, limits);
    let b = host.object(idb, limits);
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
    drop((a, b));
    host.stop();
}

fn s_keys(entries: &[(String, Vec<u8>)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.as_str()).collect()
}

/// `prune` must see a commit as durable even if nobody awaited its outcome (the client went away
/// before the response): otherwise it stays at the front of `pending` for good, and every later
/// layer piles up behind it.
#[test]
fn prune_drops_durable_commits_nobody_awaited() {
    let (_dir, path) = temp_db();
    let host = Host::start(&path);
    let mut s = host.object(object_id("unawaited"), StorageLimits::default());
    s.put("a", b"1".to_vec()).unwrap();
    // The response that would have waited for this commit went away (its client disconnected).
    drop(s.finish_event(&host.committer));
    s.put("b", b"2".to_vec()).unwrap();
    let second = s.finish_event(&host.committer).unwrap();
    // The commit thread applies commits in order: once the second is durable, so is the first.
    block_on(second).unwrap();
    s.prune().unwrap();
    assert!(s.last_commit().is_none(), "durable layers are left pending");
    drop(s);
    host.stop();
}
