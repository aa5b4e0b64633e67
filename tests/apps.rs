//! Apps: a worker in front of object classes, stubs between objects, the app manifest's deploy
//! (all or nothing), variables and secrets, and components of the 0.2.0 contract still served.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{Host, client, json, poll};

/// The test app: the `front` worker on its four path prefixes, a private class `caller` bound as `CALLERS`, a public
/// class `pub-caller` bound as `PUBLIC`.
fn spec() -> serde_json::Value {
    json!({
        "routes": ["/to/", "/var/", "/whoami", "/panic"],
        "objects": [
            { "binding": "CALLERS", "namespace": "callers", "public": false },
            { "binding": "PUBLIC", "namespace": "pub-callers", "public": true },
        ],
        "vars": { "GREETING": "hello" },
    })
}

async fn deploy_test_app(host: &Host) {
    let (status, body) = host
        .deploy_app(
            "shop",
            spec(),
            Some("front"),
            &[("callers", "caller"), ("pub-callers", "caller")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
}

#[tokio::test]
async fn a_worker_reaches_private_classes_which_clients_cannot_address() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();

    // Through the worker: a stub call to the private class.
    let (status, n) =
        json(c.post(host.at("/to/CALLERS/alice/write-then-call?to=CALLERS&name=bob"))).await;
    assert_eq!((status, n), (200, json!(1)));
    let (status, seen) = json(c.get(host.at("/to/CALLERS/bob/seen"))).await;
    assert_eq!((status, seen), (200, json!(1)));

    // The private class's direct route answers as if nothing were deployed there.
    let (status, body) = json(c.get(host.at("/callers/bob/seen"))).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "unknown_namespace");

    // The public class is reachable both ways, and is the same object either way.
    let (status, _) =
        json(c.post(host.at("/pub-callers/carol/write-then-call?to=PUBLIC&name=dave"))).await;
    assert_eq!(status, 200);
    let (status, seen) = json(c.get(host.at("/to/PUBLIC/dave/seen"))).await;
    assert_eq!((status, seen), (200, json!(1)));
    let (status, n) = json(c.get(host.at("/to/pub-callers/carol/n"))).await;
    assert_eq!(
        (status, n),
        (200, json!(1)),
        "a namespace name works as a binding"
    );

    // A binding the app does not have.
    let (status, body) = json(c.get(host.at("/to/NOPE/x/n"))).await;
    assert_eq!(status, 502);
    assert_eq!(body["call_error"], "unknown-namespace", "{body}");
}

#[tokio::test]
async fn a_call_back_into_a_waiting_object_fails_at_once_with_cycle() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();

    // a → b → c works and visits each once.
    let hops = json!([["CALLERS", "b"], ["CALLERS", "c"]]);
    let (status, names) = json(c.post(host.at("/to/CALLERS/a/hops")).json(&hops)).await;
    assert_eq!((status, names), (200, json!(["a", "b", "c"])));

    // a → b → a would wait forever: refused at once, well before any time limit.
    let started = Instant::now();
    let hops = json!([["CALLERS", "b"], ["CALLERS", "a"]]);
    let (status, body) = json(c.post(host.at("/to/CALLERS/a/hops")).json(&hops)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["call_error"], "cycle", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("callers/a"),
        "{body}"
    );

    // So would a → a.
    let hops = json!([["CALLERS", "a"]]);
    let (status, body) = json(c.post(host.at("/to/CALLERS/a/hops")).json(&hops)).await;
    assert_eq!(
        (status, body["call_error"].clone()),
        (502, json!("cycle")),
        "{body}"
    );

    // Calls nest at most 16 deep.
    let deep: Vec<_> = (0..20)
        .map(|i| json!(["CALLERS", format!("d{i}")]))
        .collect();
    let (status, body) = json(c.post(host.at("/to/CALLERS/a/hops")).json(&deep)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["call_error"], "invalid-argument", "{body}");
}

#[tokio::test]
async fn calls_from_one_caller_arrive_in_order() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();
    let r = c
        .post(host.at("/to/CALLERS/sender/send?to=CALLERS&name=log&count=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, log) = json(c.get(host.at("/to/CALLERS/log/log"))).await;
    let expected: Vec<u32> = (0..200).collect();
    assert_eq!(log, json!(expected));
}

#[tokio::test]
async fn the_stats_count_each_answered_call_and_its_overhead_over_the_callees_event() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();
    let stats = host.stats().await;
    assert_eq!(stats["stub_calls"]["from_objects"]["calls"], 0, "{stats}");
    // The worker calls `sender`, which calls `log` 50 times; each of those writes.
    let r = c
        .post(host.at("/to/CALLERS/sender/send?to=CALLERS&name=log&count=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let stats = host.stats().await;
    for (caller, calls) in [("from_objects", 50), ("from_workers", 1)] {
        let counts = &stats["stub_calls"][caller];
        assert_eq!(counts["calls"], calls, "{caller}: {counts}");
        let in_buckets: u64 = counts["overhead_histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["calls"].as_u64().unwrap())
            .sum();
        assert_eq!(in_buckets, calls, "{caller}: {counts}");
        let overhead = counts["overhead_ns_total"].as_u64().unwrap();
        let callee = counts["callee_ns_total"].as_u64().unwrap();
        let handback = counts["handback_ns_total"].as_u64().unwrap();
        // Each callee's event waits for its fsync; the call adds less than that. (How much less
        // is the benchmark's to say.) The hand-back is a part of the overhead.
        assert!(0 < overhead && overhead < callee, "{caller}: {counts}");
        assert!(handback <= overhead, "{caller}: {counts}");
    }
}

#[tokio::test]
async fn a_call_inside_a_transaction_is_refused_and_sends_nothing() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();
    let r = c
        .post(host.at("/to/CALLERS/t/call-in-transaction?to=CALLERS&name=u"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("invalid-argument: "), "{text}");
    assert!(text.contains("transaction"), "{text}");
}

#[tokio::test]
async fn variables_and_secrets_reach_workers_and_objects_and_secrets_change_in_place() {
    let (host, dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();
    let text = |path: &str| {
        let url = host.at(path);
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(text("/var/GREETING").await, (200, "hello".into()));
    assert_eq!(text("/var/API_KEY").await.0, 404);

    // `dohost secret put` reads the value from stdin and the manifest for the app's name.
    let manifest = dir.path().join("dohost.toml");
    std::fs::write(&manifest, "name = \"shop\"\n[[objects]]\nbinding = \"CALLERS\"\nnamespace = \"callers\"\ncomponent = \"x.wasm\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dohost"))
        .args(["secret", "put", "API_KEY", "--config"])
        .arg(&manifest)
        .args(["--url", &host.url, "--token", support::TOKEN])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"s3cret\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        !said.contains("s3cret"),
        "the secret is never shown back: {said}"
    );
    assert_eq!(text("/var/API_KEY").await, (200, "s3cret".into()));
    assert_eq!(
        text("/to/CALLERS/x/env/API_KEY").await,
        (200, "s3cret".into())
    );

    // A secret may not shadow a variable, and bad names are refused.
    for (name, code) in [("GREETING", 400), ("1bad", 400)] {
        let r = c
            .put(host.at(&format!("/_admin/apps/shop/secrets/{name}")))
            .bearer_auth(support::TOKEN)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{name}");
    }
    assert_eq!(text("/var/GREETING").await, (200, "hello".into()));

    // Secrets survive a restart.
    let mut host = host;
    host.kill_and_restart();
    let r = c.get(host.at("/var/API_KEY")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "s3cret");
}

#[tokio::test]
async fn an_app_deploys_all_or_nothing() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();
    let (status, _) =
        json(c.post(host.at("/to/CALLERS/a/write-then-call?to=CALLERS&name=b"))).await;
    assert_eq!(status, 200);

    // Version 2 would add a route and a class, but one of its components is no object.
    let mut spec2 = spec();
    spec2["routes"] = json!(["/to/", "/v2/"]);
    spec2["objects"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "binding": "BROKEN", "namespace": "broken" }));
    let (status, body) = host
        .deploy_app(
            "shop",
            spec2.clone(),
            Some("front"),
            &[
                ("callers", "caller"),
                ("pub-callers", "caller"),
                ("broken", "not-an-object"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("BROKEN") && message.contains("broken"),
        "the error names the component: {message}"
    );

    // Nothing changed: the app is at version 1, its objects kept their state.
    let (_, info) = json(
        c.get(host.at("/_admin/apps/shop"))
            .bearer_auth(support::TOKEN),
    )
    .await;
    assert_eq!(info["version"], 1, "{info}");
    assert_eq!(info["spec"]["objects"].as_array().unwrap().len(), 2);
    let (_, namespaces) = json(
        c.get(host.at("/_admin/namespaces"))
            .bearer_auth(support::TOKEN),
    )
    .await;
    assert!(
        !namespaces.to_string().contains("\"broken\""),
        "{namespaces}"
    );
    let (_, n) = json(c.get(host.at("/to/CALLERS/a/n"))).await;
    assert_eq!(n, json!(1));

    // A worker that is an object is refused too, naming the worker.
    let (status, body) = host
        .deploy_app(
            "shop",
            spec(),
            Some("caller"),
            &[("callers", "caller"), ("pub-callers", "caller")],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("worker"), "{body}");

    // A namespace of the app cannot be redeployed alone, nor taken by another app.
    let (status, body) = host
        .deploy_bytes("callers", std::fs::read(support::wasm("caller")).unwrap())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("shop"), "{body}");
    let (status, body) = host
        .deploy_app(
            "other",
            json!({ "objects": [{ "binding": "X", "namespace": "callers" }] }),
            None,
            &[("callers", "caller")],
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // And a good version 2 switches everything, and survives a restart.
    let mut spec2 = spec();
    spec2["vars"]["GREETING"] = json!("hi");
    let (status, body) = host
        .deploy_app(
            "shop",
            spec2,
            Some("front"),
            &[("callers", "caller"), ("pub-callers", "caller")],
        )
        .await;
    assert_eq!((status, body["version"].clone()), (200, json!(2)), "{body}");
    let mut host = host;
    host.kill_and_restart();
    let r = c.get(host.at("/var/GREETING")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hi");
    let (_, n) = json(c.get(host.at("/to/CALLERS/a/n"))).await;
    assert_eq!(n, json!(1));
}

#[tokio::test]
async fn a_component_of_the_0_2_0_contract_is_still_served() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("old", "v0_2_counter").await;
    let c = client();
    for expected in ["v0.2.0 count 1", "v0.2.0 count 2"] {
        let r = c.post(host.at("/old/x/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), expected);
    }
    // And an app can call it through a stub, as a public namespace.
    deploy_test_app(&host).await;
    let r = c.post(host.at("/to/old/x/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "v0.2.0 count 3");
}

#[tokio::test]
async fn a_worker_hands_a_websocket_upgrade_to_an_object() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let mut ws = support::ws_connect(&host.ws("/to/CALLERS/room-1/ws")).await;
    support::ws_send(&mut ws, "hi").await;
    assert_eq!(support::ws_text(&mut ws).await, "room-1: hi");
    let stats = host.stats().await;
    assert_eq!(stats["open_sockets"], 1, "{stats}");
}

#[tokio::test]
async fn a_worker_sees_the_client_address_and_a_failing_worker_answers_500() {
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();
    let (status, body) = json(c.get(host.at("/whoami"))).await;
    assert_eq!(
        (status, body["client_address"].clone()),
        (200, json!("127.0.0.1"))
    );
    let (status, body) = json(c.get(host.at("/panic"))).await;
    assert_eq!(status, 500, "{body}");
    let (status, _) = json(c.get(host.at("/whoami"))).await;
    assert_eq!(status, 200, "a fresh instance serves the next request");
}

/// Starts `path` on the caller `a` (a request that lingers after its call), waits until the
/// callee `b` has seen it, kills the host with SIGKILL while `a`'s event still runs, restarts it,
/// and answers `(n, seen)`: what `a` kept, and what `b` kept of what it saw.
async fn kill_while_the_caller_lingers(host: &mut Host, path: &str) -> (u64, u64) {
    let c = client();
    let request = c.post(host.at(path)).send();
    let pending = tokio::spawn(request);
    support::poll(
        "the callee to see the call",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let (c, url) = (c.clone(), host.at("/to/CALLERS/b/seen"));
            async move {
                let (_, seen) = json(c.get(url)).await;
                (seen != json!(0)).then_some(())
            }
        },
    )
    .await;
    host.kill_and_restart();
    let _ = pending.await;
    let (_, n) = json(c.get(host.at("/to/CALLERS/a/n"))).await;
    let (_, seen) = json(c.get(host.at("/to/CALLERS/b/seen"))).await;
    (n.as_u64().unwrap(), seen.as_u64().unwrap())
}

#[tokio::test]
async fn what_a_callee_saw_of_its_callers_writes_survives_kill_9() {
    // The caller writes n, calls b with n, then lingers: killed then, its write must be there,
    // because the call waited for it to be durable. Without that gate the write would only be
    // committed when the event ends, which it never does.
    let (mut host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let (n, seen) = kill_while_the_caller_lingers(
        &mut host,
        "/to/CALLERS/a/write-then-call?to=CALLERS&name=b&linger_ms=5000",
    )
    .await;
    assert_eq!(seen, 1);
    assert!(
        n >= seen,
        "the callee saw n = {seen}, the caller kept n = {n}"
    );

    // Negative control: calling before writing lets the callee see what a crash loses, and the
    // same check catches it.
    let (mut host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let (n, seen) = kill_while_the_caller_lingers(
        &mut host,
        "/to/CALLERS/a/call-then-write?to=CALLERS&name=b&linger_ms=5000",
    )
    .await;
    assert_eq!((n, seen), (0, 1), "the check must see the lost write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_fresh_names_through_a_worker_is_served_or_refused_and_the_host_serves_on() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Each request holds a worker instance and two objects' (caller and callee) at once: 16 slots
    // are far too few for 64 clients, and every answer must still be a 200 or a 503.
    let (host, _dir) = Host::start(&["--max-live-objects", "16"]);
    deploy_test_app(&host).await;
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flood = Vec::new();
    for c in 0..64 {
        let (url, ok, refused) = (host.url.clone(), ok.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            let http = client();
            for i in 0..20 {
                let r = http
                    .post(format!(
                        "{url}/to/CALLERS/a-{c}-{i}/write-then-call?to=CALLERS&name=b-{c}-{i}&linger_ms=20"
                    ))
                    .send()
                    .await
                    .expect("the host answers every request");
                let counter = if support::served_or_overloaded(r).await { &ok } else { &refused };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in flood {
        task.await.unwrap();
    }
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert!(ok > 0 && refused > 0, "{ok} served, {refused} refused");
    // And the host serves on.
    let (status, n) =
        json(client().post(host.at("/to/CALLERS/after/write-then-call?to=CALLERS&name=x"))).await;
    assert_eq!((status, n), (200, json!(1)));
    let stats = host.stats().await;
    assert!(stats["live_instances"].as_u64().unwrap() <= 16, "{stats}");
}

#[tokio::test]
async fn two_chains_that_would_wait_on_each_other_are_refused_at_once() {
    // b's event lingers, then calls a; meanwhile a's event (another request) calls b, and waits
    // behind b's event. When b calls a, each would wait for the other for ever.
    let (host, _dir) = Host::start(&[]);
    deploy_test_app(&host).await;
    let c = client();
    let started = Instant::now();
    let b_to_a = c
        .post(host.at("/to/CALLERS/b/hops?linger_before_ms=500"))
        .json(&json!([["CALLERS", "a"]]))
        .send();
    let a_to_b = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.post(host.at("/to/CALLERS/a/hops"))
            .json(&json!([["CALLERS", "b"]]))
            .send()
            .await
    };
    let (b_to_a, a_to_b) = tokio::join!(b_to_a, a_to_b);
    let (b_to_a, a_to_b) = (b_to_a.unwrap(), a_to_b.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b_to_a.status(), 502);
    let refused: serde_json::Value = b_to_a.json().await.unwrap();
    assert_eq!(refused["call_error"], "cycle", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("callers/b → callers/a → callers/b"),
        "{refused}"
    );
    // a's call went through once b's event ended.
    assert_eq!(a_to_b.status(), 200);
    assert_eq!(
        a_to_b.json::<serde_json::Value>().await.unwrap(),
        json!(["a", "b"])
    );
}

#[tokio::test]
async fn a_workers_idle_instances_are_kept_within_the_hosts_share_and_dropped_when_idle() {
    // 160 instance slots: idle workers may keep a sixteenth of them, 10.
    let (host, _dir) = Host::start(&["--max-live-objects", "160", "--idle-timeout", "2"]);
    deploy_test_app(&host).await;
    let c = client();
    // 40 requests at once, each holding a worker instance while it waits its turn at one object
    // that takes 20 ms per event: 40 worker instances are busy together.
    let requests = (0..40).map(|_| {
        c.post(host.at("/to/CALLERS/slow/hops?linger_before_ms=20"))
            .body("[]")
            .send()
    });
    for r in futures::future::join_all(requests).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let stats = host.stats().await;
    assert_eq!(stats["idle_workers"], 10, "{stats}");
    // The object and the idle workers; the 30 others were dropped after their request.
    assert_eq!(stats["live_instances"], 11, "{stats}");
    // A later request reuses one, and puts it back.
    let (status, _) = json(c.post(host.at("/to/CALLERS/slow/hops")).body("[]")).await;
    assert_eq!(status, 200);
    assert_eq!(host.stats().await["idle_workers"], 10);
    // Idle past the idle timeout, they are dropped like hibernating objects.
    poll(
        "the idle workers to go",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let stats = host.stats().await;
            (stats["idle_workers"] == 0).then_some(())
        },
    )
    .await;
}
