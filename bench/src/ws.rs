//! WebSocket scenarios against the chat room (`/chat/{room}/ws?user=NAME`): fan-out, throughput
//! and memory per idle socket. The client is tokio-tungstenite.
//!
//! Both servers run the same room: a joiner first gets `{"type":"history",...}`; a text message
//! is stored and broadcast to everyone, the sender included, as
//! `{"type":"message","id","user","text","timestamp"}`. The clients recognise messages by
//! substring (`"type":"message"` and `"text":"<marker>"`) rather than parse every one: dohost
//! orders the keys alphabetically, workerd as written, and the client's CPU is shared with the
//! server on this machine.

use crate::{Memory, Settings, Target, cpu_time, median_ms, nonce};
use anyhow::{Context, Result, anyhow, bail};
use futures::SinkExt;
use futures::stream::{self, SplitSink, StreamExt};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for a handshake, the history, or an expected message.
const WAIT: Duration = Duration::from_secs(30);

/// The marker a chat message carries: `"type":"message"`, whatever the key order.
const IS_MESSAGE: &str = "\"type\":\"message\"";

/// Joins `room` as `user` and reads the history message. Nagle is off, and the read buffer is
/// 4 KiB: tungstenite zero-fills its whole read buffer (128 KiB by default) before every read,
/// which would make the load generator, not the server, the bottleneck of the fan-out.
pub async fn join(target: &Target, room: &str, user: &str) -> Result<Ws> {
    let url = format!("ws://{}/chat/{room}/ws?user={user}", target.authority());
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await
    .map_err(|_| anyhow!("no handshake within {WAIT:?} for {url}"))?
    .with_context(|| format!("WebSocket handshake for {url}"))?;
    let first = next_text(&mut ws).await?;
    if !first.contains("\"type\":\"history\"") {
        bail!("{url}: the first message is not the history: {first:.200}");
    }
    Ok(ws)
}

/// The next text message, skipping control frames; an error after [`WAIT`] or at the end.
async fn next_text(ws: &mut Ws) -> Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no message within {WAIT:?}"),
            Ok(None) => bail!("the WebSocket ended"),
            Ok(Some(Err(e))) => bail!("the WebSocket failed: {e}"),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(frame)))) => bail!("closed by the server: {frame:?}"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Joins `count` clients, `user-{i}` in room `room_of(i)`, at most `concurrency` handshakes at
/// a time. In order of `i`.
pub async fn join_many(
    target: &Target,
    count: usize,
    concurrency: usize,
    room_of: impl Fn(usize) -> String,
) -> Result<Vec<Ws>> {
    let joins = (0..count).map(|i| {
        let room = room_of(i);
        async move { join(target, &room, &format!("user-{i}")).await }
    });
    stream::iter(joins)
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Closes every socket (a close frame each, at most `concurrency` at a time) and drops them.
pub async fn close_all(sockets: Vec<Ws>, concurrency: usize) {
    stream::iter(sockets)
        .for_each_concurrent(concurrency.max(1), |mut ws| async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        })
        .await;
}

/// Finds `"text":"{prefix}{n}"` in a message and returns `n`.
fn marker(text: &str, prefix: &str) -> Option<u64> {
    let needle = format!("\"text\":\"{prefix}");
    let at = text.find(&needle)? + needle.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if text[at + digits.len()..].starts_with('"') {
        digits.parse().ok()
    } else {
        None
    }
}

/// What the fan-out scenario measured.
#[derive(Clone, Debug)]
pub struct Fanout {
    /// Clients in the room.
    pub clients: usize,
    /// For each round: from the send to the last of the other clients receiving the message.
    pub rounds: Vec<Duration>,
    /// For each round: from the send to the first of the other clients receiving the message
    /// (the server's event and commit; the rest of the round is delivery).
    pub first: Vec<Duration>,
    /// How long joining every client took.
    pub join_time: Duration,
    /// CPU time the server used over all rounds, and the load generator's (both ÷ rounds give
    /// the cost of one fan-out on each side; they share the machine's cores).
    pub server_cpu: Duration,
    pub client_cpu: Duration,
}

impl Fanout {
    /// The median round, ms.
    pub fn median_ms(&self) -> f64 {
        median_ms(&self.rounds)
    }

    /// The raw numbers, as the report's text gives them: "median X ms {until} {receivers}
    /// {had_it} (...); rounds ...; CPU per round ...; {joining} took S s".
    pub fn summary(&self, until: &str, receivers: usize, had_it: &str, joining: &str) -> String {
        let rounds: Vec<String> = self
            .rounds
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
            .collect();
        let per_round =
            |cpu: Duration| cpu.as_secs_f64() * 1000.0 / self.rounds.len().max(1) as f64;
        format!(
            "median {:.2} ms {until} {receivers} {had_it} (the first had it after {:.2} ms); rounds (ms): {}; CPU per round: server {:.1} ms, load generator {:.1} ms; {joining} took {:.1} s",
            self.median_ms(),
            median_ms(&self.first),
            rounds.join(", "),
            per_round(self.server_cpu),
            per_round(self.client_cpu),
            self.join_time.as_secs_f64()
        )
    }
}

/// One receipt: who received (by index), which round, and when.
pub type Receipt = (usize, u64, Instant);

/// Waits until `expected` receivers other than `except` have round `round`, for at most
/// [`WAIT`]; the times from `t0` to the last and to the first of them.
pub async fn await_round(
    receipts: &mut tokio::sync::mpsc::UnboundedReceiver<Receipt>,
    round: u64,
    expected: usize,
    except: Option<usize>,
    t0: Instant,
) -> Result<(Duration, Duration)> {
    let mut got = HashSet::new();
    let mut last = t0;
    let mut earliest = None::<Instant>;
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < expected {
        match tokio::time::timeout_at(deadline, receipts.recv()).await {
            Err(_) => bail!(
                "round {round}: {} of {expected} received it within {WAIT:?}",
                got.len()
            ),
            Ok(None) => bail!("round {round}: every reader ended"),
            Ok(Some((i, r, at))) if r == round && Some(i) != except => {
                if got.insert(i) {
                    last = last.max(at);
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
            }
            Ok(Some(_)) => {}
        }
    }
    Ok((last - t0, earliest.map_or(Duration::ZERO, |e| e - t0)))
}

/// Scenario 5: `s.fanout_clients` clients join one fresh room; in each of `s.fanout_rounds`
/// rounds client 0 sends a message and the round lasts until every other client received it.
pub async fn fanout(target: &Target, s: &Settings) -> Result<Fanout> {
    let room = format!("fanout-{}", nonce());
    let n = s.fanout_clients.max(2);
    let joined = Instant::now();
    let sockets = join_many(target, n, s.setup_concurrency, |_| room.clone()).await?;
    let join_time = joined.elapsed();
    let (receipts_tx, mut receipts) = tokio::sync::mpsc::unbounded_channel::<Receipt>();
    let mut sinks: Vec<SplitSink<Ws, Message>> = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for (i, ws) in sockets.into_iter().enumerate() {
        let (sink, mut source) = ws.split();
        sinks.push(sink);
        let tx = receipts_tx.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = source.next().await {
                if let Message::Text(text) = message {
                    let at = Instant::now();
                    if text.contains(IS_MESSAGE)
                        && let Some(round) = marker(&text, "fanout-")
                    {
                        let _ = tx.send((i, round, at));
                    }
                } else if let Message::Close(_) = message {
                    break;
                }
            }
        }));
    }
    drop(receipts_tx);
    let mut rounds = Vec::new();
    let mut first = Vec::new();
    let cpu_before = (cpu_time(target.pid)?, cpu_time(std::process::id())?);
    let result: Result<()> = async {
        for round in 0..s.fanout_rounds.max(1) as u64 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t0 = Instant::now();
            sinks[0]
                .send(Message::text(format!("fanout-{round}")))
                .await
                .context("sending the fan-out message")?;
            let (to_last, to_first) = await_round(&mut receipts, round, n - 1, Some(0), t0).await?;
            rounds.push(to_last);
            first.push(to_first);
        }
        Ok(())
    }
    .await;
    let server_cpu = cpu_time(target.pid)?.saturating_sub(cpu_before.0);
    let client_cpu = cpu_time(std::process::id())?.saturating_sub(cpu_before.1);
    // Close from our side; each reader ends when the server's close reply arrives.
    stream::iter(sinks)
        .for_each_concurrent(s.setup_concurrency.max(1), |mut sink| async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), sink.close()).await;
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for reader in readers {
        let handle = reader.abort_handle();
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            handle.abort();
        }
    }
    result?;
    Ok(Fanout {
        clients: n,
        rounds,
        first,
        join_time,
        server_cpu,
        client_cpu,
    })
}

/// What the throughput scenario measured.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// Clients in the room, each sending.
    pub clients: usize,
    /// Messages sent inside the window.
    pub sent: u64,
    /// Chat messages received inside the window, summed over every client.
    pub delivered: u64,
    /// The measured window.
    pub window: Duration,
    /// Clients that stopped early on an error (timeout, closed socket).
    pub errors: u64,
}

impl Throughput {
    /// Deliveries per second.
    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.window.as_secs_f64()
    }
}

/// Scenario 6: `s.throughput_clients` clients in one fresh room, each sending a message, waiting
/// for its own copy of the broadcast, and sending the next (so at most one message per client in
/// flight), for `s.warmup` then `s.duration`. Counts every chat message every client receives
/// inside the window.
pub async fn throughput(target: &Target, s: &Settings) -> Result<Throughput> {
    let room = format!("throughput-{}", nonce());
    let n = s.throughput_clients.max(1);
    let sockets = join_many(target, n, s.setup_concurrency, |_| room.clone()).await?;
    let start = Instant::now() + s.warmup;
    let end = start + s.duration;
    let mut tasks = Vec::with_capacity(n);
    for (i, mut ws) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut delivered, mut error) = (0u64, 0u64, false);
            let prefix = format!("t{i}-");
            let mut seq = 0u64;
            'sending: while Instant::now() < end {
                let sent_at = Instant::now();
                if ws
                    .send(Message::text(format!("{prefix}{seq}")))
                    .await
                    .is_err()
                {
                    error = true;
                    break;
                }
                if sent_at >= start {
                    sent += 1;
                }
                loop {
                    let text = match next_text(&mut ws).await {
                        Ok(text) => text,
                        Err(_) => {
                            error = true;
                            break 'sending;
                        }
                    };
                    if !text.contains(IS_MESSAGE) {
                        continue;
                    }
                    let now = Instant::now();
                    if now >= start && now <= end {
                        delivered += 1;
                    }
                    if marker(&text, &prefix) == Some(seq) {
                        break;
                    }
                }
                seq += 1;
            }
            (ws, sent, delivered, error)
        }));
    }
    let mut result = Throughput {
        clients: n,
        sent: 0,
        delivered: 0,
        window: s.duration,
        errors: 0,
    };
    let mut sockets = Vec::with_capacity(n);
    for task in tasks {
        let (ws, sent, delivered, error) = task.await?;
        result.sent += sent;
        result.delivered += delivered;
        result.errors += u64::from(error);
        sockets.push(ws);
    }
    close_all(sockets, s.setup_concurrency).await;
    Ok(result)
}

/// Scenario 7a: memory per idle WebSocket. Waits until the server is idle and reads its RSS;
/// opens `s.memory_sockets` sockets spread over `s.memory_rooms` fresh rooms; reads the RSS,
/// waits until the rooms hibernate, and reads it again. The sockets stay open (unread) until
/// then, and are closed at the end.
pub async fn memory_sockets(target: &Target, s: &Settings) -> Result<Memory> {
    let run = nonce();
    let rooms = s.memory_rooms.max(1);
    let (memory, sockets) = Memory::measure(target, s, async || {
        let sockets = join_many(target, s.memory_sockets, s.setup_concurrency, |i| {
            format!("mem-{run}-{}", i % rooms)
        })
        .await?;
        Ok((sockets.len(), sockets))
    })
    .await?;
    close_all(sockets, s.setup_concurrency).await;
    Ok(memory)
}

/// File descriptors workerd holds per WebSocket connection (measured: 2, the socket and one
/// more) ...
pub const WORKERD_FDS_PER_SOCKET: u64 = 2;
/// ... and per awake Durable Object with storage (its `.sqlite`, `-wal` and `-shm` files).
pub const WORKERD_FDS_PER_OBJECT: u64 = 3;

/// The memory scenario's `(sockets, rooms)` for a server allowed `fd_limit` open files: `s`'s,
/// or fewer rooms (with as many sockets per room) if workerd's descriptors would not fit. At
/// the limit workerd's `accept()` fails with EMFILE and the process exits.
pub fn socket_budget(s: &Settings, fd_limit: u64) -> (usize, usize) {
    let rooms = s.memory_rooms.max(1);
    let per_room = s.memory_sockets.div_ceil(rooms) as u64;
    let room_cost = per_room * WORKERD_FDS_PER_SOCKET + WORKERD_FDS_PER_OBJECT;
    // Headroom for the listening socket, the config, the metadata databases, the log.
    let budget = fd_limit.saturating_sub(1_000);
    let mut fit = (budget / room_cost) as usize;
    if fit >= rooms {
        return (s.memory_sockets, rooms);
    }
    if fit > 100 {
        fit -= fit % 100;
    }
    (fit * per_room as usize, fit)
}

#[cfg(test)]
mod tests {
    use super::marker;

    #[test]
    fn budgets() {
        let s = crate::Settings::full();
        assert_eq!(super::socket_budget(&s, 1_000_000), (10_000, 1_000));
        assert_eq!(super::socket_budget(&s, 20_000), (8_000, 800));
    }

    #[test]
    fn markers() {
        let dohost = r#"{"id":3,"text":"fanout-12","timestamp":1,"type":"message","user":"u"}"#;
        assert_eq!(marker(dohost, "fanout-"), Some(12));
        assert_eq!(marker(r#"{"text":"t1-5x"}"#, "t1-"), None);
        assert_eq!(marker(r#"{"text":"t11-5"}"#, "t1-"), None);
        assert_eq!(
            marker(r#"{"type":"message","text":"t1-5"}"#, "t1-"),
            Some(5)
        );
    }
}
