//! Hostile guests: CPU and memory limits, traps and failures discard the event's writes, and
//! other objects keep being served.

mod support;

use serde_json::json;
use support::{Host, client, json, ops};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_the_cpu_limit_while_others_are_served() {
    let (host, _dir) = Host::start(&["--cpu-limit", "300"]);
    host.deploy("t", "test_object").await;
    let c = client();
    let looping = tokio::spawn(json(c.get(host.at("/t/spinner/loop"))));
    // While the loop burns its budget, another object answers promptly.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let (status, body) = ops(
        &host,
        "t",
        "bystander",
        json!([{"op": "put", "key": "k", "value": "v"}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!looping.is_finished(), "the loop should still be running");
    assert!(
        started.elapsed().as_millis() < 2_000,
        "the bystander waited {:?}",
        started.elapsed()
    );

    let (status, body) = looping.await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "cpu_limit_exceeded", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("CPU limit"),
        "{body}"
    );

    // The object gets a fresh instance afterwards.
    let (status, body) = ops(&host, "t", "spinner", json!([{"op": "get", "key": "k"}])).await;
    assert_eq!((status, &body), (200, &json!([{"ok": null}])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_limit() {
    let (host, _dir) = Host::start(&["--memory-limit", "32"]);
    host.deploy("t", "test_object").await;
    let (status, body) = json(client().get(host.at("/t/bomb/oom"))).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "memory_limit_exceeded", "{body}");
    assert!(body["error"].as_str().unwrap().contains("32 MiB"), "{body}");
    let (status, _) = ops(&host, "t", "bomb", json!([])).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_or_an_error_after_a_put_leaves_storage_as_it_was() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    let c = client();
    let (status, _) = ops(
        &host,
        "t",
        "o",
        json!([{"op": "put", "key": "k", "value": "before"}]),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = json(c.post(host.at("/t/o/trap-after-put?key=k"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("trap")),
        "{body}"
    );
    let (status, body) = json(c.post(host.at("/t/o/err-after-put?key=k"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("object_error")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("deliberate error after put"),
        "{body}"
    );

    // A trap in the middle of a batch of operations discards the earlier ones of that event.
    let batch = json!([
        {"op": "put", "key": "k", "value": "lost"},
        {"op": "put", "key": "new", "value": "x"},
        {"op": "trap"},
    ]);
    let (status, _) = ops(&host, "t", "o", batch).await;
    assert_eq!(status, 500);

    let (status, body) = ops(
        &host,
        "t",
        "o",
        json!([{"op": "get", "key": "k"}, {"op": "get", "key": "new"}]),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!([{"ok": "before"}, {"ok": null}]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_keys_values_batches_and_quota_get_clear_errors() {
    let (host, _dir) = Host::start(&["--max-object-storage", "100000"]);
    host.deploy("t", "test_object").await;
    let long_key = "k".repeat(2049);
    let keys: Vec<String> = (0..129).map(|i| format!("k{i}")).collect();
    let (status, body) = ops(
        &host,
        "t",
        "o",
        json!([
            {"op": "put", "key": "k".repeat(2048), "value": "fits"},
            {"op": "put", "key": long_key, "value": "x"},
            {"op": "get", "key": long_key},
            {"op": "put_large", "key": "big", "size": 2 * 1024 * 1024},
            {"op": "get_many", "keys": keys},
            {"op": "delete_many", "keys": keys},
            {"op": "put_large", "key": "a", "size": 60000},
            {"op": "put_large", "key": "b", "size": 60000},
            {"op": "begin"}, {"op": "commit"}, {"op": "commit"},
            {"op": "list", "start": "a", "start_after": "a"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let kind = |i: usize| body[i]["err"]["kind"].as_str().unwrap_or("none").to_owned();
    let message = |i: usize| body[i]["err"]["message"].as_str().unwrap_or("").to_owned();
    assert_eq!(body[0], json!({"ok": null}));
    assert_eq!(kind(1), "limit-exceeded");
    assert!(
        message(1).contains("2049") && message(1).contains("2048"),
        "{}",
        message(1)
    );
    assert_eq!(kind(2), "limit-exceeded");
    assert_eq!(kind(3), "limit-exceeded");
    assert!(message(3).contains("key plus value"), "{}", message(3));
    assert_eq!(kind(4), "limit-exceeded");
    assert!(message(4).contains("129"), "{}", message(4));
    assert_eq!(kind(5), "limit-exceeded");
    assert_eq!(body[6], json!({"ok": null}));
    assert_eq!(kind(7), "limit-exceeded");
    assert!(message(7).contains("quota"), "{}", message(7));
    assert_eq!(body[9], json!({"ok": null}));
    assert_eq!(kind(10), "invalid-argument");
    assert_eq!(kind(11), "invalid-argument");

    // Only what was accepted was stored.
    let (_, body) = ops(&host, "t", "o", json!([{"op": "list"}])).await;
    let keys: Vec<&str> = body[0]["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["a".to_owned(), "k".repeat(2048)]);
}

/// Object names are free: a client writing to fresh objects by the thousand meets the namespace's
/// quota, a clear `limit-exceeded`, and not the disk; other namespaces are not affected, the count
/// survives a kill, and deleting makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_objects_by_the_thousand_meet_the_namespace_quota() {
    let (mut host, _dir) = Host::start(&["--max-namespace-storage", "1000000"]);
    host.deploy("t", "test_object").await;
    host.deploy("u", "test_object").await;
    let value = "v".repeat(10_000);
    let put = json!([{"op": "put", "key": "k", "value": value}]);
    let mut stored = 0;
    let refusal = loop {
        let (status, body) = ops(&host, "t", &format!("fresh-{stored}"), put.clone()).await;
        assert_eq!(status, 200, "{body}");
        if body[0]["err"].is_object() {
            break body[0]["err"].clone();
        }
        stored += 1;
        assert!(stored <= 100, "1 MB took more than 100 objects of 10 KB");
    };
    // Each object stores 10,001 bytes (key plus value): 99 of them fit in 1,000,000.
    assert_eq!(stored, 99);
    assert_eq!(refusal["kind"], "limit-exceeded");
    let message = refusal["message"].as_str().unwrap();
    assert!(message.contains("--max-namespace-storage"), "{message}");
    let (_, body) = ops(&host, "u", "fresh", put.clone()).await;
    assert!(
        body[0].get("ok").is_some(),
        "another namespace is refused: {body}"
    );

    host.kill_and_restart();
    let (_, body) = ops(&host, "t", "after-restart", put.clone()).await;
    assert_eq!(body[0]["err"]["kind"], "limit-exceeded", "{body}");
    let delete = json!([{"op": "delete", "key": "k"}]);
    let (status, body) = ops(&host, "t", "fresh-0", delete).await;
    assert_eq!((status, &body[0]["ok"]), (200, &json!(true)), "{body}");
    let (_, body) = ops(&host, "t", "after-delete", put).await;
    assert!(
        body[0].get("ok").is_some(),
        "refused after a delete: {body}"
    );
}
