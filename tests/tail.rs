//! `dohost tail`: a live stream of a running host's requests, guests' log lines, failed events
//! and alarms, filtered by namespace or object; and `serve --log-format json`.

mod support;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// A `dohost tail` child and the lines it prints.
struct Tail {
    child: Child,
    lines: PrintedLines,
}

impl Tail {
    fn start(host: &Host, args: &[&str]) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dohost"))
            .arg("tail")
            .args(args)
            .args(["--url", &host.url, "--token", TOKEN])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = PrintedLines::stdout_of(&mut child);
        Tail { child, lines }
    }

    /// The next line `wanted` accepts, within 10 s; the lines skipped on the way.
    fn next(&self, wanted: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        self.lines.next(Duration::from_secs(10), wanted)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parsed(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Sends requests to `/t/ready/identity` until the tail shows one: it is watching.
async fn until_watching(host: &Host, tail: &Tail) {
    for _ in 0..50 {
        client()
            .get(host.at("/t/ready/identity"))
            .send()
            .await
            .unwrap();
        if let Some(line) = tail.lines.try_next(Duration::from_millis(200)) {
            assert!(line.contains("ready"), "{line}");
            return;
        }
    }
    panic!("the tail never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_shows_requests_logs_failures_and_alarms_of_its_namespace() {
    let (host, _dir) = Host::start(&["--cpu-limit", "200"]);
    host.deploy("t", "test_object").await;
    host.deploy("c", "counter").await;
    let tail = Tail::start(&host, &["t", "--format", "json"]);
    until_watching(&host, &tail).await;
    let http = client();

    // Another namespace's request is not shown; this one's log line and request are.
    http.post(host.at("/c/other/")).send().await.unwrap();
    http.post(host.at("/t/a/log"))
        .body("hello tail")
        .send()
        .await
        .unwrap();
    let is = |kind: &'static str| move |l: &str| parsed(l)["type"] == kind;
    let (log, skipped) = tail.next(is("log"));
    let log = parsed(&log);
    assert_eq!(
        (
            &log["namespace"],
            &log["object"],
            &log["message"],
            &log["level"]
        ),
        (
            &Value::from("t"),
            &Value::from("a"),
            &Value::from("hello tail"),
            &Value::from("INFO")
        )
    );
    assert!(
        skipped.iter().all(|l| parsed(l)["namespace"] == "t"),
        "{skipped:?}"
    );
    let (request, skipped) = tail.next(is("request"));
    let request = parsed(&request);
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/t/a/log");
    assert_eq!(request["status"], 204);
    assert!(request["ms"].as_f64().unwrap() > 0.0);
    assert!(
        skipped.iter().all(|l| parsed(l)["namespace"] == "t"),
        "{skipped:?}"
    );

    // A failed event: the failure with its code, and the request's 500.
    http.get(host.at("/t/spinner/loop")).send().await.unwrap();
    let (failure, _) = tail.next(is("failure"));
    assert_eq!(parsed(&failure)["code"], "cpu_limit_exceeded");
    let (request, _) = tail.next(is("request"));
    let request = parsed(&request);
    assert_eq!(
        (request["status"].clone(), request["code"].clone()),
        (500.into(), "cpu_limit_exceeded".into())
    );

    // An alarm, delivered.
    http.post(host.at("/t/alarmed/alarm/set?in=50"))
        .send()
        .await
        .unwrap();
    let (alarm, _) = tail.next(|l| parsed(l)["type"] == "alarm");
    let alarm = parsed(&alarm);
    assert_eq!(
        (alarm["object"].clone(), alarm["outcome"].clone()),
        ("alarmed".into(), "fired".into())
    );

    // Readable lines, and a filter by object.
    let text = Tail::start(&host, &["--object", "a"]);
    for _ in 0..50 {
        http.post(host.at("/t/a/log"))
            .body("as text")
            .send()
            .await
            .unwrap();
        if let Some(line) = text.lines.try_next(Duration::from_millis(200)) {
            assert!(line.contains("t/a"), "{line}");
            return;
        }
    }
    panic!("the text tail showed nothing");
}

/// `--log-format json`: the host's own log lines are JSON objects, one per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_log_can_be_json() {
    let (host, _dir, lines) = start_capturing_stderr(&["--log-format", "json"], "info");
    host.deploy("t", "test_object").await;
    client()
        .post(host.at("/t/a/log"))
        .body("as json")
        .send()
        .await
        .unwrap();
    let line = poll(
        "the guest's log line",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let lines = lines.lock().unwrap();
            lines.iter().find(|l| l.contains("as json")).cloned()
        },
    )
    .await;
    let parsed = parsed(&line);
    assert_eq!(parsed["level"], "INFO", "{line}");
    assert_eq!(parsed["fields"]["message"], "as json", "{line}");
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
}
