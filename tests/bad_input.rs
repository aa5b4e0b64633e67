//! Bad input, end to end: malformed request lines, paths and names, huge headers, oversize,
//! truncated and slow bodies, slow heads, wrong admin tokens and namespace names, and broken
//! WebSocket frames. Each gets a precise status and, wherever the host itself answers, the JSON
//! error `{"error": message, "code": code}`; after each, the object's storage is what it was and
//! the host still serves.
//!
//! Most requests go over a raw `TcpStream` (`support::raw`), since an HTTP client will not send
//! what is tested here. The slow-client tests start the host with `--header-timeout 1` / `--body-timeout 1`.

mod support;

use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{Value, json};
use support::raw::{connect, frame_head, get, raw, read_to_close, tcp_of, trickle};
use support::{
    Host, Message, TOKEN, Ws, client, json, poll, wasm, ws_connect, ws_expect_close, ws_send,
    ws_text,
};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A client that never reuses a connection: the slow-client hosts close idle connections after
/// one second, which a pooled connection could race.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Every key and value of object `o` in namespace `t`, read through the object (so this also
/// checks that the host still serves).
async fn storage(host: &Host) -> Value {
    let (status, body) = json(
        fresh_client()
            .post(host.at("/t/o/ops"))
            .json(&json!([{ "op": "list" }])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body[0]["ok"].clone()
}

/// A host serving `test_object` as `t`, with one key stored in object `o`; and that storage.
async fn start(args: &[&str]) -> (Host, tempfile::TempDir, Value) {
    let (host, dir) = Host::start(args);
    host.deploy("t", "test_object").await;
    let (status, body) = json(fresh_client().post(host.at("/t/o/ops")).json(&json!([
        { "op": "put", "key": "marker", "value": "before" }
    ])))
    .await;
    assert_eq!(status, 200, "{body}");
    let before = storage(&host).await;
    assert_eq!(before, json!([["marker", "before"]]));
    (host, dir, before)
}

/// A body for `POST /t/o/ops` that writes a key: were it ever delivered, storage would change.
const WRITE: &[u8] = br#"[{"op":"put","key":"written","value":"by a bad request"}]"#;

/// `POST /t/o/ops` head declaring `length` bytes of body.
fn ops_head(length: usize) -> String {
    format!(
        "POST /t/o/ops HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// `PUT /_admin/namespaces/{namespace}` head with the token, declaring `length` bytes of component,
/// with `extra` header lines (each ending in CRLF).
fn deploy_head(namespace: &str, length: usize, extra: &str) -> String {
    format!(
        "PUT /_admin/namespaces/{namespace} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {length}\r\n{extra}\r\n"
    )
}

/// What the admin API shows of namespace `t`, which a failed deploy must leave as it was.
async fn namespace_t(host: &Host) -> Value {
    json(
        fresh_client()
            .get(host.at("/_admin/namespaces/t"))
            .bearer_auth(TOKEN),
    )
    .await
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_paths_and_names_get_json_errors() {
    let (host, _dir, before) = start(&[]).await;
    let overlong = format!("/t/{}/", "a".repeat(257));
    // 86 euro signs: 258 bytes once decoded, though the name has only 86 characters.
    let overlong_decoded = format!("/t/{}/", "%E2%82%AC".repeat(86));
    for (target, status, code) in [
        ("/t/%zz/identity", 400, "invalid_path"),
        ("/t/a%4/", 400, "invalid_path"),
        ("/t/%/", 400, "invalid_path"),
        ("/t/o/rest/%g1", 400, "invalid_path"),
        ("/_admin/namespaces/%zz", 400, "invalid_path"),
        ("/t/%FF%FE/", 400, "invalid_name"),
        ("/t/%C3%28/", 400, "invalid_name"),
        ("/t//identity", 400, "invalid_name"),
        ("/t", 400, "invalid_name"),
        (overlong.as_str(), 400, "invalid_name"),
        (overlong_decoded.as_str(), 400, "invalid_name"),
        ("//t/o/", 404, "unknown_namespace"),
        ("/../t/o/", 404, "unknown_namespace"),
        ("/T/o/", 404, "unknown_namespace"),
        ("/_admin/o/", 404, "unknown_namespace"),
    ] {
        get(&host, target, "").await.assert_error(status, code);
        assert_eq!(storage(&host).await, before, "after {target}");
    }
    // A body never reaches an object behind a bad path.
    let bad_post = ops_head(WRITE.len()).replace("/t/o/ops", "/t/%zz/ops");
    raw(&host, &[bad_post.as_bytes(), WRITE].concat())
        .await
        .assert_error(400, "invalid_path");
    assert_eq!(storage(&host).await, before);

    // Valid escapes of odd names are names like any other: the host never resolves `.` or `..`
    // (an object's id is a hash, not a file) and a NUL is a character.
    for (target, name) in [
        ("/t/%00/identity", "\u{0}"),
        ("/t/../identity", ".."),
        ("/t/./identity", "."),
        ("/t/%2E%2E/identity", ".."),
        ("/t/a%2Fb/identity", "a/b"),
    ] {
        let r = get(&host, target, "").await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.json()["name"], name, "{target}");
    }
    // 256 bytes once decoded is still a name.
    let r = get(
        &host,
        &format!("/t/{}a/identity", "%E2%82%AC".repeat(85)),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(storage(&host).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_are_refused_by_status() {
    let (host, _dir, before) = start(&[]).await;
    // What hyper cannot parse never reaches the routes: it answers the status alone and closes.
    for request in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET /t/o/identity HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /t/o /identity HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /t/\xff/identity HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /t/o/identity HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /t/o/identity HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n",
        b"G\0T /t/o/identity HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /t/o/ops HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /t/o/ops HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ] {
        raw(&host, request).await.assert_bare(400);
        assert_eq!(storage(&host).await, before);
    }
    // A long target: the host's limit answers JSON, hyper's (64 KiB) the bare status.
    let long = format!("/t/o/{}", "x".repeat(20 * 1024));
    get(&host, &long, "")
        .await
        .assert_error(414, "uri_too_long");
    let longer = format!("/t/o/{}", "x".repeat(70 * 1024));
    get(&host, &longer, "").await.assert_bare(414);
    // Just under the limit is delivered.
    let fits = format!("/t/o/echo/{}", "x".repeat(15 * 1024));
    assert_eq!(get(&host, &fits, "").await.status, 200);
    assert_eq!(storage(&host).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_get_431() {
    let (host, _dir, before) = start(&[]).await;
    let big = |n: usize| format!("X-Big: {}\r\n", "v".repeat(n));
    // Over the host's 32 KiB: JSON, on object and admin routes alike, before the token is looked
    // at.
    get(&host, "/t/o/identity", &big(100 * 1024))
        .await
        .assert_error(431, "headers_too_large");
    let many_kib: String = (0..40)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1024)))
        .collect();
    get(&host, "/t/o/identity", &many_kib)
        .await
        .assert_error(431, "headers_too_large");
    get(&host, "/_admin/stats", &big(100 * 1024))
        .await
        .assert_error(431, "headers_too_large");
    // Over hyper's own limits, 100 headers or a head of about 400 KiB: the bare status.
    let thousand: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    get(&host, "/t/o/identity", &thousand)
        .await
        .assert_bare(431);
    get(&host, "/t/o/identity", &big(500 * 1024))
        .await
        .assert_bare(431);
    assert_eq!(storage(&host).await, before);
    // Under the limits is fine.
    let r = get(&host, "/t/o/echo", &big(30 * 1024)).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let ninety: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(get(&host, "/t/o/echo", &ninety).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413_and_run_nothing() {
    let (host, _dir, before) = start(&["--max-request-body", "1000"]).await;
    // Declared too large: refused at once, without waiting for a body that never comes.
    let r = raw(&host, ops_head(1001).as_bytes()).await;
    r.assert_error(413, "body_too_large");
    // Chunked, so only counting finds it.
    let chunk = format!("{:x}\r\n{}\r\n", 600, " ".repeat(600));
    let request = format!(
        "POST /t/o/ops HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         {}{chunk}{chunk}0\r\n\r\n",
        format_args!(
            "{:x}\r\n{}\r\n",
            WRITE.len(),
            String::from_utf8_lossy(WRITE)
        )
    );
    raw(&host, request.as_bytes())
        .await
        .assert_error(413, "body_too_large");
    assert_eq!(storage(&host).await, before);

    // A component over 128 MiB, declared: refused before a byte of it is read.
    let info = namespace_t(&host).await;
    let upload = deploy_head("t", (128 << 20) + 1, "");
    raw(&host, upload.as_bytes())
        .await
        .assert_error(413, "body_too_large");
    let after = namespace_t(&host).await;
    assert_eq!(after, info, "the namespace is unchanged");
    assert_eq!(storage(&host).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_run_nothing_and_deploy_nothing() {
    let (host, _dir, before) = start(&[]).await;
    // The body is complete JSON, but shorter than declared: were it delivered, the key would be
    // written.
    for half_close in [true, false] {
        let mut tcp = connect(&host).await;
        tcp.write_all(ops_head(WRITE.len() + 50).as_bytes())
            .await
            .unwrap();
        tcp.write_all(WRITE).await.unwrap();
        if half_close {
            // The client says it is done sending: the host answers 400, the body was cut short.
            tcp.shutdown().await.unwrap();
            let r = read_to_close(&mut tcp).await.expect("an answer");
            r.assert_error(400, "bad_body");
            assert!(
                r.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("end of file before message length reached")),
                "{r:?}"
            );
        }
        drop(tcp);
        assert_eq!(storage(&host).await, before);
    }

    // Half a component, then the connection drops: nothing is deployed, the old code serves on.
    let info = namespace_t(&host).await;
    let component = std::fs::read(wasm("counter")).unwrap();
    let mut tcp = connect(&host).await;
    tcp.write_all(deploy_head("t", component.len(), "").as_bytes())
        .await
        .unwrap();
    tcp.write_all(&component[..component.len() / 2])
        .await
        .unwrap();
    tcp.shutdown().await.unwrap();
    read_to_close(&mut tcp)
        .await
        .expect("an answer")
        .assert_error(400, "bad_body");
    drop(tcp);
    let after = namespace_t(&host).await;
    assert_eq!(after, info, "nothing was deployed");
    assert_eq!(storage(&host).await, before, "the test object still serves");
    // And a whole upload still deploys.
    host.deploy("c", "counter").await;
    assert_eq!(
        json(client().post(host.at("/c/x/"))).await,
        (200, json!({"count": 1}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_off() {
    let (host, _dir, before) = start(&["--header-timeout", "1"]).await;
    // Half a request line, then nothing: the connection is closed, with no answer.
    for partial in [
        &b"GET /t/o/ide"[..],
        b"GET /t/o/identity HTTP/1.1\r\nHost: x\r\nX-A: ",
    ] {
        let mut tcp = connect(&host).await;
        let start = Instant::now();
        tcp.write_all(partial).await.unwrap();
        let answer = read_to_close(&mut tcp).await;
        let took = start.elapsed();
        assert!(answer.is_none(), "{answer:?}");
        assert!(
            took >= Duration::from_millis(900),
            "cut off after {took:?}, before the timeout"
        );
        assert!(
            took < Duration::from_secs(10),
            "cut off only after {took:?}"
        );
    }
    // Trickling a byte every 100 ms does not keep a head alive either.
    let mut tcp = connect(&host).await;
    let (answer, took) = trickle(
        &mut tcp,
        b"GET /t/o/identity HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b'a',
        Duration::from_millis(100),
        Duration::from_secs(15),
    )
    .await;
    assert!(answer.is_none(), "{answer:?}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert_eq!(storage(&host).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_run_nothing() {
    let (host, _dir, before) = start(&["--body-timeout", "1"]).await;
    // The head, then part of the body, then nothing.
    let mut tcp = connect(&host).await;
    let start = Instant::now();
    tcp.write_all(ops_head(1000).as_bytes()).await.unwrap();
    tcp.write_all(WRITE).await.unwrap();
    let r = read_to_close(&mut tcp).await.expect("an answer");
    r.assert_error(408, "body_timeout");
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(storage(&host).await, before);

    // Trickling JSON whitespace: the deadline is for the whole body.
    let mut tcp = connect(&host).await;
    let (answer, took) = trickle(
        &mut tcp,
        &[ops_head(1000).as_bytes(), WRITE].concat(),
        b' ',
        Duration::from_millis(100),
        Duration::from_secs(15),
    )
    .await;
    answer
        .expect("an answer while trickling")
        .assert_error(408, "body_timeout");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert_eq!(storage(&host).await, before);

    // A stalled upload deploys nothing.
    let info = namespace_t(&host).await;
    let mut tcp = connect(&host).await;
    tcp.write_all(&[deploy_head("t", 100_000, "").as_bytes(), b"\0asm"].concat())
        .await
        .unwrap();
    read_to_close(&mut tcp)
        .await
        .expect("an answer")
        .assert_error(408, "body_timeout");
    let after = namespace_t(&host).await;
    assert_eq!(after, info);

    // An upload that keeps coming deploys, however long it takes in all: here in 8 parts 300 ms
    // apart, over 2 s against the 1 s the body of a request to an object gets.
    let component = std::fs::read(wasm("counter")).unwrap();
    let mut tcp = connect(&host).await;
    let started = Instant::now();
    tcp.write_all(deploy_head("slow", component.len(), "Connection: close\r\n").as_bytes())
        .await
        .unwrap();
    for part in component.chunks(component.len().div_ceil(8)) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if tcp.write_all(part).await.is_err() {
            break; // the host answered early: the answer says why
        }
    }
    let answer = read_to_close(&mut tcp).await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(answer.json()["version"], 1, "{answer:?}");
    let (status, _) = json(fresh_client().get(host.at("/slow/o/"))).await;
    assert_eq!(status, 200, "the slowly uploaded counter serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_the_exact_token_and_valid_names() {
    let (host, _dir, before) = start(&[]).await;
    let c = client();
    let component = std::fs::read(wasm("counter")).unwrap();
    let info = namespace_t(&host).await;

    let prefix = &TOKEN[..TOKEN.len() - 1];
    let longer = format!("{TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    let bare = TOKEN.to_owned();
    let wrong_case = format!("Bearer {}", TOKEN.to_uppercase());
    let refused: [Option<String>; 8] = [
        None,
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Bearer {prefix}")),
        Some(format!("Bearer {longer}")),
        Some(basic),
        Some(bare),
        Some(wrong_case),
    ];
    for auth in &refused {
        for (method, path) in [
            ("GET", "/_admin/namespaces"),
            ("GET", "/_admin/stats"),
            ("GET", "/_admin/namespaces/t"),
            ("PUT", "/_admin/namespaces/t"),
            ("PUT", "/_admin/namespaces/Bad_Name"),
        ] {
            let mut req = c.request(method.parse().unwrap(), host.at(path));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            if method == "PUT" {
                req = req.body(component.clone());
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.headers()["www-authenticate"],
                "Bearer realm=\"dohost admin\""
            );
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path} with {auth:?}: {body}"
            );
        }
    }
    // The scheme is case-insensitive; the token is not.
    let (status, _) = json(
        c.get(host.at("/_admin/namespaces"))
            .header("authorization", format!("bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, 200);

    // With the token, invalid names are 400 `invalid_name` on deploy and show alike.
    let too_long = "a".repeat(64);
    for name in [
        "Bad_Name",
        "UPPER",
        "a.b",
        "a%20b",
        "%C3%A9",
        "%FF",
        "_admin",
        too_long.as_str(),
    ] {
        let url = host.at(&format!("/_admin/namespaces/{name}"));
        let (status, body) = json(c.put(&url).bearer_auth(TOKEN).body(component.clone())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_name")),
            "deploy {name}: {body}"
        );
        let (status, body) = json(c.get(&url).bearer_auth(TOKEN)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_name")),
            "show {name}: {body}"
        );
    }
    // A valid name that is not deployed.
    let (status, body) = json(c.get(host.at("/_admin/namespaces/nope")).bearer_auth(TOKEN)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_namespace"))
    );
    // A method a route does not take: JSON, and the methods it does take.
    let r = c
        .patch(host.at("/_admin/namespaces/t"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(
        allow.contains("GET") && allow.contains("PUT") && allow.contains("DELETE"),
        "{allow}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed", "{body}");

    // Nothing was deployed, nothing stored.
    let (_, list) = json(c.get(host.at("/_admin/namespaces")).bearer_auth(TOKEN)).await;
    assert_eq!(list["namespaces"].as_array().unwrap().len(), 1, "{list}");
    let after = namespace_t(&host).await;
    assert_eq!(after, info);
    assert_eq!(storage(&host).await, before);
}

/// The open sockets of the host.
async fn open_sockets(host: &Host) -> u64 {
    host.stats().await["open_sockets"].as_u64().unwrap()
}

/// Waits (at most 10 s) until the host holds `n` open sockets.
async fn wait_open_sockets(host: &Host, n: u64) {
    poll(
        &format!("{n} open sockets"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (open_sockets(host).await == n).then_some(()) },
    )
    .await;
}

/// The `closes` or `errors` log of object `o`.
async fn socket_log(host: &Host, which: &str) -> Vec<Value> {
    let (status, body) = json(fresh_client().get(host.at(&format!("/t/o/{which}")))).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

/// Waits (at most 10 s) until the `closes` or `errors` log of `o` has `n` entries.
async fn wait_logged(host: &Host, which: &str, n: usize) -> Vec<Value> {
    poll(
        &format!("{n} entries in {which}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let log = socket_log(host, which).await;
            (log.len() >= n).then_some(log)
        },
    )
    .await
}

/// Opens a socket to `o` beside the witness, and waits until the host holds both.
async fn open_beside_witness(host: &Host) -> Ws {
    let ws = ws_connect(&host.ws("/t/o/ws")).await;
    wait_open_sockets(host, 2).await;
    ws
}

/// Expects the host to close `ws` with `code`, to log it as error number `n`, and to hold the
/// witness alone again; returns the `errors` log.
async fn expect_error_close(host: &Host, ws: &mut Ws, code: u16, n: usize) -> Vec<Value> {
    assert_eq!(ws_expect_close(ws).await.0, code);
    let log = wait_logged(host, "errors", n).await;
    wait_open_sockets(host, 1).await;
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_websocket_frames_close_the_socket_precisely() {
    let (host, _dir, _) = start(&["--max-ws-message", "1024"]).await;
    // An upgrade without its key never opens a socket.
    get(
        &host,
        "/t/o/ws",
        "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n",
    )
    .await
    .assert_error(400, "bad_upgrade");
    // A witness in the same object must keep working through everything below.
    let mut witness = ws_connect(&host.ws("/t/o/ws?tags=witness")).await;
    wait_open_sockets(&host, 1).await;
    let mut errors = 0;
    let mut closes = 0;

    // Invalid UTF-8 in a text frame: 1007, and an error event.
    let mut ws = open_beside_witness(&host).await;
    ws.send(Message::Frame(Frame::message(
        b"echo:\xff\xfe".to_vec(),
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    errors += 1;
    let log = expect_error_close(&host, &mut ws, 1007, errors).await;
    assert!(
        log[errors - 1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("1007")),
        "{log:?}"
    );

    // Invalid UTF-8 split across fragments: the same.
    let mut ws = open_beside_witness(&host).await;
    ws.send(Message::Frame(Frame::message(
        b"echo:\xe2\x82".to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        b"(".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    errors += 1;
    expect_error_close(&host, &mut ws, 1007, errors).await;

    // A protocol violation (a reserved bit set): 1002, and an error event.
    let mut ws = open_beside_witness(&host).await;
    let mut frame = frame_head(true, 0x1, 2);
    frame[0] |= 0x40;
    frame.extend_from_slice(b"hi");
    tcp_of(&mut ws).write_all(&frame).await.unwrap();
    errors += 1;
    expect_error_close(&host, &mut ws, 1002, errors).await;

    // A message over the limit: 1009, and an error event.
    let mut ws = open_beside_witness(&host).await;
    let _ = ws.send(Message::text("x".repeat(2000))).await;
    errors += 1;
    expect_error_close(&host, &mut ws, 1009, errors).await;

    // Dropped mid-frame (a header promising 100 bytes, 10 sent) and mid-message (a first
    // fragment, then nothing): a 1006 close event, unclean.
    for partial in [
        [frame_head(true, 0x1, 100), b"echo:01234".to_vec()].concat(),
        [frame_head(false, 0x1, 5), b"echo:".to_vec()].concat(),
    ] {
        let mut ws = open_beside_witness(&host).await;
        tcp_of(&mut ws).write_all(&partial).await.unwrap();
        drop(ws);
        closes += 1;
        let log = wait_logged(&host, "closes", closes).await;
        assert_eq!(log[closes - 1]["code"], 1006, "{log:?}");
        assert_eq!(log[closes - 1]["was_clean"], false, "{log:?}");
        wait_open_sockets(&host, 1).await;
    }

    // The witness saw none of it, and still works; nothing else was written.
    ws_send(&mut witness, "echo:still here").await;
    assert_eq!(ws_text(&mut witness).await, "still here");
    assert_eq!(socket_log(&host, "errors").await.len(), errors);
    assert_eq!(socket_log(&host, "closes").await.len(), closes);
    let stored = storage(&host).await;
    let keys: Vec<&str> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["closes", "errors", "marker"], "{stored}");
    assert_eq!(stored[2][1], "before");
}

/// A duration flag out of range is refused by name before anything starts (a huge value used to
/// panic converting to a `Duration`).
#[test]
fn out_of_range_durations_on_the_command_line_are_refused() {
    let data = tempfile::tempdir().unwrap();
    for flag in [
        "--idle-timeout",
        "--event-timeout",
        "--header-timeout",
        "--body-timeout",
    ] {
        for value in ["1e300", "0", "-1", "inf", "NaN", "soon"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_dohost"))
                .args(["serve", "--listen", "127.0.0.1:0", "--data"])
                .arg(data.path())
                .arg(format!("{flag}={value}"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag}={value}: {stderr}");
            assert!(
                stderr.contains(flag) && stderr.contains("positive number of seconds"),
                "{flag}={value}: {stderr}"
            );
        }
    }
}
