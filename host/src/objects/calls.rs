//! Stub calls between objects of one host: resolving the callee, refusing cycles (within a chain,
//! and across chains through [`super::waits`]), and delivering the call as an event on the
//! callee's queue (no HTTP, no socket). In a cluster, a call to an object another node serves
//! goes to that node (`cluster::calls`).

use super::Objects;
use super::error::ObjectError;
use super::event::Fetched;
use super::shared::Inner;
use crate::names::{self, ObjectIdentity};
use crate::registry::Namespace;
use crate::runtime::{
    Call, CallError, CallStats, Called, Calls, Chain, EventError, MAX_CALL_DEPTH, Request,
};
use futures::future::BoxFuture;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Delivers the calls of every instance of the host, and counts what they cost.
pub(super) struct ObjectCalls {
    /// Weak: instances outlive nothing, but a pooled worker instance kept by the host must not
    /// keep the host alive.
    objects: Weak<Inner>,
    stats: CallStats,
}

impl ObjectCalls {
    pub(super) fn new(objects: Weak<Inner>) -> Self {
        ObjectCalls {
            objects,
            stats: CallStats::default(),
        }
    }
}

impl Calls for ObjectCalls {
    fn fetch(&self, call: Call) -> BoxFuture<'static, Result<Called, CallError>> {
        let objects = self.objects.upgrade().map(|inner| Objects { inner });
        Box::pin(async move {
            let objects = objects.ok_or_else(|| CallError::Internal("shutting down".into()))?;
            objects.call(call).await
        })
    }

    fn stats(&self) -> &CallStats {
        &self.stats
    }
}

impl Objects {
    async fn call(&self, call: Call) -> Result<Called, CallError> {
        let (namespace, own) = call.env.resolve(&call.binding);
        let deployed = self
            .inner
            .registry
            .namespace(namespace)
            .filter(|n| own || n.current().public)
            .ok_or_else(|| {
                CallError::UnknownNamespace(format!(
                    "no class is bound as {:?} in the app, and no public namespace has that name",
                    call.binding
                ))
            })?;
        names::check_object_name(&call.name).map_err(|e| CallError::InvalidName(e.to_string()))?;
        let callee = ObjectIdentity::new(namespace, &call.name);
        if call.chain.contains(&callee.id) {
            return Err(CallError::Cycle(format!(
                "{} → {}/{}: {}/{} is waiting for this call",
                call.chain, callee.namespace, callee.name, callee.namespace, callee.name
            )));
        }
        if call.chain.depth() >= MAX_CALL_DEPTH {
            return Err(CallError::InvalidArgument(format!(
                "calls nest at most {MAX_CALL_DEPTH} deep: {}",
                call.chain
            )));
        }
        if let Some(placement) = &self.inner.cluster
            && let Some(node) = placement.served_elsewhere(&callee.id)
        {
            let chain = call.chain.then(&callee);
            let upgrade = call.upgrade && call.request.wants_websocket();
            return placement
                .call(&node, &callee, &chain, call.request, upgrade)
                .await;
        }
        // A loop of waits across chains (A's event calls B while B's, from another request,
        // calls A) would never be answered either.
        let _waiting = match call.chain.caller() {
            Some(caller) => Some(self.inner.waits.wait(caller, &callee).map_err(|waits| {
                CallError::Cycle(format!("{waits}: each waits for the next to answer"))
            })?),
            None => None,
        };
        let chain = call.chain.then(&callee);
        let (fetched, callee, handback) = self
            .fetch_for_call(deployed, &call.name, call.request, call.upgrade, chain)
            .await?;
        Ok(Called {
            response: fetched.response,
            accepted: fetched.accepted,
            callee,
            handback,
        })
    }
}

impl Objects {
    /// Runs a stub call another node of the cluster forwarded here (see `cluster::calls`): the
    /// callee's answer and the socket it accepted, or why it failed.
    pub async fn forwarded_call(
        &self,
        namespace: &str,
        name: &str,
        chain: Chain,
        request: Request,
        upgrade: bool,
    ) -> Result<Fetched, CallError> {
        let deployed = self.inner.registry.namespace(namespace).ok_or_else(|| {
            CallError::UnknownNamespace(format!("no namespace {namespace:?} is deployed"))
        })?;
        names::check_object_name(name).map_err(|e| CallError::InvalidName(e.to_string()))?;
        let (fetched, ..) = self
            .fetch_for_call(deployed, name, request, upgrade, chain)
            .await?;
        Ok(fetched)
    }

    /// Delivers a call's request as an event on the callee's queue (see `fetch_timed`); a
    /// refusal for want of room is counted as the host's overload.
    async fn fetch_for_call(
        &self,
        deployed: Arc<Namespace>,
        name: &str,
        request: Request,
        upgrade: bool,
        chain: Chain,
    ) -> Result<(Fetched, Duration, Duration), CallError> {
        self.fetch_timed(deployed, name, request, upgrade, Some(chain))
            .await
            .map_err(|e| {
                if e.is_overloaded() {
                    self.count_overload(&e);
                }
                to_call_error(e)
            })
    }
}

fn to_call_error(e: ObjectError) -> CallError {
    let message = e.to_string();
    match e {
        _ if e.is_overloaded() => CallError::Overloaded(message),
        ObjectError::Event(EventError::TimeLimit(_)) => CallError::TimedOut(message),
        ObjectError::Event(_) => CallError::Failed(message),
        ObjectError::UnknownNamespace(_) => CallError::UnknownNamespace(message),
        ObjectError::Commit(_)
        | ObjectError::Storage(_)
        | ObjectError::Refused(_)
        | ObjectError::ShuttingDown => CallError::Internal(message),
        // The callee's shard is moving between nodes: like room, it comes back soon.
        ObjectError::Overloaded(_) | ObjectError::QueueFull { .. } | ObjectError::Moved => {
            CallError::Overloaded(message)
        }
    }
}
