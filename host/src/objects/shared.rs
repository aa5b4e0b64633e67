//! What every object's event loop shares: the runtime, storage, sockets, the instance slots and
//! the idle list eviction takes from.

use super::error::{OVERLOAD_WAIT, ObjectError};
use super::event::Event;
use super::queue::{Queue, QueuedEvent};
use super::waits::Waits;
use crate::config::QueueLimits;
use crate::cpu_share::CpuShare;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::names::{ObjectId, ObjectIdentity};
use crate::registry::Registry;
use crate::runtime::{CallError, Called, Calls, Chain, IdlePool, Request, Runtime};
use crate::sockets::Sockets;
use crate::storage::{Committer, Storage, StorageLimits};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Which node of a cluster serves which object (implemented by `cluster::Cluster`, which sits above
/// this module): asked before every event, and for every stub call.
pub trait Placement: Send + Sync {
    /// The epoch of the object's shard while this node serves it; `None` while it does not.
    fn epoch_here(&self, id: &ObjectId) -> Option<u64>;
    /// The URL of the node that serves the object, when that is another node.
    fn served_elsewhere(&self, id: &ObjectId) -> Option<String>;
    /// A stub call to `callee`, which the node at `node` serves; `upgrade`: it asks for a
    /// WebSocket the callee may accept.
    fn call<'a>(
        &'a self,
        node: &'a str,
        callee: &'a ObjectIdentity,
        chain: &'a Chain,
        request: Request,
        upgrade: bool,
    ) -> BoxFuture<'a, Result<Called, CallError>>;
}

/// Where objects' state lives, the thread that commits it, and the cluster (if any) that decides
/// which objects this host serves and may commit.
pub struct Durability {
    pub storage: Storage,
    pub committer: Committer,
    pub cluster: Option<Arc<dyn Placement>>,
}

/// The settings of object lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleConfig {
    pub idle_timeout: Duration,
    pub max_live_objects: usize,
    pub queue: QueueLimits,
    pub storage: StorageLimits,
}

pub(super) struct Inner {
    pub(super) runtime: Arc<Runtime>,
    /// Which runtime each namespace's event loops run on.
    pub(super) cpu_share: CpuShare,
    pub(super) sockets: Arc<Sockets>,
    pub(super) registry: Arc<Registry>,
    pub(super) storage: Storage,
    /// The cluster this host is a node of, if any: it serves only the objects of its shards.
    pub(super) cluster: Option<Arc<dyn Placement>>,
    pub(super) committer: Committer,
    /// Handed to every instance, for its stub calls.
    pub(super) calls: Arc<dyn Calls>,
    /// Which object waits on a call to which.
    pub(super) waits: Arc<Waits>,
    pub(super) config: LifecycleConfig,
    /// The queue of every object that has an event loop.
    pub(super) loops: Mutex<HashMap<ObjectId, Queue>>,
    /// One permit per live instance.
    pub(super) instances: Arc<Semaphore>,
    /// One permit per object of a shared class that keeps its loop between events: as many as
    /// live instances, and a loop holds only its storage, so they cost a small part of what
    /// instances do.
    pub(super) resting: Arc<Semaphore>,
    /// Live instances between events, least recently used first.
    pub(super) idle: Mutex<IdleList>,
    /// Shared classes' instances between events (world `shared-object`), by namespace.
    pub(super) shared: Arc<IdlePool>,
    pub(super) memory: Arc<MemoryBudget>,
    pub(super) metrics: Metrics,
    /// Events refused as `overloaded` since start, and when that was last logged.
    pub(super) overloaded: AtomicU64,
    pub(super) overload_logged_ms: AtomicU64,
}

impl Inner {
    /// The epoch of the object's shard if this node serves it now (0 without a cluster), which
    /// its commits carry to the fence.
    pub(super) fn epoch(&self, id: &ObjectId) -> Result<u64, ObjectError> {
        match &self.cluster {
            None => Ok(0),
            Some(placement) => placement.epoch_here(id).ok_or(ObjectError::Moved),
        }
    }
}

/// Idle instances' event loops by ticket (the order they went idle), with the memory each holds.
#[derive(Default)]
pub(super) struct IdleList {
    next_ticket: u64,
    by_ticket: BTreeMap<u64, (mpsc::WeakUnboundedSender<QueuedEvent>, usize)>,
}

impl IdleList {
    pub(super) fn insert(
        &mut self,
        queue: mpsc::WeakUnboundedSender<QueuedEvent>,
        bytes: usize,
        memory: &MemoryBudget,
    ) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.by_ticket.insert(ticket, (queue, bytes));
        memory.set_idle(bytes, true);
        ticket
    }

    pub(super) fn remove(&mut self, ticket: u64, memory: &MemoryBudget) {
        if let Some((_, bytes)) = self.by_ticket.remove(&ticket) {
            memory.set_idle(bytes, false);
        }
    }

    /// Asks the least recently used idle instance to go; the memory it holds, if there was one.
    pub(super) fn evict_oldest(&mut self, memory: &MemoryBudget) -> Option<usize> {
        let (_, (queue, bytes)) = self.by_ticket.pop_first()?;
        memory.set_idle(bytes, false);
        if let Some(queue) = queue.upgrade() {
            let _ = queue.send(Event::Evict.into());
        }
        Some(bytes)
    }
}

/// Evicts the least recently used idle instances whenever the live instances' memories pass the
/// budget, until they are back under it; ends with the host.
pub(super) async fn evict_for_memory(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(memory) = inner.upgrade().map(|i| i.memory.clone()) else {
            return;
        };
        memory.passed().await;
        let Some(inner) = inner.upgrade() else { return };
        // An evicted instance's memory is counted until its loop drops it: count it as gone.
        let mut freeing = 0;
        while memory.used().saturating_sub(freeing) > memory.limit {
            match inner.idle.lock().unwrap().evict_oldest(&memory) {
                Some(bytes) => freeing += bytes,
                None => break,
            }
        }
    }
}

impl Inner {
    /// A permit for one more live instance, evicting the least recently used idle instance when
    /// the host is at its cap; `Overloaded` if none frees up within [`OVERLOAD_WAIT`].
    pub(super) async fn instance_permit(&self) -> Result<OwnedSemaphorePermit, ObjectError> {
        let deadline = tokio::time::Instant::now() + OVERLOAD_WAIT;
        loop {
            if let Ok(permit) = self.instances.clone().try_acquire_owned() {
                // Evict ahead of need: the next new object then finds a slot at once, instead
                // of waiting for an instance to be torn down.
                if self.instances.available_permits() < self.config.max_live_objects / 64 {
                    self.idle.lock().unwrap().evict_oldest(&self.memory);
                }
                return Ok(permit);
            }
            self.idle.lock().unwrap().evict_oldest(&self.memory);
            // Every instance is busy or on its way out: wait a little for one to free up.
            let retry = (tokio::time::Instant::now() + Duration::from_millis(10)).min(deadline);
            tokio::select! {
                permit = self.instances.clone().acquire_owned() => {
                    return Ok(permit.expect("the instance semaphore is never closed"));
                }
                () = tokio::time::sleep_until(retry) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ObjectError::Overloaded(self.config.max_live_objects));
            }
        }
    }
}
