//! The Prometheus metrics: a scrape parses as Prometheus text, and its figures move as the
//! requests, events, commits, messages and alarms this test causes say they should.

mod support;

use prometheus_parse::Scrape;
use std::time::Duration;
use support::metrics::{scrape, value};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_move_as_the_requests_say() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("c", "counter").await;
    host.deploy("t", "test_object").await;
    let url = host.at("/_admin/metrics");
    let before = scrape(&url).await;
    let http = client();
    for _ in 0..5 {
        let r = http.post(host.at("/c/one/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..2 {
        let r = http
            .get(host.at("/t/one/no-such-endpoint"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = http.get(host.at("/nowhere/one/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let mut ws = ws_connect(&host.ws("/t/sock/ws")).await;
    for text in ["echo:a", "echo:b", "echo:c"] {
        ws_send(&mut ws, text).await;
        ws_text(&mut ws).await;
    }
    let r = http
        .post(host.at("/t/alarmed/alarm/set?in=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let fired = [("namespace", "t"), ("outcome", "fired")];
    let after = poll(
        "the alarm's delivery to be counted",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let now = scrape(&url).await;
            (value(&now, "dohost_alarm_deliveries_total", &fired) >= 1.0).then_some(now)
        },
    )
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };

    let c_ok = [("namespace", "c"), ("status", "200"), ("code", "")];
    assert_eq!(moved("dohost_requests_total", &c_ok), 5.0);
    let t_404 = [("namespace", "t"), ("status", "404"), ("code", "")];
    assert_eq!(moved("dohost_requests_total", &t_404), 2.0);
    let unknown = [
        ("namespace", ""),
        ("status", "404"),
        ("code", "unknown_namespace"),
    ];
    assert_eq!(moved("dohost_requests_total", &unknown), 1.0);

    let c_requests = [("namespace", "c"), ("kind", "request")];
    assert_eq!(moved("dohost_event_seconds_count", &c_requests), 5.0);
    assert_eq!(moved("dohost_event_cpu_seconds_count", &c_requests), 5.0);
    assert!(moved("dohost_event_cpu_seconds_sum", &c_requests) > 0.0);
    assert!(moved("dohost_event_seconds_sum", &c_requests) > 0.0);
    let t_messages = [("namespace", "t"), ("kind", "message")];
    assert_eq!(moved("dohost_event_seconds_count", &t_messages), 3.0);
    let c = [("namespace", "c")];
    assert_eq!(moved("dohost_queue_wait_seconds_count", &c), 5.0);

    // Each increment commits; the alarm's set and its spending too.
    assert!(moved("dohost_commits_total", &[]) >= 7.0);
    assert!(moved("dohost_commit_batch_seconds_count", &[]) >= 1.0);
    assert!(moved("dohost_commit_batch_seconds_sum", &[]) > 0.0);
    assert!(value(&after, "dohost_storage_bytes", &c) > 0.0);
    assert_eq!(
        value(&after, "dohost_storage_bytes", &[("namespace", "nowhere")]),
        0.0
    );

    let messages = |direction| [("namespace", "t"), ("direction", direction)];
    assert_eq!(
        moved("dohost_websocket_messages_total", &messages("in")),
        3.0
    );
    assert_eq!(
        moved("dohost_websocket_messages_total", &messages("out")),
        3.0
    );
    assert_eq!(value(&after, "dohost_open_sockets", &[]), 1.0);
    assert!(value(&after, "dohost_live_instances", &[]) >= 1.0);
    assert_eq!(moved("dohost_alarm_deliveries_total", &fired), 1.0);
    assert_eq!(value(&after, "dohost_storage_full", &[]), 0.0);
}

/// `--metrics-listen` serves the same exposition at `/metrics` without the token; the host's own
/// address keeps it behind the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_of_its_own_needs_no_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (host, _dir) = Host::start(&["--metrics-listen", &listen]);
    let r = client()
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(value(&parsed, "dohost_live_instances", &[]), 0.0);
    let r = client()
        .get(host.at("/_admin/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
