//! Response streams (`streams.open`): server-sent events that survive hibernation and redeploys,
//! a subscriber that goes away is an event the object sees, and a subscriber that stops reading
//! is ended without holding up the others. Against `examples/pubsub`.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Host, client, json, poll};

/// A subscriber: the response's body, read as events arrive.
struct Subscriber {
    response: reqwest::Response,
    buffer: String,
}

impl Subscriber {
    async fn connect(host: &Host, room: &str, last_event_id: Option<u64>) -> Subscriber {
        let mut request = client().get(host.at(&format!("/pubsub/{room}/events")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Subscriber {
            response,
            buffer: String::new(),
        }
    }

    /// The next event as `(id, data)`, within 10 s.
    async fn next(&mut self) -> (u64, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    event
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_owned)
                        .unwrap_or_default()
                };
                return (field("id: ").parse().unwrap(), field("data: "));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream is still open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn publish(host: &Host, room: &str, text: &str) -> u64 {
    let (status, body) = json(
        client()
            .post(host.at(&format!("/pubsub/{room}/publish")))
            .body(text.to_owned()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_u64().unwrap()
}

async fn subscribers(host: &Host, room: &str) -> Value {
    json(client().get(host.at(&format!("/pubsub/{room}/subscribers"))))
        .await
        .1
}

#[tokio::test]
async fn subscribers_receive_every_event_in_order_across_hibernation_and_a_redeploy() {
    let (host, _dir) = Host::start(&["--idle-timeout", "1"]);
    host.deploy("pubsub", "pubsub").await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(Subscriber::connect(&host, "news", None).await);
    }
    let mut expected = Vec::new();
    let check =
        async |subs: &mut Vec<Subscriber>, expected: &mut Vec<(u64, String)>, text: &str| {
            let id = publish(&host, "news", text).await;
            expected.push((id, text.to_owned()));
            for sub in subs.iter_mut() {
                assert_eq!(sub.next().await, (id, text.to_owned()));
            }
        };
    for i in 1..=3 {
        check(&mut subs, &mut expected, &format!("first {i}")).await;
    }
    // The room hibernates: its instance is dropped, the host keeps the streams.
    let stats = host.wait_hibernated().await;
    assert_eq!(stats["live_instances"], 0, "{stats}");
    assert_eq!(stats["open_sockets"], 3, "{stats}");
    check(&mut subs, &mut expected, "after hibernating").await;
    // A redeploy: the next event runs new code, which finds the same streams.
    host.deploy("pubsub", "pubsub").await;
    check(&mut subs, &mut expected, "after a redeploy").await;
    assert_eq!(
        expected.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );

    // A subscriber that reconnects with Last-Event-ID gets what it missed first.
    let mut late = Subscriber::connect(&host, "news", Some(3)).await;
    assert_eq!(late.next().await, (4, "after hibernating".to_owned()));
    assert_eq!(late.next().await, (5, "after a redeploy".to_owned()));
}

#[tokio::test]
async fn a_subscriber_that_goes_away_is_an_event_the_object_sees() {
    let (host, _dir) = Host::start(&[]);
    host.deploy("pubsub", "pubsub").await;
    let mut staying = Subscriber::connect(&host, "room", None).await;
    let leaving = Subscriber::connect(&host, "room", None).await;
    assert_eq!(
        subscribers(&host, "room").await,
        json!({ "subscribers": 2, "gone": 0 })
    );
    drop(leaving);
    poll(
        "the object to see the subscriber go",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            (subscribers(&host, "room").await == json!({ "subscribers": 1, "gone": 1 }))
                .then_some(())
        },
    )
    .await;
    let id = publish(&host, "room", "still here").await;
    assert_eq!(staying.next().await, (id, "still here".to_owned()));
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_ended_and_the_others_get_everything() {
    use tokio::io::AsyncWriteExt;
    let (host, _dir) = Host::start(&["--max-ws-backlog", "65536"]);
    host.deploy("pubsub", "pubsub").await;
    let mut reader = Subscriber::connect(&host, "busy", None).await;
    // Subscribes over a raw connection and never reads again.
    let mut stalled = tokio::net::TcpStream::connect(host.addr()).await.unwrap();
    stalled
        .write_all(b"GET /pubsub/busy/events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    poll(
        "two subscribers",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { (subscribers(&host, "busy").await["subscribers"] == 2).then_some(()) },
    )
    .await;
    // More than the kernel's socket buffers hold, so the stalled client's backlog fills.
    let text = "x".repeat(32 << 10);
    for i in 0..600u64 {
        let id = publish(&host, "busy", &text).await;
        assert_eq!(reader.next().await.0, id, "event {i}");
    }
    let seen = subscribers(&host, "busy").await;
    assert_eq!(
        seen,
        json!({ "subscribers": 1, "gone": 1 }),
        "the stalled one was ended"
    );
    let stats = host.stats().await;
    assert!(
        stats["socket_bytes_waiting"].as_u64().unwrap() <= 65536,
        "{stats}"
    );
    drop(stalled);
}
