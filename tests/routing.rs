//! Routing: what an object sees of a request, what it may answer, and the errors for addresses
//! that lead nowhere.

mod support;

use serde_json::json;
use support::{Host, client, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_sees_method_path_query_headers_and_body() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    let c = client();
    let (status, body) = json(
        c.put(host.at("/t/some%20one/echo/a%2Fb?x=1&y=%20"))
            .header("x-thing", "value")
            .body("hello"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["path"], "/echo/a%2Fb?x=1&y=%20");
    assert_eq!(body["body"], "hello");
    let headers = body["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["x-thing", "value"])),
        "{headers:?}"
    );

    let (_, who) = json(c.get(host.at("/t/some%20one/identity"))).await;
    assert_eq!(who["namespace"], "t");
    assert_eq!(who["name"], "some one");
    let id = who["id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    let (_, again) = json(c.get(host.at("/t/some%20one/identity"))).await;
    assert_eq!(again["id"], id, "the id is stable");
    assert_ne!(again["unique"], who["unique"], "unique names are fresh");
    let (_, other) = json(c.get(host.at("/t/someone-else/identity"))).await;
    assert_ne!(other["id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_that_lead_nowhere_get_json_errors() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    let c = client();
    let long = format!("/t/{}/", "a".repeat(257));
    for (path, status, code) in [
        ("/", 404, "unknown_namespace"),
        ("/nope/x/", 404, "unknown_namespace"),
        ("/UPPER/x/", 404, "unknown_namespace"),
        ("/t", 400, "invalid_name"),
        ("/t/", 400, "invalid_name"),
        ("/t/%FF%FE/", 400, "invalid_name"),
        (long.as_str(), 400, "invalid_name"),
    ] {
        let (got, body) = json(c.get(host.at(path))).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // 256 bytes is still a name.
    let ok = format!("/t/{}/identity", "a".repeat(256));
    assert_eq!(json(c.get(host.at(&ok))).await.0, 200);
}
