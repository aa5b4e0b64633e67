//! Object lifecycle: at most one live instance per object, its events one at a time.
//!
//! An object of a shared class (world `shared-object`) has no instance of its own: each event
//! borrows an idle instance of its class (or a new one), and gives it back after. Between events
//! it keeps only its loop and storage, while the host has room for such resting objects.
//!
//! Each object with work to do has an event loop (a tokio task) fed by a queue (bounded: see
//! `queue`), so events run in arrival order and different objects run in parallel on all cores. The loop keeps
//! the instance between events, drops it after the idle timeout or when the host needs its slot
//! for another object (hibernation), and ends itself once it has no instance, no queued event and
//! no commit in flight: a sleeping object costs nothing but its storage on disk.
//!
//! Events are HTTP requests, WebSocket frames and alarms, all through the one queue.
//!
//! Output gate: a response or WebSocket message is released only once every commit it could
//! depend on is durable (its own event's, or for an event that wrote nothing, the newest earlier
//! one). The loop does not wait for the disk itself; it runs the next event while the commit
//! flushes. WebSocket output waits in the object's gated queue, which releases it in event order.

mod calls;
mod error;
mod event;
mod event_loop;
mod queue;
mod shared;
mod waits;

pub use error::{OVERLOAD_WAIT, ObjectError};
pub use event::{Fetched, StorageAnswer, StorageOp};
pub use shared::{Durability, LifecycleConfig, Placement};

use crate::clock::now_ms;
use crate::cpu_share::{Cause, CpuShare, Meter};
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::names::{ObjectId, ObjectIdentity};
use crate::registry::{Namespace, Registry};
use crate::runtime::{CallStats, Calls, Chain, IdleLimits, IdlePool, Request, Runtime};
use crate::sockets::{SocketEvent, Sockets};
use crate::storage::{Committer, Storage};
use calls::ObjectCalls;
use event::{Event, Outcome};
use event_loop::EventLoop;
use queue::{Admit, Queue, QueuedEvent};
use shared::{IdleList, Inner, evict_for_memory};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// The live objects of a host.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<Inner>,
}

impl Objects {
    pub fn new(
        runtime: Arc<Runtime>,
        cpu_share: CpuShare,
        sockets: Arc<Sockets>,
        registry: Arc<Registry>,
        durability: Durability,
        config: LifecycleConfig,
    ) -> Self {
        let Durability {
            storage,
            committer,
            cluster,
        } = durability;
        let memory = runtime.memory().clone();
        let metrics = runtime.metrics().clone();
        let objects = Objects {
            inner: Arc::new_cyclic(|inner| Inner {
                runtime,
                cpu_share,
                sockets,
                registry,
                storage,
                cluster,
                committer,
                calls: Arc::new(ObjectCalls::new(inner.clone())),
                waits: Arc::default(),
                instances: Arc::new(Semaphore::new(config.max_live_objects.max(1))),
                resting: Arc::new(Semaphore::new(config.max_live_objects.max(1))),
                config,
                loops: Mutex::new(HashMap::new()),
                idle: Mutex::new(IdleList::default()),
                shared: IdlePool::start(config.idle_timeout, shared_pool_limits(&config, &memory)),
                memory,
                metrics,
                overloaded: AtomicU64::new(0),
                overload_logged_ms: AtomicU64::new(0),
            }),
        };
        tokio::spawn(evict_for_memory(Arc::downgrade(&objects.inner)));
        objects
    }

    /// Counts an event refused as `overloaded`, and logs it at most once a second.
    pub fn count_overload(&self, e: &ObjectError) {
        let inner = &self.inner;
        let count = inner.overloaded.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = inner.overload_logged_ms.load(Ordering::Relaxed);
        if now >= last + 1000
            && inner
                .overload_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("{e} ({count} events refused as overloaded since start)");
        }
    }

    /// Events refused as `overloaded` since start.
    pub fn overloaded_count(&self) -> u64 {
        self.inner.overloaded.load(Ordering::Relaxed)
    }

    /// Whether the last commit tried failed for want of space on the disk.
    pub fn storage_full(&self) -> bool {
        self.inner.committer.storage_full()
    }

    /// Commits (one per event that wrote) not made durable since start.
    pub fn failed_commits(&self) -> u64 {
        self.inner.committer.failed_commits()
    }

    /// The commit thread, for its counts.
    pub fn committer(&self) -> &Committer {
        &self.inner.committer
    }

    /// Bytes (keys plus values) the objects of `namespace` store, counting commits on their way.
    pub fn stored_bytes(&self, namespace: &str) -> u64 {
        self.inner.storage.namespace_size(namespace)
    }

    /// Whether the object `name` of `namespace` has an event loop now (awake: a live instance,
    /// queued events or commits in flight), rather than sleeping with nothing but its storage.
    pub fn is_awake(&self, namespace: &str, name: &str) -> bool {
        let id = ObjectId::new(namespace, name);
        self.inner.loops.lock().unwrap().contains_key(&id)
    }

    /// The objects `which` picks that have an event loop now.
    pub fn awake_where(&self, which: impl Fn(&ObjectId) -> bool) -> Vec<ObjectId> {
        let loops = self.inner.loops.lock().unwrap();
        loops.keys().filter(|id| which(id)).copied().collect()
    }

    /// The objects of `namespace` that have an event loop now.
    pub fn awake_in(&self, namespace: &str) -> Vec<ObjectId> {
        let loops = self.inner.loops.lock().unwrap();
        loops
            .iter()
            .filter(|(_, q)| &*q.namespace == namespace)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Asks the objects `ids` to go to sleep and waits (at most `within`) until none of them has
    /// an event loop left: no event running or queued, no commit in flight. Whether they all did.
    pub async fn settle(&self, ids: &[ObjectId], within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        loop {
            let awake: Vec<mpsc::UnboundedSender<QueuedEvent>> = {
                let loops = self.inner.loops.lock().unwrap();
                ids.iter()
                    .filter_map(|id| loops.get(id).map(|q| q.tx.clone()))
                    .collect()
            };
            if awake.is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            for queue in awake {
                let _ = queue.send(Event::Evict.into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The storage, for what operators read of it directly (the inventory, exports).
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// What the host counts as it serves.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Bytes of linear memory all live instances hold.
    pub fn instance_memory(&self) -> usize {
        self.inner.memory.used()
    }

    /// How much longer the objects of `namespace` run in the background, and why, if they do
    /// (see [`CpuShare`]).
    pub fn background_left(&self, namespace: &str) -> Option<(Duration, Cause)> {
        self.inner.cpu_share.background_left(namespace)
    }

    /// The deployed namespace `namespace`: looked up once per request or alarm, and carried
    /// with its event.
    pub fn namespace(&self, namespace: &str) -> Result<Arc<Namespace>, ObjectError> {
        self.inner
            .registry
            .namespace(namespace)
            .ok_or_else(|| ObjectError::UnknownNamespace(namespace.to_owned()))
    }

    /// Queues an event for the object `name` of `namespace` as `admit` says, starting its event
    /// loop if needed.
    fn enqueue(
        &self,
        namespace: &str,
        name: &str,
        event: Event,
        admit: Admit,
    ) -> Result<(), ObjectError> {
        let id = ObjectId::new(namespace, name);
        let epoch = self.inner.epoch(&id)?;
        // Sent under the lock, so an event loop that checks its queue under the same lock
        // before ending can never strand an event.
        let mut loops = self.inner.loops.lock().unwrap();
        let queue = loops.entry(id).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let identity = ObjectIdentity {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                id,
            };
            let background = self.inner.cpu_share.in_background(namespace);
            self.inner
                .cpu_share
                .runtime(background)
                .spawn(EventLoop::run(
                    self.inner.clone(),
                    identity,
                    tx.downgrade(),
                    rx,
                    background,
                    epoch,
                ));
            Queue::new(tx, namespace)
        });
        queue.send(event, admit, self.inner.config.queue)
    }

    /// Whether a request of about `bytes` to the object `name` of `namespace` would find room
    /// in its queue now; asked before reading a body, so that a flood to a busy object is refused
    /// without reading its bodies. (The request is checked again when it is queued.)
    pub fn has_room(&self, namespace: &str, name: &str, bytes: usize) -> Result<(), ObjectError> {
        let id = ObjectId::new(namespace, name);
        let loops = self.inner.loops.lock().unwrap();
        match loops.get(&id) {
            Some(queue) => queue.has_room(bytes, self.inner.config.queue),
            None => Ok(()),
        }
    }

    /// Queues the event `make` builds around its reply channel, and waits for its outcome and
    /// then its output gate; gives the result and when the gate opened.
    async fn ask<T>(
        &self,
        namespace: &str,
        name: &str,
        admit: Admit,
        make: impl FnOnce(oneshot::Sender<Outcome<T>>) -> Event,
    ) -> Result<(T, Option<Instant>), ObjectError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(namespace, name, make(reply), admit)?;
        let outcome = answer.await.map_err(|_| ObjectError::ShuttingDown)?;
        outcome.released().await
    }

    /// Delivers a request to the object `name` of `namespace` and returns its
    /// response once the output gate lets it out. `upgrade`: the request asks for a WebSocket;
    /// `chain`: the objects waiting on it, for a stub call.
    pub async fn fetch(
        &self,
        namespace: Arc<Namespace>,
        name: &str,
        request: Request,
        upgrade: bool,
        chain: Option<Chain>,
    ) -> Result<Fetched, ObjectError> {
        let (fetched, ..) = self
            .fetch_timed(namespace, name, request, upgrade, chain)
            .await?;
        Ok(fetched)
    }

    /// [`Self::fetch`], and how long the event took from its loop taking it up to its release,
    /// and how long its answer then took to be back here: a stub call's callee's part of the
    /// call, and its hand-back.
    async fn fetch_timed(
        &self,
        namespace: Arc<Namespace>,
        name: &str,
        request: Request,
        upgrade: bool,
        chain: Option<Chain>,
    ) -> Result<(Fetched, Duration, Duration), ObjectError> {
        let ns = namespace.name.clone();
        let admit = Admit::Bounded {
            bytes: request.queued_bytes(),
        };
        let ((fetched, ran), opened) = self
            .ask(&ns, name, admit, |reply| Event::Fetch {
                namespace,
                request,
                upgrade,
                chain,
                reply,
            })
            .await?;
        let released = ran.released(opened);
        Ok((fetched, released - ran.started, released.elapsed()))
    }

    /// Queues an event of one of the object's sockets. A message from the client finds the
    /// object's queue full as `Err`, for the socket to be closed; other failures are the object's
    /// to log.
    pub fn websocket_event(
        &self,
        namespace: &str,
        name: &str,
        socket: u64,
        event: SocketEvent,
    ) -> Result<(), ObjectError> {
        let admit = match &event {
            SocketEvent::Text(text) => Admit::Bounded { bytes: text.len() },
            SocketEvent::Binary(data) => Admit::Bounded { bytes: data.len() },
            _ => Admit::Always { bytes: 0 },
        };
        let queued = self.namespace(namespace).and_then(|deployed| {
            let event = Event::Socket {
                namespace: deployed,
                socket,
                event,
            };
            self.enqueue(namespace, name, event, admit)
        });
        match queued {
            Err(e) if e.is_overloaded() => {
                self.count_overload(&e);
                Err(e)
            }
            Err(e) => {
                tracing::warn!(namespace, "WebSocket event not delivered: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Delivers the alarm due at `due_at`; `Ok` once handled (or found no longer set) and its
    /// writes are durable.
    pub async fn alarm(
        &self,
        namespace: &str,
        name: &str,
        due_at: u64,
        retries: u32,
    ) -> Result<(), ObjectError> {
        let deployed = self.namespace(namespace)?;
        self.ask(namespace, name, Admit::Free, |reply| Event::Alarm {
            namespace: deployed,
            due_at,
            retries,
            reply,
        })
        .await
        .map(|((), _)| ())
    }

    /// Runs an operator's storage operation on the object `name` of `namespace`, between its
    /// events; answers once a write is durable.
    pub async fn storage_op(
        &self,
        namespace: &str,
        name: &str,
        op: StorageOp,
    ) -> Result<StorageAnswer, ObjectError> {
        self.namespace(namespace)?;
        let bytes = match &op {
            StorageOp::Put(entries) => entries.iter().map(|(k, v)| k.len() + v.len()).sum(),
            _ => 0,
        };
        let admit = Admit::Bounded { bytes };
        self.ask(namespace, name, admit, |reply| Event::Storage { op, reply })
            .await
            .map(|(answer, _)| answer)
    }

    /// Deletes the alarm due at `due_at`, if it is still the object's alarm.
    pub async fn drop_alarm(
        &self,
        namespace: &str,
        name: &str,
        due_at: u64,
    ) -> Result<(), ObjectError> {
        // A namespace that is not deployed (its code failed to load) keeps its alarms for a
        // later start that loads it.
        self.namespace(namespace)?;
        self.ask(namespace, name, Admit::Free, |reply| Event::DropAlarm {
            due_at,
            reply,
        })
        .await
        .map(|((), _)| ())
    }

    /// How many objects have a live instance right now.
    pub fn live_instances(&self) -> usize {
        self.inner.config.max_live_objects.max(1) - self.inner.instances.available_permits()
    }

    /// Shared classes' instances kept between events (world `shared-object`).
    pub fn idle_shared_instances(&self) -> usize {
        self.inner.shared.count()
    }

    /// Drops the kept instances of the shared class deployed as `namespace` whose code is older
    /// than the deployment `serial` (all of them, with `u64::MAX`): a redeploy or a delete frees
    /// their slots at once.
    pub fn forget_shared_instances(&self, namespace: &str, serial: u64) {
        self.inner.shared.forget_older(namespace, serial);
    }

    /// How many objects have an event loop (a live instance, queued events or commits in
    /// flight). A hibernated object with nothing to do has none.
    pub fn awake_objects(&self) -> usize {
        self.inner.loops.lock().unwrap().len()
    }
}

/// What shared classes' idle instances may hold: a sixteenth of the instance slots and of the
/// memory budget, and at least one instance, so that a small host shares too.
fn shared_pool_limits(config: &LifecycleConfig, memory: &MemoryBudget) -> IdleLimits {
    let share = IdleLimits::share_of(config.max_live_objects, memory.limit);
    IdleLimits {
        instances: share.instances.max(1),
        ..share
    }
}

/// What the workers of apps borrow from the objects: instance slots, the runtime, calls.
impl Objects {
    /// A permit for one more live instance (see [`Inner::instance_permit`]): workers and objects
    /// share the host's instance slots.
    pub async fn instance_permit(&self) -> Result<OwnedSemaphorePermit, ObjectError> {
        self.inner.instance_permit().await
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    pub fn sockets(&self) -> &Arc<Sockets> {
        &self.inner.sockets
    }

    /// Delivers the stub calls of an instance.
    pub fn calls(&self) -> Arc<dyn Calls> {
        self.inner.calls.clone()
    }

    /// What the stub calls since start cost beyond their callees' events.
    pub fn call_stats(&self) -> &CallStats {
        self.inner.calls.stats()
    }

    /// Counts the guest instructions of `namespace` (a worker counts under its app's name).
    pub fn meter(&self, namespace: &str) -> Meter {
        self.inner.cpu_share.meter(namespace)
    }
}
