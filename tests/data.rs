//! Seeing and saving the data: `dohost objects` (the inventory), `dohost storage` (an object's
//! keys, read and written by an operator), and `dohost export` / `import`, lossless for binary
//! values.

mod support;

use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use support::*;

/// Runs `dohost ARGS --url --token` with `stdin`; its stdout, or a panic with its stderr.
fn dohost(host: &Host, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dohost"))
        .args(args)
        .args(["--url", &host.url, "--token", TOKEN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dohost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

/// The admin API's address of an object's key.
fn key_url(host: &Host, namespace: &str, object: &str, key: &str) -> String {
    host.at(&format!(
        "/_admin/namespaces/{namespace}/objects/{object}/storage/{key}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_storage_export_and_import() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    host.deploy("u", "test_object").await;
    let put = |k: &str, v: &str| json!({"op": "put", "key": k, "value": v});
    ops(&host, "t", "small", json!([put("k", "v")])).await;
    let big = "x".repeat(5000);
    ops(
        &host,
        "t",
        "large",
        json!([put("k1", &big), put("k2", "two")]),
    )
    .await;
    let far = now_ms() + 3_600_000;
    client()
        .post(host.at(&format!("/t/alarmed/alarm/set?at={far}")))
        .send()
        .await
        .unwrap();
    // A binary value, written by an operator: not UTF-8, with a zero byte.
    let binary = vec![0xff, 0x00, 0x7f, 0x80];
    let r = client()
        .put(key_url(&host, "t", "small", "bin%2Fary"))
        .bearer_auth(TOKEN)
        .body(binary.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // The inventory, largest first, with keys, alarm and whether each is awake.
    let listed: Value = serde_json::from_slice(&dohost(
        &host,
        &["objects", "t", "--sort", "size", "--format", "json"],
        b"",
    ))
    .unwrap();
    let objects = listed["objects"].as_array().unwrap();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["large", "small", "alarmed"]);
    assert_eq!(objects[0]["keys"], 2);
    assert_eq!(objects[0]["bytes"], 2 + 5000 + 2 + 3);
    assert_eq!(objects[1]["keys"], 2);
    assert_eq!(objects[2]["alarm"], far);
    assert_eq!(objects[2]["awake"], true);
    // By name, in pages.
    let page: Value = serde_json::from_slice(&dohost(
        &host,
        &["objects", "t", "--limit", "2", "--format", "json"],
        b"",
    ))
    .unwrap();
    assert_eq!(page["objects"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "large");
    let table = text(dohost(&host, &["objects", "t"], b""));
    let row = table
        .lines()
        .find(|l| l.contains("alarmed"))
        .unwrap_or_default();
    assert!(row.contains("awake") && row.contains(" 0 "), "{table}");

    // One object's storage.
    assert_eq!(
        dohost(&host, &["storage", "t", "small", "get", "bin/ary"], b""),
        binary
    );
    assert_eq!(
        text(dohost(&host, &["storage", "t", "small", "get", "k"], b"")),
        "v"
    );
    dohost(
        &host,
        &["storage", "t", "small", "put", "new key"],
        b"from stdin",
    );
    let listing = text(dohost(&host, &["storage", "t", "small", "list"], b""));
    assert_eq!(
        listing,
        "bin/ary\t(binary, base64) /wB/gA==\nk\tv\nnew key\tfrom stdin\n"
    );
    // The object itself sees the operator's write.
    let (_, got) = ops(
        &host,
        "t",
        "small",
        json!([{"op": "get", "key": "new key"}]),
    )
    .await;
    assert_eq!(got[0]["ok"], "from stdin");
    dohost(&host, &["storage", "t", "small", "delete", "new key"], b"");
    let r = client()
        .get(key_url(&host, "t", "small", "new%20key"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Export, import into another namespace, export again: the same lines.
    let exported = text(dohost(&host, &["export", "t"], b""));
    assert_eq!(exported.lines().count(), 4);
    dohost(&host, &["import", "u"], exported.as_bytes());
    let again = text(dohost(&host, &["export", "u"], b""));
    assert_eq!(again, exported);
    assert_eq!(
        dohost(&host, &["storage", "u", "small", "get", "bin/ary"], b""),
        binary
    );
    let one = text(dohost(&host, &["export", "t", "--object", "large"], b""));
    assert_eq!(one.lines().count(), 2);
}

/// Bad input is refused with a clear error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_operator_input_is_refused_clearly() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    let too_long = "k".repeat(2049);
    let r = client()
        .put(key_url(&host, "t", "o", &too_long))
        .bearer_auth(TOKEN)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "limit_exceeded", "{body}");
    let r = client()
        .get(host.at("/_admin/namespaces/t/objects?sort=sideways"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .post(host.at("/_admin/namespaces/t/objects/o/storage"))
        .bearer_auth(TOKEN)
        .body(r#"{"put": [{"key": "k", "value": "not base64!"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(host.at("/_admin/namespaces/nowhere/objects/o/storage"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .get(host.at("/_admin/namespaces/t/objects/o/storage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let listed: Value =
        serde_json::from_slice(&dohost(&host, &["objects", "t", "--format", "json"], b"")).unwrap();
    assert_eq!(listed["objects"], json!([]), "nothing was written");
}

/// `dohost namespaces delete`: the code, every object's storage and alarm go, its sockets are
/// closed, another namespace is untouched, and a namespace deployed again under the name starts
/// empty. Without `--yes` nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_code_storage_alarms_and_sockets() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    host.deploy("u", "test_object").await;
    let put = json!([{"op": "put", "key": "k", "value": "v"}]);
    for object in ["a", "b", "sock"] {
        ops(&host, "t", object, put.clone()).await;
    }
    ops(&host, "u", "a", put.clone()).await;
    let far = now_ms() + 3_600_000;
    client()
        .post(host.at(&format!("/t/alarmed/alarm/set?at={far}")))
        .send()
        .await
        .unwrap();
    let mut ws = ws_connect(&host.ws("/t/sock/ws")).await;

    let refused = Command::new(env!("CARGO_BIN_EXE_dohost"))
        .args([
            "namespaces",
            "delete",
            "t",
            "--url",
            &host.url,
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let (_, kept) = ops(&host, "t", "a", json!([{"op": "get", "key": "k"}])).await;
    assert_eq!(kept[0]["ok"], "v", "nothing was deleted without --yes");

    let said = text(dohost(&host, &["namespaces", "delete", "t", "--yes"], b""));
    assert!(said.contains("4 objects"), "{said}");
    let r = client().get(host.at("/t/a/identity")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(ws_expect_close(&mut ws).await.0, 1001);
    assert_eq!(host.stats().await["pending_alarms"], 0);

    // Deployed again, the namespace starts empty; the other one kept everything.
    host.deploy("t", "test_object").await;
    let (_, got) = ops(&host, "t", "a", json!([{"op": "get", "key": "k"}])).await;
    assert_eq!(got[0]["ok"], Value::Null, "{got}");
    let (_, alarm) = json(client().get(host.at("/t/alarmed/alarm"))).await;
    assert_eq!(alarm["alarm"], Value::Null);
    let listed: Value =
        serde_json::from_slice(&dohost(&host, &["objects", "t", "--format", "json"], b"")).unwrap();
    let names: Vec<&str> = listed["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    // Reads write nothing: the inventory is empty.
    assert!(names.is_empty(), "{names:?}");
    let (_, other) = ops(&host, "u", "a", json!([{"op": "get", "key": "k"}])).await;
    assert_eq!(other[0]["ok"], "v");
}
