//! The worker of the chat app (`examples/chat-app/dohost.toml`): it checks the client's token,
//! then routes to the app's private objects.
//!
//! The token is the app's secret (or variable) `CHAT_TOKEN`, sent as `Authorization: Bearer T`
//! or, by browsers, which cannot set headers on a WebSocket, as `?token=T`. Without the right
//! one: 401. With it:
//!
//! - `GET /rooms`: the lobby's list of rooms, `[{"room": NAME, "members": N}, ...]`;
//! - `/rooms/{name}/ws?user=U` (a WebSocket upgrade): joins the chat room `name` (the chat-room
//!   example, bound as `ROOMS`); the room accepts the socket and the worker passes its 101 on;
//! - `GET /rooms/{name}/messages`: the room's last messages.

use dohost_sdk::{Env, Request, Response, Result, Worker};

struct ChatWorker {
    env: Env,
}

impl ChatWorker {
    /// Whether the request carries the app's token. Compared without an early exit, so the time
    /// taken says nothing about how much of a guess was right.
    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = self.env.var("CHAT_TOKEN") else {
            return false;
        };
        let given = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| req.query_param("token"));
        given.is_some_and(|given| {
            given.len() == token.len()
                && given
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
        })
    }
}

impl Worker for ChatWorker {
    fn new(env: Env) -> Self {
        ChatWorker { env }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        if !self.authorized(&req) {
            return Ok(Response::error("a valid token is needed", 401)
                .with_header("www-authenticate", "Bearer"));
        }
        let path = req.path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            ("GET", ["rooms"] | ["rooms", ""]) => Ok(self
                .env
                .stub("LOBBY", "lobby")
                .fetch(Request::new("GET", "/rooms"))?),
            (_, ["rooms", room, rest @ ("ws" | "messages")]) if !room.is_empty() => {
                let mut target = format!("/{rest}");
                if let Some(user) = req.query_param("user") {
                    target.push_str("?user=");
                    target.push_str(&encode(&user));
                }
                let room = decode(room);
                Ok(self
                    .env
                    .stub("ROOMS", &room)
                    .fetch(req.with_path(&target))?)
            }
            _ => Ok(Response::error("not found", 404)),
        }
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Percent-decodes a path segment (a room name); a malformed escape is kept as it is.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

dohost_sdk::worker!(ChatWorker);
