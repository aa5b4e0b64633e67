//! The app examples, deployed from their own `dohost.toml` with the CLI: the rate-limited API
//! (`examples/rate-limited-api`) and the chat app (`examples/chat-app`).

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::{Host, client, json, poll, ws_connect, ws_json_of_type, ws_send};

/// Deploys `examples/{app}` with `dohost deploy --config`, its component paths pointed at where
/// this build put the guests (the manifest's own paths assume the default target dir).
fn deploy_example(host: &Host, app: &str, scratch: &Path) {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{app}/dohost.toml"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let built = support::target_dir().join("wasm32-wasip2/release/");
    let text = text.replace(
        "../../target/wasm32-wasip2/release/",
        built.to_str().unwrap(),
    );
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
