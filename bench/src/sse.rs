//! Server-sent events against the pub/sub room (`examples/pubsub` on dohost, its JavaScript port
//! on workerd): `GET /pubsub/{room}/events` subscribes, `POST /pubsub/{room}/publish` publishes.
//!
//! A subscriber is a plain TCP connection that sends the request by hand and reads what arrives
//! line by line for `data: fanout-{round}`: both servers write an event in one chunk, so its line
//! is whole within the chunked framing, and the load generator spends no CPU parsing HTTP it does
//! not need.

use crate::load::HttpConn;
use crate::ws::{Fanout, Receipt, await_round};
use crate::{Settings, Target, cpu_time, nonce};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use hyper::Method;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::UnboundedSender;

/// Longest wait for a subscription's response head or an expected event.
const WAIT: Duration = Duration::from_secs(30);

/// What a published event carries, before its round number.
const MARKER: &str = "data: fanout-";

/// A subscription: the connection's halves (dropping the write half would half-close it), and
/// what of the body arrived with the response head.
struct Subscription {
    read: OwnedReadHalf,
    _write: OwnedWriteHalf,
    pending: Vec<u8>,
}

/// Subscribes to `room` and reads the response head: once it has arrived the room holds the
/// subscription.
async fn subscribe(target: &Target, room: &str) -> Result<Subscription> {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(target.addr))
        .await
        .context("connecting")??;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let request = format!(
        "GET /pubsub/{room}/events HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
        target.authority()
    );
    write.write_all(request.as_bytes()).await?;
    let mut got = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, read.read(&mut buf))
            .await
            .context("waiting for the subscription's response head")??;
        if n == 0 {
            bail!("the subscription closed before its response head");
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]);
            if !head.starts_with("HTTP/1.1 200") {
                bail!("subscribing: {}", head.lines().next().unwrap_or_default());
            }
            return Ok(Subscription {
                read,
                _write: write,
                pending: got.split_off(end + 4),
            });
        }
    }
}

/// Reads subscriber `i`'s stream until it ends, reporting each round's marker when it arrives.
async fn read_events(i: usize, mut subscription: Subscription, receipts: UnboundedSender<Receipt>) {
    let mut buf = vec![0u8; 16 << 10];
    let mut pending = std::mem::take(&mut subscription.pending);
    loop {
        let at = Instant::now();
        // Whole lines only; a line cut by the end of what has arrived waits for the rest.
        if let Some(last) = pending.iter().rposition(|&b| b == b'\n') {
            for line in pending[..last].split(|&b| b == b'\n') {
                let round = line
                    .strip_prefix(MARKER.as_bytes())
                    .and_then(|rest| std::str::from_utf8(rest).ok())
                    .and_then(|rest| rest.trim_end().parse().ok());
                if let Some(round) = round {
                    let _ = receipts.send((i, round, at));
                }
            }
            pending.drain(..=last);
        }
        match subscription.read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// The SSE fan-out scenario: `s.fanout_clients` subscribers of one fresh room; in each of
/// `s.fanout_rounds` rounds one `POST /publish` goes out, and the round lasts until every
/// subscriber has the event.
pub async fn fanout(target: &Target, s: &Settings) -> Result<Fanout> {
    let room = format!("sse-fanout-{}", nonce());
    let n = s.fanout_clients.max(1);
    let joined = Instant::now();
    let subscriptions: Vec<Subscription> = stream::iter(0..n)
        .map(|_| subscribe(target, &room))
        .buffered(s.setup_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let join_time = joined.elapsed();
    let (receipts_tx, mut receipts) = tokio::sync::mpsc::unbounded_channel();
    let readers: Vec<_> = subscriptions
        .into_iter()
        .enumerate()
        .map(|(i, subscription)| tokio::spawn(read_events(i, subscription, receipts_tx.clone())))
        .collect();
    drop(receipts_tx);
    let mut publisher = HttpConn::new(target.addr);
    let path = format!("/pubsub/{room}/publish");
    let mut rounds = Vec::new();
    let mut first = Vec::new();
    let cpu_before = (cpu_time(target.pid)?, cpu_time(std::process::id())?);
    let result: Result<()> = async {
        for round in 0..s.fanout_rounds.max(1) as u64 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t0 = Instant::now();
            let body = Bytes::from(format!("fanout-{round}"));
            let (status, answer) = publisher.send(Method::POST, &path, &[], body).await?;
            if status != 200 {
                bail!("publishing: {status} {}", String::from_utf8_lossy(&answer));
            }
            let (to_last, to_first) = await_round(&mut receipts, round, n, None, t0).await?;
            rounds.push(to_last);
            first.push(to_first);
        }
        Ok(())
    }
    .await;
    let server_cpu = cpu_time(target.pid)?.saturating_sub(cpu_before.0);
    let client_cpu = cpu_time(std::process::id())?.saturating_sub(cpu_before.1);
    for reader in readers {
        reader.abort();
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
