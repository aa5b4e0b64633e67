//! An object's queue and its bound. A client can send one object more than it can serve; without
//! a bound, every request waiting for it would be held in memory. Each object's queue counts the
//! events waiting for it or running, and the bytes of the requests and messages they carry; past
//! either bound a new request or message is refused at once as `overloaded`.

use super::error::ObjectError;
use super::event::Event;
use crate::config::QueueLimits;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// The sending end of an object's queue, and what its events hold.
pub(super) struct Queue {
    pub(super) tx: mpsc::UnboundedSender<QueuedEvent>,
    load: Arc<Load>,
    /// The object's namespace: a deleted namespace's awake objects are found by it.
    pub(super) namespace: Arc<str>,
}

/// An event as its object's queue holds it: with its share of the bound, given back once it has
/// run (dropped with it).
pub(super) struct QueuedEvent {
    pub(super) event: Event,
    pub(super) share: Option<Share>,
    /// When it was queued: the wait is measured.
    pub(super) queued: Instant,
}

impl From<Event> for QueuedEvent {
    /// An event that does not count toward the bound: the host's own (eviction, alarms).
    fn from(event: Event) -> Self {
        QueuedEvent {
            event,
            share: None,
            queued: Instant::now(),
        }
    }
}

/// How an event enters its object's queue.
pub(super) enum Admit {
    /// Refused if the queue is at its bound: a request, or a message from a client.
    Bounded { bytes: usize },
    /// Counted, never refused: what the object must hear of, such as a socket's end.
    Always { bytes: usize },
    /// Not counted: the host's own events, of which an object has at most a few.
    Free,
}

#[derive(Default)]
struct Load {
    events: AtomicUsize,
    bytes: AtomicUsize,
}

/// An event's part of its object's queue.
pub(super) struct Share {
    load: Arc<Load>,
    bytes: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.load.events.fetch_sub(1, Ordering::Relaxed);
        self.load.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Queue {
    pub(super) fn new(tx: mpsc::UnboundedSender<QueuedEvent>, namespace: &str) -> Self {
        Queue {
            tx,
            load: Arc::default(),
            namespace: namespace.into(),
        }
    }

    /// Whether a request of `bytes` would be admitted now: `Err` as [`Self::send`] would refuse it.
    pub(super) fn has_room(&self, bytes: usize, limits: QueueLimits) -> Result<(), ObjectError> {
        let (events, queued) = (
            self.load.events.load(Ordering::Relaxed),
            self.load.bytes.load(Ordering::Relaxed),
        );
        if events >= limits.events || (events > 0 && queued + bytes > limits.bytes) {
            return Err(ObjectError::QueueFull {
                events,
                bytes: queued,
                limits,
            });
        }
        Ok(())
    }

    /// Queues `event` as `admit` says. Callers hold the lock of the queues' map, so two events
    /// cannot both pass a bound that had room for one.
    pub(super) fn send(
        &self,
        event: Event,
        admit: Admit,
        limits: QueueLimits,
    ) -> Result<(), ObjectError> {
        let load = &self.load;
        let bytes = match admit {
            Admit::Free => return self.push(event.into()),
            Admit::Bounded { bytes } => {
                self.has_room(bytes, limits)?;
                bytes
            }
            Admit::Always { bytes } => bytes,
        };
        load.events.fetch_add(1, Ordering::Relaxed);
        load.bytes.fetch_add(bytes, Ordering::Relaxed);
        let share = Share {
            load: load.clone(),
            bytes,
        };
        self.push(QueuedEvent {
            event,
            share: Some(share),
            queued: Instant::now(),
        })
    }

    fn push(&self, queued: QueuedEvent) -> Result<(), ObjectError> {
        self.tx.send(queued).map_err(|_| ObjectError::ShuttingDown)
    }
}
