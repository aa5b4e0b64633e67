//! `dohost:object/stubs`: calls to objects, behind the caller's output gate.

use crate::names;
use crate::runtime::Caller;
use crate::runtime::bindings::v0_3::dohost::object::stubs::{self, CallError};
use crate::runtime::bindings::v0_3::dohost::object::types;
use crate::runtime::calls::{self, Call};
use crate::runtime::state::HostState;
use crate::storage::StorageError;
use std::time::Instant;

impl stubs::Host for HostState {
    async fn fetch(
        &mut self,
        binding: String,
        name: String,
        request: types::Request,
    ) -> Result<types::Response, CallError> {
        self.commit_before_call().await?;
        // Timed from here: the wait for the caller's own writes is its event's output gate, as
        // the callee's is the callee's event, not the call's overhead.
        let started = Instant::now();
        let request: crate::runtime::Request = request.into();
        // A caller handling a WebSocket upgrade may hand it on, once, with the request it
        // forwards; the socket the callee accepts becomes this event's.
        let upgrade = self.io.upgrade && self.io.accepted.is_none() && request.wants_websocket();
        let call = Call {
            env: self.env.clone(),
            chain: self.chain.clone(),
            binding,
            name,
            request,
            upgrade,
        };
        let called = self.calls.fetch(call).await.map_err(|e| {
            if let calls::CallError::Overloaded(why) = &e {
                self.call_overloaded = Some(why.clone());
            }
            to_wit(e)
        })?;
        if called.accepted.is_some() {
            self.io.accepted = called.accepted;
        }
        let response = called.response.into();
        let caller = match self.storage {
            Some(_) => Caller::Object,
            None => Caller::Worker,
        };
        let stats = self.calls.stats();
        stats.record(caller, started.elapsed(), called.callee, called.handback);
        Ok(response)
    }

    fn new_unique_name(&mut self) -> String {
        names::new_unique_name()
    }
}

impl HostState {
    /// The output gate for calls: the event's writes so far are committed and durable before a
    /// call leaves. A worker has no writes.
    async fn commit_before_call(&mut self) -> Result<(), CallError> {
        let (Some(storage), Some(committer)) = (self.storage.as_mut(), self.committer.as_ref())
        else {
            return Ok(());
        };
        let gate = storage.commit_before_call(committer).map_err(|e| match e {
            StorageError::InvalidArgument(m) => CallError::InvalidArgument(m),
            other => CallError::Internal(other.to_string()),
        })?;
        if let Some(gate) = gate {
            gate.await
                .map_err(|e| CallError::Internal(format!("committing before the call: {e}")))?;
        }
        Ok(())
    }
}

fn to_wit(e: calls::CallError) -> CallError {
    match e {
        calls::CallError::UnknownNamespace(m) => CallError::UnknownNamespace(m),
        calls::CallError::InvalidName(m) => CallError::InvalidName(m),
        calls::CallError::Failed(m) => CallError::Failed(m),
        calls::CallError::TimedOut(m) => CallError::TimedOut(m),
        calls::CallError::Overloaded(m) => CallError::Overloaded(m),
        calls::CallError::Cycle(m) => CallError::Cycle(m),
        calls::CallError::InvalidArgument(m) => CallError::InvalidArgument(m),
        calls::CallError::Internal(m) => CallError::Internal(m),
    }
}
