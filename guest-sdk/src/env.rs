//! What the app gives a worker or an object: its variables and secrets, and stubs to call its
//! objects.

use crate::__private::shared::stubs::CallError as WitCallError;
use crate::__private::shared::{config, stubs};
use crate::{Request, Response};
use std::fmt;

/// The app's environment, like `env` in the hosted service: [`var`](Self::var) reads its
/// variables and secrets, [`stub`](Self::stub) reaches its objects.
///
/// A zero-sized handle: copy it freely. A worker gets it with each request; an object gets it
/// from [`State::env`](crate::State::env).
#[derive(Clone, Copy, Debug)]
pub struct Env {
    _private: (),
}

impl Env {
    pub(crate) fn new() -> Self {
        Env { _private: () }
    }

    /// A variable (`[vars]` in `dohost.toml`) or secret (`dohost secret put NAME`), if the app
    /// has one by that name.
    pub fn var(&self, name: &str) -> Option<String> {
        config::get(name)
    }

    /// A stub for the object `name` of the class bound as `binding` (`[[objects]] binding` in
    /// `dohost.toml`; a namespace name works too). Addressing a new name creates the object.
    pub fn stub(&self, binding: &str, name: &str) -> Stub {
        Stub {
            binding: binding.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A fresh random object name: 64 lowercase hex digits, 256 random bits.
    pub fn new_unique_name(&self) -> String {
        stubs::new_unique_name()
    }
}

/// The way to one object: [`fetch`](Self::fetch) sends it a request and waits for its response.
#[derive(Clone, Debug)]
pub struct Stub {
    binding: String,
    name: String,
}

impl Stub {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `request` to the object and waits for its response (any status, 500 included).
    ///
    /// From an object, the writes the event made so far are committed and durable before the
    /// call leaves, and stay committed even if the event fails later; calling inside an open
    /// transaction is refused. A call back into an object that waits on this one fails at once
    /// with [`CallError::Cycle`].
    pub fn fetch(&self, request: Request) -> Result<Response, CallError> {
        stubs::fetch(&self.binding, &self.name, &request.into())
            .map(Response::from)
            .map_err(CallError::from)
    }
}

/// Why a call through a [`Stub`] failed (the WIT `call-error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No class is bound under that name in the app, and no public namespace has it.
    UnknownNamespace(String),
    /// The object name is empty or over 256 bytes.
    InvalidName(String),
    /// The callee's event failed: an error from its handler, a trap, a CPU or memory limit.
    Failed(String),
    /// The callee's event ran out of time.
    TimedOut(String),
    /// The host has no capacity for the call now; retrying later may succeed.
    Overloaded(String),
    /// The callee is already waiting in this chain of calls (A → B → A).
    Cycle(String),
    /// The call is not allowed here: inside an open transaction, or nested over 16 deep.
    InvalidArgument(String),
    /// The host could not commit the caller's writes or deliver the call.
    Internal(String),
}

impl From<WitCallError> for CallError {
    fn from(e: WitCallError) -> Self {
        match e {
            WitCallError::UnknownNamespace(m) => CallError::UnknownNamespace(m),
            WitCallError::InvalidName(m) => CallError::InvalidName(m),
            WitCallError::Failed(m) => CallError::Failed(m),
            WitCallError::TimedOut(m) => CallError::TimedOut(m),
            WitCallError::Overloaded(m) => CallError::Overloaded(m),
            WitCallError::Cycle(m) => CallError::Cycle(m),
            WitCallError::InvalidArgument(m) => CallError::InvalidArgument(m),
            WitCallError::Internal(m) => CallError::Internal(m),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::UnknownNamespace(m) => write!(f, "unknown namespace: {m}"),
            CallError::InvalidName(m) => write!(f, "invalid object name: {m}"),
            CallError::Failed(m) => write!(f, "the called object failed: {m}"),
            CallError::TimedOut(m) => write!(f, "the called object timed out: {m}"),
            CallError::Overloaded(m) => write!(f, "overloaded: {m}"),
            CallError::Cycle(m) => write!(f, "call cycle: {m}"),
            CallError::InvalidArgument(m) => write!(f, "invalid call: {m}"),
            CallError::Internal(m) => write!(f, "internal error calling an object: {m}"),
        }
    }
}

impl std::error::Error for CallError {}
