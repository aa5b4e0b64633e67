//! The model test: random events on two objects, checked step by step against a plain `BTreeMap`,
//! through pending commits, failed events, transactions, restarts, power cuts with commits in
//! flight, and failed commits.

use super::{Host, all, listed};
use crate::storage::{
    CommitOutcome, ListOptions, MAX_TRANSACTION_DEPTH, ObjectStorage, StorageError, StorageLimits,
    Sync,
};
use futures::FutureExt;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::collections::BTreeMap;

/// Small limits, so that random operations meet every one of them often.
const MODEL_LIMITS: StorageLimits = StorageLimits {
    max_key_bytes: 4,
    max_entry_bytes: 8,
    max_batch: 4,
    max_object_bytes: 60,
    max_namespace_bytes: u64::MAX,
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
    /// Cuts the power with commits in flight, and starts again on what was synced: first ends
    /// the current event of the objects chosen, without waiting, then waits this many
    /// microseconds.
    PowerCut([bool; 2], u64),
    /// The disk fails the object's next commit.
    FailCommit(usize),
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
                if self.txs.len() >= MAX_TRANSACTION_DEPTH {
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
        Ok(listed(&self.current, o))
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

/// What an object holds.
type Contents = BTreeMap<String, Vec<u8>>;

/// The system under test: two objects sharing one database, on a simulated disk, and commit
/// thread.
struct Harness {
    /// Before `host`, so that they are dropped first.
    objects: Vec<ObjectStorage>,
    host: Host,
    /// Per object, the outcomes of its finished events the test has not awaited yet.
    outcomes: [Vec<CommitOutcome>; 2],
    /// Per object, what it held when all its commits were last known durable, and since then
    /// each commit with what the object holds once it is applied.
    durable: [Contents; 2],
    commits: [Vec<(CommitOutcome, Contents)>; 2],
    models: [Model; 2],
}

impl Harness {
    fn new() -> Harness {
        let host = Host::simulated();
        Harness {
            objects: open_objects(&host),
            host,
            outcomes: Default::default(),
            durable: Default::default(),
            commits: Default::default(),
            models: Default::default(),
        }
    }

    /// Awaits every outstanding outcome of the object, oldest first, and prunes.
    fn settle(&mut self, obj: usize) -> Result<(), TestCaseError> {
        for outcome in self.outcomes[obj].drain(..) {
            prop_assert!(block_on(outcome).is_ok(), "a commit failed");
        }
        self.durable[obj] = self.models[obj].committed.clone();
        self.commits[obj].clear();
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
                let s = &mut self.objects[obj];
                let before = s.last_commit();
                let outcome = s.finish_event(self.host.committer());
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
                if wrote && let Some(outcome) = &outcome {
                    let after = self.models[obj].committed.clone();
                    self.commits[obj].push((outcome.clone(), after));
                }
                let s = &mut self.objects[obj];
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
            Step::PowerCut(finish, after_us) => {
                for obj in (0..2).filter(|&obj| finish[obj]) {
                    self.step(&Step::Finish(obj, Wait::No))?;
                }
                // At random moments of the commit thread's work: before, during or after a sync.
                std::thread::sleep(std::time::Duration::from_micros(*after_us));
                self.cut_power()?;
            }
            Step::FailCommit(obj) => self.fail_commit(*obj)?,
        }
        Ok(())
    }

    /// Cuts the power with commits in flight. Each object must then hold what it held after some
    /// prefix of its commits: one that takes in every commit known durable (awaited, or resolved
    /// since) and none after a commit that did not reach the disk.
    fn cut_power(&mut self) -> Result<(), TestCaseError> {
        // A commit that resolved successfully was synced, and so was every commit before it.
        let known: Vec<usize> = self
            .commits
            .iter()
            .map(|commits| {
                commits
                    .iter()
                    .rposition(|(o, _)| matches!(o.clone().now_or_never(), Some(Ok(_))))
                    .map_or(0, |i| i + 1)
            })
            .collect();
        self.objects.clear();
        self.host.cut_power();
        self.objects = open_objects(&self.host);
        for (obj, known) in known.into_iter().enumerate() {
            let held = all(&self.objects[obj]);
            let after_prefix = std::iter::once(&self.durable[obj])
                .chain(self.commits[obj].iter().map(|(_, state)| state))
                .skip(known)
                .find(|state| {
                    state
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .eq(held.clone())
                });
            let Some(state) = after_prefix.cloned() else {
                return Err(TestCaseError::fail(format!(
                    "object {obj} holds {held:?} after a power cut: no state after its first {} \
                     or more of its {} commits since the last known durable",
                    known,
                    self.commits[obj].len()
                )));
            };
            self.models[obj].committed = state.clone();
            self.models[obj].discard();
            self.durable[obj] = state;
            self.commits[obj].clear();
            self.outcomes[obj].clear();
            self.check_all(obj, "after a power cut")?;
        }
        Ok(())
    }

    /// The disk fails a commit of the object. A later event's commit, which may build on what
    /// was lost, must be refused until the object resets; after `reset` it holds what is durable.
    /// Later steps then expect its commits to succeed again.
    fn fail_commit(&mut self, obj: usize) -> Result<(), TestCaseError> {
        // Nothing else in flight, so that the failure hits this object's commit alone.
        self.settle(0)?;
        self.settle(1)?;
        let durable = self.durable[obj].clone();
        self.host.disk().set_failing(true);
        let failed = self.finish_writing(obj)?;
        let failed = block_on(failed);
        self.host.disk().set_failing(false);
        prop_assert!(failed.is_err(), "a commit on a failing disk succeeded");
        let refused = self.finish_writing(obj)?;
        prop_assert!(
            block_on(refused).is_err(),
            "a commit after a failed one was accepted before the object reset"
        );
        let s = &mut self.objects[obj];
        prop_assert!(s.prune().is_err(), "prune hides a failed commit");
        prop_assert!(s.reset(self.host.committer(), 0).is_ok(), "reset fails");
        self.models[obj].committed = durable;
        self.models[obj].discard();
        self.outcomes[obj].clear();
        self.check_all(obj, "after a reset")
    }

    /// Ends the object's current event with writes of its own (a `delete_all`, which is never
    /// refused, if it has none); its commit.
    fn finish_writing(&mut self, obj: usize) -> Result<CommitOutcome, TestCaseError> {
        while !self.models[obj].txs.is_empty() {
            self.step(&Step::Op(obj, Op::Commit))?;
        }
        if !self.models[obj].wrote {
            self.step(&Step::Op(obj, Op::DeleteAll))?;
        }
        self.models[obj].finish();
        let outcome = self.objects[obj].finish_event(self.host.committer());
        outcome.ok_or_else(|| TestCaseError::fail("an event that wrote has no commit"))
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.settle(0)?;
        self.settle(1)?;
        self.objects.clear();
        self.host.restart();
        self.objects = open_objects(&self.host);
        for obj in 0..2 {
            self.models[obj].discard();
            self.check_all(obj, "after a restart")?;
        }
        Ok(())
    }
}

/// Both objects' storage, with the model's limits.
fn open_objects(host: &Host) -> Vec<ObjectStorage> {
    ["model-0", "model-1"]
        .iter()
        .map(|name| host.object_with(name, MODEL_LIMITS))
        .collect()
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
        1 => obj.clone().prop_map(Step::Discard),
        1 => Just(Step::Settle),
        1 => Just(Step::Reopen),
        2 => (any::<[bool; 2]>(), 0u64..500).prop_map(|(f, us)| Step::PowerCut(f, us)),
        1 => obj.prop_map(Step::FailCommit),
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
    }
}

/// The negative control of the power cut's check: on a disk that acknowledges a sync before
/// making it durable, an awaited commit is lost at the cut, and the check must say so.
#[test]
fn the_power_cut_check_catches_a_commit_acknowledged_before_it_was_durable() {
    let mut h = Harness::new();
    h.host.disk().set_sync(Sync::Lagging);
    h.step(&Step::Op(0, Op::Put("a".into(), vec![1])))
        .expect("a put");
    h.step(&Step::Finish(0, Wait::Own)).expect("its commit");
    let cut = h.step(&Step::PowerCut([false; 2], 0));
    assert!(
        cut.is_err(),
        "an awaited commit lost at a power cut went unnoticed"
    );
}
