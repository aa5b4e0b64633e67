//! Why an event could not be delivered or did not succeed.

use crate::config::QueueLimits;
use crate::runtime::EventError;
use crate::storage::{CommitFailed, DbError, StorageError};
use std::time::Duration;

/// Why a request to an object got no response from it.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Commit(#[from] CommitFailed),
    #[error(transparent)]
    Storage(#[from] DbError),
    /// A storage operation of the admin API was refused (a limit, an invalid argument).
    #[error("storage refused the operation: {0}")]
    Refused(StorageError),
    #[error("no namespace {0:?} is deployed")]
    UnknownNamespace(String),
    #[error("the host is shutting down")]
    ShuttingDown,
    /// In a cluster: this node does not serve the object now (its shard is another node's, or
    /// is moving).
    #[error("the object is moving between the cluster's nodes; retry in a moment")]
    Moved,
    #[error(
        "the host is overloaded: every one of its {0} live instances stayed busy for {OVERLOAD_WAIT:?}"
    )]
    Overloaded(usize),
    #[error(
        "the object is overloaded: {events} events ({bytes} bytes) already wait for it or run, \
         and it takes at most {} events (--max-object-queue) and {} bytes \
         (--max-object-queue-bytes)",
        limits.events,
        limits.bytes
    )]
    QueueFull {
        events: usize,
        bytes: usize,
        limits: QueueLimits,
    },
}

/// How long an event waits for an instance slot when every slot is busy, before it is refused
/// as `overloaded` (an idle slot is taken at once, its instance evicted).
pub const OVERLOAD_WAIT: Duration = Duration::from_secs(1);

impl ObjectError {
    /// Whether the host refused the event for want of room, so that the client may retry.
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            ObjectError::Overloaded(_)
                | ObjectError::QueueFull { .. }
                | ObjectError::Event(EventError::Overloaded(_))
        )
    }
}
