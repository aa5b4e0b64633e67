//! WebSockets end to end, with `test_object` (`GET /ws?tags=..`): echo, tags, attachments and
//! broadcasts across hibernation, the output gate of a failed event, closes from either side and
//! from a lost connection, sockets that never open, the message size limit, auto-responses
//! answered by a sleeping object, sockets kept across a redeploy, and a graceful shutdown.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Host, Message, client, json, now_ms, poll, ws_close, ws_connect, ws_expect_close, ws_json,
    ws_next, ws_quiet, ws_send, ws_text,
};

/// The ids of the sockets of `object` (in namespace `t`) accepted with `tag`.
async fn sockets(host: &Host, object: &str, tag: &str) -> Vec<u64> {
    let (status, body) =
        json(client().get(host.at(&format!("/t/{object}/sockets?tag={tag}")))).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap_or_else(|| panic!("a list of sockets: {body}"))
        .iter()
        .map(|v| v.as_u64().unwrap_or_else(|| panic!("a socket id: {body}")))
        .collect()
}

/// The id of the one socket of `object` accepted with `tag`.
async fn socket_id(host: &Host, object: &str, tag: &str) -> u64 {
    let ids = sockets(host, object, tag).await;
    assert_eq!(ids.len(), 1, "one socket tagged {tag}: {ids:?}");
    ids[0]
}

/// `GET /closes` or `GET /errors` of `object`.
async fn log(host: &Host, object: &str, which: &str) -> Vec<Value> {
    let (status, body) = json(client().get(host.at(&format!("/t/{object}/{which}")))).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .clone()
}

/// Polls `/closes` or `/errors` (at most 10 s) until it has an entry for `socket`.
async fn logged(host: &Host, object: &str, which: &str, socket: u64) -> Value {
    poll(
        &format!("{which} of {object} to name socket {socket}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            log(host, object, which)
                .await
                .into_iter()
                .find(|e| e["socket"] == socket)
        },
    )
    .await
}

async fn start(args: &[&str]) -> (Host, tempfile::TempDir) {
    let (host, dir) = Host::start(args);
    host.deploy("t", "test_object").await;
    (host, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_text_and_binary_and_refuses_plain_requests() {
    let (host, _dir) = start(&[]).await;
    let plain = client().get(host.at("/t/echo/ws")).send().await.unwrap();
    assert_eq!(
        plain.status().as_u16(),
        426,
        "a plain GET of /ws is not an upgrade"
    );

    let refused = support::ws_try_connect(&host.ws("/nowhere/echo/ws")).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("404")),
        "an upgrade to an unknown namespace: {:?}",
        refused.map(|_| ())
    );

    let mut ws = ws_connect(&host.ws("/t/echo/ws")).await;
    ws_send(&mut ws, "echo:hello").await;
    assert_eq!(ws_text(&mut ws).await, "hello");
    ws_send(&mut ws, "echo:").await;
    assert_eq!(ws_text(&mut ws).await, "");
    let unicode = "echo:grüße 🌍";
    ws_send(&mut ws, unicode).await;
    assert_eq!(ws_text(&mut ws).await, "grüße 🌍");

    use futures::SinkExt;
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    match ws_next(&mut ws).await {
        Message::Binary(b) => assert_eq!(b.as_ref(), bytes.as_slice()),
        other => panic!("binary should echo as binary, got {other:?}"),
    }
    // Many messages in a row keep their order.
    for i in 0..50 {
        ws_send(&mut ws, &format!("echo:{i}")).await;
    }
    for i in 0..50 {
        assert_eq!(ws_text(&mut ws).await, i.to_string());
    }
    ws_close(&mut ws, 1000, "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_find_sockets_and_a_client_close_is_reported() {
    let (host, _dir) = start(&[]).await;
    let mut ab = ws_connect(&host.ws("/t/tags/ws?tags=a,b")).await;
    let mut b = ws_connect(&host.ws("/t/tags/ws?tags=b")).await;
    let mut c = ws_connect(&host.ws("/t/tags/ws?tags=c")).await;

    ws_send(&mut ab, "tags").await;
    let tags: Value = serde_json::from_str(&ws_text(&mut ab).await).unwrap();
    assert_eq!(tags, json!(["a", "b"]));
    ws_send(&mut c, "tags").await;
    assert_eq!(
        serde_json::from_str::<Value>(&ws_text(&mut c).await).unwrap(),
        json!(["c"])
    );

    let a_id = socket_id(&host, "tags", "a").await;
    let c_id = socket_id(&host, "tags", "c").await;
    let with_b = sockets(&host, "tags", "b").await;
    assert_eq!(with_b.len(), 2, "{with_b:?}");
    assert_eq!(with_b[0], a_id, "oldest first: {with_b:?}");
    assert_ne!(with_b[1], a_id);
    assert!(!with_b.contains(&c_id));
    assert_eq!(sockets(&host, "tags", "nope").await, Vec::<u64>::new());

    // Over 10 tags: the accept is refused, so is the upgrade, and no socket opens.
    let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let refused =
        support::ws_try_connect(&host.ws(&format!("/t/tags/ws?tags={}", eleven.join(",")))).await;
    assert!(refused.is_err(), "an upgrade with 11 tags was accepted");
    assert_eq!(sockets(&host, "tags", "t0").await, Vec::<u64>::new());

    // A clean close from the client: an on-close event, and the socket leaves get-sockets. The
    // event still reads the socket's tags and attachment (who left).
    ws_send(&mut c, "attach:carol").await;
    ws_close(&mut c, 1000, "done").await;
    let entry = logged(&host, "tags", "closes", c_id).await;
    assert_eq!(
        entry,
        json!({"socket": c_id, "code": 1000, "reason": "done", "was_clean": true,
               "tags": ["c"], "attachment": "carol"})
    );
    assert_eq!(sockets(&host, "tags", "c").await, Vec::<u64>::new());
    assert_eq!(sockets(&host, "tags", "b").await.len(), 2);

    // The others still work.
    ws_send(&mut b, "echo:still here").await;
    assert_eq!(ws_text(&mut b).await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_and_broadcasts_survive_hibernation() {
    let (host, _dir) = start(&["--idle-timeout", "0.3"]).await;
    let mut one = ws_connect(&host.ws("/t/sleepy/ws?tags=one")).await;
    let mut two = ws_connect(&host.ws("/t/sleepy/ws?tags=two")).await;
    let mut three = ws_connect(&host.ws("/t/sleepy/ws?tags=three")).await;

    ws_send(&mut one, "attachment").await;
    assert_eq!(ws_json(&mut one).await, Value::Null, "no attachment yet");
    ws_send(&mut one, "attach:kept across sleep").await;
    ws_send(&mut two, "attach:second").await;
    ws_send(&mut one, "attachment").await;
    assert_eq!(ws_json(&mut one).await, json!("kept across sleep"));

    let ids = [
        socket_id(&host, "sleepy", "one").await,
        socket_id(&host, "sleepy", "two").await,
        socket_id(&host, "sleepy", "three").await,
    ];
    let s = host.wait_hibernated().await;
    assert_eq!(s["open_sockets"], 3, "sockets stay open while asleep: {s}");
    let after = [
        socket_id(&host, "sleepy", "one").await,
        socket_id(&host, "sleepy", "two").await,
        socket_id(&host, "sleepy", "three").await,
    ];
    assert_eq!(ids, after, "socket ids are stable across hibernation");
    host.wait_hibernated().await;

    ws_send(&mut one, "attachment").await;
    assert_eq!(ws_json(&mut one).await, json!("kept across sleep"));
    ws_send(&mut two, "attachment").await;
    assert_eq!(ws_json(&mut two).await, json!("second"));
    ws_send(&mut three, "attachment").await;
    assert_eq!(ws_json(&mut three).await, Value::Null);
    ws_send(&mut three, "tags").await;
    assert_eq!(
        ws_json(&mut three).await,
        json!(["three"]),
        "tags survive too"
    );

    host.wait_hibernated().await;
    ws_send(&mut two, "broadcast:wake up").await;
    for ws in [&mut one, &mut two, &mut three] {
        assert_eq!(ws_text(ws).await, "wake up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_sends_nothing() {
    let (host, _dir) = start(&[]).await;
    let mut ws = ws_connect(&host.ws("/t/failing/ws")).await;
    let mut other = ws_connect(&host.ws("/t/failing/ws")).await;
    ws_send(&mut ws, "fail").await;
    ws_send(&mut ws, "echo:ok").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "ok",
        "the failed event's sends never leave"
    );
    // The failure did not close the socket, and nothing reached the other socket either.
    ws_send(&mut ws, "echo:again").await;
    assert_eq!(ws_text(&mut ws).await, "again");
    assert_eq!(ws_quiet(&mut other, Duration::from_millis(300)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_accepted_by_an_event_that_fails_or_refuses_the_upgrade_is_forgotten() {
    let (host, _dir) = start(&[]).await;
    for (then, status) in [("fail", "HTTP 500"), ("refuse", "HTTP 403")] {
        let refused = support::ws_try_connect(&host.ws(&format!("/t/never/ws?then={then}"))).await;
        let error = refused
            .err()
            .unwrap_or_else(|| panic!("{then}: the socket opened"));
        assert!(error.starts_with(status), "{then}: {error}");
    }
    assert_eq!(sockets(&host, "never", "").await, Vec::<u64>::new());
    assert_eq!(host.stats().await["open_sockets"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_by_the_object_reaches_the_client_and_is_not_an_on_close() {
    let (host, _dir) = start(&[]).await;
    let mut ws = ws_connect(&host.ws("/t/closer/ws?tags=closing")).await;
    let mut witness = ws_connect(&host.ws("/t/closer/ws?tags=witness")).await;
    let id = socket_id(&host, "closer", "closing").await;
    ws_send(&mut ws, "close").await;
    assert_eq!(ws_expect_close(&mut ws).await, (4000, "bye".to_owned()));
    assert_eq!(sockets(&host, "closer", "closing").await, Vec::<u64>::new());

    // Give a (wrong) on-close event time to happen, then check there was none. The witness
    // closing afterwards proves the close log works and orders the check after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let witness_id = socket_id(&host, "closer", "witness").await;
    ws_close(&mut witness, 1000, "").await;
    logged(&host, "closer", "closes", witness_id).await;
    let closes = log(&host, "closer", "closes").await;
    assert!(
        closes.iter().all(|e| e["socket"] != id),
        "a close made by the object must not come back as on-close: {closes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_an_unclean_1006_close() {
    let (host, _dir) = start(&["--idle-timeout", "0.3"]).await;
    let ws = ws_connect(&host.ws("/t/dropper/ws?tags=gone")).await;
    let id = socket_id(&host, "dropper", "gone").await;
    // The close event must wake the sleeping object.
    host.wait_hibernated().await;
    // Drop the TCP stream without a close frame.
    let tcp = ws.into_inner();
    drop(tcp);
    let entry = logged(&host, "dropper", "closes", id).await;
    assert_eq!(entry["code"], 1006, "{entry}");
    assert_eq!(entry["was_clean"], false, "{entry}");
    assert_eq!(sockets(&host, "dropper", "gone").await, Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_with_1009_and_an_error_event() {
    let (host, _dir) = start(&["--max-ws-message", "1024"]).await;
    let mut ws = ws_connect(&host.ws("/t/big/ws?tags=big")).await;
    let id = socket_id(&host, "big", "big").await;
    // At the limit is fine.
    let at_limit = format!("echo:{}", "x".repeat(1024 - 5));
    ws_send(&mut ws, &at_limit).await;
    assert_eq!(ws_text(&mut ws).await.len(), 1024 - 5);

    use futures::SinkExt;
    let _ = ws.send(Message::text("y".repeat(2000))).await;
    let (code, reason) = ws_expect_close(&mut ws).await;
    if code != 1009 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        panic!(
            "closed with {code} {reason:?} instead of 1009; on-close events: {:?}, on-error \
             events: {:?}",
            log(&host, "big", "closes").await,
            log(&host, "big", "errors").await
        );
    }
    let entry = logged(&host, "big", "errors", id).await;
    assert!(entry["error"].is_string(), "{entry}");
    assert_eq!(sockets(&host, "big", "big").await, Vec::<u64>::new());
    // An on-close does not follow an on-error.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closes = log(&host, "big", "closes").await;
    assert!(closes.iter().all(|e| e["socket"] != id), "{closes:?}");

    // A binary message over the limit too.
    let mut ws = ws_connect(&host.ws("/t/big/ws?tags=big2")).await;
    let id2 = socket_id(&host, "big", "big2").await;
    let _ = ws.send(Message::binary(vec![7u8; 4096])).await;
    assert_eq!(ws_expect_close(&mut ws).await.0, 1009);
    logged(&host, "big", "errors", id2).await;
}

/// A client that sends faster than its object serves fills the object's queue (1,000 events by
/// default): its socket is closed with 1013, try again later, and the object gets an error event.
/// Another socket of the same object stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_a_busy_object_is_closed_with_1013() {
    use futures::SinkExt;
    let (host, _dir) = start(&[]).await;
    let mut calm = ws_connect(&host.ws("/t/busy/ws?tags=calm")).await;
    let mut ws = ws_connect(&host.ws("/t/busy/ws?tags=flood")).await;
    let id = socket_id(&host, "busy", "flood").await;
    ws_send(&mut ws, "sleep:2000").await;
    for _ in 0..1_100 {
        if ws.send(Message::text("x")).await.is_err() {
            break;
        }
    }
    let (code, reason) = ws_expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1013, "try again later"));
    // The object answers again once it has worked through its queue.
    let errors = poll(
        "the busy object to answer",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let (status, body) = json(client().get(host.at("/t/busy/errors"))).await;
            (status == 200).then_some(body)
        },
    )
    .await;
    let entry = errors
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["socket"] == id))
        .unwrap_or_else(|| panic!("no error event for socket {id}: {errors}"));
    let error = entry["error"].as_str().unwrap();
    assert!(
        error.contains("--max-object-queue") && error.contains("1013"),
        "{error}"
    );
    ws_send(&mut calm, "echo:still here").await;
    assert_eq!(ws_text(&mut calm).await, "still here");
    assert!(host.stats().await["overloaded"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_responses_are_answered_while_the_object_sleeps() {
    let (host, _dir) = start(&["--idle-timeout", "0.3"]).await;
    let c = client();
    let r = c
        .post(host.at("/t/auto/auto-response"))
        .json(&json!({"request": "ping", "response": "pong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(
        json(c.get(host.at("/t/auto/auto-response"))).await,
        (200, json!({"request": "ping", "response": "pong"}))
    );
    let mut ws = ws_connect(&host.ws("/t/auto/ws?tags=auto")).await;
    let id = socket_id(&host, "auto", "auto").await;
    let (_, before) =
        json(c.get(host.at(&format!("/t/auto/auto-response-timestamp?socket={id}")))).await;
    assert_eq!(before, Value::Null, "no auto-response yet");

    let s = host.wait_hibernated().await;
    let sent_before = s["auto_responses"]
        .as_u64()
        .unwrap_or_else(|| panic!("stats have auto_responses: {s}"));
    let t0 = now_ms();
    for _ in 0..3 {
        ws_send(&mut ws, "ping").await;
        assert_eq!(ws_text(&mut ws).await, "pong");
    }
    let t1 = now_ms();
    let s = host.stats().await;
    assert_eq!(s["auto_responses"], sent_before + 3, "{s}");
    assert_eq!(s["live_instances"], 0, "the object was not woken: {s}");

    // Not exactly the request text: a normal message, which wakes the object.
    ws_send(&mut ws, "echo:ping").await;
    assert_eq!(ws_text(&mut ws).await, "ping");

    let (status, at) =
        json(c.get(host.at(&format!("/t/auto/auto-response-timestamp?socket={id}")))).await;
    assert_eq!(status, 200, "{at}");
    let at = at.as_u64().unwrap_or_else(|| panic!("a timestamp: {at}"));
    assert!(t0 <= at + 1 && at <= t1 + 1, "{t0} <= {at} <= {t1}");

    // Removing the pair: the text now reaches the object, which does not know it.
    let r = c
        .post(host.at("/t/auto/auto-response"))
        .json(&json!(null))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(
        json(c.get(host.at("/t/auto/auto-response"))).await,
        (200, Value::Null)
    );
    ws_send(&mut ws, "ping").await;
    ws_send(&mut ws, "echo:after").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "after",
        "no pong once the pair is removed"
    );
    assert_eq!(host.stats().await["auto_responses"], sent_before + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_stay_open_across_a_redeploy() {
    let (host, _dir) = start(&[]).await;
    let mut ws = ws_connect(&host.ws("/t/deployed/ws?tags=x,y")).await;
    ws_send(&mut ws, "attach:mine").await;
    ws_send(&mut ws, "echo:before").await;
    assert_eq!(ws_text(&mut ws).await, "before");

    host.deploy("t", "test_object").await;
    let (_, info) = json(
        client()
            .get(host.at("/_admin/namespaces/t"))
            .bearer_auth(support::TOKEN),
    )
    .await;
    assert_eq!(info["version"], 2, "{info}");

    ws_send(&mut ws, "echo:after").await;
    assert_eq!(ws_text(&mut ws).await, "after");
    ws_send(&mut ws, "tags").await;
    assert_eq!(ws_json(&mut ws).await, json!(["x", "y"]));
    ws_send(&mut ws, "attachment").await;
    assert_eq!(ws_json(&mut ws).await, json!("mine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_with_1001() {
    let (mut host, _dir) = start(&[]).await;
    let mut a = ws_connect(&host.ws("/t/shutdown-a/ws")).await;
    let mut b = ws_connect(&host.ws("/t/shutdown-b/ws")).await;
    ws_send(&mut a, "echo:up").await;
    assert_eq!(ws_text(&mut a).await, "up");

    host.terminate();
    assert_eq!(ws_expect_close(&mut a).await.0, 1001);
    assert_eq!(ws_expect_close(&mut b).await.0, 1001);
    let status = tokio::task::block_in_place(|| host.wait_exit(Duration::from_secs(10)));
    assert!(status.is_some(), "the host exits after SIGTERM");
}
