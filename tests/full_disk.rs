//! A full disk: events that write get 500 `storage_full`, reads are served, WebSockets stay
//! open, nothing acknowledged is lost, and writes succeed again once there is space, without a
//! restart. Once on a simulated disk in this process (`SimulatedDisk::set_full`), once on a real
//! tmpfs the test mounts and fills (skipped, saying why, where it cannot mount one).

mod support;

use std::path::Path;
use std::time::Duration;

use dohost::storage::{Db, FULL_RETRY, SimulatedDisk};
use serde_json::{Value, json};
use support::in_process::{InProcessHost, test_config};
use support::{Host, TOKEN, Ws, client, json, stats, wasm, ws_connect, ws_json_of_type, ws_send};

/// A put of a megabyte: more blocks than a database with free pages has allocated.
fn big_put() -> Value {
    json!([{"op": "put", "key": "big", "value": "x".repeat(1 << 20)}])
}

async fn post(url: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = client().post(format!("{url}{path}"));
    json(match body {
        Some(body) => req.json(&body),
        None => req,
    })
    .await
}

async fn deploy(url: &str, namespace: &str, guest: &str) {
    let r = client()
        .put(format!("{url}/_admin/namespaces/{namespace}"))
        .bearer_auth(TOKEN)
        .body(std::fs::read(wasm(guest)).unwrap())
        .send()
        .await
        .expect("deploy request");
    assert_eq!(
        r.status(),
        200,
        "deploying {guest}: {}",
        r.text().await.unwrap()
    );
}

/// Sends a chat message on `ws` and waits for the room's broadcast of it: its id.
async fn chat(ws: &mut Ws, text: &str) -> u64 {
    ws_send(ws, text).await;
    let message = ws_json_of_type(ws, "message").await;
    assert_eq!(message["text"], text, "{message}");
    message["id"].as_u64().unwrap()
}

/// What the full disk must not change, before it fills: a count and a chat message acknowledged.
async fn before_full(url: &str) -> (u64, Ws) {
    let (status, body) = post(url, "/counter/c/", None).await;
    assert_eq!(status, 200, "{body}");
    let mut ws = ws_connect(&format!(
        "{}/chat/room/ws?user=ann",
        url.replace("http", "ws")
    ))
    .await;
    chat(&mut ws, "before").await;
    (body["count"].as_u64().unwrap(), ws)
}

/// The checks while the disk is full: writes refused as `storage_full`, reads served, the socket
/// open, the condition in the stats.
async fn while_full(url: &str, count: u64, ws: &mut Ws) {
    let (status, body) = post(url, "/objects/big/ops", Some(big_put())).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("storage_full")),
        "{body}"
    );
    // Within the retry interval every write is refused without touching the disk.
    let (status, body) = post(url, "/counter/c/", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("storage_full")),
        "{body}"
    );
    let (status, body) = json(client().get(format!("{url}/counter/c/"))).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"count": count})),
        "reads are served"
    );
    let (status, history) = json(client().get(format!("{url}/chat/room/messages"))).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["text"],
        "before"
    );
    let s = stats(url).await;
    assert_eq!(s["storage"]["full"], true, "{s}");
    assert!(s["storage"]["failed_commits"].as_u64().unwrap() >= 2, "{s}");
    // A chat message is a write: it is not broadcast, and the socket stays open (checked after).
    ws_send(ws, "while full").await;
}

/// Once space is back: writes succeed within the retry interval, on the socket that stayed open
/// too, and the refused ones left nothing.
async fn after_full(url: &str, count: u64, ws: &mut Ws) {
    tokio::time::sleep(FULL_RETRY + Duration::from_millis(50)).await;
    let (status, body) = post(url, "/objects/big/ops", Some(big_put())).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(url, "/counter/c/", None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"count": count + 1})),
        "no refused increment counted"
    );
    chat(ws, "after").await;
    let s = stats(url).await;
    assert_eq!(s["storage"]["full"], false, "{s}");
}

/// After a restart: everything acknowledged is there.
async fn after_restart(url: &str, count: u64) {
    let (status, body) = json(client().get(format!("{url}/counter/c/"))).await;
    assert_eq!((status, &body), (200, &json!({"count": count + 1})));
    let (_, history) = json(client().get(format!("{url}/chat/room/messages"))).await;
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["before", "after"],
        "the message sent while full was not kept"
    );
    let (status, body) = post(
        url,
        "/objects/big/ops",
        Some(json!([{"op": "get", "key": "big"}])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["ok"].as_str().map(str::len), Some(1 << 20));
}

async fn deploy_all(url: &str) {
    deploy(url, "counter", "counter").await;
    deploy(url, "chat", "chat_room").await;
    deploy(url, "objects", "test_object").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_simulated_disk_refuses_writes_serves_reads_and_recovers_without_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let config = test_config(data.path());
    let disk = SimulatedDisk::new();
    let start = |disk: &SimulatedDisk| {
        let file = disk.file();
        let db = Db::open_with_backend(move || Ok(file.clone()), config.storage_cache).unwrap();
        InProcessHost::start(&config, db)
    };
    let mut host = start(&disk);
    deploy_all(&host.url).await;
    let (count, mut ws) = before_full(&host.url).await;

    disk.set_full(true);
    while_full(&host.url, count, &mut ws).await;
    disk.set_full(false);
    after_full(&host.url, count, &mut ws).await;

    // Only what was synced survives: the database opens on it cleanly.
    disk.cut_power();
    host.stop_abruptly();
    let host = tokio::task::block_in_place(|| start(&disk));
    after_restart(&host.url, count).await;
}

/// The same on a real filesystem: a tmpfs of 64 MiB, filled with a ballast file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_refuses_writes_serves_reads_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(dir.path())
        .output();
    match mount {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            println!(
                "skipped: cannot mount a tmpfs to fill ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: cannot run mount: {e}");
            return;
        }
    }
    let _unmount = Unmount(dir.path().to_owned());
    let cache = support::compile_cache();
    let mut host = Host::start_in(dir.path(), &["--compile-cache", &cache]);
    deploy_all(&host.url).await;
    let (count, mut ws) = before_full(&host.url).await;

    let ballast = dir.path().join("ballast");
    fill(&ballast);
    while_full(&host.url, count, &mut ws).await;
    std::fs::remove_file(&ballast).unwrap();
    after_full(&host.url, count, &mut ws).await;

    host.kill_and_restart();
    after_restart(&host.url, count).await;
    drop(host);
}

/// Writes `path` until the filesystem has no space left.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    loop {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            break;
        }
    }
    // The last partial megabyte.
    while file.write_all(&[0; 4096]).is_ok() {}
}

/// Unmounts the test's tmpfs when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
