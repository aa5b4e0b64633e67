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
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
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

impl Outgoing {
    /// What the message costs while it waits: its payload (a close frame's reason, plus its code).
    fn size(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Binary(b) => b.len(),
            Outgoing::Close(_, reason) => reason.len() + 2,
        }
    }
}

/// Why the host gave up on a client that did not read what was sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    /// More than [`Backlog::per_socket`] bytes waited for this socket.
    Socket = 1,
    /// The host's sockets together had more than [`Backlog::total`] bytes waiting, and this
    /// socket was among those with the most.
    Host = 2,
}

/// Bytes sent to sockets and not yet handed to their connections (behind the output gate,
/// queued, or being written), for each socket and across the host, with their bounds. A client
/// that stops reading fills its TCP window; past its bound the host closes its socket, rather than
/// keep everything sent to it.
pub struct Backlog {
    /// Most bytes waiting for one socket.
    pub per_socket: usize,
    /// Most bytes waiting for all sockets together.
    pub total: usize,
    waiting: AtomicUsize,
    slow_closes: AtomicU64,
    /// When the sockets were last scanned for the slowest, in ms since the Unix epoch.
    last_shed_ms: AtomicU64,
}

/// The shortest time between two scans for the slowest sockets.
const SHED_INTERVAL_MS: u64 = 10;

/// A client with less than this unread is keeping up: the host's bound never closes it, even
/// while what waits behind the output gate alone passes the bound.
const SLOW_FLOOR: usize = 64 << 10;

impl Backlog {
    pub fn new(per_socket: usize, total: usize) -> Self {
        Backlog {
            per_socket,
            total,
            waiting: AtomicUsize::new(0),
            slow_closes: AtomicU64::new(0),
            last_shed_ms: AtomicU64::new(0),
        }
    }
}

/// A message on its way to a socket. It counts in its socket's and the host's backlog until it is
/// dropped, however that happens: written, discarded with a failed event, or abandoned with its
/// socket.
pub struct Queued {
    out: Outgoing,
    charge: Charge,
}

/// Holds the counts, not the outbox: a message in an outbox's queue must not keep that outbox
/// alive, or an outbox dropped with messages still queued would never be freed.
struct Charge {
    counts: Arc<Counts>,
    bytes: usize,
    /// Past the output gate: waiting for the client rather than for a commit.
    released: bool,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.counts.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        if self.released {
            self.counts.released.fetch_sub(self.bytes, Ordering::AcqRel);
        }
        self.counts
            .backlog
            .waiting
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// One socket's share of the backlog.
struct Counts {
    /// What this socket's [`Queued`] messages add up to, wherever they are.
    bytes: AtomicUsize,
    /// The part of it past the output gate: what the client has not read yet.
    released: AtomicUsize,
    backlog: Arc<Backlog>,
}

/// What waits to be written to one socket, and the waker of its task.
///
/// An `AtomicWaker` rather than a `Notify`: the task registers its waker in place, so a resting
/// socket's task holds no waiter node of its own.
pub struct Outbox {
    queue: Mutex<VecDeque<Queued>>,
    waker: AtomicWaker,
    /// 0, or the [`Slow`] reason the socket's task must close it for.
    slow: AtomicU8,
    counts: Arc<Counts>,
}

impl Outbox {
    fn new(backlog: Arc<Backlog>) -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            slow: AtomicU8::new(0),
            counts: Arc::new(Counts {
                bytes: AtomicUsize::new(0),
                released: AtomicUsize::new(0),
                backlog,
            }),
        }
    }

    /// Counts `out` in the backlogs; `None` if the socket is being closed for being slow (what is
    /// sent to it then is dropped, as for any socket that is closing).
    fn charge(&self, out: Outgoing) -> Option<Queued> {
        if self.slow().is_some() {
            return None;
        }
        let counts = &self.counts;
        let bytes = out.size();
        let mine = counts.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        counts.backlog.waiting.fetch_add(bytes, Ordering::AcqRel);
        let queued = Queued {
            out,
            charge: Charge {
                counts: counts.clone(),
                bytes,
                released: false,
            },
        };
        if mine > counts.backlog.per_socket {
            self.give_up(Slow::Socket);
            return None;
        }
        Some(queued)
    }

    fn push(&self, mut queued: Queued) {
        if self.slow().is_some() {
            return;
        }
        let released = &self.counts.released;
        released.fetch_add(queued.charge.bytes, Ordering::AcqRel);
        queued.charge.released = true;
        self.queue.lock().unwrap().push_back(queued);
        self.waker.wake();
    }

    fn take(&self) -> VecDeque<Queued> {
        std::mem::take(&mut *self.queue.lock().unwrap())
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().unwrap().is_empty()
    }

    fn slow(&self) -> Option<Slow> {
        match self.slow.load(Ordering::Acquire) {
            1 => Some(Slow::Socket),
            2 => Some(Slow::Host),
            _ => None,
        }
    }

    /// Marks the socket for closing and frees what waits in its queue; its task does the rest.
    fn give_up(&self, why: Slow) {
        if self
            .slow
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.counts
                .backlog
                .slow_closes
                .fetch_add(1, Ordering::Relaxed);
            let dropped = self.take();
            drop(dropped);
            self.waker.wake();
        }
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
    backlog: Arc<Backlog>,
}

/// An accepted socket's outbox, for its task once the handshake completes.
pub struct Accepted {
    pub socket: u64,
    pub outbox: Arc<Outbox>,
}

impl Sockets {
    pub fn new(max_message: usize, backlog: Backlog) -> Self {
        Sockets {
            objects: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            auto_responses: AtomicU64::new(0),
            max_message,
            backlog: Arc::new(backlog),
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
        let outbox = Arc::new(Outbox::new(self.backlog.clone()));
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

    /// Counts a message the object sends in its socket's backlog, to be [`Self::release`]d once
    /// the output gate opens; `Ok(None)` if it is dropped because the socket is being closed for
    /// being slow.
    pub fn queue(
        &self,
        object: &ObjectId,
        socket: u64,
        out: Outgoing,
    ) -> Result<Option<Queued>, SocketError> {
        let mut objects = self.objects.lock().unwrap();
        let outbox = objects
            .get(object)
            .and_then(|o| o.open.get(&socket))
            .map(|s| s.out.clone())
            .ok_or(SocketError::NotFound)?;
        let queued = outbox.charge(out);
        self.shed_if_over(&mut objects);
        Ok(queued)
    }

    /// Past the host's bound, gives up on the sockets whose clients have the most unread (past
    /// the output gate) until what is left is back under three quarters of it (so that one more
    /// message does not mean one more scan). What waits behind the gate counts in the total, but
    /// makes no client slow: it leaves once its commit lands. Called under the registry lock,
    /// which it needs to see every socket.
    fn shed_if_over(&self, objects: &mut HashMap<ObjectId, ObjectSockets>) {
        let limit = self.backlog.total;
        if self.backlog.waiting.load(Ordering::Acquire) <= limit {
            return;
        }
        // A scan sees every socket: at most one per interval, however many messages come.
        let now = now_ms();
        let last = self.backlog.last_shed_ms.load(Ordering::Acquire);
        if now < last + SHED_INTERVAL_MS {
            return;
        }
        self.backlog.last_shed_ms.store(now, Ordering::Release);
        let mut doomed = 0;
        let mut candidates = Vec::new();
        for s in objects.values().flat_map(|o| o.open.values()) {
            let bytes = s.out.counts.bytes.load(Ordering::Acquire);
            let unread = s.out.counts.released.load(Ordering::Acquire);
            if s.out.slow().is_some() {
                // Already given up on: its bytes are on their way out.
                doomed += bytes;
            } else if unread >= SLOW_FLOOR {
                candidates.push((unread, bytes, s.out.clone()));
            }
        }
        let mut left = self
            .backlog
            .waiting
            .load(Ordering::Acquire)
            .saturating_sub(doomed);
        candidates.sort_unstable_by_key(|(unread, ..)| std::cmp::Reverse(*unread));
        for (_, bytes, outbox) in candidates {
            if left <= limit / 4 * 3 {
                break;
            }
            outbox.give_up(Slow::Host);
            left = left.saturating_sub(bytes);
        }
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
    pub fn release(&self, object: &ObjectId, outputs: Vec<(u64, Queued)>) {
        // One lock for the whole event's output: a broadcast to 1,000 sockets is 1,000 pushes,
        // not 1,000 lock round trips.
        let mut objects = self.objects.lock().unwrap();
        let Some(sockets) = objects.get_mut(object) else {
            return;
        };
        for (socket, queued) in outputs {
            let closing = matches!(queued.out, Outgoing::Close(..));
            if let Some(s) = sockets.open.get(&socket) {
                s.out.push(queued);
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
        if let Some(queued) = s.out.charge(Outgoing::Text(response)) {
            s.out.push(queued);
        }
        self.auto_responses.fetch_add(1, Ordering::Relaxed);
        self.shed_if_over(&mut objects);
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

    /// Bytes sent to sockets and not yet handed to their connections.
    pub fn bytes_waiting(&self) -> usize {
        self.backlog.waiting.load(Ordering::Acquire)
    }

    /// Sockets closed since start because their clients did not read fast enough.
    pub fn slow_close_count(&self) -> u64 {
        self.backlog.slow_closes.load(Ordering::Relaxed)
    }

    /// Closes every socket with `code` (at shutdown: 1001).
    pub fn close_all(&self, code: u16, reason: &str) {
        let mut objects = self.objects.lock().unwrap();
        for o in objects.values() {
            for s in o.open.values() {
                if let Some(queued) = s.out.charge(Outgoing::Close(code, reason.to_owned())) {
                    s.out.push(queued);
                }
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
        // Once a close frame is sent: how long the client has to answer it.
        let mut answer_by = None;
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
                    if let Some(why) = outbox.slow() {
                        return Poll::Ready(Wake::Slow(why));
                    }
                    if !outbox.is_empty() {
                        return Poll::Ready(Wake::Output);
                    }
                }
                Poll::Pending
            });
            let wake = match answer_by {
                None => wake.await,
                // Boxed: only closing sockets pay for the timer.
                Some(until) => match Box::pin(tokio::time::timeout_at(until, wake)).await {
                    Ok(wake) => wake,
                    Err(_) => break,
                },
            };
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
                Wake::Slow(why) => {
                    close_slow(&mut ws, &sockets, &owner, socket, why, &deliver).await;
                    break;
                }
                Wake::Output => {
                    // A write the client does not read stalls here: the outbox's verdict ends it.
                    let mut write = Box::pin(write_out(&mut ws, outbox));
                    let written = std::future::poll_fn(|cx| {
                        outbox.waker.register(cx.waker());
                        if let Some(why) = outbox.slow() {
                            return Poll::Ready(Err(Some(why)));
                        }
                        write.as_mut().poll(cx).map(|r| r.map_err(|()| None))
                    })
                    .await;
                    drop(write);
                    match written {
                        Ok(closed) => {
                            closing = closed;
                            if closed {
                                answer_by = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                            }
                        }
                        Err(Some(why)) => {
                            close_slow(&mut ws, &sockets, &owner, socket, why, &deliver).await;
                            break;
                        }
                        Err(None) => {
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
    Slow(Slow),
}

/// The close code for a client that did not read what was sent to it: 1008, policy violation.
pub const SLOW_CLOSE_CODE: u16 = 1008;

/// How long a close frame the host sends may take to get through (after what the connection
/// already holds), and then the client's answer to arrive, before the connection is dropped.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Tells the object of a client that fell too far behind with an error event, and closes its
/// socket with 1008.
async fn close_slow(
    ws: &mut WebSocket,
    sockets: &Sockets,
    owner: &Owner,
    socket: u64,
    why: Slow,
    deliver: &impl Fn(SocketEvent),
) {
    let backlog = &sockets.backlog;
    let error = match why {
        Slow::Socket => format!(
            "the client read too slowly: more than {} bytes waited to be written to it, so the \
             host closed the socket with {SLOW_CLOSE_CODE}",
            backlog.per_socket
        ),
        Slow::Host => format!(
            "the client read too slowly: the host's sockets together had more than {} bytes \
             waiting, this one among the most, so the host closed it with {SLOW_CLOSE_CODE}",
            backlog.total
        ),
    };
    // The object learns at once; the close frame may take a while, behind what the connection
    // already holds.
    if sockets.remove(&owner.id, socket) {
        deliver(SocketEvent::Error(error));
    }
    let close = Message::Close(Some(CloseFrame {
        code: SLOW_CLOSE_CODE,
        reason: "client too slow".into(),
    }));
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(close)).await;
}

/// Writes what the outbox holds, up to and including a close frame; returns whether it sent
/// one, or `Err` if the connection failed.
///
/// A batch that closes the socket gets [`CLOSE_GRACE`] to be written: the socket has left the
/// registry, so a client that does not read could no longer be found slow, and would hold its
/// task for ever.
async fn write_out(ws: &mut WebSocket, outbox: &Outbox) -> Result<bool, ()> {
    let batch = outbox.take();
    let closes = batch.iter().any(|q| matches!(q.out, Outgoing::Close(..)));
    let write = async {
        let mut closing = false;
        for Queued { out, charge } in batch {
            closing = matches!(out, Outgoing::Close(..));
            let fed = ws.feed(message_of(out)).await;
            // Handed to the connection: it no longer waits here.
            drop(charge);
            if fed.is_err() || closing {
                break;
            }
        }
        ws.flush().await.map_err(drop)?;
        Ok(closing)
    };
    if closes {
        tokio::time::timeout(CLOSE_GRACE, write)
            .await
            .unwrap_or(Err(()))
    } else {
        write.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: usize) -> Outgoing {
        Outgoing::Text("x".repeat(bytes))
    }

    #[test]
    fn a_socket_past_its_bound_is_given_up_and_its_bytes_freed() {
        let sockets = Sockets::new(1 << 20, Backlog::new(1000, 1 << 20));
        let id = ObjectId::new("ns", "a");
        let a = sockets.accept(id, vec![]).unwrap();
        let first = sockets.queue(&id, a.socket, text(600)).unwrap();
        assert!(first.is_some());
        assert_eq!(sockets.bytes_waiting(), 600);
        // 1,200 bytes would wait: the socket is given up on, and this message dropped.
        assert!(sockets.queue(&id, a.socket, text(600)).unwrap().is_none());
        assert_eq!(a.outbox.slow(), Some(Slow::Socket));
        assert_eq!(sockets.slow_close_count(), 1);
        // Nothing more is taken for it, and what was charged leaves with its message.
        assert!(sockets.queue(&id, a.socket, text(1)).unwrap().is_none());
        drop(first);
        assert_eq!(sockets.bytes_waiting(), 0);
    }

    #[test]
    fn past_the_host_bound_the_clients_with_most_unread_go_first_not_those_behind_the_gate() {
        const KIB: usize = 1 << 10;
        let sockets = Sockets::new(1 << 20, Backlog::new(4 << 20, 1000 * KIB));
        let id = ObjectId::new("ns", "room");
        let (gated, unread, little) = (
            sockets.accept(id, vec![]).unwrap(),
            sockets.accept(id, vec![]).unwrap(),
            sockets.accept(id, vec![]).unwrap(),
        );
        // 500 KiB behind the output gate (an event's output whose commit is not durable yet).
        let held = sockets.queue(&id, gated.socket, text(500 * KIB)).unwrap();
        // 400 KiB and 50 KiB released, waiting for their clients to read.
        let queue = |s: u64, n| (s, sockets.queue(&id, s, text(n)).unwrap().unwrap());
        let out = vec![
            queue(unread.socket, 400 * KIB),
            queue(little.socket, 50 * KIB),
        ];
        sockets.release(&id, out);
        assert_eq!(sockets.bytes_waiting(), 950 * KIB);
        // 100 KiB more passes the bound: the client with the most unread goes, and that is
        // enough to be back under three quarters of it. 50 KiB unread is keeping up.
        let more = sockets.queue(&id, gated.socket, text(100 * KIB)).unwrap();
        assert_eq!(unread.outbox.slow(), Some(Slow::Host));
        assert_eq!(
            gated.outbox.slow(),
            None,
            "bytes behind the gate make no client slow"
        );
        assert_eq!(little.outbox.slow(), None);
        assert_eq!(
            sockets.bytes_waiting(),
            650 * KIB,
            "the given-up socket's queue was freed"
        );
        drop((held, more));
    }

    #[test]
    fn an_outbox_dropped_with_messages_queued_gives_their_bytes_back() {
        let sockets = Sockets::new(1 << 20, Backlog::new(1 << 20, 1 << 20));
        let id = ObjectId::new("ns", "a");
        let a = sockets.accept(id, vec![]).unwrap();
        let queued = sockets.queue(&id, a.socket, text(100)).unwrap().unwrap();
        sockets.release(&id, vec![(a.socket, queued)]);
        assert_eq!(sockets.bytes_waiting(), 100);
        // The client left before its task wrote anything: the registry and the task let go.
        sockets.remove(&id, a.socket);
        drop(a);
        assert_eq!(sockets.bytes_waiting(), 0);
    }
}
