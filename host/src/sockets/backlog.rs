//! The bytes that wait for slow clients, per socket and across the host, and their bounds.

use super::messages::Outgoing;
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why the host gave up on a client that did not read what was sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slow {
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
    pub(super) waiting: AtomicUsize,
    pub(super) slow_closes: AtomicU64,
    /// When the sockets were last scanned for the slowest, in ms since the Unix epoch.
    pub(super) last_shed_ms: AtomicU64,
}

/// The shortest time between two scans for the slowest sockets.
pub(super) const SHED_INTERVAL_MS: u64 = 10;

/// A client with less than this unread is keeping up: the host's bound never closes it, even
/// while what waits behind the output gate alone passes the bound.
pub(super) const SLOW_FLOOR: usize = 64 << 10;

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
    pub(crate) out: Outgoing,
    /// Dropping it takes the message out of the backlogs.
    pub(crate) charge: Charge,
}

/// Holds the counts, not the outbox: a message in an outbox's queue must not keep that outbox
/// alive, or an outbox dropped with messages still queued would never be freed.
pub struct Charge {
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
pub(super) struct Counts {
    /// What this socket's [`Queued`] messages add up to, wherever they are.
    pub(super) bytes: AtomicUsize,
    /// The part of it past the output gate: what the client has not read yet.
    pub(super) released: AtomicUsize,
    backlog: Arc<Backlog>,
}

/// What waits to be written to one socket, and the waker of its task.
///
/// An `AtomicWaker` rather than a `Notify`: the task registers its waker in place, so a resting
/// socket's task holds no waiter node of its own.
pub struct Outbox {
    queue: Mutex<VecDeque<Queued>>,
    /// The socket's task, woken when there is output or the socket is given up on.
    pub(crate) waker: AtomicWaker,
    /// 0, or the [`Slow`] reason the socket's task must close it for.
    slow: AtomicU8,
    pub(super) counts: Arc<Counts>,
}

impl Outbox {
    pub(super) fn new(backlog: Arc<Backlog>) -> Self {
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
    pub(super) fn charge(&self, out: Outgoing) -> Option<Queued> {
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

    pub(super) fn push(&self, mut queued: Queued) {
        if self.slow().is_some() {
            return;
        }
        let released = &self.counts.released;
        released.fetch_add(queued.charge.bytes, Ordering::AcqRel);
        queued.charge.released = true;
        self.queue.lock().unwrap().push_back(queued);
        self.waker.wake();
    }

    /// Everything queued, to be written.
    pub(crate) fn take(&self) -> VecDeque<Queued> {
        std::mem::take(&mut *self.queue.lock().unwrap())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().unwrap().is_empty()
    }

    /// Why the socket must be closed for being slow, if it must.
    pub(crate) fn slow(&self) -> Option<Slow> {
        match self.slow.load(Ordering::Acquire) {
            1 => Some(Slow::Socket),
            2 => Some(Slow::Host),
            _ => None,
        }
    }

    /// Marks the socket for closing and frees what waits in its queue; its task does the rest.
    pub(super) fn give_up(&self, why: Slow) {
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
