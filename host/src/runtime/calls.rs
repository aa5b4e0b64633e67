//! Calls from a guest to an object through a stub: what the host side of `stubs` asks of the
//! layer above, which knows the objects ([`crate::objects`] implements [`Calls`]).

use super::call_stats::CallStats;
use super::request::{Request, Response};
use crate::env::Env;
use crate::names::{ObjectId, ObjectIdentity};
use crate::sockets::Handback;
use futures::future::BoxFuture;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How deep calls may nest: past it a call is refused, so that a runaway recursion through
/// different objects ends quickly instead of holding instances until their deadlines.
pub const MAX_CALL_DEPTH: usize = 16;

/// Delivers calls to objects.
pub trait Calls: Send + Sync {
    fn fetch(&self, call: Call) -> BoxFuture<'static, Result<Called, CallError>>;

    /// Where the callers count what their calls cost beyond the callees' events.
    fn stats(&self) -> &CallStats;
}

/// One call through a stub.
pub struct Call {
    /// The caller's app, which resolves `binding`.
    pub env: Arc<Env>,
    /// The objects waiting for this call, the caller last (empty for a worker).
    pub chain: Chain,
    pub binding: String,
    pub name: String,
    pub request: Request,
    /// Whether the callee may accept the caller's WebSocket upgrade.
    pub upgrade: bool,
}

/// The callee's answer, the socket it accepted from a forwarded upgrade, and the call's timing.
pub struct Called {
    pub response: Response,
    pub accepted: Option<Handback>,
    /// The callee's event, from its loop taking it up to its release (guest done, output gate
    /// open).
    pub callee: Duration,
    /// From that release until the answer was back with the caller: mostly waking the caller's
    /// thread after the callee's commit, which any response behind the gate waits for.
    pub handback: Duration,
}

/// Why a call failed (see the WIT `stubs.call-error`). Serializable: a cluster's nodes send it
/// back for a call made across them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    #[error("{0}")]
    UnknownNamespace(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("the callee failed: {0}")]
    Failed(String),
    #[error("the callee ran out of time: {0}")]
    TimedOut(String),
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("a call back into an object waiting in the chain {0}")]
    Cycle(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Internal(String),
}

/// The objects waiting in a chain of calls, outermost first.
#[derive(Clone, Default)]
pub struct Chain(Arc<Vec<ObjectIdentity>>);

impl Chain {
    /// The chain of an event that no call started: just its object.
    pub fn of(object: &ObjectIdentity) -> Self {
        Chain(Arc::new(vec![object.clone()]))
    }

    /// The chain of a call's event: this one, then the callee.
    pub fn then(&self, callee: &ObjectIdentity) -> Self {
        let mut objects = Vec::with_capacity(self.0.len() + 1);
        objects.extend(self.0.iter().cloned());
        objects.push(callee.clone());
        Chain(Arc::new(objects))
    }

    /// A chain of these objects, outermost first (as another node of a cluster sent it).
    pub fn from_objects(objects: Vec<ObjectIdentity>) -> Self {
        Chain(Arc::new(objects))
    }

    /// The objects waiting, outermost first.
    pub fn objects(&self) -> &[ObjectIdentity] {
        &self.0
    }

    /// Whether `id` is waiting in the chain: a call to it would never be answered.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.0.iter().any(|o| o.id == *id)
    }

    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// The object whose event makes the call; `None` for a worker's.
    pub fn caller(&self) -> Option<&ObjectIdentity> {
        self.0.last()
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" → ")?;
            }
            write!(f, "{}/{}", o.namespace, o.name)?;
        }
        Ok(())
    }
}
