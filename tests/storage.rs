//! Storage through the real guest and WIT: isolation between objects and namespaces, and random
//! sequences of operations, transactions, failing events and host restarts (graceful and
//! `kill -9`) against a reference model.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{Host, ops};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_namespaces_cannot_see_each_others_keys() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("one", "test_object").await;
    host.deploy("two", "test_object").await;
    let put = |v: &str| json!([{"op": "put", "key": "shared", "value": v}, {"op": "put", "key": v, "value": v}]);
    assert_eq!(ops(&host, "one", "a", put("one-a")).await.0, 200);
    assert_eq!(ops(&host, "one", "b", put("one-b")).await.0, 200);
    assert_eq!(ops(&host, "two", "a", put("two-a")).await.0, 200);
    for (ns, object) in [("one", "a"), ("one", "b"), ("two", "a")] {
        let me = format!("{ns}-{object}");
        let mut mine = vec![[me.as_str(), me.as_str()], ["shared", me.as_str()]];
        mine.sort();
        let (_, body) = ops(
            &host,
            ns,
            object,
            json!([{"op": "list"}, {"op": "get", "key": "shared"}]),
        )
        .await;
        assert_eq!(body, json!([{"ok": mine}, {"ok": me}]), "{ns}/{object}");
    }
    // delete_all of one object leaves the others alone.
    ops(&host, "one", "a", json!([{"op": "delete_all"}])).await;
    let (_, body) = ops(&host, "one", "b", json!([{"op": "get", "key": "shared"}])).await;
    assert_eq!(body, json!([{"ok": "one-b"}]));
    let (_, body) = ops(&host, "one", "a", json!([{"op": "list"}])).await;
    assert_eq!(body, json!([{"ok": []}]));
}

/// The reference: a map, a stack of snapshots for open transactions.
#[derive(Default)]
struct Model {
    data: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
enum Op {
    Get(String),
    Put(String, String),
    Delete(String),
    GetMany(Vec<String>),
    PutMany(Vec<(String, String)>),
    DeleteMany(Vec<String>),
    List {
        prefix: Option<String>,
        start: Option<String>,
        start_after: Option<String>,
        end: Option<String>,
        reverse: bool,
        limit: Option<u32>,
    },
    DeleteAll,
    Begin,
    Commit,
    Rollback,
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Success,
    Trap,
    Fail,
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "ab", "abc", "b", "ba", "c", "é", "éa"])
        .prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = Op> {
    let value = "[a-z]{0,3}";
    prop_oneof![
        key().prop_map(Op::Get),
        (key(), value).prop_map(|(k, v)| Op::Put(k, v)),
        key().prop_map(Op::Delete),
        prop::collection::vec(key(), 0..4).prop_map(Op::GetMany),
        prop::collection::vec((key(), value), 0..4).prop_map(Op::PutMany),
        prop::collection::vec(key(), 0..4).prop_map(Op::DeleteMany),
        (
            prop::option::of(key()),
            prop::option::of(key()),
            prop::option::of(key()),
            prop::option::of(key()),
            any::<bool>(),
            prop::option::of(0u32..4),
        )
            .prop_map(
                |(prefix, start, start_after, end, reverse, limit)| Op::List {
                    prefix,
                    start,
                    start_after,
                    end,
                    reverse,
                    limit
                }
            ),
        Just(Op::DeleteAll),
        Just(Op::Begin),
        Just(Op::Commit),
        Just(Op::Rollback),
    ]
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![6 => Just(Ending::Success), 1 => Just(Ending::Trap), 1 => Just(Ending::Fail)]
}

fn to_json(op: &Op) -> Value {
    match op {
        Op::Get(k) => json!({"op": "get", "key": k}),
        Op::Put(k, v) => json!({"op": "put", "key": k, "value": v}),
        Op::Delete(k) => json!({"op": "delete", "key": k}),
        Op::GetMany(ks) => json!({"op": "get_many", "keys": ks}),
        Op::PutMany(es) => json!({"op": "put_many", "entries": es}),
        Op::DeleteMany(ks) => json!({"op": "delete_many", "keys": ks}),
        Op::List {
            prefix,
            start,
            start_after,
            end,
            reverse,
            limit,
        } => json!({
            "op": "list", "prefix": prefix, "start": start, "start_after": start_after,
            "end": end, "reverse": reverse, "limit": limit,
        }),
        Op::DeleteAll => json!({"op": "delete_all"}),
        Op::Begin => json!({"op": "begin"}),
        Op::Commit => json!({"op": "commit"}),
        Op::Rollback => json!({"op": "rollback"}),
    }
}

/// Applies one event to the model; returns the expected results, or None for a failed event.
fn apply(model: &mut Model, ops: &[Op], ending: Ending) -> Option<Vec<Value>> {
    let before = model.data.clone();
    let mut stack: Vec<BTreeMap<String, String>> = Vec::new();
    let d = &mut model.data;
    let invalid = || json!({"err": {"kind": "invalid-argument"}});
    let mut out = Vec::new();
    for op in ops {
        out.push(match op {
            Op::Get(k) => json!({"ok": d.get(k)}),
            Op::Put(k, v) => {
                d.insert(k.clone(), v.clone());
                json!({"ok": null})
            }
            Op::Delete(k) => json!({"ok": d.remove(k).is_some()}),
            Op::GetMany(ks) => {
                let found: BTreeMap<&String, &String> =
                    ks.iter().filter_map(|k| Some((k, d.get(k)?))).collect();
                json!({"ok": found.into_iter().collect::<Vec<_>>()})
            }
            Op::PutMany(es) => {
                for (k, v) in es {
                    d.insert(k.clone(), v.clone());
                }
                json!({"ok": null})
            }
            Op::DeleteMany(ks) => {
                json!({"ok": ks.iter().filter(|k| d.remove(*k).is_some()).count()})
            }
            Op::List {
                prefix,
                start,
                start_after,
                end,
                reverse,
                limit,
            } => {
                if start.is_some() && start_after.is_some() {
                    invalid()
                } else {
                    let mut items: Vec<(&String, &String)> = d
                        .iter()
                        .filter(|(k, _)| prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str())))
                        .filter(|(k, _)| start.as_ref().is_none_or(|s| *k >= s))
                        .filter(|(k, _)| start_after.as_ref().is_none_or(|s| *k > s))
                        .filter(|(k, _)| end.as_ref().is_none_or(|e| *k < e))
                        .collect();
                    if *reverse {
                        items.reverse();
                    }
                    items.truncate(limit.map_or(usize::MAX, |l| l as usize));
                    json!({"ok": items})
                }
            }
            Op::DeleteAll => {
                d.clear();
                json!({"ok": null})
            }
            Op::Begin => {
                stack.push(d.clone());
                json!({"ok": null})
            }
            Op::Commit => match stack.pop() {
                Some(_) => json!({"ok": null}),
                None => invalid(),
            },
            Op::Rollback => match stack.pop() {
                Some(snapshot) => {
                    *d = snapshot;
                    json!({"ok": null})
                }
                None => invalid(),
            },
        });
    }
    // A transaction still open at the end of the event is rolled back.
    if let Some(outermost) = stack.into_iter().next() {
        *d = outermost;
    }
    match ending {
        Ending::Success => Some(out),
        Ending::Trap | Ending::Fail => {
            model.data = before;
            None
        }
    }
}

/// Error results carry a message the model cannot predict: compare their kind only.
fn normalize(results: &Value) -> Value {
    let mut results = results.clone();
    for r in results.as_array_mut().into_iter().flatten() {
        if let Some(err) = r.get_mut("err").and_then(Value::as_object_mut) {
            err.remove("message");
        }
    }
    results
}

/// Runs one random case against `host`, each case on a fresh object.
fn check_case(
    host: &Host,
    rt: &tokio::runtime::Runtime,
    object: &str,
    events: &[(Vec<Op>, Ending)],
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for (ops_list, ending) in events {
        let mut body: Vec<Value> = ops_list.iter().map(to_json).collect();
        match ending {
            Ending::Success => {}
            Ending::Trap => body.push(json!({"op": "trap"})),
            Ending::Fail => body.push(json!({"op": "fail"})),
        }
        let (status, got) = rt.block_on(ops(host, "t", object, Value::Array(body)));
        match apply(&mut model, ops_list, *ending) {
            Some(expected) => {
                prop_assert_eq!(status, 200, "{}", got);
                prop_assert_eq!(normalize(&got), Value::Array(expected));
            }
            None => prop_assert_eq!(status, 500, "{}", got),
        }
    }
    // What is stored at the end is exactly the model.
    let (_, got) = rt.block_on(ops(host, "t", object, json!([{"op": "list"}])));
    let all: Vec<(&String, &String)> = model.data.iter().collect();
    prop_assert_eq!(got, json!([{"ok": all}]));
    Ok(())
}

/// The host is started once for all cases, and dropped (killed) when the test ends.
#[test]
fn storage_matches_a_reference_model() {
    let (host, _dir) = Host::start(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(host.deploy("t", "test_object"));
    let events = prop::collection::vec((prop::collection::vec(op(), 0..8), ending()), 1..6);
    let next = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let result = runner.run(&events, |events| {
        let object = format!("model-{}", next.fetch_add(1, Ordering::Relaxed));
        check_case(&host, &rt, &object, &events)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// What happens between two events of the restart model test.
#[derive(Debug, Clone)]
enum Step {
    /// One event: its operations, and how it ends. A failing event also carries operations after
    /// its trap or error, which must never run.
    Event(Vec<Op>, Ending, Vec<Op>),
    /// SIGTERM, wait for the exit, start again on the same data dir.
    Graceful,
    /// SIGKILL, start again: every acknowledged event must have survived.
    Kill,
}

fn step() -> impl Strategy<Value = Step> {
    let event = (
        prop::collection::vec(op(), 0..8),
        ending(),
        prop::collection::vec(op(), 0..4),
    )
        .prop_map(|(ops, ending, after)| Step::Event(ops, ending, after));
    prop_oneof![6 => event, 1 => Just(Step::Graceful), 1 => Just(Step::Kill)]
}

/// A number from the environment, or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the steps on a fresh object, checking every response, and the whole stored state after
/// each restart and at the end.
fn check_restart_case(
    host: &RefCell<Host>,
    rt: &tokio::runtime::Runtime,
    object: &str,
    steps: &[Step],
    restarts: &[AtomicUsize; 2],
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let stored = |model: &Model| -> Result<(), TestCaseError> {
        let (status, got) = rt.block_on(ops(&host.borrow(), "t", object, json!([{"op": "list"}])));
        let all: Vec<(&String, &String)> = model.data.iter().collect();
        prop_assert_eq!(status, 200, "{}", got);
        prop_assert_eq!(got, json!([{"ok": all}]));
        Ok(())
    };
    for step in steps {
        match step {
            Step::Event(ops_list, ending, after) => {
                let mut body: Vec<Value> = ops_list.iter().map(to_json).collect();
                match ending {
                    Ending::Success => {}
                    Ending::Trap => body.push(json!({"op": "trap"})),
                    Ending::Fail => body.push(json!({"op": "fail"})),
                }
                if !matches!(ending, Ending::Success) {
                    body.extend(after.iter().map(to_json));
                }
                let (status, got) =
                    rt.block_on(ops(&host.borrow(), "t", object, Value::Array(body)));
                match apply(&mut model, ops_list, *ending) {
                    Some(expected) => {
                        prop_assert_eq!(status, 200, "{}", got);
                        prop_assert_eq!(normalize(&got), Value::Array(expected));
                    }
                    None => prop_assert_eq!(status, 500, "{}", got),
                }
            }
            Step::Graceful => {
                let mut h = host.borrow_mut();
                h.terminate();
                let exit = h.wait_exit(Duration::from_secs(60));
                prop_assert!(
                    exit.is_some(),
                    "the host did not exit within 60 s of SIGTERM"
                );
                h.restart();
                drop(h);
                restarts[0].fetch_add(1, Ordering::Relaxed);
                stored(&model)?;
            }
            Step::Kill => {
                host.borrow_mut().kill_and_restart();
                restarts[1].fetch_add(1, Ordering::Relaxed);
                stored(&model)?;
            }
        }
    }
    stored(&model)
}

/// Random events with host restarts between them, graceful and `kill -9`, on one data dir: after
/// every restart the object holds exactly what the model holds. 24 cases by default (about 12 s
/// here, most of it restarts); `PROPTEST_CASES` raises it. The seed is printed, and
/// `DOHOST_STORAGE_SEED` replays it.
#[test]
fn storage_matches_a_reference_model_across_restarts() {
    let (host, _dir) = Host::start(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(host.deploy("t", "test_object"));
    let host = RefCell::new(host);
    let seed = env_number(
        "DOHOST_STORAGE_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    eprintln!(
        "storage model across restarts: seed {seed} (replay with DOHOST_STORAGE_SEED={seed})"
    );
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let cases = env_number("PROPTEST_CASES", 24) as u32;
    let config = ProptestConfig {
        cases,
        // Shrinking replays cases, restarts included: keep a failure's report quick.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let next = AtomicUsize::new(0);
    let restarts = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let steps = prop::collection::vec(step(), 1..8);
    let result = runner.run(&steps, |steps| {
        let object = format!("restart-{}", next.fetch_add(1, Ordering::Relaxed));
        check_restart_case(&host, &rt, &object, &steps, &restarts)
    });
    if let Err(e) = result {
        panic!("{e} (seed {seed}: replay with DOHOST_STORAGE_SEED={seed})");
    }
    // Each kind of restart is one step in 8; over 24 cases (about 100 steps) missing one has a
    // chance of about 1e-6: a run without both did not test what it claims to.
    let [graceful, killed] = restarts.map(AtomicUsize::into_inner);
    if cases >= 24 {
        assert!(
            graceful > 0 && killed > 0,
            "{graceful} graceful and {killed} kill -9 restarts (seed {seed})"
        );
    }
}
