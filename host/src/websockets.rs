//! WebSockets held by the host on behalf of objects.
//!
//! A socket belongs to the object that accepted it, but lives here, not in the object's instance:
//! the instance may be dropped (hibernation) or replaced (redeploy) while the socket, its tags
//! and its attachment stay. Each socket has one task, which turns frames into events on the
//! object's queue (or answers the auto-response itself, without waking the object) and writes
//! what the object sends once the output gate opens, from a queue that costs nothing while empty.
//! Idle sockets are most sockets, so what one costs at rest is kept small: one task, a 256-byte
//! read buffer, no preallocated channel.
//!
//! A peer that breaks the protocol is answered with a close frame and then dropped, and its object
//! gets an error event: 1009 for a message over the limit, 1007 for a text message that is not
//! UTF-8, 1002 for any other violation (an unmasked frame, reserved bits, a bad continuation).
//! A connection lost without a close frame, even mid-frame, is a 1006 close event.

use crate::alarms::now_ms;
use crate::names::ObjectId;
use crate::objects::Objects;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::task::AtomicWaker;
use futures::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

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

/// What waits to be written to one socket, and the waker of its task.
///
/// An `AtomicWaker` rather than a `Notify`: the task registers its waker in place, so a resting
/// socket's task holds no waiter node of its own.
#[derive(Default)]
pub struct Outbox {
    queue: Mutex<VecDeque<Outgoing>>,
    waker: AtomicWaker,
}

impl Outbox {
    fn push(&self, out: Outgoing) {
        self.queue.lock().unwrap().push_back(out);
        self.waker.wake();
    }

    fn take(&self) -> VecDeque<Outgoing> {
        std::mem::take(&mut *self.queue.lock().unwrap())
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().unwrap().is_empty()
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

/// Turns a frame (or the end of the stream) into an event for the object, and, when the peer
/// broke the protocol, the close frame the host answers with before it drops the connection.
fn event_of(
    frame: Option<Result<Message, axum::Error>>,
    max_message: usize,
) -> Option<(SocketEvent, Option<Outgoing>)> {
    let lost = SocketEvent::Close {
        code: 1006,
        reason: String::new(),
        was_clean: false,
    };
    let event = match frame {
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
        Some(Err(e)) => {
            return Some(match violation(e, max_message) {
                Some((code, reason, error)) => (
                    SocketEvent::Error(error),
                    Some(Outgoing::Close(code, reason.to_owned())),
                ),
                None => (lost, None),
            });
        }
        None => lost,
    };
    Some((event, None))
}

/// What the peer got wrong, if a read error is its fault rather than a lost connection: the
/// close code (RFC 6455, section 7.4.1), its reason, and the error the object is told.
fn violation(e: axum::Error, max_message: usize) -> Option<(u16, &'static str, String)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let e = e.into_inner().downcast::<WsError>().ok()?;
    match *e {
        WsError::Capacity(_) => Some((
            1009,
            "message too big",
            format!(
                "{e}; the limit is {max_message} bytes, so the host closed the socket with 1009"
            ),
        )),
        WsError::Utf8(_) => Some((
            1007,
            "invalid UTF-8",
            format!(
                "{e}: a text message that is not UTF-8, so the host closed the socket with 1007"
            ),
        )),
        // The connection was lost (mid-frame or not): a 1006 close, with nobody to send a frame to.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((
            1002,
            "protocol error",
            format!("{e}, so the host closed the socket with 1002"),
        )),
        _ => None,
    }
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
///
/// Not an `async fn`: those keep their arguments twice in the future (as arguments, and as the
/// locals they are moved into; rust-lang/rust#62958), which for the socket alone is 368 bytes of
/// every idle connection. The `async move` block below uses its captures in place.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
pub fn serve(
    mut ws: WebSocket,
    sockets: Arc<Sockets>,
    objects: Objects,
    owner: Arc<Owner>,
    accepted: Accepted,
) -> impl Future<Output = ()> + Send {
    async move {
        let socket = accepted.socket;
        let outbox = &*accepted.outbox;
        let deliver = |event: SocketEvent| {
            objects.websocket_event(&owner.namespace, &owner.name, socket, event)
        };
        // Once a close frame is sent, only the peer's answer is awaited.
        let mut closing = false;
        loop {
            // Most sockets spend their life here, so what is held across this wait is kept small:
            // the socket, the owner, and a future of two references. Writing happens in a boxed
            // future that exists only while there is something to write.
            let wake = std::future::poll_fn(|cx| {
                if let Poll::Ready(frame) = ws.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Frame(frame));
                }
                if !closing {
                    outbox.waker.register(cx.waker());
                    if !outbox.is_empty() {
                        return Poll::Ready(Wake::Output);
                    }
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Frame(frame) => {
                    if let Some(Ok(Message::Text(text))) = &frame
                        && sockets.try_auto_response(&owner.id, socket, text.as_str())
                    {
                        continue;
                    }
                    let Some((event, answer)) = event_of(frame, sockets.max_message) else {
                        continue;
                    };
                    if let SocketEvent::Text(_) | SocketEvent::Binary(_) = event {
                        // After the object closed the socket, what the client still sends is dropped.
                        if sockets.exists(&owner.id, socket) {
                            deliver(event);
                        }
                        continue;
                    }
                    if let Some(close) = answer {
                        let _ = Box::pin(ws.send(message_of(close))).await;
                    }
                    // Only a socket still open reports how it ended: one the object closed has gone.
                    if sockets.remove(&owner.id, socket) {
                        deliver(event);
                    }
                    break;
                }
                Wake::Output => {
                    let written = Box::pin(write_out(&mut ws, outbox)).await;
                    match written {
                        Ok(closed) => closing = closed,
                        Err(()) => {
                            if sockets.remove(&owner.id, socket) {
                                deliver(SocketEvent::Close {
                                    code: 1006,
                                    reason: String::new(),
                                    was_clean: false,
                                });
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Why a socket's task woke up.
enum Wake {
    Frame(Option<Result<Message, axum::Error>>),
    Output,
}

/// Writes what the outbox holds, up to and including a close frame; returns whether it sent
/// one, or `Err` if the connection failed.
async fn write_out(ws: &mut WebSocket, outbox: &Outbox) -> Result<bool, ()> {
    let mut closing = false;
    for out in outbox.take() {
        closing = matches!(out, Outgoing::Close(..));
        if ws.feed(message_of(out)).await.is_err() || closing {
            break;
        }
    }
    ws.flush().await.map_err(drop)?;
    Ok(closing)
}
