//! WebSockets held by the host on behalf of objects.
//!
//! A socket belongs to the object that accepted it, but lives here, not in the object's instance:
//! the instance may be dropped (hibernation) or replaced (redeploy) while the socket, its tags
//! and its attachment stay. Each socket has one task, which turns frames into events on the
//! object's queue (or answers the auto-response itself, without waking the object) and writes
//! what the object sends once the output gate opens, from a queue that costs nothing while empty.
//! Idle sockets are most sockets, so what one costs at rest is kept small: one task, a 512-byte
//! read buffer, no preallocated channel.

use crate::alarms::now_ms;
use crate::names::ObjectId;
use crate::objects::Objects;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Most tags on one socket.
pub const MAX_TAGS: usize = 10;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Largest attachment, in bytes.
pub const MAX_ATTACHMENT_BYTES: usize = 16 * 1024;
/// Longest auto-response request or response text, in bytes.
pub const MAX_AUTO_RESPONSE_BYTES: usize = 2048;

/// What the host sends on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

/// An event from a socket, for its object.
#[derive(Debug, Clone)]
pub enum SocketEvent {
    Text(String),
    Binary(Vec<u8>),
    Close {
        code: u16,
        reason: String,
        was_clean: bool,
    },
    Error(String),
}

/// Why a WebSocket call was refused. Mirrors the WIT `websocket-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    #[error("no such open socket")]
    NotFound,
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// What waits to be written to one socket, and the bell its task listens for.
#[derive(Default)]
pub struct Outbox {
    queue: Mutex<VecDeque<Outgoing>>,
    ready: Notify,
}

impl Outbox {
    fn push(&self, out: Outgoing) {
        self.queue.lock().unwrap().push_back(out);
        self.ready.notify_one();
    }

    fn take(&self) -> VecDeque<Outgoing> {
        std::mem::take(&mut *self.queue.lock().unwrap())
    }
}

struct Socket {
    tags: Vec<String>,
    attachment: Option<Vec<u8>>,
    out: Arc<Outbox>,
    last_auto_response: Option<u64>,
}

#[derive(Default)]
struct ObjectSockets {
    open: BTreeMap<u64, Socket>,
    auto_response: Option<(String, String)>,
}

/// Every open socket of a host, by object.
pub struct Sockets {
    objects: Mutex<HashMap<ObjectId, ObjectSockets>>,
    next_id: AtomicU64,
    auto_responses: AtomicU64,
    /// Largest incoming message, in bytes.
    pub max_message: usize,
}

/// An accepted socket's outbox, for its task once the handshake completes.
pub struct Accepted {
    pub socket: u64,
    pub outbox: Arc<Outbox>,
}

impl Sockets {
    pub fn new(max_message: usize) -> Self {
        Sockets {
            objects: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            auto_responses: AtomicU64::new(0),
            max_message,
        }
    }

    /// Registers a socket for `object`, before its handshake completes, so that the accepting
    /// event can already send to it.
    pub fn accept(&self, object: ObjectId, tags: Vec<String>) -> Result<Accepted, SocketError> {
        if tags.len() > MAX_TAGS {
            return Err(SocketError::LimitExceeded(format!(
                "{} tags; at most {MAX_TAGS}",
                tags.len()
            )));
        }
        if let Some(t) = tags.iter().find(|t| t.len() > MAX_TAG_BYTES) {
            return Err(SocketError::LimitExceeded(format!(
                "a tag of {} bytes; at most {MAX_TAG_BYTES}",
                t.len()
            )));
        }
        let socket = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::default());
        let mut objects = self.objects.lock().unwrap();
        objects.entry(object).or_default().open.insert(
            socket,
            Socket {
                tags,
                attachment: None,
                out: outbox.clone(),
                last_auto_response: None,
            },
        );
        Ok(Accepted { socket, outbox })
    }

    /// Forgets a socket; returns whether it was open.
    pub fn remove(&self, object: &ObjectId, socket: u64) -> bool {
        let mut objects = self.objects.lock().unwrap();
        let Some(sockets) = objects.get_mut(object) else {
            return false;
        };
        let was_open = sockets.open.remove(&socket).is_some();
        if sockets.open.is_empty() && sockets.auto_response.is_none() {
            objects.remove(object);
        }
        was_open
    }

    fn with_socket<T>(
        &self,
        object: &ObjectId,
        socket: u64,
        f: impl FnOnce(&mut Socket) -> T,
    ) -> Result<T, SocketError> {
        let mut objects = self.objects.lock().unwrap();
        let s = objects
            .get_mut(object)
            .and_then(|o| o.open.get_mut(&socket))
            .ok_or(SocketError::NotFound)?;
        Ok(f(s))
    }

    /// The object's open sockets, oldest first, optionally only those with `tag`.
    pub fn list(&self, object: &ObjectId, tag: Option<&str>) -> Vec<u64> {
        let objects = self.objects.lock().unwrap();
        objects.get(object).map_or_else(Vec::new, |o| {
            o.open
                .iter()
                .filter(|(_, s)| tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
                .map(|(id, _)| *id)
                .collect()
        })
    }

    pub fn exists(&self, object: &ObjectId, socket: u64) -> bool {
        self.with_socket(object, socket, |_| ()).is_ok()
    }

    pub fn tags(&self, object: &ObjectId, socket: u64) -> Result<Vec<String>, SocketError> {
        self.with_socket(object, socket, |s| s.tags.clone())
    }

    pub fn set_attachment(
        &self,
        object: &ObjectId,
        socket: u64,
        data: Vec<u8>,
    ) -> Result<(), SocketError> {
        if data.len() > MAX_ATTACHMENT_BYTES {
            return Err(SocketError::LimitExceeded(format!(
                "an attachment of {} bytes; at most {MAX_ATTACHMENT_BYTES}",
                data.len()
            )));
        }
        self.with_socket(object, socket, |s| s.attachment = Some(data))
    }

    pub fn attachment(
        &self,
        object: &ObjectId,
        socket: u64,
    ) -> Result<Option<Vec<u8>>, SocketError> {
        self.with_socket(object, socket, |s| s.attachment.clone())
    }

    pub fn auto_response_timestamp(
        &self,
        object: &ObjectId,
        socket: u64,
    ) -> Result<Option<u64>, SocketError> {
        self.with_socket(object, socket, |s| s.last_auto_response)
    }

    pub fn set_auto_response(
        &self,
        object: ObjectId,
        pair: Option<(String, String)>,
    ) -> Result<(), SocketError> {
        if let Some((req, resp)) = &pair {
            let longest = req.len().max(resp.len());
            if longest > MAX_AUTO_RESPONSE_BYTES {
                return Err(SocketError::LimitExceeded(format!(
                    "an auto-response text of {longest} bytes; at most {MAX_AUTO_RESPONSE_BYTES}"
                )));
            }
        }
        let mut objects = self.objects.lock().unwrap();
        match pair {
            Some(pair) => objects.entry(object).or_default().auto_response = Some(pair),
            None => {
                if let Some(o) = objects.get_mut(&object) {
                    o.auto_response = None;
                    if o.open.is_empty() {
                        objects.remove(&object);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn auto_response(&self, object: &ObjectId) -> Option<(String, String)> {
        let objects = self.objects.lock().unwrap();
        objects.get(object).and_then(|o| o.auto_response.clone())
    }

    /// Hands released output to sockets; a close also forgets the socket (no close event
    /// follows for it). Output for a socket that has gone is dropped.
    pub fn release(&self, object: &ObjectId, outputs: Vec<(u64, Outgoing)>) {
        // One lock for the whole event's output: a broadcast to 1,000 sockets is 1,000 pushes,
        // not 1,000 lock round trips.
        let mut objects = self.objects.lock().unwrap();
        let Some(sockets) = objects.get_mut(object) else {
            return;
        };
        for (socket, out) in outputs {
            let closing = matches!(out, Outgoing::Close(..));
            if let Some(s) = sockets.open.get(&socket) {
                s.out.push(out);
            }
            if closing {
                sockets.open.remove(&socket);
            }
        }
        if sockets.open.is_empty() && sockets.auto_response.is_none() {
            objects.remove(object);
        }
    }

    /// Answers the auto-response if `text` is its request.
    fn try_auto_response(&self, object: &ObjectId, socket: u64, text: &str) -> bool {
        let mut objects = self.objects.lock().unwrap();
        let Some(o) = objects.get_mut(object) else {
            return false;
        };
        let Some((_, response)) = o.auto_response.as_ref().filter(|(req, _)| req == text) else {
            return false;
        };
        let response = response.clone();
        let Some(s) = o.open.get_mut(&socket) else {
            return false;
        };
        s.last_auto_response = Some(now_ms());
        s.out.push(Outgoing::Text(response));
        self.auto_responses.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Open sockets of every object.
    pub fn open_count(&self) -> usize {
        let objects = self.objects.lock().unwrap();
        objects.values().map(|o| o.open.len()).sum()
    }

    /// Auto-responses sent since start.
    pub fn auto_response_count(&self) -> u64 {
        self.auto_responses.load(Ordering::Relaxed)
    }

    /// Closes every socket with `code` (at shutdown: 1001).
    pub fn close_all(&self, code: u16, reason: &str) {
        let mut objects = self.objects.lock().unwrap();
        for o in objects.values() {
            for s in o.open.values() {
                s.out.push(Outgoing::Close(code, reason.to_owned()));
            }
        }
        objects.clear();
    }
}

/// The address of the object a socket belongs to.
#[derive(Clone)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub id: ObjectId,
}

/// Turns a frame (or the end of the stream) into an event for the object.
fn event_of(
    frame: Option<Result<Message, axum::Error>>,
    max_message: usize,
) -> Option<SocketEvent> {
    let lost = SocketEvent::Close {
        code: 1006,
        reason: String::new(),
        was_clean: false,
    };
    Some(match frame {
        Some(Ok(Message::Text(text))) => SocketEvent::Text(text.as_str().to_owned()),
        Some(Ok(Message::Binary(data))) => SocketEvent::Binary(data.to_vec()),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return None,
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = frame.map_or((1005, String::new()), |f| {
                (f.code, f.reason.as_str().to_owned())
            });
            SocketEvent::Close {
                code,
                reason,
                was_clean: true,
            }
        }
        Some(Err(e)) => match e
            .into_inner()
            .downcast::<tokio_tungstenite::tungstenite::Error>()
        {
            Ok(e) if matches!(*e, tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
                SocketEvent::Error(format!(
                    "{e}; the limit is {max_message} bytes, so the host closed the socket with 1009"
                ))
            }
            _ => lost,
        },
        None => lost,
    })
}

fn message_of(out: Outgoing) -> Message {
    match out {
        Outgoing::Text(t) => Message::Text(t.into()),
        Outgoing::Binary(b) => Message::Binary(b.into()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

/// Runs an upgraded socket until it closes: frames in become events, output goes out.
pub async fn serve(
    mut ws: WebSocket,
    sockets: Arc<Sockets>,
    objects: Objects,
    owner: Owner,
    accepted: Accepted,
) {
    let Accepted { socket, outbox } = accepted;
    let deliver =
        |event: SocketEvent| objects.websocket_event(&owner.namespace, &owner.name, socket, event);
    // Once a close frame is sent, only the peer's answer is awaited.
    let mut closing = false;
    loop {
        tokio::select! {
            frame = ws.next() => {
                if let Some(Ok(Message::Text(text))) = &frame
                    && sockets.try_auto_response(&owner.id, socket, text.as_str())
                {
                    continue;
                }
                let Some(event) = event_of(frame, sockets.max_message) else {
                    continue;
                };
                if let SocketEvent::Text(_) | SocketEvent::Binary(_) = event {
                    // After the object closed the socket, what the client still sends is dropped.
                    if sockets.exists(&owner.id, socket) {
                        deliver(event);
                    }
                    continue;
                }
                if let SocketEvent::Error(_) = event {
                    let frame = message_of(Outgoing::Close(1009, "message too big".into()));
                    let _ = ws.send(frame).await;
                }
                // Only a socket still open reports how it ended: one the object closed has gone.
                if sockets.remove(&owner.id, socket) {
                    deliver(event);
                }
                break;
            }
            () = outbox.ready.notified(), if !closing => {
                for out in outbox.take() {
                    closing |= matches!(out, Outgoing::Close(..));
                    if ws.feed(message_of(out)).await.is_err() {
                        break;
                    }
                    if closing {
                        break;
                    }
                }
                if ws.flush().await.is_err() {
                    if sockets.remove(&owner.id, socket) {
                        deliver(SocketEvent::Close { code: 1006, reason: String::new(), was_clean: false });
                    }
                    break;
                }
            }
        }
    }
}
