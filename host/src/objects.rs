//! Object lifecycle: at most one live instance per object, its events one at a time.
//!
//! Each object with work to do has an event loop (a tokio task) fed by an unbounded queue, so
//! events run in arrival order and different objects run in parallel on all cores. The loop keeps
//! the instance between events, drops it after the idle timeout or when the host needs its slot
//! for another object (hibernation), and ends itself once it has no instance, no queued event and
//! no commit in flight: a sleeping object costs nothing but its storage on disk.
//!
//! Events are HTTP requests, WebSocket frames and alarms, all through the one queue.
//!
//! Output gate: a response or WebSocket message is released only once every commit it could
//! depend on is durable (its own event's, or for an event that wrote nothing, the newest earlier
//! one). The loop does not wait for the disk itself; it runs the next event while the commit
//! flushes. WebSocket output goes through the object's outbox, which releases it in event order.

use crate::alarms::now_ms;
use crate::classes::{Cause, Classes, Meter};
use crate::memory::MemoryBudget;
use crate::names::ObjectId;
use crate::registry::Registry;
use crate::runtime::{EventError, Instance, ObjectIdentity, Request, Response, Runtime};
use crate::storage::{
    CommitFailed, CommitOutcome, Committer, Db, DbError, ObjectStorage, StorageLimits,
};
use crate::websockets::{Accepted, Queued, SocketEvent, Sockets};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Why a request to an object got no response from it.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Commit(#[from] CommitFailed),
    #[error(transparent)]
    Storage(#[from] DbError),
    #[error("namespace {0:?} is not deployed")]
    UnknownNamespace(String),
    #[error("the host is shutting down")]
    ShuttingDown,
    #[error(
        "the host is overloaded: every one of its {0} live instances stayed busy for {OVERLOAD_WAIT:?}"
    )]
    Overloaded(usize),
}

/// How long an event waits for an instance slot when every slot is busy, before it is refused
/// as `overloaded` (an idle slot is taken at once, its instance evicted).
pub const OVERLOAD_WAIT: Duration = Duration::from_secs(1);

impl ObjectError {
    /// Whether the host refused the event for want of room, so that the client may retry.
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            ObjectError::Overloaded(_) | ObjectError::Event(EventError::Overloaded(_))
        )
    }
}

/// The settings of object lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleConfig {
    pub idle_timeout: Duration,
    pub max_live_objects: usize,
    pub storage: StorageLimits,
}

/// What a request produced: the response, and the socket it accepted, if any.
pub struct Fetched {
    pub response: Response,
    pub accepted: Option<Accepted>,
}

enum Event {
    Fetch {
        request: Request,
        upgrade: bool,
        reply: oneshot::Sender<Outcome<Fetched>>,
    },
    Socket {
        socket: u64,
        event: SocketEvent,
    },
    /// The alarm due at `due_at`, after `retries` failed deliveries.
    Alarm {
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
}

/// What an event produced, and what it must wait for before anyone sees it.
struct Outcome<T> {
    result: Result<T, ObjectError>,
    gate: Option<CommitOutcome>,
}

impl<T> Outcome<T> {
    fn failed(e: impl Into<ObjectError>, gate: Option<CommitOutcome>) -> Self {
        Outcome {
            result: Err(e.into()),
            gate,
        }
    }

    /// Waits for the output gate, then gives the result.
    async fn released(self) -> Result<T, ObjectError> {
        if let Some(gate) = self.gate {
            gate.await?;
        }
        self.result
    }
}

/// The live objects of a host.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    /// Which runtime each namespace's event loops run on.
    classes: Classes,
    sockets: Arc<Sockets>,
    registry: Arc<Registry>,
    db: Arc<Db>,
    committer: Committer,
    config: LifecycleConfig,
    /// The queue of every object that has an event loop.
    loops: Mutex<HashMap<ObjectId, mpsc::UnboundedSender<Event>>>,
    /// One permit per live instance.
    instances: Arc<Semaphore>,
    /// Live instances between events, least recently used first.
    idle: Mutex<IdleList>,
    memory: Arc<MemoryBudget>,
    /// Events refused as `overloaded` since start, and when that was last logged.
    overloaded: AtomicU64,
    overload_logged_ms: AtomicU64,
}

/// Idle instances' event loops by ticket (the order they went idle), with the memory each holds.
#[derive(Default)]
struct IdleList {
    next_ticket: u64,
    by_ticket: BTreeMap<u64, (mpsc::WeakUnboundedSender<Event>, usize)>,
}

impl IdleList {
    fn insert(
        &mut self,
        queue: mpsc::WeakUnboundedSender<Event>,
        bytes: usize,
        memory: &MemoryBudget,
    ) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.by_ticket.insert(ticket, (queue, bytes));
        memory.set_idle(bytes, true);
        ticket
    }

    fn remove(&mut self, ticket: u64, memory: &MemoryBudget) {
        if let Some((_, bytes)) = self.by_ticket.remove(&ticket) {
            memory.set_idle(bytes, false);
        }
    }

    /// Asks the least recently used idle instance to go; the memory it holds, if there was one.
    fn evict_oldest(&mut self, memory: &MemoryBudget) -> Option<usize> {
        let (_, (queue, bytes)) = self.by_ticket.pop_first()?;
        memory.set_idle(bytes, false);
        if let Some(queue) = queue.upgrade() {
            let _ = queue.send(Event::Evict);
        }
        Some(bytes)
    }
}

impl Objects {
    pub fn new(
        runtime: Arc<Runtime>,
        classes: Classes,
        sockets: Arc<Sockets>,
        registry: Arc<Registry>,
        db: Arc<Db>,
        committer: Committer,
        config: LifecycleConfig,
    ) -> Self {
        let memory = runtime.memory().clone();
        let objects = Objects {
            inner: Arc::new(Inner {
                runtime,
                classes,
                sockets,
                registry,
                db,
                committer,
                instances: Arc::new(Semaphore::new(config.max_live_objects.max(1))),
                config,
                loops: Mutex::new(HashMap::new()),
                idle: Mutex::new(IdleList::default()),
                memory,
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

    /// Bytes of linear memory all live instances hold.
    pub fn instance_memory(&self) -> usize {
        self.inner.memory.used()
    }

    /// How much longer the objects of `namespace` run in the background, and why, if they do
    /// (see [`Classes`]).
    pub fn background_left(&self, namespace: &str) -> Option<(Duration, Cause)> {
        self.inner.classes.background_left(namespace)
    }

    /// Queues an event for the object `name` of `namespace`, starting its event loop if needed.
    fn enqueue(&self, namespace: &str, name: &str, event: Event) -> Result<(), ObjectError> {
        if self.inner.registry.get(namespace).is_none() {
            return Err(ObjectError::UnknownNamespace(namespace.to_owned()));
        }
        let id = ObjectId::new(namespace, name);
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
            let background = self.inner.classes.in_background(namespace);
            self.inner.classes.runtime(background).spawn(EventLoop::run(
                self.inner.clone(),
                identity,
                tx.downgrade(),
                rx,
                background,
            ));
            tx
        });
        queue.send(event).map_err(|_| ObjectError::ShuttingDown)
    }

    /// Delivers a request to the object `name` of `namespace` and returns its response once the
    /// output gate lets it out. `upgrade`: the request asks for a WebSocket.
    pub async fn fetch(
        &self,
        namespace: &str,
        name: &str,
        request: Request,
        upgrade: bool,
    ) -> Result<Fetched, ObjectError> {
        let (reply, answer) = oneshot::channel();
        let event = Event::Fetch {
            request,
            upgrade,
            reply,
        };
        self.enqueue(namespace, name, event)?;
        let outcome = answer.await.map_err(|_| ObjectError::ShuttingDown)?;
        outcome.released().await
    }

    /// Queues an event of one of the object's sockets. Its failures are the object's to log.
    pub fn websocket_event(&self, namespace: &str, name: &str, socket: u64, event: SocketEvent) {
        if let Err(e) = self.enqueue(namespace, name, Event::Socket { socket, event }) {
            tracing::warn!(namespace, "WebSocket event not delivered: {e}");
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
        let (reply, answer) = oneshot::channel();
        let event = Event::Alarm {
            due_at,
            retries,
            reply,
        };
        self.enqueue(namespace, name, event)?;
        let outcome = answer.await.map_err(|_| ObjectError::ShuttingDown)?;
        outcome.released().await
    }

    /// Deletes the alarm due at `due_at`, if it is still the object's alarm.
    pub async fn drop_alarm(
        &self,
        namespace: &str,
        name: &str,
        due_at: u64,
    ) -> Result<(), ObjectError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(namespace, name, Event::DropAlarm { due_at, reply })?;
        let outcome = answer.await.map_err(|_| ObjectError::ShuttingDown)?;
        outcome.released().await
    }

    /// How many objects have a live instance right now.
    pub fn live_instances(&self) -> usize {
        self.inner.config.max_live_objects.max(1) - self.inner.instances.available_permits()
    }

    /// How many objects have an event loop (a live instance, queued events or commits in
    /// flight). A hibernated object with nothing to do has none.
    pub fn awake_objects(&self) -> usize {
        self.inner.loops.lock().unwrap().len()
    }
}

/// Evicts the least recently used idle instances whenever the live instances' memories pass the
/// budget, until they are back under it; ends with the host.
async fn evict_for_memory(inner: std::sync::Weak<Inner>) {
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
    async fn instance_permit(&self) -> Result<OwnedSemaphorePermit, ObjectError> {
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

enum Slot {
    Asleep(ObjectStorage),
    Live {
        instance: Instance,
        version: u64,
        _permit: OwnedSemaphorePermit,
    },
}

struct EventLoop {
    inner: Arc<Inner>,
    identity: ObjectIdentity,
    me: mpsc::WeakUnboundedSender<Event>,
    /// `None` only while an instance is being created.
    slot: Option<Slot>,
    idle_ticket: Option<u64>,
    /// WebSocket output waiting for its gate, in event order; started on first use.
    outbox: Option<mpsc::UnboundedSender<GatedOutput>>,
    /// Whether the loop runs on the background runtime (see [`Classes`]).
    background: bool,
    /// Handed to each of its instances, which count their guest instructions on it toward the
    /// namespace's share.
    meter: Meter,
}

/// An event's WebSocket output and the commit it waits for.
type GatedOutput = (Option<CommitOutcome>, Vec<(u64, Queued)>);

impl EventLoop {
    async fn run(
        inner: Arc<Inner>,
        identity: ObjectIdentity,
        me: mpsc::WeakUnboundedSender<Event>,
        mut rx: mpsc::UnboundedReceiver<Event>,
        background: bool,
    ) {
        let storage = {
            let db = inner.db.clone();
            let (id, limits) = (identity.id, inner.config.storage);
            tokio::task::spawn_blocking(move || ObjectStorage::open(id, db, limits)).await
        };
        let storage = match storage {
            Ok(Ok(s)) => s,
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e,
                    _ => DbError("opening object storage panicked".into()),
                };
                tracing::error!(object = %identity.id, "{e}");
                // Fail what is queued, and end; the next request starts a new loop.
                let mut loops = inner.loops.lock().unwrap();
                loops.remove(&identity.id);
                while let Ok(event) = rx.try_recv() {
                    match event {
                        Event::Fetch { reply, .. } => {
                            let _ = reply.send(Outcome::failed(e.clone(), None));
                        }
                        Event::Alarm { reply, .. } | Event::DropAlarm { reply, .. } => {
                            let _ = reply.send(Outcome::failed(e.clone(), None));
                        }
                        Event::Socket { .. } | Event::Evict => {}
                    }
                }
                return;
            }
        };
        let meter = inner.classes.meter(&identity.namespace);
        let this = EventLoop {
            inner,
            identity,
            me,
            slot: Some(Slot::Asleep(storage)),
            idle_ticket: None,
            outbox: None,
            background,
            meter,
        };
        this.serve(rx, None).await;
    }

    /// Delivers `next`, then the queued events as they come, until the loop ends; or, once its
    /// namespace changed class, goes on from the next event on the other class's runtime.
    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Event>, mut next: Option<Event>) {
        loop {
            let live = matches!(self.slot, Some(Slot::Live { .. }));
            let event = match (next.take(), live) {
                (Some(event), _) => Some(event),
                (None, true) => {
                    tokio::select! {
                        event = rx.recv() => event,
                        () = tokio::time::sleep(self.inner.config.idle_timeout) => {
                            self.hibernate();
                            continue;
                        }
                    }
                }
                (None, false) => match rx.try_recv() {
                    Ok(event) => Some(event),
                    Err(_) => {
                        // Asleep with nothing queued: let in-flight commits land, then end.
                        let settled = self.storage().settle();
                        tokio::select! {
                            event = rx.recv() => event,
                            () = settled => {
                                if self.try_end(&rx) {
                                    return;
                                }
                                continue;
                            }
                        }
                    }
                },
            };
            let background = self.inner.classes.in_background(&self.identity.namespace);
            if event.is_some() && background != self.background {
                self.background = background;
                let runtime = self.inner.classes.runtime(background).clone();
                runtime.spawn(self.serve_boxed(rx, event));
                return;
            }
            match event {
                Some(Event::Fetch {
                    request,
                    upgrade,
                    reply,
                }) => {
                    let outcome = self.fetch(request, upgrade).await;
                    let _ = reply.send(outcome);
                }
                Some(Event::Socket { socket, event }) => self.socket_event(socket, event).await,
                Some(Event::Alarm {
                    due_at,
                    retries,
                    reply,
                }) => {
                    let outcome = self.alarm(due_at, retries).await;
                    let _ = reply.send(outcome);
                }
                Some(Event::DropAlarm { due_at, reply }) => {
                    let _ = reply.send(self.drop_alarm(due_at));
                }
                Some(Event::Evict) => self.hibernate(),
                None => return,
            }
        }
    }

    /// [`Self::serve`] with a named type, so that `serve` can spawn itself.
    fn serve_boxed(
        self,
        rx: mpsc::UnboundedReceiver<Event>,
        next: Option<Event>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.serve(rx, next))
    }

    fn storage(&mut self) -> &mut ObjectStorage {
        match self.slot.as_mut().expect("slot is set between events") {
            Slot::Asleep(storage) => storage,
            Slot::Live { instance, .. } => instance.storage(),
        }
    }

    /// Ends the loop if nothing is queued, under the lock senders hold.
    fn try_end(&mut self, rx: &mpsc::UnboundedReceiver<Event>) -> bool {
        let inner = self.inner.clone();
        let mut loops = inner.loops.lock().unwrap();
        if !rx.is_empty() {
            return false;
        }
        loops.remove(&self.identity.id);
        if self.storage().prune().is_err() {
            // The next loop starts from what is durable.
            self.inner.committer.forgive(self.identity.id);
        }
        true
    }

    fn leave_idle_list(&mut self) {
        if let Some(ticket) = self.idle_ticket.take() {
            let memory = &self.inner.memory;
            self.inner.idle.lock().unwrap().remove(ticket, memory);
        }
    }

    fn join_idle_list(&mut self) {
        let bytes = self.instance().memory_bytes();
        let memory = &self.inner.memory;
        let ticket = self
            .inner
            .idle
            .lock()
            .unwrap()
            .insert(self.me.clone(), bytes, memory);
        self.idle_ticket = Some(ticket);
    }

    /// Drops the instance; storage and commits in flight stay.
    fn hibernate(&mut self) {
        self.leave_idle_list();
        self.slot = self.slot.take().map(|slot| match slot {
            Slot::Live { instance, .. } => Slot::Asleep(instance.into_storage()),
            asleep => asleep,
        });
    }

    /// Gets the object ready for an event: durable state trusted, the current code live.
    async fn prepare(&mut self) -> Result<(), (ObjectError, Option<CommitOutcome>)> {
        self.leave_idle_list();
        if self.storage().prune().is_err() {
            // An earlier commit failed: what this object remembers may never have reached the
            // disk. Start again from what is durable.
            self.hibernate();
            let committer = self.inner.committer.clone();
            self.storage()
                .reset(&committer)
                .map_err(|e| (e.into(), None))?;
        }
        let Some(deployment) = self.inner.registry.get(&self.identity.namespace) else {
            let e = ObjectError::UnknownNamespace(self.identity.namespace.clone());
            return Err((e, None));
        };
        // A live instance of older code is replaced: the next event runs the new code.
        if matches!(&self.slot, Some(Slot::Live { version, .. }) if *version != deployment.info.version)
        {
            self.hibernate();
        }
        if let Some(Slot::Asleep(_)) = self.slot {
            let permit = self.inner.instance_permit().await.map_err(|e| (e, None))?;
            let Some(Slot::Asleep(storage)) = self.slot.take() else {
                unreachable!("checked above")
            };
            let created = self
                .inner
                .runtime
                .instantiate(
                    &deployment.pre,
                    self.identity.clone(),
                    storage,
                    self.inner.sockets.clone(),
                    self.meter.clone(),
                )
                .await;
            match created {
                Ok(instance) => {
                    self.slot = Some(Slot::Live {
                        instance,
                        version: deployment.info.version,
                        _permit: permit,
                    })
                }
                Err((e, storage)) => {
                    tracing::warn!(namespace = %self.identity.namespace, object = %self.identity.id, "{e}");
                    if e.is_limit() {
                        self.inner.classes.demote(&self.identity.namespace, &e);
                    }
                    let gate = storage.last_commit();
                    self.slot = Some(Slot::Asleep(storage));
                    return Err((e.into(), gate));
                }
            }
        }
        Ok(())
    }

    fn instance(&mut self) -> &mut Instance {
        match &mut self.slot {
            Some(Slot::Live { instance, .. }) => instance,
            _ => unreachable!("prepare made an instance live"),
        }
    }

    /// Ends an event: on success commits its writes and queues its WebSocket output behind the
    /// gate; on failure discards both, and the instance.
    fn finish<T>(&mut self, result: Result<T, EventError>) -> Outcome<(T, Option<Accepted>)> {
        self.instance().count_fuel();
        let io = self.instance().take_socket_io();
        match result {
            Ok(value) => {
                let committer = self.inner.committer.clone();
                let gate = self.instance().storage().finish_event(&committer);
                self.join_idle_list();
                if !io.outputs.is_empty() {
                    self.send_to_outbox(gate.clone(), io.outputs);
                }
                Outcome {
                    result: Ok((value, io.accepted)),
                    gate,
                }
            }
            Err(e) => {
                tracing::warn!(namespace = %self.identity.namespace, object = %self.identity.id, "event failed: {e}");
                if e.is_limit() || self.instance().storage().hit_quota() {
                    self.inner.classes.demote(&self.identity.namespace, &e);
                }
                if let Some(accepted) = io.accepted {
                    self.inner
                        .sockets
                        .remove(&self.identity.id, accepted.socket);
                }
                self.hibernate();
                let storage = self.storage();
                storage.discard_event();
                Outcome::failed(e, storage.last_commit())
            }
        }
    }

    fn send_to_outbox(&mut self, gate: Option<CommitOutcome>, outputs: Vec<(u64, Queued)>) {
        let outbox = self.outbox.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<GatedOutput>();
            let (sockets, id) = (self.inner.sockets.clone(), self.identity.id);
            tokio::spawn(async move {
                while let Some((gate, outputs)) = rx.recv().await {
                    let durable = match gate {
                        Some(gate) => gate.await.is_ok(),
                        None => true,
                    };
                    if durable {
                        sockets.release(&id, outputs);
                    }
                }
            });
            tx
        });
        let _ = outbox.send((gate, outputs));
    }

    async fn fetch(&mut self, request: Request, upgrade: bool) -> Outcome<Fetched> {
        if let Err((e, gate)) = self.prepare().await {
            return Outcome::failed(e, gate);
        }
        let result = self.instance().fetch(&request, upgrade).await;
        let outcome = self.finish(result);
        Outcome {
            result: outcome
                .result
                .map(|(response, accepted)| Fetched { response, accepted }),
            gate: outcome.gate,
        }
    }

    async fn socket_event(&mut self, socket: u64, event: SocketEvent) {
        if let Err((e, _)) = self.prepare().await {
            tracing::warn!(namespace = %self.identity.namespace, object = %self.identity.id, "WebSocket event not delivered: {e}");
            return;
        }
        let result = self.instance().socket_event(socket, event).await;
        self.finish(result);
    }

    async fn alarm(&mut self, due_at: u64, retries: u32) -> Outcome<()> {
        match self.storage().get_alarm() {
            // Moved or deleted since it was scheduled: nothing to deliver.
            Ok(current) if current != Some(due_at) => {
                return Outcome {
                    result: Ok(()),
                    gate: self.storage().last_commit(),
                };
            }
            Ok(_) => {}
            Err(e) => return Outcome::failed(EventError::Failed(e.to_string()), None),
        }
        if let Err((e, gate)) = self.prepare().await {
            return Outcome::failed(e, gate);
        }
        let result = self.instance().alarm(retries).await;
        if result.is_ok() {
            let storage = self.instance().storage();
            // Handled: the alarm is spent, unless the handler set a new one.
            if !storage.alarm_changed() {
                storage.delete_alarm();
            }
        }
        let outcome = self.finish(result);
        Outcome {
            result: outcome.result.map(|_| ()),
            gate: outcome.gate,
        }
    }

    fn drop_alarm(&mut self, due_at: u64) -> Outcome<()> {
        let committer = self.inner.committer.clone();
        let storage = self.storage();
        match storage.get_alarm() {
            Ok(Some(at)) if at == due_at => {
                storage.delete_alarm();
                let gate = storage.finish_event(&committer);
                Outcome {
                    result: Ok(()),
                    gate,
                }
            }
            Ok(_) => Outcome {
                result: Ok(()),
                gate: storage.last_commit(),
            },
            Err(e) => Outcome::failed(EventError::Failed(e.to_string()), None),
        }
    }
}
