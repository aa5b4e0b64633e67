//! Deploying: bad uploads are refused with a clear message while the old code keeps serving, a
//! redeploy changes live objects without a restart, namespaces come back after a restart, and
//! the admin API wants its token.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{Host, TOKEN, client, json, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_the_old_code_keeps_serving() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("app", "counter").await;
    let c = client();
    assert_eq!(
        json(c.post(host.at("/app/x/"))).await,
        (200, json!({"count": 1}))
    );

    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let cases: [(Vec<u8>, &str, &str); 4] = [
        (
            b"definitely not wasm".to_vec(),
            "not_wasm",
            "not a WebAssembly file",
        ),
        (core_module, "core_module", "core WebAssembly module"),
        (
            b"\0asm\x0d\0\x01\0garbage".to_vec(),
            "invalid_component",
            "not a valid",
        ),
        (
            std::fs::read(wasm("not-an-object")).unwrap(),
            "wrong_world",
            "dohost:object",
        ),
    ];
    for (bytes, code, words) in cases {
        let (status, body) = host.deploy_bytes("app", bytes).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].as_str().unwrap().contains(words), "{body}");
    }
    let (status, body) = host.deploy_bytes("Bad_Name", b"x".to_vec()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_name")),
        "{body}"
    );

    // Still version 1, still counting.
    assert_eq!(
        json(c.post(host.at("/app/x/"))).await,
        (200, json!({"count": 2}))
    );
    let (status, info) = json(c.get(host.at("/_admin/namespaces/app")).bearer_auth(TOKEN)).await;
    assert_eq!((status, info["version"].as_u64()), (200, Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_a_refused_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with_token(dir.path(), &[], None);
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"nope").unwrap();
    let out = host.cli(&["deploy", garbage.to_str().unwrap(), "--name", "app"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("400") && err.contains("not a WebAssembly file"),
        "{err}"
    );

    let out = host.cli(&["deploy", "/no/such/file.wasm", "--name", "app"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.wasm"));

    let out = host.cli(&["namespaces", "--token", "wrong"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_changes_live_objects_without_a_restart() {
    let (mut host, _dir) = Host::start(&[]);
    host.deploy("app", "counter").await;
    let c = client();
    assert_eq!(
        json(c.post(host.at("/app/x/"))).await,
        (200, json!({"count": 1}))
    );

    // Same object, now live, gets new code on its next event.
    host.deploy("app", "ticket_counter").await;
    assert_eq!(
        json(c.post(host.at("/app/x/"))).await,
        (200, json!({"ticket": 1}))
    );
    let (_, info) = json(c.get(host.at("/_admin/namespaces/app")).bearer_auth(TOKEN)).await;
    assert_eq!(info["version"], 2);

    // After a restart the namespace comes back with its latest code and its storage.
    host.kill_and_restart();
    assert_eq!(
        json(c.post(host.at("/app/x/"))).await,
        (200, json!({"ticket": 2}))
    );
    let (_, list) = json(c.get(host.at("/_admin/namespaces")).bearer_auth(TOKEN)).await;
    assert_eq!(list["namespaces"].as_array().unwrap().len(), 1);
    assert_eq!(list["namespaces"][0]["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_queued_before_a_redeploy_runs_the_new_code() {
    // The loop holds the object for about its CPU budget (a few seconds), long enough for a
    // request to queue behind it and a redeploy to complete.
    let (host, _dir) = Host::start(&["--cpu-limit", "3000"]);
    host.deploy("app", "test_object").await;
    let c = client();
    let looping = tokio::spawn(json(c.get(host.at("/app/x/loop"))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = tokio::spawn(json(c.post(host.at("/app/x/"))));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !queued.is_finished(),
        "the request should wait behind the loop"
    );

    host.deploy("app", "counter").await;
    assert!(
        !looping.is_finished(),
        "the loop ended before the deploy did: the test needs a longer --cpu-limit"
    );
    let (status, body) = looping.await.unwrap();
    assert_eq!(body["code"], "cpu_limit_exceeded", "{status} {body}");
    // Queued under the old code, it runs after the deploy: it gets the new code.
    assert_eq!(queued.await.unwrap(), (200, json!({"count": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_a_missing_or_wrong_token() {
    let (host, _dir) = Host::start(&[]);
    let c = client();
    let bytes = std::fs::read(wasm("counter")).unwrap();
    let url = host.at("/_admin/namespaces/app");
    let (status, body) = json(c.put(&url).body(bytes.clone())).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = json(c.put(&url).bearer_auth("wrong").body(bytes.clone())).await;
    assert_eq!(status, 401);
    let (status, _) = json(c.get(host.at("/_admin/namespaces")).bearer_auth("")).await;
    assert_eq!(status, 401);
    // Nothing was deployed.
    let (status, _) = json(c.get(host.at("/app/x/"))).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_token_is_kept_private_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start_with_token(dir.path(), &[], None);
    let file = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let c = client();
    let (status, _) = json(c.get(host.at("/_admin/namespaces")).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    // The same token after a restart.
    host.kill_and_restart();
    let (status, _) = json(c.get(host.at("/_admin/namespaces")).bearer_auth(&token)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_uploads_and_bodies_get_413() {
    let (host, _dir) = Host::start(&["--max-request-body", "1000"]);
    host.deploy("t", "test_object").await;
    let c = client();
    let (status, body) = json(c.post(host.at("/t/o/echo")).body(vec![b'x'; 1001])).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("body_too_large")),
        "{body}"
    );
    let (status, body) = json(c.post(host.at("/t/o/echo")).body(vec![b'x'; 1000])).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sharing_a_compile_cache_compile_a_component_once() {
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let (first, _d1) = Host::start(&["--compile-cache", cache_arg]);
    first.deploy("app", "counter").await;
    let compiled: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(compiled.len(), 1, "one compiled component: {compiled:?}");
    assert_eq!(compiled[0].extension().unwrap(), "cwasm");
    let written = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();
    assert!(
        !_d1.path().join("cache").exists(),
        "nothing compiled into the data dir"
    );

    // A second host on the same cache takes the code as it is: the file is not written again
    // (a host that compiled would replace it), and the object runs.
    let (second, _d2) = Host::start(&["--compile-cache", cache_arg]);
    second.deploy("app", "counter").await;
    assert_eq!(
        std::fs::metadata(&compiled[0]).unwrap().modified().unwrap(),
        written,
        "the second host compiled the component again"
    );
    assert_eq!(
        json(client().post(second.at("/app/x/"))).await,
        (200, json!({"count": 1}))
    );
}
