//! The events an object's queue carries, and what each produced.

use super::error::ObjectError;
use crate::registry::Namespace;
use crate::runtime::{Chain, Request, Response};
use crate::sockets::{Handback, SocketEvent};
use crate::storage::{CommitOutcome, ListOptions};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// What a request produced: the response, and the socket it accepted, if any.
pub struct Fetched {
    pub response: Response,
    pub accepted: Option<Handback>,
}

pub(super) enum Event {
    Fetch {
        namespace: Arc<Namespace>,
        request: Request,
        upgrade: bool,
        /// The objects waiting on this request, for a stub call; `None` for one from a client.
        chain: Option<Chain>,
        reply: oneshot::Sender<Outcome<(Fetched, Ran)>>,
    },
    Socket {
        namespace: Arc<Namespace>,
        socket: u64,
        event: SocketEvent,
    },
    /// The alarm due at `due_at`, after `retries` failed deliveries.
    Alarm {
        namespace: Arc<Namespace>,
        due_at: u64,
        retries: u32,
        reply: oneshot::Sender<Outcome<()>>,
    },
    /// Delete the alarm due at `due_at`: its deliveries kept failing.
    DropAlarm {
        due_at: u64,
        reply: oneshot::Sender<Outcome<()>>,
    },
    /// Drop the instance if idle: the host needs its slot.
    Evict,
    /// An operator reads or writes the object's storage (the admin API), between its events.
    Storage {
        op: StorageOp,
        reply: oneshot::Sender<Outcome<StorageAnswer>>,
    },
}

/// What an operator asks of an object's storage.
#[derive(Debug)]
pub enum StorageOp {
    List(ListOptions),
    Get(String),
    /// At most 128 entries, as a guest's `put-many`.
    Put(Vec<(String, Vec<u8>)>),
    Delete(String),
}

/// What a [`StorageOp`] found.
#[derive(Debug)]
pub enum StorageAnswer {
    Entries(Vec<(String, Vec<u8>)>),
    Value(Option<Vec<u8>>),
    Done,
    Deleted(bool),
}

/// When an event ran: from its loop taking it up to its result being ready.
pub(super) struct Ran {
    pub(super) started: Instant,
    pub(super) finished: Instant,
}

impl Ran {
    /// When the event was released: its result ready and its gate open at `opened` (`None`: it
    /// had no gate).
    pub(super) fn released(&self, opened: Option<Instant>) -> Instant {
        opened.map_or(self.finished, |opened| opened.max(self.finished))
    }
}

/// What an event produced, and what it must wait for before anyone sees it.
pub(super) struct Outcome<T> {
    pub(super) result: Result<T, ObjectError>,
    pub(super) gate: Option<CommitOutcome>,
}

impl<T> Outcome<T> {
    pub(super) fn failed(e: impl Into<ObjectError>, gate: Option<CommitOutcome>) -> Self {
        Outcome {
            result: Err(e.into()),
            gate,
        }
    }

    /// Waits for the output gate, then gives the result and when the gate opened (`None`: the
    /// event had no gate).
    pub(super) async fn released(self) -> Result<(T, Option<Instant>), ObjectError> {
        let opened = match self.gate {
            Some(gate) => Some(gate.await?),
            None => None,
        };
        Ok((self.result?, opened))
    }
}
