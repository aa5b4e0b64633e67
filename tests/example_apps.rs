//! The app examples, deployed from their own `dohost.toml` with the CLI: the rate-limited API
//! (`examples/rate-limited-api`), the chat app (`examples/chat-app`) and the read-through cache
//! (`examples/cache`).

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::{Host, client, json, poll, ws_connect, ws_json_of_type, ws_send};

/// Deploys `examples/{app}` with `dohost deploy --config`, its component paths pointed at where
/// this build put the guests (the manifest's own paths assume the default target dir).
fn deploy_example(host: &Host, app: &str, scratch: &Path) {
    deploy_example_with(host, app, scratch, &[]);
}

/// [`deploy_example`], with each `(from, to)` of `edits` replaced in the manifest first.
fn deploy_example_with(host: &Host, app: &str, scratch: &Path, edits: &[(&str, &str)]) {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{app}/dohost.toml"));
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    let built = support::target_dir().join("wasm32-wasip2/release/");
    text = text.replace(
        "../../target/wasm32-wasip2/release/",
        built.to_str().unwrap(),
    );
    for (from, to) in edits {
        assert!(text.contains(from), "the manifest has no `{from}`");
        text = text.replace(from, to);
    }
    let config = scratch.join(format!("{app}.toml"));
    std::fs::write(&config, text).unwrap();
    let output = cli(
        host,
        &["deploy", "--config", config.to_str().unwrap()],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `dohost ARGS` against `host` with the test token, `stdin` fed if given.
fn cli(host: &Host, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_dohost"))
        .args(args)
        .args(["--url", &host.url, "--token", support::TOKEN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_api_answers_until_the_clients_bucket_is_empty_then_passes_the_429_on() {
    let (host, dir) = Host::start(&[]);
    deploy_example(&host, "rate-limited-api", dir.path());
    let c = client();
    let get = |key: Option<&'static str>| {
        let mut r = c.get(host.at("/api/hello"));
        if let Some(key) = key {
            r = r.header("x-api-key", key);
        }
        r.send()
    };
    // The bucket holds 100 and refills one every 0.6 s: the 429 comes after 100 and a few more.
    let mut allowed = 0;
    let r = loop {
        let r = get(Some("alice")).await.unwrap();
        if r.status() != 200 || allowed > 150 {
            break r;
        }
        if allowed == 0 {
            assert_eq!(r.headers()["x-ratelimit-remaining"], "99");
        }
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "hello": "key:alice" })
        );
        allowed += 1;
    };
    assert!((100..=110).contains(&allowed), "{allowed} requests allowed");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");

    // Other clients have their own buckets: another key, and a client without one (by address).
    assert_eq!(get(Some("bob")).await.unwrap().status(), 200);
    let r = get(None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "hello": "ip:127.0.0.1" })
    );

    // The buckets are private to the app: nobody resets theirs directly.
    let (status, _) = json(c.get(host.at("/api-limits/key:alice/"))).await;
    assert_eq!(status, 404);
    let r = c
        .get(host.at("/api/nope"))
        .header("x-api-key", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_chat_app_checks_the_token_and_its_rooms_keep_the_lobby_informed() {
    let (host, dir) = Host::start(&[]);
    deploy_example(&host, "chat-app", dir.path());
    let config = dir.path().join("chat-app.toml");
    let output = cli(
        &host,
        &[
            "secret",
            "put",
            "CHAT_TOKEN",
            "--config",
            config.to_str().unwrap(),
        ],
        Some("open sesame\n"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let c = client();

    // No token, a wrong one: 401, before any object is asked.
    assert_eq!(c.get(host.at("/rooms")).send().await.unwrap().status(), 401);
    let wrong = c
        .get(host.at("/rooms"))
        .bearer_auth("open sesamE")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let refused = support::ws_try_connect(&host.ws("/rooms/general/ws?user=eve&token=nope")).await;
    assert!(refused.is_err_and(|e| e.contains("401")));

    // Two users join the private room through the worker and chat.
    let token = "open%20sesame";
    let mut ann = ws_connect(&host.ws(&format!("/rooms/general/ws?user=ann&token={token}"))).await;
    ws_json_of_type(&mut ann, "history").await;
    let mut bob = ws_connect(&host.ws(&format!("/rooms/general/ws?user=bob&token={token}"))).await;
    ws_json_of_type(&mut bob, "history").await;
    ws_send(&mut ann, "hi bob").await;
    for ws in [&mut ann, &mut bob] {
        let m = ws_json_of_type(ws, "message").await;
        assert_eq!(
            (m["user"].clone(), m["text"].clone()),
            (json!("ann"), json!("hi bob"))
        );
    }

    // The room told the lobby; the worker lists the rooms.
    let rooms = |c: reqwest::Client, url: String| async move {
        json(c.get(url).bearer_auth("open sesame")).await
    };
    let (status, list) = rooms(c.clone(), host.at("/rooms")).await;
    assert_eq!(
        (status, list),
        (200, json!([{ "room": "general", "members": 2 }]))
    );

    // Bob leaves: the room tells the lobby again.
    support::ws_close(&mut bob, 1000, "bye").await;
    let after = json!([{ "room": "general", "members": 1 }]);
    poll(
        "the lobby to hear that bob left",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let (c, url, after) = (c.clone(), host.at("/rooms"), after.clone());
            async move { (rooms(c, url).await.1 == after).then_some(()) }
        },
    )
    .await;

    // The rooms and the lobby are private to the app.
    for path in ["/chat-rooms/general/messages", "/chat-lobby/lobby/rooms"] {
        let (status, _) = json(c.get(host.at(path))).await;
        assert_eq!(status, 404, "{path}");
    }
    let r = c
        .get(host.at("/rooms/general/messages"))
        .bearer_auth("open sesame")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        1
    );
}

/// The cache example's origin on 127.0.0.1: `/{key}` answers `value of {key}` (as `text/plain`)
/// and counts the request, except `/missing` (404) and `/huge` (3 MiB).
async fn cache_origin() -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
) {
    use axum::extract::{Path as UrlPath, State};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    type Hits = Arc<Mutex<HashMap<String, u32>>>;
    let hits: Hits = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{key}",
            axum::routing::get(
                |State(hits): State<Hits>, UrlPath(key): UrlPath<String>| async move {
                    *hits.lock().unwrap().entry(key.clone()).or_default() += 1;
                    match key.as_str() {
                        "missing" => (axum::http::StatusCode::NOT_FOUND, "no such key".to_owned()),
                        "huge" => (axum::http::StatusCode::OK, "x".repeat(3 << 20)),
                        _ => (axum::http::StatusCode::OK, format!("value of {key}")),
                    }
                },
            ),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (origin, hits)
}

#[tokio::test]
async fn the_cache_fetches_a_key_from_its_origin_once_and_again_when_it_expires() {
    let (origin, hits) = cache_origin().await;
    let hits_of = |key: &str| hits.lock().unwrap().get(key).copied().unwrap_or(0);
    let (host, dir) = Host::start(&[]);
    let ttl_ms = 2_000;
    deploy_example_with(
        &host,
        "cache",
        dir.path(),
        &[
            ("http://127.0.0.1:9000", &origin),
            ("TTL_MS = \"60000\"", &format!("TTL_MS = \"{ttl_ms}\"")),
        ],
    );
    let c = client();
    let get = |key: &str| c.get(host.at(&format!("/cache/{key}/"))).send();

    // A miss goes to the origin; the next request is a hit that does not.
    let r = get("apple").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "miss");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "value of apple");
    let r = get("apple").await.unwrap();
    assert_eq!(r.headers()["x-cache"], "hit");
    assert_eq!(r.text().await.unwrap(), "value of apple");
    assert_eq!(hits_of("apple"), 1);

    // A burst of misses on one key: its object takes them one at a time, so the origin sees one.
    let burst = futures::future::join_all((0..20).map(|_| async {
        let r = get("pear").await.unwrap();
        (
            r.status(),
            r.headers()["x-cache"].to_str().unwrap().to_owned(),
        )
    }))
    .await;
    assert!(burst.iter().all(|(status, _)| *status == 200), "{burst:?}");
    assert_eq!(
        burst.iter().filter(|(_, how)| how == "miss").count(),
        1,
        "{burst:?}"
    );
    assert_eq!(hits_of("pear"), 1);

    // What is not a 200 is passed on and not kept; nor is a body larger than one stored value.
    for _ in 0..2 {
        let r = get("missing").await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["x-cache"], "miss");
        let r = get("huge").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "bypass");
        assert_eq!(r.bytes().await.unwrap().len(), 3 << 20);
    }
    assert_eq!((hits_of("missing"), hits_of("huge")), (2, 2));

    // DELETE forgets a key; past the TTL a key is fetched again.
    assert_eq!(
        c.delete(host.at("/cache/apple/"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(get("apple").await.unwrap().headers()["x-cache"], "miss");
    assert_eq!(hits_of("apple"), 2);
    tokio::time::sleep(Duration::from_millis(ttl_ms + 200)).await;
    let r = get("pear").await.unwrap();
    assert_eq!(r.headers()["x-cache"], "miss");
    assert_eq!(r.text().await.unwrap(), "value of pear");
    assert_eq!(hits_of("pear"), 2);
}

#[tokio::test]
async fn the_cache_reaches_only_what_its_manifest_allows() {
    // The negative control of the test above: the same deploy, its origin left out of `allow`.
    let (origin, hits) = cache_origin().await;
    let (host, dir) = Host::start(&[]);
    deploy_example_with(
        &host,
        "cache",
        dir.path(),
        &[(
            "ORIGIN_URL = \"http://127.0.0.1:9000\"",
            &format!("ORIGIN_URL = \"{origin}\""),
        )],
    );
    let r = client().get(host.at("/cache/apple/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(text.contains("HTTP-request-denied"), "{text}");
    assert!(hits.lock().unwrap().is_empty());
}
