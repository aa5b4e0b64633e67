//! The examples end to end: counting, racing for tickets, many objects, and a `kill -9`.

mod support;

use futures::future::join_all;
use serde_json::json;
use support::{Host, client, json, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_deployed_with_the_cli_counts_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with_token(dir.path(), &[], None);
    let counter = wasm("counter");
    let out = host.cli(&["deploy", counter.to_str().unwrap(), "--name", "counter"]);
    assert!(
        out.status.success(),
        "deploy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 1"));

    let c = client();
    assert_eq!(
        json(c.post(host.at("/counter/alice/"))).await,
        (200, json!({"count": 1}))
    );
    assert_eq!(
        json(c.post(host.at("/counter/alice"))).await,
        (200, json!({"count": 2}))
    );
    assert_eq!(
        json(c.get(host.at("/counter/alice/"))).await,
        (200, json!({"count": 2}))
    );
    assert_eq!(
        json(c.get(host.at("/counter/bob/"))).await,
        (200, json!({"count": 0}))
    );
    let (status, body) = json(c.delete(host.at("/counter/alice/"))).await;
    assert_eq!(status, 405, "{body}");

    let out = host.cli(&["namespaces"]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("counter") && listing.contains(" 1 ") && listing.contains("foreground"),
        "{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_claims_get_each_ticket_once() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("tickets", "ticket_counter").await;
    let c = client();
    let claims = (0..1000).map(|_| {
        let req = c.post(host.at("/tickets/show/"));
        async move { json(req).await }
    });
    let mut tickets: Vec<u64> = join_all(claims)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body["ticket"].as_u64().expect("a ticket number")
        })
        .collect();
    tickets.sort_unstable();
    assert_eq!(tickets, (1..=1000).collect::<Vec<_>>());
    assert_eq!(
        json(c.get(host.at("/tickets/show/"))).await,
        (200, json!({"issued": 1000}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_objects_keep_their_own_counts_across_kill_9() {
    let (mut host, _dir) = Host::start(&[]);
    host.deploy("counter", "counter").await;
    let c = client();
    let expected = |i: usize| i % 3 + 1;
    let hits = (0..1000)
        .flat_map(|i| (0..expected(i)).map(move |_| i))
        .map(|i| {
            let req = c.post(host.at(&format!("/counter/object-{i}/")));
            async move {
                let (status, body) = json(req).await;
                assert_eq!(status, 200, "{body}");
            }
        });
    join_all(hits).await;

    // Every POST was acknowledged, so every increment must survive a SIGKILL.
    host.kill_and_restart();
    let reads = (0..1000).map(|i| {
        let req = c.get(host.at(&format!("/counter/object-{i}/")));
        async move { (i, json(req).await) }
    });
    for (i, (status, body)) in join_all(reads).await {
        assert_eq!(status, 200);
        assert_eq!(body, json!({"count": expected(i)}), "object-{i}");
    }
}

async fn stats(host: &Host) -> serde_json::Value {
    let req = client()
        .get(host.at("/_admin/stats"))
        .bearer_auth(support::TOKEN);
    let (status, body) = json(req).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_hibernate_and_wake_with_their_storage() {
    let (host, _dir) = Host::start(&["--idle-timeout", "0.2"]);
    host.deploy("counter", "counter").await;
    let c = client();
    for i in 0..5 {
        let (status, _) = json(c.post(host.at(&format!("/counter/sleepy-{i}/")))).await;
        assert_eq!(status, 200);
    }
    assert_eq!(stats(&host).await["live_instances"], 5);
    // Bounded wait for the idle timeout to drop every instance and end every event loop.
    let mut asleep = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let s = stats(&host).await;
        if s["live_instances"] == 0 && s["awake_objects"] == 0 {
            asleep = true;
            break;
        }
    }
    assert!(asleep, "instances still live: {}", stats(&host).await);
    for i in 0..5 {
        let reply = json(c.post(host.at(&format!("/counter/sleepy-{i}/")))).await;
        assert_eq!(reply, (200, json!({"count": 2})));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_instance_cap_evicts_the_least_recently_used() {
    let (host, _dir) = Host::start(&["--max-live-objects", "3"]);
    host.deploy("counter", "counter").await;
    let c = client();
    for round in 1..=3 {
        for i in 0..10 {
            let reply = json(c.post(host.at(&format!("/counter/crowd-{i}/")))).await;
            assert_eq!(reply, (200, json!({"count": round})));
            let live = stats(&host).await["live_instances"].as_u64().unwrap();
            assert!(live <= 3, "{live} live instances with a cap of 3");
        }
    }
}
