//! The examples tested with the harness, as a user tests their own classes: what survives
//! hibernation, an alarm run on demand, storage seeded and read. The components are built by the
//! README's test command (`target/wasm32-wasip2/release`).

use dohost_test::TestHost;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn wasm(name: &str) -> String {
    format!(
        "{}/../target/wasm32-wasip2/release/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON answer")
}

#[tokio::test]
async fn the_counter_keeps_counting_across_hibernation_and_from_a_seeded_value() {
    let host = TestHost::start().await.unwrap();
    host.deploy("counter", wasm("counter")).await.unwrap();
    assert_eq!(
        json_of(host.post("/counter/a/", "").await.unwrap()).await["count"],
        1
    );
    host.evict("counter", "a").await.unwrap();
    let objects = host.objects("counter").await.unwrap();
    assert_eq!(objects[0]["awake"], false, "evicted: {objects:?}");
    assert_eq!(
        json_of(host.post("/counter/a/", "").await.unwrap()).await["count"],
        2
    );
    assert_eq!(
        host.storage_get("counter", "a", "count").await.unwrap(),
        Some(b"2".to_vec())
    );
    // Seeded: the object reads what the test wrote.
    host.storage_put("counter", "b", "count", "41")
        .await
        .unwrap();
    assert_eq!(
        json_of(host.post("/counter/b/", "").await.unwrap()).await["count"],
        42
    );
    let objects = host.objects("counter").await.unwrap();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn a_sessions_alarm_run_now_deletes_it_only_once_it_has_expired() {
    let host = TestHost::start().await.unwrap();
    host.deploy("session", wasm("session")).await.unwrap();
    let created = host
        .post("/session/s1/create", json!({"ttl_ms": 60_000}).to_string())
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Not expired yet: the alarm keeps it and sets itself again.
    let due = host.run_alarm("session", "s1").await.unwrap();
    assert!(due.is_some());
    assert_eq!(host.get("/session/s1/").await.unwrap().status(), 200);
    // Expired (seeded so): the alarm deletes it.
    let expired = json!({"data": null, "ttl_ms": 1, "expires_at": 1});
    host.storage_put("session", "s1", "session", expired.to_string())
        .await
        .unwrap();
    host.run_alarm("session", "s1").await.unwrap();
    assert_eq!(
        host.storage_get("session", "s1", "session").await.unwrap(),
        None
    );
    assert_eq!(host.get("/session/s1/").await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_chat_rooms_sockets_stay_connected_while_it_hibernates() {
    let host = TestHost::start().await.unwrap();
    host.deploy("chat", wasm("chat_room")).await.unwrap();
    let mut ws = host.websocket("/chat/room/ws?user=ada").await.unwrap();
    let history: Value = next_json(&mut ws).await;
    assert_eq!(history["type"], "history");
    host.evict("chat", "room").await.unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    let message = next_json(&mut ws).await;
    assert_eq!(
        (message["user"].clone(), message["text"].clone()),
        ("ada".into(), "still here".into())
    );
}

async fn next_json(ws: &mut dohost_test::WebSocket) -> Value {
    loop {
        match ws.next().await.expect("a message").expect("no error") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            _ => continue,
        }
    }
}
