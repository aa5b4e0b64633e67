//! Shared object classes (world `shared-object`): many objects served from a few instances, each
//! object's fields rebuilt whenever the instance may hold another object's or stale ones.

mod support;

use futures::future::join_all;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use support::{Host, TOKEN, client, json};
use tokio::sync::Mutex;

/// The probe (`tests/guests/shared-probe`) counts in a field it reads from storage only when it is
/// built, so any answer from a field that belongs to another object, or that missed a write made
/// elsewhere, shows in its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_class_serves_many_objects_from_few_instances_each_with_its_own_count() {
    let (host, _dir) = Host::start(&[]);
    let (status, info) = host
        .deploy_bytes(
            "probe",
            std::fs::read(support::wasm("shared_probe")).unwrap(),
        )
        .await;
    assert_eq!(
        (status, &info["shared_instances"]),
        (200, &json!(true)),
        "{info}"
    );
    let (status, info) = host
        .deploy_bytes("counter", std::fs::read(support::wasm("counter")).unwrap())
        .await;
    assert_eq!(
        (status, &info["shared_instances"]),
        (200, &json!(false)),
        "{info}"
    );

    // 64 clients, each posting 40 times to objects picked from 200: the objects' events
    // interleave on the instances, and one object's run on several of them in turn.
    let c = client();
    let seen: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let instances: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let clients = (0..64u64).map(|k| {
        let (c, url, seen, instances) = (
            c.clone(),
            host.at("/probe/"),
            seen.clone(),
            instances.clone(),
        );
        tokio::spawn(async move {
            for i in 0..40u64 {
                let name = format!("o{}", (k * 7919 + i * 104_729) % 200);
                let (status, body) = json(c.post(format!("{url}{name}/"))).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["name"], json!(name), "{body}");
                assert_eq!(
                    body["built_for"],
                    json!(name),
                    "a field of another object: {body}"
                );
                seen.lock()
                    .await
                    .entry(name)
                    .or_default()
                    .push(body["count"].as_u64().unwrap());
                instances
                    .lock()
                    .await
                    .insert(body["instance"].as_u64().unwrap());
            }
        })
    });
    for done in join_all(clients).await {
        done.unwrap();
    }
    // Every object counted each of its increments exactly once: a stale field would repeat a
    // count, another object's would skip or repeat some.
    let seen = seen.lock().await;
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 64 * 40);
    for (name, counts) in seen.iter() {
        let mut counts = counts.clone();
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(counts, expected, "object {name}");
    }
    let instances = instances.lock().await.len();
    assert!(
        (2..=66).contains(&instances),
        "{instances} instances served 200 objects"
    );
    let stats = host.stats().await;
    assert!(stats["live_instances"].as_u64().unwrap() <= 66, "{stats}");
    assert!(
        stats["idle_shared_instances"].as_u64().unwrap() >= 1,
        "{stats}"
    );

    // A failed event drops its instance; the objects it served lose nothing stored.
    let (status, _) = json(c.patch(host.at("/probe/o1/"))).await;
    assert_eq!(status, 500);
    let (status, body) = json(c.get(host.at("/probe/o1/"))).await;
    assert_eq!(
        (status, &body["count"]),
        (200, &json!(seen["o1"].len())),
        "{body}"
    );
}

/// An operator's write between two events of an object reaches its next event, although the
/// instance that ran its last event still holds the old value in a field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_write_reaches_a_shared_objects_next_event() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("probe", "shared_probe").await;
    let c = client();
    for expected in 1..=2 {
        let (status, body) = json(c.post(host.at("/probe/a/"))).await;
        assert_eq!((status, &body["count"]), (200, &json!(expected)), "{body}");
    }
    let put = c
        .put(host.at("/_admin/namespaces/probe/objects/a/storage/count"))
        .bearer_auth(TOKEN)
        .body("100")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let (status, body) = json(c.post(host.at("/probe/a/"))).await;
    assert_eq!((status, &body["count"]), (200, &json!(101)), "{body}");
}

/// The shared instances and the objects resting between events go once idle, like objects'
/// own instances hibernate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_class_holds_nothing_once_idle() {
    let (host, _dir) = Host::start(&["--idle-timeout", "1"]);
    host.deploy("probe", "shared_probe").await;
    let c = client();
    for name in 0..50 {
        let (status, body) = json(c.post(host.at(&format!("/probe/n{name}/")))).await;
        assert_eq!(status, 200, "{body}");
    }
    let busy = host.stats().await;
    assert!(busy["awake_objects"].as_u64().unwrap() >= 1, "{busy}");
    let stats = support::poll(
        "no shared instance or resting object left",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(100),
        || async {
            let s = host.stats().await;
            (s["live_instances"] == 0 && s["idle_shared_instances"] == 0 && s["awake_objects"] == 0)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(stats["instance_memory_bytes"], 0, "{stats}");
    let (status, body) = json(c.get(host.at("/probe/n7/"))).await;
    assert_eq!((status, &body["count"]), (200, &json!(1)), "{body}");
}

/// A flood of fresh names at a shared class, with room for 8 instances and 8 resting objects:
/// every answer is a 200 or a 503 `overloaded`, an object of another class answers throughout,
/// and the host holds no more than its caps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fresh_names_at_a_shared_class_stays_within_the_caps() {
    let (host, _dir) = Host::start(&["--max-live-objects", "8"]);
    host.deploy("probe", "shared_probe").await;
    host.deploy("counter", "counter").await;
    let c = client();
    let flood = (0..64u64).map(|k| {
        let (c, url) = (c.clone(), host.at("/probe/"));
        tokio::spawn(async move {
            let mut served = 0;
            for i in 0..30u64 {
                let r = c.post(format!("{url}f{k}-{i}/")).send().await.unwrap();
                served += usize::from(support::served_or_overloaded(r).await);
            }
            served
        })
    });
    let flood = tokio::spawn(join_all(flood));
    let mut bystander = 0;
    while !flood.is_finished() {
        let (status, body) = json(c.post(host.at("/counter/bystander/"))).await;
        assert_eq!(status, 200, "{body}");
        bystander += 1;
        let stats = host.stats().await;
        assert!(stats["live_instances"].as_u64().unwrap() <= 8, "{stats}");
        // Resting objects (at most 8) and those whose event runs or waits (at most one each
        // of the 64 clients), and the bystander.
        assert!(
            stats["awake_objects"].as_u64().unwrap() <= 8 + 64 + 1,
            "{stats}"
        );
    }
    let served: usize = flood.await.unwrap().into_iter().map(|r| r.unwrap()).sum();
    assert!(served > 64 * 30 / 2, "{served} of {} served", 64 * 30);
    assert!(bystander > 0);
    let (status, body) = json(c.post(host.at("/probe/after/"))).await;
    assert_eq!((status, &body["count"]), (200, &json!(1)), "{body}");
}

/// `examples/shared-counter` answers as `examples/counter` does, and its objects share instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_counter_example_counts_like_the_counter() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("counter", "shared_counter").await;
    let c = client();
    for name in ["alice", "bob", "carol"] {
        for expected in 1..=3 {
            let answer = json(c.post(host.at(&format!("/counter/{name}/")))).await;
            assert_eq!(answer, (200, json!({"count": expected})));
        }
    }
    assert_eq!(
        json(c.get(host.at("/counter/alice/"))).await,
        (200, json!({"count": 3}))
    );
    let (status, body) = json(c.delete(host.at("/counter/alice/"))).await;
    assert_eq!(status, 405, "{body}");
    // Three objects, one after another: one instance served them all.
    let stats = host.stats().await;
    assert_eq!(stats["live_instances"], 1, "{stats}");
}
