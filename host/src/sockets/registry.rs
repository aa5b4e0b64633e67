//! Every open socket of a host, by object: tags, attachments, auto-responses, and the outbox
//! each socket's task writes from.

use super::backlog::{Backlog, Outbox, Queued, SHED_INTERVAL_MS, SLOW_FLOOR, Slow};
use super::messages::{
    Kind, Left, MAX_ATTACHMENT_BYTES, MAX_AUTO_RESPONSE_BYTES, MAX_TAG_BYTES, MAX_TAGS, Outgoing,
    SocketError,
};
use crate::clock::now_ms;
use crate::names::{ObjectId, ObjectIdentity};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

struct Socket {
    kind: Kind,
    tags: Vec<String>,
    attachment: Option<Vec<u8>>,
    out: Arc<Outbox>,
    last_auto_response: Option<u64>,
}

#[derive(Default)]
struct ObjectSockets {
    open: BTreeMap<u64, Socket>,
    auto_response: Option<(String, String)>,
    /// The object's namespace, once it has accepted a socket: a deleted namespace's sockets are
    /// found by it, including those of objects that never stored anything.
    namespace: Option<Arc<str>>,
}

/// Every open socket of a host, by object.
pub struct Sockets {
    objects: Mutex<HashMap<ObjectId, ObjectSockets>>,
    next_id: AtomicU64,
    auto_responses: AtomicU64,
    /// Largest incoming message, in bytes.
    pub max_message: usize,
    pub(crate) backlog: Arc<Backlog>,
}

/// A socket its object accepted, before the handshake completes. Dropped unopened (the event
/// failed, the answer refused the upgrade, the handshake failed), it unregisters the socket:
/// the one place a socket that never opened is forgotten.
pub struct Accepted {
    pub socket: u64,
    pub kind: Kind,
    /// The object that accepted it: a socket handed on through a stub is not the addressed
    /// object's.
    owner: Arc<ObjectIdentity>,
    /// `None` once opened.
    outbox: Option<Arc<Outbox>>,
    sockets: Arc<Sockets>,
}

impl Accepted {
    /// The object the socket belongs to.
    pub fn owner(&self) -> &Arc<ObjectIdentity> {
        &self.owner
    }

    /// What waits to be written to the socket.
    pub fn outbox(&self) -> &Arc<Outbox> {
        self.outbox
            .as_ref()
            .expect("an accepted socket is opened once")
    }

    /// The handshake completed: the socket's connection task takes over its outbox, and from
    /// now on ends the socket itself.
    pub fn open(mut self) -> Arc<Outbox> {
        self.outbox
            .take()
            .expect("an accepted socket is opened once")
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        if self.outbox.is_some() {
            self.sockets.remove(&self.owner.id, self.socket);
        }
    }
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
    pub fn accept(
        self: &Arc<Self>,
        owner: &ObjectIdentity,
        kind: Kind,
        tags: Vec<String>,
    ) -> Result<Accepted, SocketError> {
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
        let entry = objects.entry(owner.id).or_default();
        entry
            .namespace
            .get_or_insert_with(|| owner.namespace.as_str().into());
        entry.open.insert(
            socket,
            Socket {
                kind,
                tags,
                attachment: None,
                out: outbox.clone(),
                last_auto_response: None,
            },
        );
        Ok(Accepted {
            socket,
            kind,
            owner: Arc::new(owner.clone()),
            outbox: Some(outbox),
            sockets: self.clone(),
        })
    }

    /// Forgets a socket; returns what it left if it was open.
    pub fn remove(&self, object: &ObjectId, socket: u64) -> Option<Left> {
        let mut objects = self.objects.lock().unwrap();
        let sockets = objects.get_mut(object)?;
        let removed = sockets.open.remove(&socket);
        if sockets.open.is_empty() && sockets.auto_response.is_none() {
            objects.remove(object);
        }
        removed.map(|s| Left {
            tags: s.tags,
            attachment: s.attachment,
        })
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

    /// The object's open sockets of `kind`, oldest first, optionally only those with `tag`.
    pub fn list(&self, object: &ObjectId, kind: Kind, tag: Option<&str>) -> Vec<u64> {
        let objects = self.objects.lock().unwrap();
        objects.get(object).map_or_else(Vec::new, |o| {
            o.open
                .iter()
                .filter(|(_, s)| s.kind == kind)
                .filter(|(_, s)| tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
                .map(|(id, _)| *id)
                .collect()
        })
    }

    pub fn exists(&self, object: &ObjectId, socket: u64) -> bool {
        self.with_socket(object, socket, |_| ()).is_ok()
    }

    /// Whether the object has `socket` open, of `kind`.
    pub fn is_open(&self, object: &ObjectId, socket: u64, kind: Kind) -> bool {
        self.with_socket(object, socket, |s| s.kind == kind)
            .unwrap_or(false)
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
    pub(crate) fn try_auto_response(&self, object: &ObjectId, socket: u64, text: &str) -> bool {
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

    /// Closes every socket of the objects of `namespace` with `code` (it was deleted: 1001).
    pub fn close_namespace(&self, namespace: &str, code: u16, reason: &str) {
        let ids: Vec<ObjectId> = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, o)| o.namespace.as_deref() == Some(namespace))
            .map(|(id, _)| *id)
            .collect();
        self.close_objects(&ids, code, reason);
    }

    /// Closes every socket of these objects with `code`.
    pub fn close_objects(&self, ids: &[ObjectId], code: u16, reason: &str) {
        let mut objects = self.objects.lock().unwrap();
        for id in ids {
            let Some(o) = objects.remove(id) else {
                continue;
            };
            for s in o.open.values() {
                if let Some(queued) = s.out.charge(Outgoing::Close(code, reason.to_owned())) {
                    s.out.push(queued);
                }
            }
        }
    }

    /// Closes every socket of the objects `which` picks with `code` (their shard moved to another
    /// node: 1012).
    pub fn close_where(&self, which: impl Fn(&ObjectId) -> bool, code: u16, reason: &str) {
        let ids: Vec<ObjectId> = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|id| which(id))
            .copied()
            .collect();
        self.close_objects(&ids, code, reason);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: usize) -> Outgoing {
        Outgoing::Text("x".repeat(bytes))
    }

    #[test]
    fn a_socket_past_its_bound_is_given_up_and_its_bytes_freed() {
        let sockets = Arc::new(Sockets::new(1 << 20, Backlog::new(1000, 1 << 20)));
        let owner = ObjectIdentity::new("ns", "a");
        let id = owner.id;
        let a = sockets.accept(&owner, Kind::WebSocket, vec![]).unwrap();
        let first = sockets.queue(&id, a.socket, text(600)).unwrap();
        assert!(first.is_some());
        assert_eq!(sockets.bytes_waiting(), 600);
        // 1,200 bytes would wait: the socket is given up on, and this message dropped.
        assert!(sockets.queue(&id, a.socket, text(600)).unwrap().is_none());
        assert_eq!(a.outbox().slow(), Some(Slow::Socket));
        assert_eq!(sockets.slow_close_count(), 1);
        // Nothing more is taken for it, and what was charged leaves with its message.
        assert!(sockets.queue(&id, a.socket, text(1)).unwrap().is_none());
        drop(first);
        assert_eq!(sockets.bytes_waiting(), 0);
    }

    #[test]
    fn past_the_host_bound_the_clients_with_most_unread_go_first_not_those_behind_the_gate() {
        const KIB: usize = 1 << 10;
        let sockets = Arc::new(Sockets::new(1 << 20, Backlog::new(4 << 20, 1000 * KIB)));
        let owner = ObjectIdentity::new("ns", "room");
        let id = owner.id;
        let (gated, unread, little) = (
            sockets.accept(&owner, Kind::WebSocket, vec![]).unwrap(),
            sockets.accept(&owner, Kind::WebSocket, vec![]).unwrap(),
            sockets.accept(&owner, Kind::WebSocket, vec![]).unwrap(),
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
        assert_eq!(unread.outbox().slow(), Some(Slow::Host));
        assert_eq!(
            gated.outbox().slow(),
            None,
            "bytes behind the gate make no client slow"
        );
        assert_eq!(little.outbox().slow(), None);
        assert_eq!(
            sockets.bytes_waiting(),
            650 * KIB,
            "the given-up socket's queue was freed"
        );
        drop((held, more));
    }

    #[test]
    fn an_outbox_dropped_with_messages_queued_gives_their_bytes_back() {
        let sockets = Arc::new(Sockets::new(1 << 20, Backlog::new(1 << 20, 1 << 20)));
        let owner = ObjectIdentity::new("ns", "a");
        let id = owner.id;
        let a = sockets.accept(&owner, Kind::WebSocket, vec![]).unwrap();
        let queued = sockets.queue(&id, a.socket, text(100)).unwrap().unwrap();
        sockets.release(&id, vec![(a.socket, queued)]);
        assert_eq!(sockets.bytes_waiting(), 100);
        // The client left before its task wrote anything: the registry and the task let go.
        sockets.remove(&id, a.socket);
        drop(a);
        assert_eq!(sockets.bytes_waiting(), 0);
    }
}
