//! Clients that stop reading: what is sent to them waits in the host only up to a bound, per socket
//! and across the host; past it their sockets are closed with 1008, while the host's memory stays
//! bounded and every other client gets everything, in order.
//!
//! Each bounded run has a negative control: the same flood with the bound lifted must make the
//! host's memory grow past what the bounded run allows, or the bounded run proves nothing.

mod support;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::*;
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;

/// The flood: chat messages of this size, sent as fast as the room takes them, at most `window` of
/// them on their way at once (it floods, but never more than a reading client takes in at once).
#[derive(Clone, Copy)]
struct Flood {
    bytes: usize,
    window: usize,
}

/// A reading client keeps up with this; a client that stops reading falls behind by 4 KB a
/// message.
const FOUR_KB: Flood = Flood {
    bytes: 4096,
    window: 16,
};

/// What the host may hold beyond its WebSocket bounds while the room floods: the write buffers of
/// the connections (tungstenite keeps up to 128 KiB per socket before it writes), the chat room's
/// instance, the buffers of the flood's events, allocator slack.
const MARGIN: u64 = 8 << 20;

/// Joins the room as `user` over a connection with a small receive buffer, so that a client that
/// stops reading stalls the host's writes soon; the history it is sent first is read.
async fn join(host: &Host, room: &str, user: &str) -> Ws {
    let addr = host.addr().parse().unwrap();
    let tcp = TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(addr).await.unwrap();
    let url = host.ws(&format!("/chat/{room}/ws?user={user}"));
    let handshake = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp));
    let (mut ws, _) = tokio::time::timeout(WS_WAIT, handshake)
        .await
        .expect("handshake in time")
        .expect("handshake");
    ws_json_of_type(&mut ws, "history").await;
    ws
}

/// A chat message's text: its sequence number, padded to `bytes`.
fn text(seq: u64, bytes: usize) -> String {
    let mut t = format!("{seq:08}");
    t.push_str(&"x".repeat(bytes - t.len()));
    t
}

/// The flooding client: sends until `stop`, reading its own copies (so that it is no slow reader
/// itself). Returns how many it sent.
async fn flood(ws: Ws, how: Flood, stop: Arc<AtomicBool>) -> u64 {
    let (mut tx, mut rx) = ws.split();
    let window = Arc::new(tokio::sync::Semaphore::new(how.window));
    let returned = window.clone();
    let drain = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Text(t) = m
                && t.as_str().contains(r#""user":"sender""#)
                && t.as_str().contains(r#""type":"message""#)
            {
                returned.add_permits(1);
            }
        }
    });
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(permit)) = tokio::time::timeout(WS_WAIT, window.acquire()).await else {
            panic!("the flooding client's messages stopped coming back");
        };
        permit.forget();
        let send = tx.send(Message::text(text(sent, how.bytes)));
        match tokio::time::timeout(WS_WAIT, send).await {
            Ok(Ok(())) => sent += 1,
            other => panic!("the flooding client could not send: {other:?}"),
        }
    }
    // Everything sent comes back before the connection closes: a client that closes with
    // unread data resets the connection, which would lose its last messages in the host.
    let all = u32::try_from(how.window).unwrap();
    let back = tokio::time::timeout(Duration::from_secs(60), window.acquire_many(all)).await;
    assert!(
        back.is_ok(),
        "the flooding client's last messages did not come back"
    );
    drain.abort();
    sent
}

/// A client that reads every chat message: it checks that they come in order, with no gap, and
/// returns the sequence numbers it saw, and who it was told left, once it has seen as many as
/// `last_sent` says were sent (set when the flood ends) and nothing more comes for a second, or the
/// stream ends.
async fn read_all(mut ws: Ws, last_sent: Arc<AtomicU64>) -> (Vec<u64>, Vec<String>) {
    let mut seen = Vec::new();
    let mut left = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        let m = match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            // Quiet once everything came: the notices of who left came before, or never will.
            Err(_) if seen.len() as u64 == last_sent.load(Ordering::Acquire) => break,
            Err(_) => continue,
            Ok(Some(Ok(m))) => m,
            Ok(_) => break,
        };
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        match v["type"].as_str() {
            Some("message") => {
                let seq: u64 = v["text"].as_str().unwrap()[..8].parse().unwrap();
                assert_eq!(
                    seq,
                    seen.len() as u64,
                    "a reading client got message {seq} after {} others: out of order or lost",
                    seen.len()
                );
                seen.push(seq);
            }
            Some("user_left") => left.push(v["user"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
    (seen, left)
}

/// The highest RSS of `pid` seen until `done` is set, sampled every 50 ms; once it passes
/// `ceiling`, sets `stop` (the flood need not go on: a control has seen what it needed).
async fn peak_rss(pid: u32, done: Arc<AtomicBool>, stop: Arc<AtomicBool>, ceiling: u64) -> u64 {
    let mut peak = rss(pid);
    while !done.load(Ordering::Relaxed) {
        peak = peak.max(rss(pid));
        if peak > ceiling {
            stop.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peak.max(rss(pid))
}

struct Run {
    /// RSS before the flood.
    idle: u64,
    /// Highest RSS during it.
    peak: u64,
    /// How the first never-reading client's socket ended once it read again: the close code
    /// (1006 for a connection dropped without one), if the host gave up on it before the flood
    /// ended.
    stuck_close: Option<u16>,
    /// Users the room was told left.
    left: Vec<String>,
    /// The slowest answer a bystander got from another object during the flood.
    bystander_worst: Duration,
    /// Messages the flood sent.
    sent: u64,
    stats: Value,
}

/// `stuck` clients that never read, one that floods for `seconds` (or until the host's RSS passes
/// `ceiling` above its idle size), one that reads everything, and a bystander that asks another
/// object every 100 ms.
async fn flood_room(args: &[&str], how: Flood, stuck: usize, seconds: u64, ceiling: u64) -> Run {
    // One flood at a time: on two cores, two floods would each measure the other.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _alone = ONE_AT_A_TIME.lock().await;
    let (host, _dir) = Host::start(args);
    host.deploy("chat", "chat_room").await;
    host.deploy("counter", "counter").await;
    let mut stuck_clients = Vec::new();
    for i in 0..stuck {
        stuck_clients.push(join(&host, "busy", &format!("stuck-{i}")).await);
    }
    let reader = join(&host, "busy", "reader").await;
    let sender = join(&host, "busy", "sender").await;
    let idle = rss(host.pid());

    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let last_sent = Arc::new(AtomicU64::new(u64::MAX));
    let peak = tokio::spawn(peak_rss(
        host.pid(),
        done.clone(),
        stop.clone(),
        idle + ceiling,
    ));
    let flooding = tokio::spawn(flood(sender, how, stop.clone()));
    let reading = tokio::spawn(read_all(reader, last_sent.clone()));
    let bystander = {
        let (url, stop) = (host.at("/counter/bystander/"), stop.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let asked = std::time::Instant::now();
                let r = client()
                    .get(&url)
                    .send()
                    .await
                    .expect("the bystander is answered");
                assert_eq!(r.status(), 200);
                worst = worst.max(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            worst
        })
    };

    // Once the host gives up on a stuck client, the first one reads again: what reached it, then
    // the close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let (mut any_closed, mut stuck_close) = (false, None);
    while tokio::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if host.stats().await["sockets_closed_slow"] != 0 {
            any_closed = true;
            // The first stuck client, if it was among those closed, finds its close frame after
            // what reached it; if it was not, it reads until the flood's end.
            let first = &mut stuck_clients[0];
            let closed = tokio::time::timeout_at(deadline, async {
                loop {
                    match ws_next_within(first, WS_WAIT).await {
                        Some(Message::Close(frame)) => {
                            break frame.map_or(1005, |f| u16::from(f.code));
                        }
                        Some(_) => continue,
                        None => break 1006,
                    }
                }
            });
            stuck_close = closed.await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while tokio::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let s = host.stats().await;
        eprintln!(
            "RSS {} MiB, {} bytes waiting, {} closed slow",
            rss(host.pid()) >> 20,
            s["socket_bytes_waiting"],
            s["sockets_closed_slow"]
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.await.unwrap();
    last_sent.store(sent, Ordering::Release);
    let bystander_worst = bystander.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let peak = peak.await.unwrap();
    let mut left = Vec::new();
    if any_closed {
        let (seen, users) = tokio::time::timeout(Duration::from_secs(60), reading)
            .await
            .expect("the reading client got the whole flood in time")
            .unwrap();
        assert!(sent >= 20, "the flood sent only {sent} messages");
        assert_eq!(
            seen.len() as u64,
            sent,
            "the reading client got every message"
        );
        left = users;
    } else {
        reading.abort();
    }
    // After the reader went quiet: the notices of who left cause no more closes by then.
    let stats = host.stats().await;
    Run {
        idle,
        peak,
        stuck_close,
        left,
        bystander_worst,
        sent,
        stats,
    }
}

/// How much the host grew during a run, printed for the log.
fn grew(what: &str, run: &Run) -> u64 {
    eprintln!(
        "{what}: {} messages; RSS {} MiB idle, {} MiB at the peak; bystander's slowest answer \
         {:?}; {}",
        run.sent,
        run.idle >> 20,
        run.peak >> 20,
        run.bystander_worst,
        run.stats
    );
    run.peak.saturating_sub(run.idle)
}

/// A bound so high it never applies: the negative controls.
const NO_BOUND: &str = "1099511627776";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_closed_and_costs_at_most_its_bound() {
    let bound: u64 = 256 << 10;
    let run = flood_room(
        &["--max-ws-backlog", &bound.to_string()],
        FOUR_KB,
        1,
        10,
        1 << 30,
    )
    .await;
    let grew = grew("one stuck reader, 256 KiB bound", &run);
    assert_eq!(
        run.stuck_close,
        Some(1008),
        "closed with 1008: {}",
        run.stats
    );
    assert_eq!(run.stats["sockets_closed_slow"], 1, "{}", run.stats);
    let stuck_left: Vec<&String> = run.left.iter().filter(|u| u.starts_with("stuck")).collect();
    assert_eq!(
        stuck_left,
        ["stuck-0"],
        "the room was told the stuck client left, once"
    );
    assert!(
        grew <= bound + MARGIN,
        "RSS grew {} MiB during the flood; at most the bound plus {} MiB",
        grew >> 20,
        MARGIN >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_bound_one_stuck_reader_grows_the_host() {
    // Until the growth shows, at most 45 s: a slow machine floods more slowly.
    let ceiling = (256 << 10) + MARGIN + (1 << 20);
    let run = flood_room(&["--max-ws-backlog", NO_BOUND], FOUR_KB, 1, 45, ceiling).await;
    let grew = grew("one stuck reader, no bound", &run);
    assert_eq!(run.stuck_close, None, "{}", run.stats);
    assert!(
        grew > (256 << 10) + MARGIN,
        "without the bound RSS grew only {} MiB: the bounded test could not fail",
        grew >> 20
    );
}

/// Many slow clients at once: each is under its own bound, but together they pass the host's.
const MANY: usize = 200;
const MANY_TOTAL: u64 = 32 << 20;

/// With 200 recipients a message is 200 sends: 64 KB messages, one at a time, so that the
/// clients that do not read fill what the kernel buffers for them within seconds, and what waits
/// behind the output gate for one message (13 MB) stays under the host's bound.
const SIXTY_FOUR_KB: Flood = Flood {
    bytes: 64 << 10,
    window: 1,
};

/// Past the host's bound: the connections' write buffers (128 KiB each) and what the allocator
/// keeps of the buffers freed in the last second (each 64 KB message is 200 copies, 8 a second
/// on a debug build) come on top of [`MARGIN`].
const MANY_MARGIN: u64 = MARGIN + MANY as u64 * (136 << 10) + (64 << 20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_slow_clients_are_bounded_together_and_the_host_keeps_serving() {
    let total = MANY_TOTAL.to_string();
    let args = [
        "--max-ws-backlog",
        "4194304",
        "--max-ws-backlog-total",
        &total,
    ];
    let run = flood_room(&args, SIXTY_FOUR_KB, MANY, 10, 1 << 30).await;
    let grew = grew("200 stuck readers, 32 MiB for all", &run);
    let closed = run.stats["sockets_closed_slow"].as_u64().unwrap();
    assert!(closed > 0, "{}", run.stats);
    let stuck_left = run.left.iter().filter(|u| u.starts_with("stuck")).count();
    assert_eq!(stuck_left as u64, closed, "one user_left per closed socket");
    assert!(
        run.stats["socket_bytes_waiting"].as_u64().unwrap() <= MANY_TOTAL,
        "{}",
        run.stats
    );
    assert!(
        grew <= MANY_TOTAL + MANY_MARGIN,
        "RSS grew {} MiB during the flood; at most the host's bound plus {} MiB",
        grew >> 20,
        MANY_MARGIN >> 20
    );
    assert!(
        run.bystander_worst < Duration::from_secs(2),
        "a bystander waited {:?}",
        run.bystander_worst
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_host_bound_many_slow_clients_grow_the_host() {
    let args = [
        "--max-ws-backlog",
        "4194304",
        "--max-ws-backlog-total",
        NO_BOUND,
    ];
    let ceiling = MANY_TOTAL + MANY_MARGIN + (1 << 20);
    let run = flood_room(&args, SIXTY_FOUR_KB, MANY, 45, ceiling).await;
    let grew = grew("200 stuck readers, no bound for all", &run);
    assert!(
        grew > MANY_TOTAL + MANY_MARGIN,
        "without the host's bound RSS grew only {} MiB: the bounded test could not fail",
        grew >> 20
    );
}
