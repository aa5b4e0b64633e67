//! The chaos workload's clients (`tests/chaos.rs`, `tests/power_loss.rs`): ticket claims,
//! counter increments, chat over WebSockets and alarms, each logging what it was told.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::chaos_model::{ClientLog, Sequences, alarm_path};
use super::{Message, Ws, client};

/// At most this many messages are sent to one room in one cycle: fewer than the 100 a room keeps,
/// so every message acknowledged in a cycle is still in the history when the cycle is checked.
const ROOM_SENDS_PER_CYCLE: usize = 90;
/// How long a chat client waits for its own message to come back before counting it in doubt.
const ECHO_WAIT: Duration = Duration::from_secs(10);

/// What the clients of one cycle share.
pub struct Load {
    client: reqwest::Client,
    /// The hosts (a cluster's nodes) the clients spread their requests over.
    urls: Vec<String>,
    cycle: usize,
    /// Set right after the kill (or before a power cut): clients stop starting operations.
    stop: AtomicBool,
    /// Set before a power cut: an answer that arrives afterwards could not have arrived from a
    /// host without power, so it acknowledges nothing (the operation is in doubt).
    cut: AtomicBool,
    /// Messages sent to each room this cycle.
    room_sends: Vec<AtomicUsize>,
    /// Alarms set this cycle, and the most that may be: alarm object `n` gets the `n`th.
    alarm_sends: AtomicUsize,
    max_alarms: usize,
    /// How far ahead alarms are set.
    alarm_delay: Range<u64>,
}

impl Load {
    /// The load of cycle `cycle` on the host at `url`.
    pub fn new(
        url: &str,
        cycle: usize,
        rooms: usize,
        max_alarms: usize,
        alarm_delay: Range<u64>,
    ) -> Arc<Load> {
        Load::over(&[url.to_owned()], cycle, rooms, max_alarms, alarm_delay)
    }

    /// The load of cycle `cycle` spread over the hosts at `urls` (a cluster's nodes).
    pub fn over(
        urls: &[String],
        cycle: usize,
        rooms: usize,
        max_alarms: usize,
        alarm_delay: Range<u64>,
    ) -> Arc<Load> {
        Arc::new(Load {
            client: client(),
            urls: urls.to_vec(),
            cycle,
            stop: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            room_sends: (0..rooms).map(|_| AtomicUsize::new(0)).collect(),
            alarm_sends: AtomicUsize::new(0),
            max_alarms,
            alarm_delay,
        })
    }

    /// Clients start no more operations.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The power is about to go: nothing that arrives from now on is an acknowledgement.
    pub fn cut(&self) {
        self.stop();
        self.cut.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn after_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Waits for the kill, for a client with nothing left to do this cycle.
    async fn idle(&self) {
        while !self.stopped() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What one request came to.
enum Reply {
    /// The expected status and a JSON body, received in full.
    Acknowledged(Value),
    /// The connection was refused: the request never reached the host.
    NotSent,
    /// Sent, but no complete response came back.
    InDoubt,
    /// A complete response with another status or an unreadable body.
    Unexpected(String),
}

async fn call(load: &Load, req: reqwest::RequestBuilder, status: u16) -> Reply {
    let response = match req.send().await {
        Err(e) if e.is_connect() => return Reply::NotSent,
        Err(_) => return Reply::InDoubt,
        Ok(response) => response,
    };
    let got = response.status().as_u16();
    let Ok(body) = response.bytes().await else {
        return Reply::InDoubt;
    };
    if got == 502 {
        // A cluster's node forwarded it, and the owner went away before answering: like a cut
        // connection, it may or may not have happened.
        return Reply::InDoubt;
    }
    if got == 503 {
        // Refused before it ran (no room; in a cluster, its object moving between nodes), or
        // its commit refused by the cluster's fence: it did not happen.
        return Reply::NotSent;
    }
    if load.after_cut() {
        return Reply::InDoubt;
    }
    let text = String::from_utf8_lossy(&body);
    if got != status {
        return Reply::Unexpected(format!("status {got}: {text}"));
    }
    match serde_json::from_slice(&body) {
        Ok(value) => Reply::Acknowledged(value),
        Err(e) => Reply::Unexpected(format!("not JSON ({e}): {text}")),
    }
}
/// Claims tickets or increments counters on random objects until the kill: acks are (object,
/// number).
pub async fn sequence_client(
    load: Arc<Load>,
    seqs: &Sequences,
    seed: u64,
) -> ClientLog<(usize, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = ClientLog::default();
    while !load.stopped() {
        let object = rng.random_range(0..seqs.objects);
        let path = seqs.path(object);
        let url = &load.urls[rng.random_range(0..load.urls.len())];
        let req = load.client.post(format!("{url}{path}"));
        match call(&load, req, 200).await {
            Reply::Acknowledged(body) => match body[seqs.post_field].as_u64() {
                Some(n) => log.acks.push((object, n)),
                None => log.errors.push(format!("POST {path}: {body}")),
            },
            // Not done: again after a moment (a cluster's takeover takes a lease).
            Reply::NotSent => tokio::time::sleep(Duration::from_millis(20)).await,
            Reply::InDoubt => {
                log.in_doubt += 1;
                log.in_doubt_objects.push(object);
            }
            Reply::Unexpected(e) => {
                log.in_doubt += 1;
                log.in_doubt_objects.push(object);
                log.errors.push(format!("POST {path}: {e}"));
            }
        }
    }
    log
}

/// Chats in `room` as user number `k` of this cycle, one message at a time, each acknowledged by
/// its broadcast coming back; reconnects if the socket ends before the kill. Acks are (room, id,
/// text).
pub async fn chat_user(load: Arc<Load>, room: usize, k: usize) -> ClientLog<(usize, u64, String)> {
    let user = format!("c{}u{k}", load.cycle);
    let url = format!(
        "{}/chat/r{room}/ws?user={user}",
        load.urls[k % load.urls.len()].replacen("http://", "ws://", 1)
    );
    let mut log = ClientLog::default();
    let mut sent = 0;
    'connect: while !load.stopped() {
        let mut ws =
            match tokio::time::timeout(ECHO_WAIT, tokio_tungstenite::connect_async(&url)).await {
                Ok(Ok((ws, _))) => ws,
                _ => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
        while !load.stopped() {
            if load.room_sends[room].fetch_add(1, Ordering::Relaxed) >= ROOM_SENDS_PER_CYCLE {
                load.idle().await;
                break 'connect;
            }
            sent += 1;
            let text = format!("{user}-{sent}");
            let echoed = match ws.send(Message::text(text.clone())).await {
                Ok(()) => echo(&mut ws, &text).await.filter(|_| !load.after_cut()),
                Err(_) => None,
            };
            match echoed {
                Some(id) => log.acks.push((room, id, text)),
                None => {
                    log.in_doubt += 1;
                    log.in_doubt_objects.push(room);
                    continue 'connect;
                }
            }
        }
    }
    log
}

/// The id the room broadcast `text` with, once it comes back; `None` if the socket ends first
/// (or nothing comes within [`ECHO_WAIT`]).
async fn echo(ws: &mut Ws, text: &str) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + ECHO_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v["type"] == "message" && v["text"] == text {
                    return v["id"].as_u64();
                }
            }
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sets alarms a random delay ahead, at most one per alarm object and cycle (the model's
/// [`alarm_path`]): acks are (object, alarm time).
pub async fn alarm_client(load: Arc<Load>, seed: u64) -> ClientLog<(usize, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = ClientLog::default();
    while !load.stopped() {
        let object = load.alarm_sends.fetch_add(1, Ordering::Relaxed);
        if object >= load.max_alarms {
            load.idle().await;
            break;
        }
        let delay = rng.random_range(load.alarm_delay.clone());
        let path = format!("{}/alarm/set?in={delay}", alarm_path(object));
        let url = &load.urls[rng.random_range(0..load.urls.len())];
        match call(&load, load.client.post(format!("{url}{path}")), 200).await {
            Reply::Acknowledged(body) => match body["alarm"].as_u64() {
                Some(at) => log.acks.push((object, at)),
                None => log.errors.push(format!("POST {path}: {body}")),
            },
            // Not done: again after a moment (a cluster's takeover takes a lease).
            Reply::NotSent => tokio::time::sleep(Duration::from_millis(20)).await,
            Reply::InDoubt => {
                log.in_doubt += 1;
                log.in_doubt_objects.push(object);
            }
            Reply::Unexpected(e) => {
                log.in_doubt += 1;
                log.in_doubt_objects.push(object);
                log.errors.push(format!("POST {path}: {e}"));
            }
        }
    }
    log
}

/// Joins the clients of a cycle; they must all end within a minute of the kill.
pub async fn join_all_within<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(handles))
        .await
        .expect("clients still running a minute after the kill")
        .into_iter()
        .map(|r| r.expect("a client panicked"))
        .collect()
}
