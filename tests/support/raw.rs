//! Raw connections, for what an HTTP or WebSocket client will not send: requests written as bytes
//! on a `TcpStream`, answers read back until the host closes, and hand-made WebSocket frames.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Host, Ws};

/// How long any one read of a raw connection may take before the test fails.
const READ_WAIT: Duration = Duration::from_secs(20);

/// A response read off a raw connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Raw {
    /// The body as JSON; panics with the whole response if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Checks a JSON error from the host: the status, `code`, a message, and a JSON content type.
    pub fn assert_error(&self, status: u16, code: &str) {
        let body = self.json();
        assert_eq!(
            (self.status, body["code"].as_str()),
            (status, Some(code)),
            "{self:?}"
        );
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.head
        );
    }

    /// Checks a refusal by hyper itself: the status alone, no body.
    pub fn assert_bare(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(self.body.is_empty(), "{self:?}");
    }
}

/// Opens a raw connection to the host.
pub async fn connect(host: &Host) -> TcpStream {
    TcpStream::connect(host.addr()).await.expect("connect")
}

/// Reads everything until the server closes (or resets) the connection. Panics if it has not
/// within [`READ_WAIT`].
async fn read_all(tcp: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(READ_WAIT, async {
        let mut buf = [0u8; 8192];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the host neither answered nor closed within {READ_WAIT:?}; got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// The answer read until the server closes the connection; `None` if it closed with nothing.
pub async fn read_to_close(tcp: &mut TcpStream) -> Option<Raw> {
    parse(&read_all(tcp).await)
}

/// Splits a response into its head and body; `None` for no bytes at all.
fn parse(bytes: &[u8]) -> Option<Raw> {
    if bytes.is_empty() {
        return None;
    }
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Some(Raw {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    })
}

/// Sends `request` as it is on a fresh connection and reads the answer to the end; the request
/// should ask for `Connection: close` if the host would otherwise keep the connection open.
pub async fn raw(host: &Host, request: &[u8]) -> Raw {
    let mut tcp = connect(host).await;
    // A refusal can come (and the connection close) before all of a large request is written.
    let _ = tcp.write_all(request).await;
    read_to_close(&mut tcp)
        .await
        .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(request)))
}

/// `GET {target}` with `Connection: close` and `extra` header lines (each ending in CRLF).
pub async fn get(host: &Host, target: &str, extra: &str) -> Raw {
    raw(
        host,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
    .await
}

/// Writes `prefix`, then `filler` a byte at a time, `every` apart, until the host answers or
/// closes the connection; returns the answer (`None` if it closed without one) and how long the
/// trickle lasted. Panics if the host did neither within `limit`.
pub async fn trickle(
    tcp: &mut TcpStream,
    prefix: &[u8],
    filler: u8,
    every: Duration,
    limit: Duration,
) -> (Option<Raw>, Duration) {
    tcp.write_all(prefix).await.unwrap();
    let start = Instant::now();
    let mut first = Vec::new();
    while start.elapsed() < limit {
        // Once the host has closed, a write can fail before its answer is read: read it anyway.
        if tcp.write_all(&[filler]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 8192];
        match tokio::time::timeout(every, tcp.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(n)) => {
                first.extend_from_slice(&buf[..n]);
                break;
            }
            Ok(Err(_)) => break,
        }
    }
    let took = start.elapsed();
    assert!(
        took < limit,
        "still connected after trickling for {limit:?}"
    );
    let rest = read_all(tcp).await;
    (parse(&[first, rest].concat()), took)
}

/// The raw TCP stream under a client WebSocket.
pub fn tcp_of(ws: &mut Ws) -> &mut TcpStream {
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("plain ws://"),
    }
}

/// A client frame header: FIN and `opcode`, a masked payload of `len` (< 126) bytes, mask zero
/// (so the payload goes as it is).
pub fn frame_head(fin: bool, opcode: u8, len: u8) -> Vec<u8> {
    vec![(u8::from(fin) << 7) | opcode, 0x80 | len, 0, 0, 0, 0]
}
