//! The examples end to end over real HTTP and WebSockets: the chat room (ordering, history,
//! leaving, hibernation, redeploy), sessions that expire by alarm (also across `kill -9`), the
//! rate limiter under a burst, and the cursors room. The chat room, sessions and the rate
//! limiter run twice: the Rust example, and its JavaScript twin in `examples/js`.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use std::path::Path;
use support::{
    Host, Message, Ws, client, compile_cache, js_wasm, json, now_ms, wasm, ws_close, ws_connect,
    ws_json, ws_json_of_type, ws_quiet, ws_send,
};

/// The fields of a chat message that must agree wherever it is seen.
fn chat_fields(m: &Value) -> Value {
    json!({"id": m["id"], "user": m["user"], "text": m["text"], "timestamp": m["timestamp"]})
}

/// The next `n` chat messages a client receives (other notices skipped).
async fn chat_messages(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(ws_json_of_type(ws, "message").await);
    }
    out
}

/// The next chat message a client receives, which must be number `id`, from `user`, saying `text`.
async fn expect_message(ws: &mut Ws, id: u64, user: &str, text: &str) {
    let m = ws_json_of_type(ws, "message").await;
    assert_eq!(
        (m["id"].as_u64(), m["user"].as_str(), m["text"].as_str()),
        (Some(id), Some(user), Some(text))
    );
}

/// The room's history as `GET /chat/{room}/messages` answers it, in [`chat_fields`].
async fn stored_messages(host: &Host, room: &str) -> Vec<Value> {
    let (status, stored) = json(client().get(host.at(&format!("/chat/{room}/messages")))).await;
    assert_eq!(status, 200, "{stored}");
    stored
        .as_array()
        .expect("a list")
        .iter()
        .map(chat_fields)
        .collect()
}

/// Joins the chat room `room` as `user`; returns the socket and the history it was sent first.
async fn join(host: &Host, room: &str, user: &str) -> (Ws, Vec<Value>) {
    let mut ws = ws_connect(&host.ws(&format!("/chat/{room}/ws?user={user}"))).await;
    let first = ws_json(&mut ws).await;
    assert_eq!(
        first["type"], "history",
        "the first message is the history: {first}"
    );
    let messages = first["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("history has messages: {first}"))
        .clone();
    (ws, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_room_orders_remembers_and_survives_hibernation_and_redeploy() {
    chat_room(&wasm("chat_room"), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_chat_room_does_the_same() {
    chat_room(
        &js_wasm("chat-room"),
        &["--compile-cache", &compile_cache()],
    )
    .await;
}

/// The chat room's story, for the Rust example or its JavaScript twin.
async fn chat_room(component: &Path, args: &[&str]) {
    let (host, _dir) = Host::start(&[&["--idle-timeout", "0.3"], args].concat());
    host.deploy_file("chat", component).await;

    let (mut alice, history) = join(&host, "lobby", "alice").await;
    assert_eq!(history, Vec::<Value>::new());
    let (mut bob, _) = join(&host, "lobby", "bob").await;
    let (mut carol, _) = join(&host, "lobby", "carol").await;

    // Interleaved sends from all three, plain text and JSON.
    for round in 0..3 {
        ws_send(&mut alice, &format!("alice-{round}")).await;
        ws_send(
            &mut bob,
            &json!({"text": format!("bob-{round}")}).to_string(),
        )
        .await;
        ws_send(&mut carol, &format!("carol-{round}")).await;
    }
    let mut seen = Vec::new();
    for ws in [&mut alice, &mut bob, &mut carol] {
        seen.push(chat_messages(ws, 9).await);
    }
    let order: Vec<Value> = seen[0].iter().map(chat_fields).collect();
    for other in &seen[1..] {
        let theirs: Vec<Value> = other.iter().map(chat_fields).collect();
        assert_eq!(
            theirs, order,
            "every client sees the same messages in the same order"
        );
    }
    for (i, m) in order.iter().enumerate() {
        assert_eq!(m["id"], i as u64 + 1, "ids count from 1: {order:?}");
        let (user, text) = (m["user"].as_str().unwrap(), m["text"].as_str().unwrap());
        assert!(text.starts_with(&format!("{user}-")), "{m}");
        assert!(m["timestamp"].is_number(), "{m}");
    }
    for user in ["alice", "bob", "carol"] {
        let texts: Vec<&str> = order
            .iter()
            .filter(|m| m["user"] == user)
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..3).map(|r| format!("{user}-{r}")).collect();
        assert_eq!(texts, expected, "{user}'s messages keep their order");
    }

    // A late joiner gets the history; /messages agrees.
    let (mut dave, history) = join(&host, "lobby", "dave").await;
    assert_eq!(history.iter().map(chat_fields).collect::<Vec<_>>(), order);
    assert_eq!(stored_messages(&host, "lobby").await, order);

    // Alice leaves: everyone else is told.
    ws_close(&mut alice, 1000, "bye").await;
    for ws in [&mut bob, &mut carol, &mut dave] {
        let left = ws_json_of_type(ws, "user_left").await;
        assert_eq!(left, json!({"type": "user_left", "user": "alice"}));
    }

    // After hibernation the room still knows who is who.
    host.wait_hibernated().await;
    ws_send(&mut bob, "bob-asleep").await;
    for ws in [&mut bob, &mut carol, &mut dave] {
        expect_message(ws, 10, "bob", "bob-asleep").await;
    }

    // After a redeploy, the same sockets keep working.
    host.deploy_file("chat", component).await;
    ws_send(&mut carol, &json!({"text": "carol-redeployed"}).to_string()).await;
    for ws in [&mut bob, &mut carol, &mut dave] {
        expect_message(ws, 11, "carol", "carol-redeployed").await;
    }
    // Another room is another object.
    let (_other, history) = join(&host, "elsewhere", "erin").await;
    assert_eq!(history, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_message_anyone_has_seen_survives_a_kill_9() {
    let (mut host, _dir) = Host::start(&[]);
    host.deploy("chat", "chat_room").await;
    let (mut ann, _) = join(&host, "durable", "ann").await;
    let (mut ben, _) = join(&host, "durable", "ben").await;
    for i in 0..5 {
        ws_send(&mut ann, &format!("note-{i}")).await;
    }
    // Once ben has seen the last one, every one of them must be on disk (output gate).
    let seen: Vec<Value> = chat_messages(&mut ben, 5)
        .await
        .iter()
        .map(chat_fields)
        .collect();
    tokio::task::block_in_place(|| host.kill_and_restart());
    assert_eq!(stored_messages(&host, "durable").await, seen);
    let (_, history) = join(&host, "durable", "cy").await;
    assert_eq!(history.iter().map(chat_fields).collect::<Vec<_>>(), seen);
}

async fn session_get(host: &Host, name: &str) -> (u16, Value) {
    let r = client()
        .get(host.at(&format!("/session/{name}/")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn session_create(host: &Host, name: &str, data: Value, ttl_ms: u64) -> u64 {
    let (status, body) = json(
        client()
            .post(host.at(&format!("/session/{name}/create")))
            .json(&json!({"data": data, "ttl_ms": ttl_ms})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["expires_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("expires_at: {body}"))
}

async fn sleep_until(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms.saturating_sub(now_ms()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_refresh_on_read_and_expire_by_alarm() {
    sessions(&wasm("session"), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_sessions_do_the_same() {
    sessions(&js_wasm("session"), &["--compile-cache", &compile_cache()]).await;
}

/// Sessions' story, for the Rust example or its JavaScript twin.
async fn sessions(component: &Path, args: &[&str]) {
    let (host, _dir) = Host::start(args);
    host.deploy_file("session", component).await;
    assert_eq!(session_get(&host, "nobody").await.0, 404);

    let data = json!({"user": "ann", "roles": ["admin"]});
    let before = now_ms();
    let expires0 = session_create(&host, "s1", data.clone(), 1200).await;
    assert!(expires0 >= before + 1200, "{expires0}");

    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = session_get(&host, "s1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], data);
    let expires1 = body["expires_at"].as_u64().expect("expires_at");
    assert!(
        expires1 > expires0,
        "a read refreshes the TTL: {expires1} <= {expires0}"
    );

    // Past the first expiry, but not past the refreshed one.
    sleep_until(expires0 + 300).await;
    let (status, body) = session_get(&host, "s1").await;
    assert_eq!(status, 200, "the read at +700 ms kept it alive: {body}");
    let expires2 = body["expires_at"].as_u64().expect("expires_at");

    sleep_until(expires2 + 1000).await;
    let (status, body) = session_get(&host, "s1").await;
    assert_eq!(
        status,
        404,
        "expired at {expires2}, now {}: {body}",
        now_ms()
    );

    // Deleting.
    session_create(&host, "s2", json!("x"), 60_000).await;
    let r = client()
        .delete(host.at("/session/s2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(session_get(&host, "s2").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_still_expires_after_a_kill_9() {
    let (mut host, _dir) = Host::start(&[]);
    host.deploy("session", "session").await;
    let expires = session_create(&host, "durable", json!({"n": 1}), 2500).await;
    let keeps = session_create(&host, "long", json!({"n": 2}), 60_000).await;
    tokio::task::block_in_place(|| host.kill_and_restart());
    if now_ms() >= expires {
        eprintln!("note: the restart took longer than the TTL; the alarm was due while down");
    }
    sleep_until(expires + 1000).await;
    let (status, body) = session_get(&host, "durable").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = session_get(&host, "long").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"n": 2}));
    assert!(body["expires_at"].as_u64().unwrap() >= keeps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_allows_a_hundred_a_minute_per_key() {
    rate_limiter(&wasm("rate_limiter"), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_rate_limiter_does_the_same() {
    rate_limiter(
        &js_wasm("rate-limiter"),
        &["--compile-cache", &compile_cache()],
    )
    .await;
}

/// The rate limiter's story, for the Rust example or its JavaScript twin.
async fn rate_limiter(component: &Path, args: &[&str]) {
    let (host, _dir) = Host::start(args);
    host.deploy_file("limiter", component).await;
    let c = client();
    let header = |r: &reqwest::Response, name: &str| -> u64 {
        r.headers()
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing, status {}", r.status()))
            .to_str()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name} not a number: {e}"))
    };

    let started = Instant::now();
    let responses = join_all((0..150).map(|_| c.get(host.at("/limiter/key-1/")).send())).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut allowed = 0;
    let mut limited = 0;
    for r in responses {
        let r = r.expect("request");
        assert_eq!(header(&r, "x-ratelimit-limit"), 100);
        let remaining = header(&r, "x-ratelimit-remaining");
        assert!(remaining <= 100);
        header(&r, "x-ratelimit-reset");
        match r.status().as_u16() {
            200 => {
                allowed += 1;
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["allowed"], true, "{body}");
                assert_eq!(body["remaining"], remaining, "{body}");
            }
            429 => {
                limited += 1;
                assert!(header(&r, "retry-after") >= 1);
            }
            other => panic!("status {other}"),
        }
    }
    let most = 100.0 + elapsed * 100.0 / 60.0 + 1.0;
    assert!(
        allowed >= 100 && allowed as f64 <= most,
        "{allowed} allowed in {elapsed:.1} s (at most {most:.1})"
    );
    assert_eq!(allowed + limited, 150);

    // Another key has its own bucket.
    let r = c.get(host.at("/limiter/key-2/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining"), 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_reach_the_other_peers_only() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("cursors", "cursors").await;
    let page = client()
        .get(host.at("/cursors/room/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = page.text().await.unwrap();
    assert!(html.contains("cursors"), "{html}");

    let mut a = ws_connect(&host.ws("/cursors/room/ws")).await;
    let wa = ws_json_of_type(&mut a, "welcome").await;
    let mut b = ws_connect(&host.ws("/cursors/room/ws")).await;
    let wb = ws_json_of_type(&mut b, "welcome").await;
    for w in [&wa, &wb] {
        assert!(
            !w["id"].is_null() && w["name"].is_string() && w["color"].is_string(),
            "{w}"
        );
    }
    assert_ne!(wa["id"], wb["id"]);

    for kind in ["move", "click"] {
        ws_send(
            &mut a,
            &json!({"type": kind, "x": 120, "y": 45}).to_string(),
        )
        .await;
        let got = ws_json_of_type(&mut b, kind).await;
        assert_eq!(got["id"], wa["id"], "{got}");
        assert_eq!(got["name"], wa["name"], "{got}");
        assert_eq!(got["color"], wa["color"], "{got}");
        assert_eq!(got["x"].as_f64(), Some(120.0), "{got}");
        assert_eq!(got["y"].as_f64(), Some(45.0), "{got}");
    }
    ws_send(&mut b, &json!({"type": "move", "x": 7, "y": 8}).to_string()).await;
    let got = ws_json_of_type(&mut a, "move").await;
    assert_eq!(
        (got["id"].clone(), got["x"].as_f64()),
        (wb["id"].clone(), Some(7.0))
    );

    // A never hears its own moves.
    while let Some(m) = ws_quiet(&mut a, Duration::from_millis(300)).await {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_ne!(v["id"], wa["id"], "a peer got its own {v}");
        }
    }

    ws_close(&mut a, 1000, "").await;
    let leave = ws_json_of_type(&mut b, "leave").await;
    assert_eq!(leave["id"], wa["id"], "{leave}");
}
