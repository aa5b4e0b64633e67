//! Object lifecycle: at most one live instance per object, its events one at a time.
//!
//! Each object with work to do has an event loop (a tokio task) fed by an unbounded queue, so
//! events run in arrival order and different objects run in parallel on all cores. The loop keeps
//! the instance between events, drops it after the idle timeout or when the host needs its slot
//! for another object (hibernation), and ends itself once it has no instance, no queued event and
//! no commit in flight: a sleeping object costs nothing but its storage on disk.
//!
//! Output gate: a response is released only once every commit it could depend on is durable (its
//! own event's, or for an event that wrote nothing, the newest earlier one). The loop does not
//! wait for the disk itself; it runs the next event while the commit flushes.

use crate::names::ObjectId;
use crate::registry::Registry;
use crate::runtime::{EventError, Instance, ObjectIdentity, Request, Response, Runtime};
use crate::storage::{
    CommitFailed, CommitOutcome, Committer, Db, DbError, ObjectStorage, StorageLimits,
};
use std::collections::{BTreeMap, HashMap};
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
}

/// The settings of object lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleConfig {
    pub idle_timeout: Duration,
    pub max_live_objects: usize,
    pub storage: StorageLimits,
}

enum Event {
    Fetch {
        request: Request,
        reply: oneshot::Sender<Outcome>,
    },
    /// Drop the instance if idle: the host needs its slot.
    Evict,
}

/// What an event produced, and what it must wait for before anyone sees it.
struct Outcome {
    result: Result<Response, ObjectError>,
    gate: Option<CommitOutcome>,
}

/// The live objects of a host.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
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
}

#[derive(Default)]
struct IdleList {
    next_ticket: u64,
    by_ticket: BTreeMap<u64, mpsc::WeakUnboundedSender<Event>>,
}

impl Objects {
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        db: Arc<Db>,
        committer: Committer,
        config: LifecycleConfig,
    ) -> Self {
        Objects {
            inner: Arc::new(Inner {
                runtime,
                registry,
                db,
                committer,
                instances: Arc::new(Semaphore::new(config.max_live_objects.max(1))),
                config,
                loops: Mutex::new(HashMap::new()),
                idle: Mutex::new(IdleList::default()),
            }),
        }
    }

    /// Delivers a request to the object `name` of `namespace` and returns its response once the
    /// output gate lets it out.
    pub async fn fetch(
        &self,
        namespace: &str,
        name: &str,
        request: Request,
    ) -> Result<Response, ObjectError> {
        if self.inner.registry.get(namespace).is_none() {
            return Err(ObjectError::UnknownNamespace(namespace.to_owned()));
        }
        let id = ObjectId::new(namespace, name);
        let (reply, answer) = oneshot::channel();
        {
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
                tokio::spawn(EventLoop::run(
                    self.inner.clone(),
                    identity,
                    tx.downgrade(),
                    rx,
                ));
                tx
            });
            queue
                .send(Event::Fetch { request, reply })
                .map_err(|_| ObjectError::ShuttingDown)?;
        }
        let outcome = answer.await.map_err(|_| ObjectError::ShuttingDown)?;
        if let Some(gate) = outcome.gate {
            gate.await?;
        }
        outcome.result
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

impl Inner {
    /// A permit for one more live instance, evicting the least recently used idle instance when
    /// the host is at its cap.
    async fn instance_permit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.instances.clone().try_acquire_owned() {
                return permit;
            }
            let victim = self.idle.lock().unwrap().by_ticket.pop_first();
            if let Some(queue) = victim.and_then(|(_, q)| q.upgrade()) {
                let _ = queue.send(Event::Evict);
            }
            // Every instance is busy or on its way out: wait a little for one to free up.
            tokio::select! {
                permit = self.instances.clone().acquire_owned() => {
                    return permit.expect("the instance semaphore is never closed");
                }
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
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
}

impl EventLoop {
    async fn run(
        inner: Arc<Inner>,
        identity: ObjectIdentity,
        me: mpsc::WeakUnboundedSender<Event>,
        mut rx: mpsc::UnboundedReceiver<Event>,
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
                    if let Event::Fetch { reply, .. } = event {
                        let _ = reply.send(Outcome {
                            result: Err(ObjectError::Storage(e.clone())),
                            gate: None,
                        });
                    }
                }
                return;
            }
        };
        let mut this = EventLoop {
            inner,
            identity,
            me,
            slot: Some(Slot::Asleep(storage)),
            idle_ticket: None,
        };
        loop {
            let event = match this.slot {
                Some(Slot::Live { .. }) => {
                    tokio::select! {
                        event = rx.recv() => event,
                        () = tokio::time::sleep(this.inner.config.idle_timeout) => {
                            this.hibernate();
                            continue;
                        }
                    }
                }
                _ => match rx.try_recv() {
                    Ok(event) => Some(event),
                    Err(_) => {
                        // Asleep with nothing queued: let in-flight commits land, then end.
                        let settled = this.storage().settle();
                        tokio::select! {
                            event = rx.recv() => event,
                            () = settled => {
                                if this.try_end(&rx) {
                                    return;
                                }
                                continue;
                            }
                        }
                    }
                },
            };
            match event {
                Some(Event::Fetch { request, reply }) => {
                    let outcome = this.fetch(request).await;
                    let _ = reply.send(outcome);
                }
                Some(Event::Evict) => this.hibernate(),
                None => return,
            }
        }
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
            self.inner.idle.lock().unwrap().by_ticket.remove(&ticket);
        }
    }

    fn join_idle_list(&mut self) {
        let mut idle = self.inner.idle.lock().unwrap();
        let ticket = idle.next_ticket;
        idle.next_ticket += 1;
        idle.by_ticket.insert(ticket, self.me.clone());
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

    async fn fetch(&mut self, request: Request) -> Outcome {
        self.leave_idle_list();
        if self.storage().prune().is_err() {
            // An earlier commit failed: what this object remembers may never have reached the
            // disk. Start again from what is durable.
            self.hibernate();
            let committer = self.inner.committer.clone();
            if let Err(e) = self.storage().reset(&committer) {
                return Outcome {
                    result: Err(e.into()),
                    gate: None,
                };
            }
        }
        let Some(deployment) = self.inner.registry.get(&self.identity.namespace) else {
            return Outcome {
                result: Err(ObjectError::UnknownNamespace(
                    self.identity.namespace.clone(),
                )),
                gate: None,
            };
        };
        // A live instance of older code is replaced: the next event runs the new code.
        if matches!(&self.slot, Some(Slot::Live { version, .. }) if *version != deployment.info.version)
        {
            self.hibernate();
        }
        if let Some(Slot::Asleep(_)) = self.slot {
            let permit = self.inner.instance_permit().await;
            let Some(Slot::Asleep(storage)) = self.slot.take() else {
                unreachable!("checked above")
            };
            let created = self
                .inner
                .runtime
                .instantiate(&deployment.pre, self.identity.clone(), storage)
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
                    let gate = storage.last_commit();
                    self.slot = Some(Slot::Asleep(storage));
                    return Outcome {
                        result: Err(e.into()),
                        gate,
                    };
                }
            }
        }
        let Some(Slot::Live { instance, .. }) = &mut self.slot else {
            unreachable!("an instance was just made live")
        };
        match instance.fetch(&request).await {
            Ok(response) => {
                let gate = instance.storage().finish_event(&self.inner.committer);
                self.join_idle_list();
                Outcome {
                    result: Ok(response),
                    gate,
                }
            }
            Err(e) => {
                tracing::warn!(namespace = %self.identity.namespace, object = %self.identity.id, "event failed: {e}");
                self.hibernate();
                let storage = self.storage();
                storage.discard_event();
                Outcome {
                    result: Err(e.into()),
                    gate: storage.last_commit(),
                }
            }
        }
    }
}
