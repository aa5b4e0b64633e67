//! Alarms end to end, with `test_object` (`/alarm/...`): delivery at or after the set time,
//! deletion and replacement, retries with backoff, re-arming, delivery after a `kill -9`, and
//! many objects at once.

mod support;

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use support::{Host, client, json, now_ms, poll};

async fn start() -> (Host, tempfile::TempDir) {
    let (host, dir) = Host::start(&[]);
    host.deploy("t", "test_object").await;
    (host, dir)
}

/// `POST /alarm/set?{query}` on `object`; the time the alarm was set to.
async fn set(host: &Host, object: &str, query: &str) -> u64 {
    let (status, body) =
        json(client().post(host.at(&format!("/t/{object}/alarm/set?{query}")))).await;
    assert_eq!(status, 200, "{body}");
    body["alarm"]
        .as_u64()
        .unwrap_or_else(|| panic!("{{\"alarm\": ms}}: {body}"))
}

/// `POST /alarm/{setting}` on `object`, which sets how its alarm handler behaves; must succeed.
async fn configure(host: &Host, object: &str, setting: &str) {
    let r = client()
        .post(host.at(&format!("/t/{object}/alarm/{setting}")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// `GET /alarm`: the alarm time, if set.
async fn get(host: &Host, object: &str) -> Option<u64> {
    let (status, body) = json(client().get(host.at(&format!("/t/{object}/alarm")))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("alarm").is_some(), "{body}");
    body["alarm"].as_u64()
}

/// `GET /alarm/log`: one entry per successful delivery.
async fn alarm_log(host: &Host, object: &str) -> Vec<Value> {
    let (status, body) = json(client().get(host.at(&format!("/t/{object}/alarm/log")))).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .clone()
}

/// Polls the log (at most `limit`) until it has `n` entries.
async fn wait_log(host: &Host, object: &str, n: usize, limit: Duration) -> Vec<Value> {
    poll(
        &format!("{n} alarm deliveries to {object}"),
        limit,
        Duration::from_millis(50),
        || async {
            let log = alarm_log(host, object).await;
            assert!(log.len() <= n, "more deliveries than expected: {log:?}");
            (log.len() == n).then_some(log)
        },
    )
    .await
}

fn at(entry: &Value) -> u64 {
    entry["at"]
        .as_u64()
        .unwrap_or_else(|| panic!("an \"at\" time: {entry}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fires_once_at_or_after_its_time() {
    let (host, _dir) = start().await;
    let before = now_ms();
    let due = set(&host, "once", "in=300").await;
    assert!(due >= before + 300, "{due} is 300 ms after {before}");
    assert_eq!(get(&host, "once").await, Some(due));

    let log = wait_log(&host, "once", 1, Duration::from_secs(10)).await;
    assert!(
        at(&log[0]) >= due,
        "delivered at {} before its time {due}",
        at(&log[0])
    );
    assert_eq!(log[0]["retry_count"], 0, "{log:?}");
    assert_eq!(log[0]["is_retry"], false, "{log:?}");
    assert_eq!(
        get(&host, "once").await,
        None,
        "a successful delivery clears the alarm"
    );

    // A time in the past fires at once.
    let past = now_ms() - 60_000;
    assert_eq!(set(&host, "past", &format!("at={past}")).await, past);
    let log = wait_log(&host, "past", 1, Duration::from_secs(5)).await;
    assert_eq!(log[0]["retry_count"], 0);

    // Nothing more comes for either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alarm_log(&host, "once").await.len(), 1);
    assert_eq!(alarm_log(&host, "past").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_replaced_alarm_does_not_fire() {
    let (host, _dir) = start().await;
    let c = client();
    let due = set(&host, "deleted", "in=300").await;
    let r = c
        .post(host.at("/t/deleted/alarm/delete"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(get(&host, "deleted").await, None);

    set(&host, "replaced", "in=300").await;
    let later = set(&host, "replaced", "in=600000").await;
    assert_eq!(get(&host, "replaced").await, Some(later));

    let wait = (due + 1500).saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(alarm_log(&host, "deleted").await, Vec::<Value>::new());
    assert_eq!(alarm_log(&host, "replaced").await, Vec::<Value>::new());
    assert_eq!(
        get(&host, "replaced").await,
        Some(later),
        "still set for later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_with_backoff() {
    let (host, _dir) = start().await;
    configure(&host, "flaky", "fail-times?n=2").await;
    let due = set(&host, "flaky", "in=100").await;

    // Fails at `due`, again 2 s later, succeeds 4 s after that.
    let log = wait_log(&host, "flaky", 1, Duration::from_secs(16)).await;
    assert_eq!(log[0]["retry_count"], 2, "{log:?}");
    assert_eq!(log[0]["is_retry"], true, "{log:?}");
    let delivered = at(&log[0]);
    // 20 ms of slack for rounding between the host's and the guest's clocks.
    assert!(
        delivered + 20 >= due + 6000,
        "the second retry came {} ms after the first due time, expected at least 6000 (2 s + 4 s)",
        delivered as i64 - due as i64
    );
    assert!(
        delivered <= due + 12_000,
        "the second retry came {} ms after the first due time",
        delivered - due
    );
    assert_eq!(get(&host, "flaky").await, None, "cleared after the success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_rearms_is_delivered_again() {
    let (host, _dir) = start().await;
    configure(&host, "rearm", "rearm?in=400").await;
    let due = set(&host, "rearm", "in=100").await;
    let log = wait_log(&host, "rearm", 2, Duration::from_secs(10)).await;
    assert!(at(&log[0]) >= due, "{log:?}");
    assert!(at(&log[1]) >= at(&log[0]) + 400, "{log:?}");
    for entry in &log {
        assert_eq!(entry["retry_count"], 0, "{log:?}");
    }
    assert_eq!(get(&host, "rearm").await, None);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        alarm_log(&host, "rearm").await.len(),
        2,
        "re-armed only once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_fire_after_a_kill_9() {
    let (mut host, _dir) = start().await;
    // One due while the host is down, one due after it is back.
    let missed = set(&host, "missed", "in=700").await;
    let later = set(&host, "later", "in=3000").await;
    host.kill();
    let wait = (missed + 300).saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert!(now_ms() > missed);
    tokio::task::block_in_place(|| host.restart());

    let log = wait_log(&host, "missed", 1, Duration::from_secs(10)).await;
    assert!(at(&log[0]) >= missed);
    assert_eq!(log[0]["retry_count"], 0, "{log:?}");
    let log = wait_log(&host, "later", 1, Duration::from_secs(10)).await;
    assert!(at(&log[0]) >= later, "{} < {later}", at(&log[0]));
    assert_eq!(get(&host, "missed").await, None);
    assert_eq!(get(&host, "later").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_alarms_all_fire() {
    let (host, _dir) = start().await;
    let names: Vec<String> = (0..200).map(|i| format!("many-{i}")).collect();
    let dues: Vec<u64> = join_all(names.iter().enumerate().map(|(i, n)| {
        let host = &host;
        async move { set(host, n, &format!("in={}", 300 + (i % 10) * 50)).await }
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut pending: Vec<usize> = (0..names.len()).collect();
    while !pending.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 200 alarms never fired, e.g. {}",
            pending.len(),
            names[pending[0]]
        );
        let logs = join_all(pending.iter().map(|&i| {
            let host = &host;
            let name = &names[i];
            async move { (i, alarm_log(host, name).await) }
        }))
        .await;
        pending.clear();
        for (i, log) in logs {
            match log.len() {
                0 => pending.push(i),
                1 => assert!(at(&log[0]) >= dues[i], "{}: {log:?}", names[i]),
                _ => panic!("{} fired more than once: {log:?}", names[i]),
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
