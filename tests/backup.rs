//! Backups: `dohost backup` takes a consistent snapshot of a host while clients write to it, and
//! `dohost restore` brings a new host back from it with every write acknowledged before the backup
//! began, its alarms and its deployed code.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const COUNTERS: usize = 20;

/// The highest count acknowledged for each counter so far.
type Acked = Arc<Mutex<HashMap<usize, u64>>>;

async fn count(host: &Host, i: usize) -> u64 {
    let (status, body) = json(client().get(host.at(&format!("/c/n{i}/")))).await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap()
}

/// Runs `dohost` with `args` and the host's address and token; its stdout, or a panic with its
/// stderr.
async fn cli(host: &Host, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--token".into(), TOKEN.into()]);
    let out = {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        host.cli(&all)
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn restore(file: &Path, data: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dohost"))
        .arg("restore")
        .arg(file)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

/// The counters of `restored` hold at least what was acknowledged in `acked`; the counters whose
/// count fell short.
async fn short(restored: &Host, acked: &HashMap<usize, u64>) -> Vec<(usize, u64, u64)> {
    let mut short = Vec::new();
    for (&i, &n) in acked {
        let got = count(restored, i).await;
        if got < n {
            short.push((i, n, got));
        }
    }
    short
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_restores_every_write_acknowledged_before_it() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("c", "counter").await;
    host.deploy("t", "test_object").await;
    let far = now_ms() + 3_600_000;
    let r = client()
        .post(host.at(&format!("/t/alarmed/alarm/set?at={far}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Clients increment the counters throughout, recording what each acknowledgement said.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (url, acked, stop) = (host.url.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let http = client();
            let mut k = w;
            while !stop.load(Ordering::Relaxed) {
                let i = k % COUNTERS;
                k += 8;
                let (status, body) = json(http.post(format!("{url}/c/n{i}/"))).await;
                assert_eq!(status, 200, "{body}");
                let n = body["count"].as_u64().unwrap();
                let mut acked = acked.lock().unwrap();
                let seen = acked.entry(i).or_default();
                *seen = (*seen).max(n);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backups = tempfile::tempdir().unwrap();
    let early = backups.path().join("early.backup");
    cli(&host, &["backup", early.to_str().unwrap()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // What was acknowledged before the backup began must all be in it.
    let before: HashMap<usize, u64> = acked.lock().unwrap().clone();
    let file = backups.path().join("host.backup");
    let said = cli(&host, &["backup", file.to_str().unwrap()]).await;
    assert!(said.contains("backed up"), "{said}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let mut after = HashMap::new();
    for i in 0..COUNTERS {
        after.insert(i, count(&host, i).await);
    }

    let data = tempfile::tempdir().unwrap();
    let restored_dir = data.path().join("restored");
    let out = restore(&file, &restored_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restored: no deploy needed, every acknowledged write there, none beyond what happened.
    let restored = Host::start_in(&restored_dir, &[]);
    assert_eq!(short(&restored, &before).await, vec![]);
    for i in 0..COUNTERS {
        assert!(count(&restored, i).await <= after[&i]);
    }
    let (status, alarm) = json(client().get(restored.at("/t/alarmed/alarm"))).await;
    assert_eq!(status, 200, "{alarm}");
    assert_eq!(alarm["alarm"], Value::from(far), "the alarm came back");
    let r = client().post(restored.at("/c/n0/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the restored host writes");

    // Negative control: the early backup misses writes acknowledged before the later one, and
    // the same check finds them missing.
    let early_dir = data.path().join("early");
    let out = restore(&early, &early_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let early_host = Host::start_in(&early_dir, &[]);
    assert!(
        !short(&early_host, &before).await.is_empty(),
        "the check could not fail"
    );
}

/// A restore refuses what would lose or mix data: a data dir that has a database, and a file that
/// is not a backup.
#[tokio::test]
async fn a_restore_refuses_a_data_dir_in_use_and_a_file_that_is_not_a_backup() {
    let (host, dir) = Host::start(&[]);
    host.deploy("c", "counter").await;
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("b");
    cli(&host, &["backup", file.to_str().unwrap()]).await;

    let out = restore(&file, dir.path());
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("already has a database"), "{said}");

    let junk = backups.path().join("junk");
    std::fs::write(&junk, b"not a database").unwrap();
    let out = restore(&junk, &backups.path().join("new"));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not a dohost backup"), "{said}");
    assert!(!backups.path().join("new").exists());
}
