//! Objects and workers written in JavaScript and TypeScript on the Cloudflare API, built with
//! `guest-sdk/js` (by `scripts/build-js`): the SDK's storage, transactions, alarms, WebSockets
//! and errors through a probe object, Rust and JavaScript reading each other's values, the
//! counter's race, the published seed examples run unchanged through their workers, and what the
//! SDK refuses. The other JavaScript examples run in `examples.rs`, beside their Rust twins.

mod support;

use futures::future::join_all;
use serde_json::{Value, json};
use std::future::IntoFuture;
use std::path::Path;
use std::time::Duration;
use support::{
    Host, client, compile_cache, js_wasm, json, poll, ws_close, ws_connect, ws_json,
    ws_json_of_type, ws_send, ws_text,
};

/// A host for JavaScript components: they share one compile cache across the suite.
fn js_host(args: &[&str]) -> (Host, tempfile::TempDir) {
    Host::start(&[&["--compile-cache", &compile_cache()], args].concat())
}

async fn probe_host() -> (Host, tempfile::TempDir) {
    let (host, dir) = js_host(&[]);
    host.deploy_file("probe", &js_wasm("probe")).await;
    (host, dir)
}

async fn get(host: &Host, path: &str) -> Value {
    let (status, body) = json(client().get(host.at(path))).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_racing_increments_of_the_javascript_counter_get_one_to_a_thousand() {
    let (host, _dir) = js_host(&[]);
    host.deploy_file("counter", &js_wasm("counter")).await;
    let c = client();
    let claims = (0..1000).map(|_| {
        let req = c.post(host.at("/counter/race/"));
        async move { json(req).await }
    });
    let mut counts: Vec<u64> = join_all(claims)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body["count"].as_u64().expect("a count")
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=1000).collect::<Vec<_>>());
    assert_eq!(get(&host, "/counter/race/").await, json!({"count": 1000}));
    let r = c.delete(host.at("/counter/race/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_javascript_objects_read_each_others_values() {
    let (host, _dir) = js_host(&[]);
    let c = client();
    let post = |path: &str| json(c.post(host.at(path)));

    // The same namespace, redeployed from one language to the other: the count carries on.
    host.deploy("counter", "counter").await;
    assert_eq!(post("/counter/shared/").await, (200, json!({"count": 1})));
    host.deploy_file("counter", &js_wasm("counter")).await;
    assert_eq!(get(&host, "/counter/shared/").await, json!({"count": 1}));
    assert_eq!(post("/counter/shared/").await, (200, json!({"count": 2})));
    host.deploy("counter", "counter").await;
    assert_eq!(post("/counter/shared/").await, (200, json!({"count": 3})));

    // The rate limiters store the same bucket: a key drained in Rust stays drained in JS. The
    // bucket refills as time passes, so the JS build is compiled before the clock starts.
    host.deploy_file("warm-up", &js_wasm("rate-limiter")).await;
    host.deploy("limiter", "rate_limiter").await;
    let drained = std::time::Instant::now();
    for _ in 0..50 {
        client().get(host.at("/limiter/k/")).send().await.unwrap();
    }
    host.deploy_file("limiter", &js_wasm("rate-limiter")).await;
    let (status, body) = json(c.get(host.at("/limiter/k/"))).await;
    assert_eq!(status, 200, "{body}");
    let refilled = (drained.elapsed().as_secs_f64() * 100.0 / 60.0).ceil() as u64;
    let remaining = body["remaining"].as_u64().unwrap();
    assert!(
        (49..=49 + refilled).contains(&remaining) && remaining < 99,
        "{remaining} left after 51 requests and {refilled} tokens of refill: {body}"
    );

    // Any JSON a Rust object (the test object's ops) wrote, JS reads, and back.
    host.deploy("rust", "test_object").await;
    host.deploy_file("js", &js_wasm("probe")).await;
    let nested = json!({"list": [1, 2.5, "three", null, true], "map": {"k": {"deep": []}}});
    let r = c
        .put(host.at("/js/o/raw/v"))
        .json(&nested)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(get(&host, "/js/o/raw/v").await, json!({"value": nested}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_values_keep_their_types() {
    let (host, _dir) = probe_host().await;
    assert_eq!(
        json(client().post(host.at("/probe/p/values"))).await,
        (200, json!({"stored": 17}))
    );
    // Read back in a later event, and again after the object was dropped from memory.
    let first = get(&host, "/probe/p/values").await;
    let expected = json!({
        "number": {"type": "number", "value": 1.5},
        "negativeZero": {"type": "number", "value": "-0"},
        "nan": {"type": "number", "value": "NaN"},
        "infinity": {"type": "number", "value": "-Infinity"},
        "big": {"type": "bigint", "value": "12345678901234567890"},
        "string": {"type": "string", "value": "héllo"},
        "boolean": {"type": "boolean", "value": true},
        "null": {"type": "null", "value": null},
        "undefined": {"type": "undefined", "value": "(undefined)"},
        "array": {"type": "Array", "value": [1, "two", [3]]},
        "object": {"type": "Object", "value": {"a": 1, "nested": {"b": [true]}, "$type": "not a tag"}},
        "date": {"type": "Date", "value": "2024-02-29T12:00:00.000Z"},
        "map": {"type": "Map", "value": [["k", 1], [2, {"v": "x"}]]},
        "set": {"type": "Set", "value": [1, "a"]},
        "bytes": {"type": "Uint8Array", "value": [0, 1, 254, 255]},
        "buffer": {"type": "ArrayBuffer", "value": [9, 8, 7]},
        "regexp": {"type": "RegExp", "value": "/a+b/gi"},
    });
    assert_eq!(first, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_lists_and_key_limits_behave_as_on_cloudflare() {
    let (host, _dir) = probe_host().await;
    assert_eq!(
        get(&host, "/probe/t/transaction").await,
        json!({
            "thrown": "Error: roll me back",
            "afterThrow": "before",
            "afterRollback": "before",
            "committed": "committed",
        })
    );
    assert_eq!(
        get(&host, "/probe/t/list").await,
        json!({
            "prefix": ["l:a", "l:b", "l:c", "l:d"],
            "reverseLimit": ["l:d", "l:c"],
            "startEnd": ["l:b", "l:c"],
            "startAfter": ["l:c", "l:d"],
            "deleted": 2,
            "deletedOne": true,
        })
    );
    assert_eq!(
        get(&host, "/probe/t/too-many").await,
        json!({"error": "RangeError: at most 128 keys at once, not 129"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_behave_as_the_fetch_api_says() {
    let (host, _dir) = probe_host().await;
    assert_eq!(
        get(&host, "/probe/r/response").await,
        json!({
            "textType": "text/plain;charset=UTF-8",
            "bytesType": null,
            "json": {"a": 1},
            "bytes": 2,
            "usedAfterRead": true,
            "secondRead": "TypeError",
            "cloned": "twice",
            "stream": "streamed",
            "instance": true,
            "badStatus": "RangeError",
            "bodyOn204": "TypeError",
            "jsonResponse": [201, true, "application/json", "b", "{\"a\":1}"],
        })
    );
    let r = client()
        .get(host.at("/probe/r/answer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.headers()["x-k"], "v");
    assert_eq!(r.text().await.unwrap(), "made of bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_behave_as_the_fetch_api_says() {
    let (host, _dir) = probe_host().await;
    let (status, body) = json(
        client()
            .post(host.at("/probe/q/request?a=b"))
            .header("x-probe", "yes")
            .body("the body"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "method": "POST",
            "path": "/request?a=b",
            "header": "yes",
            "upgradeKept": "yes",
            "rebuiltMethod": "POST",
            "body": "the body",
            "usedAfterRead": true,
            "cloneBody": "the body",
            "instance": true,
            "hasSignal": true,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_alarm_fires_with_its_info() {
    let (host, _dir) = probe_host().await;
    let (status, set) = json(client().post(host.at("/probe/a/alarm?in=300"))).await;
    assert_eq!(status, 200, "{set}");
    assert!(set["alarm"].as_u64().is_some(), "{set}");
    let fired = poll(
        "the alarm",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let state = get(&host, "/probe/a/alarm").await;
            (state["fired"].as_array().unwrap().len() == 1).then_some(state)
        },
    )
    .await;
    assert_eq!(
        fired,
        json!({"alarm": null, "fired": [{"retryCount": 0, "isRetry": false}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_websockets_on_the_hibernation_api() {
    let (host, _dir) = js_host(&["--idle-timeout", "0.3"]);
    host.deploy_file("probe", &js_wasm("probe")).await;
    let mut ann = ws_connect(&host.ws("/probe/w/ws?who=ann&tags=x,y")).await;
    let mut bob = ws_connect(&host.ws("/probe/w/ws?who=bob&tags=y")).await;
    assert_eq!(get(&host, "/probe/w/sockets").await, json!(["ann", "bob"]));
    assert_eq!(get(&host, "/probe/w/sockets/x").await, json!(["ann"]));

    // The object sleeps between messages; the socket is found again, as the same WebSocket.
    host.wait_hibernated().await;
    ws_send(&mut ann, "hi").await;
    assert_eq!(
        ws_json(&mut ann).await,
        json!({"reply": "echo:hi", "tags": ["x", "y"], "same": true})
    );
    // The auto-response answers without waking the object.
    ws_send(&mut bob, "ping").await;
    assert_eq!(ws_text(&mut bob).await, "pong");

    // The close handler reads who left from the attachment (a Date inside survives).
    ws_close(&mut ann, 3001, "bye").await;
    let closed = poll(
        "the close event",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let v = get(&host, "/probe/w/raw/closed:ann").await;
            (!v["value"].is_null()).then_some(v)
        },
    )
    .await;
    assert_eq!(
        closed,
        json!({"value": {"code": 3001, "reason": "bye", "sinceIsDate": true}})
    );
    assert_eq!(get(&host, "/probe/w/sockets").await, json!(["bob"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_breaks_a_limit_reaches_the_error_handler() {
    let (host, _dir) = js_host(&["--max-ws-message", "1024"]);
    host.deploy_file("probe", &js_wasm("probe")).await;
    let mut eve = ws_connect(&host.ws("/probe/e/ws?who=eve")).await;
    ws_send(&mut eve, &"x".repeat(2048)).await;
    let errored = poll(
        "the error event",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let v = get(&host, "/probe/e/raw/errored:eve").await;
            (!v["value"].is_null()).then_some(v)
        },
    )
    .await;
    assert_eq!(errored["value"]["isError"], true, "{errored}");
    assert!(
        !errored["value"]["message"].as_str().unwrap().is_empty(),
        "{errored}"
    );
    assert_eq!(get(&host, "/probe/e/sockets").await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_rolls_back_and_timers_do_not_outlive_their_event() {
    let (host, _dir) = probe_host().await;
    let r = client().get(host.at("/probe/f/fail")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 500);

    assert_eq!(
        get(&host, "/probe/f/late-timer").await,
        json!({"scheduled": true})
    );
    // waitUntil held the event for its promise; the timer left pending was cancelled, so it
    // never writes from inside a later event.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        assert_eq!(
            get(&host, "/probe/f/timers").await,
            json!({"late": null, "waited": true})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_dohost_lacks_fails_with_a_clear_error() {
    let (host, _dir) = probe_host().await;
    let cases = get(&host, "/probe/u/unsupported/").await;
    let cases: Vec<&str> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cases.len(), 12, "{cases:?}");
    for case in cases {
        let body = get(&host, &format!("/probe/u/unsupported/{case}")).await;
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: no error: {body}"));
        assert!(
            error.starts_with("NotSupportedError: ")
                && error.contains("is not supported on dohost: "),
            "{case}: {error}"
        );
    }
}

/// Runs the SDK's build command; returns its exit code and what it printed on stderr.
fn build(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/js/dohost-js"),
    )
    .arg("build")
    .args(args)
    .output()
    .expect("run dohost-js");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_build_command_refuses_what_it_cannot_build_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let src = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let out = dir.path().join("out.wasm").display().to_string();

    let node = src(
        "node.js",
        "import fs from 'node:fs';\nexport class A { fetch() { return fs; } }\n",
    );
    let (code, err) = build(&[&node, "--class", "A", "-o", &out]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"node:fs\" is not available on dohost"),
        "{err}"
    );

    let object = src("object.js", "export class A {}\n");
    let (code, err) = build(&[&object, "--class", "B", "-o", &out]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("does not export a class named B"), "{err}");

    let (code, err) = build(&[&object, "--worker", "-o", &out]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("has no default export"), "{err}");

    let (code, err) = build(&[&object, "-o", &out]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("give exactly one of --class NAME and --worker"),
        "{err}"
    );
    assert!(!Path::new(&out).exists(), "a refused build wrote {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_counter_runs_unchanged_through_its_worker() {
    let (host, _dir) = js_host(&[]);
    let (status, body) = host
        .deploy_app_files(
            "counter-app",
            json!({
                "routes": ["/increment", "/decrement", "/value", "/reset"],
                "objects": [{ "binding": "COUNTER", "namespace": "counter-do", "public": false }],
            }),
            Some(&js_wasm("seed-counter-worker")),
            &[("counter-do", &js_wasm("seed-counter-do"))],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let c = client();
    for n in 1..=3 {
        assert_eq!(
            json(c.post(host.at("/increment?id=room-1"))).await,
            (200, json!({"count": n}))
        );
    }
    assert_eq!(get(&host, "/value?id=room-1").await, json!({"count": 3}));
    assert_eq!(get(&host, "/value?id=room-2").await, json!({"count": 0}));
    assert_eq!(
        json(c.post(host.at("/decrement?id=room-1"))).await,
        (200, json!({"count": 2}))
    );
    assert_eq!(
        json(c.post(host.at("/reset?id=room-1"))).await,
        (200, json!({"count": 0, "reset": true}))
    );
    // The class is private to the app: only the worker reaches it.
    let r = c
        .get(host.at("/counter-do/room-1/value"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_chat_room_runs_unchanged_through_its_worker() {
    let (host, _dir) = js_host(&[]);
    let (status, body) = host
        .deploy_app_files(
            "chat-app",
            json!({
                "routes": ["/room/"],
                "objects": [{ "binding": "CHAT_ROOM", "namespace": "chat-do", "public": false }],
            }),
            Some(&js_wasm("seed-chat-worker")),
            &[("chat-do", &js_wasm("seed-chat-do"))],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut ann = ws_connect(&host.ws("/room/r1/ws?userId=ann")).await;
    let mut bob = ws_connect(&host.ws("/room/r1/ws?userId=bob")).await;
    ws_send(
        &mut ann,
        &json!({"type": "chat", "text": "hello"}).to_string(),
    )
    .await;
    for ws in [&mut ann, &mut bob] {
        let m = ws_json_of_type(ws, "message").await;
        assert_eq!(m["message"]["userId"], "ann", "{m}");
        assert_eq!(m["message"]["text"], "hello", "{m}");
    }
    ws_send(&mut bob, "not json").await;
    assert_eq!(
        ws_json_of_type(&mut bob, "error").await,
        json!({"type": "error", "error": "Invalid JSON"})
    );

    // A late joiner gets the history first; GET /messages agrees.
    let mut cy = ws_connect(&host.ws("/room/r1/ws?userId=cy")).await;
    let history = ws_json_of_type(&mut cy, "history").await;
    assert_eq!(history["messages"][0]["text"], "hello", "{history}");
    let stored = get(&host, "/room/r1/messages").await;
    assert_eq!(stored["messages"], history["messages"]);

    // Ann leaves: the others hear it, by the userId kept in her socket's attachment.
    ws_close(&mut ann, 1000, "bye").await;
    for ws in [&mut bob, &mut cy] {
        let left = ws_json_of_type(ws, "user_left").await;
        assert_eq!(left["userId"], "ann", "{left}");
    }
    // Without an upgrade the room answers 426, through the worker.
    let r = client().get(host.at("/room/r1/ws")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 426);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_fetch_goes_out_through_the_outbound_rules() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(|| async { "hello from origin" }),
    );
    // A second server, up but not allowed.
    let other_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = other_listener.local_addr().unwrap();
    tokio::spawn(axum::serve(other_listener, app.clone()).into_future());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (host, _dir) = js_host(&[]);
    let (status, body) = host
        .deploy_app_files(
            "probe-app",
            json!({
                "objects": [{ "binding": "PROBES", "namespace": "probes", "public": true }],
                "outbound": [format!("http://{origin}")],
            }),
            None,
            &[("probes", &js_wasm("probe"))],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fetch = |url: String| {
        let host = &host;
        async move {
            let (status, body) = json(
                client()
                    .get(host.at("/probes/o/outbound"))
                    .query(&[("url", url)]),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    assert_eq!(
        fetch(format!("http://{origin}/hello")).await,
        json!({"status": 200, "body": "hello from origin"})
    );
    // A server that is up but not allowed is refused: fetch() rejects.
    let refused = fetch(format!("http://{other}/hello")).await;
    assert!(refused["error"].is_string(), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_object_has_its_name_and_its_app_s_variables() {
    let (host, _dir) = js_host(&[]);
    let (status, body) = host
        .deploy_app_files(
            "probe-app",
            json!({
                "objects": [{ "binding": "PROBES", "namespace": "probes", "public": true }],
                "vars": { "GREETING": "hello" },
            }),
            None,
            &[("probes", &js_wasm("probe"))],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&host, "/probes/some-name/id").await,
        json!({"name": "some-name", "string": "some-name", "env": "hello"})
    );
}
