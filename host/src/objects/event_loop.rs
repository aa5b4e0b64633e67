//! One object's event loop: its events one at a time, its instance kept between them, and its
//! output released behind the gate.

use super::error::ObjectError;
use super::event::{Event, Fetched, Outcome, Ran, StorageAnswer, StorageOp};
use super::queue::QueuedEvent;
use super::shared::Inner;
use crate::cpu_share::Meter;
use crate::metrics::{MessageLabels, NamespaceLabel};
use crate::names::ObjectIdentity;
use crate::registry::Namespace;
use crate::runtime::{Chain, EventError, Guest, Instance, Request};
use crate::sockets::{Handback, Queued, SocketEvent};
use crate::storage::{CommitOutcome, DbError, ObjectStorage};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

enum Slot {
    Asleep(ObjectStorage),
    Live {
        instance: Instance,
        /// The [`Deployment::serial`](crate::registry::Deployment) of its code.
        code: u64,
        permit: OwnedSemaphorePermit,
    },
}

pub(super) struct EventLoop {
    inner: Arc<Inner>,
    identity: ObjectIdentity,
    me: mpsc::WeakUnboundedSender<QueuedEvent>,
    /// `None` only while an instance is being created.
    slot: Option<Slot>,
    idle_ticket: Option<u64>,
    /// WebSocket output waiting for its gate, in event order; its task starts on first use.
    gated: Option<mpsc::UnboundedSender<GatedOutput>>,
    /// Whether the loop runs on the background runtime (see [`CpuShare`]).
    background: bool,
    /// Handed to each of its instances, which count their guest instructions on it toward the
    /// namespace's share.
    meter: Meter,
    /// The fuel the current event burned, for the metrics.
    burned: u64,
    /// The shared instance (world `shared-object`) the object's last event ran on, while no
    /// other change to its state can have happened since.
    ran_on: Option<u64>,
    /// A shared class's object keeps its loop (and its storage open) between events while it
    /// holds one of these, as an object of its own keeps its instance.
    resting: Option<OwnedSemaphorePermit>,
}

/// An event's WebSocket output and the commit it waits for.
type GatedOutput = (Option<CommitOutcome>, Vec<(u64, Queued)>);

impl EventLoop {
    pub(super) async fn run(
        inner: Arc<Inner>,
        identity: ObjectIdentity,
        me: mpsc::WeakUnboundedSender<QueuedEvent>,
        mut rx: mpsc::UnboundedReceiver<QueuedEvent>,
        background: bool,
        epoch: u64,
    ) {
        let storage = {
            let storage = inner.storage.clone();
            let (object, limits) = (identity.clone(), inner.config.storage);
            tokio::task::spawn_blocking(move || {
                ObjectStorage::open(&object, &storage, epoch, limits)
            })
            .await
        };
        let storage = match storage {
            Ok(Ok(s)) => s,
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e,
                    _ => DbError::new("opening object storage panicked"),
                };
                tracing::error!(object = %identity.id, "{e}");
                // Fail what is queued, and end; the next request starts a new loop.
                let mut loops = inner.loops.lock().unwrap();
                loops.remove(&identity.id);
                while let Ok(queued) = rx.try_recv() {
                    match queued.event {
                        Event::Fetch { reply, .. } => {
                            let _ = reply.send(Outcome::failed(e.clone(), None));
                        }
                        Event::Alarm { reply, .. } | Event::DropAlarm { reply, .. } => {
                            let _ = reply.send(Outcome::failed(e.clone(), None));
                        }
                        Event::Storage { reply, .. } => {
                            let _ = reply.send(Outcome::failed(e.clone(), None));
                        }
                        Event::Socket { .. } | Event::Evict => {}
                    }
                }
                return;
            }
        };
        let meter = inner.cpu_share.meter(&identity.namespace);
        let this = EventLoop {
            inner,
            identity,
            me,
            slot: Some(Slot::Asleep(storage)),
            idle_ticket: None,
            gated: None,
            background,
            meter,
            burned: 0,
            ran_on: None,
            resting: None,
        };
        this.serve(rx, None).await;
    }

    /// Delivers `next`, then the queued events as they come, until the loop ends; or, once its
    /// namespace changed class, goes on from the next event on the other class's runtime.
    async fn serve(
        mut self,
        mut rx: mpsc::UnboundedReceiver<QueuedEvent>,
        mut next: Option<QueuedEvent>,
    ) {
        loop {
            let live = matches!(self.slot, Some(Slot::Live { .. })) || self.resting.is_some();
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
            let background = self.inner.cpu_share.in_background(&self.identity.namespace);
            if event.is_some() && background != self.background {
                self.background = background;
                let runtime = self.inner.cpu_share.runtime(background).clone();
                runtime.spawn(self.serve_boxed(rx, event));
                return;
            }
            let Some(QueuedEvent {
                event,
                share,
                queued,
            }) = event
            else {
                return;
            };
            let taken = Instant::now();
            let metrics = &self.inner.metrics;
            let namespace = &self.identity.namespace;
            metrics
                .queue_seconds
                .get_or_create(&NamespaceLabel {
                    namespace: namespace.clone(),
                })
                .observe(taken.duration_since(queued).as_secs_f64());
            let kind = match &event {
                Event::Fetch { .. } => Some("request"),
                Event::Socket {
                    event: SocketEvent::Text(_) | SocketEvent::Binary(_),
                    ..
                } => {
                    metrics.message(namespace, "in");
                    Some("message")
                }
                Event::Socket { .. } => Some("message"),
                Event::Alarm { .. } => Some("alarm"),
                Event::DropAlarm { .. } | Event::Evict | Event::Storage { .. } => None,
            };
            self.burned = 0;
            match event {
                Event::Fetch {
                    namespace,
                    request,
                    upgrade,
                    chain,
                    reply,
                } => {
                    let _ = reply.send(self.fetch(&namespace, request, upgrade, chain).await);
                }
                Event::Socket {
                    namespace,
                    socket,
                    event,
                } => self.socket_event(&namespace, socket, event).await,
                Event::Alarm {
                    namespace,
                    due_at,
                    retries,
                    reply,
                } => {
                    let _ = reply.send(self.alarm(&namespace, due_at, retries).await);
                }
                Event::DropAlarm { due_at, reply } => {
                    let _ = reply.send(self.drop_alarm(due_at));
                }
                Event::Evict => self.hibernate(),
                Event::Storage { op, reply } => {
                    let _ = reply.send(self.storage_op(op));
                }
            }
            // Counted in the object's queue until it has run.
            drop(share);
            if let Some(kind) = kind {
                let metrics = &self.inner.metrics;
                metrics.event(&self.identity.namespace, kind, taken.elapsed(), self.burned);
            }
        }
    }

    /// [`Self::serve`] with a named type, so that `serve` can spawn itself.
    fn serve_boxed(
        self,
        rx: mpsc::UnboundedReceiver<QueuedEvent>,
        next: Option<QueuedEvent>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.serve(rx, next))
    }

    fn storage(&mut self) -> &mut ObjectStorage {
        match self.slot.as_mut().expect("slot is set between events") {
            Slot::Asleep(storage) => storage,
            Slot::Live { instance, .. } => object_storage(instance),
        }
    }

    /// Ends the loop if nothing is queued, under the lock senders hold.
    fn try_end(&mut self, rx: &mpsc::UnboundedReceiver<QueuedEvent>) -> bool {
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

    /// Between events, an instance of its own waits on the idle list; a shared instance goes
    /// back to its class's pool, and the object keeps its storage (and its loop, while the host
    /// has room for resting objects).
    fn rest(&mut self) {
        let serial = self.instance().shared_serial();
        if serial.is_none() {
            self.join_idle_list();
            return;
        }
        let Some(Slot::Live {
            mut instance,
            code,
            permit,
        }) = self.slot.take()
        else {
            unreachable!("an event ran on a live instance")
        };
        let storage = instance
            .release()
            .expect("a shared instance serves its object's storage");
        self.slot = Some(Slot::Asleep(storage));
        self.ran_on = serial;
        if self.resting.is_none() {
            self.resting = self.inner.resting.clone().try_acquire_owned().ok();
        }
        self.inner
            .shared
            .keep(&self.identity.namespace, code, instance, permit);
    }

    /// Drops the instance; storage and commits in flight stay. Whatever a shared instance holds
    /// of the object is no longer trusted either.
    fn hibernate(&mut self) {
        self.ran_on = None;
        self.resting = None;
        self.leave_idle_list();
        self.slot = self.slot.take().map(|slot| match slot {
            Slot::Live { instance, .. } => Slot::Asleep(
                instance
                    .into_storage()
                    .expect("an object's instance holds its storage"),
            ),
            asleep => asleep,
        });
    }

    /// Makes what the object's storage remembers trustworthy before an event: after a failed (or
    /// fenced) commit, what it remembers may never have reached the disk; in a cluster, another
    /// node may have written the object if its shard moved away and back since it started. Either
    /// way it starts again from what is durable. In a cluster an object is served here only while
    /// this node owns its shard (without one, the epoch is always 0).
    fn trust_storage(&mut self) -> Result<(), ObjectError> {
        let epoch = self.inner.epoch(&self.identity.id)?;
        if epoch != self.storage().epoch() || self.storage().prune().is_err() {
            self.hibernate();
            let committer = self.inner.committer.clone();
            self.storage().reset(&committer, epoch)?;
        }
        Ok(())
    }

    /// Gets the object ready for an event: durable state trusted, the current code live.
    async fn prepare(
        &mut self,
        namespace: &Namespace,
    ) -> Result<(), (ObjectError, Option<CommitOutcome>)> {
        self.leave_idle_list();
        self.trust_storage().map_err(|e| (e, None))?;
        let deployment = namespace.current();
        // A live instance of older code is replaced: the next event runs the new code.
        if matches!(&self.slot, Some(Slot::Live { code, .. }) if *code != deployment.serial) {
            self.hibernate();
        }
        let code = deployment.serial;
        if let Some(Slot::Asleep(_)) = self.slot
            && deployment.pre.shares_instances()
            && let Some((mut instance, permit)) =
                self.inner.shared.take(&self.identity.namespace, code)
        {
            let Some(Slot::Asleep(storage)) = self.slot.take() else {
                unreachable!("checked above")
            };
            let ran_here_last = self.ran_on.is_some() && self.ran_on == instance.shared_serial();
            instance.serve(&self.identity, storage, ran_here_last);
            self.slot = Some(Slot::Live {
                instance,
                code,
                permit,
            });
        }
        if let Some(Slot::Asleep(_)) = self.slot {
            let permit = self.inner.instance_permit().await.map_err(|e| (e, None))?;
            let Some(Slot::Asleep(storage)) = self.slot.take() else {
                unreachable!("checked above")
            };
            let guest = Guest {
                identity: self.identity.clone(),
                storage: Some((storage, self.inner.committer.clone())),
                env: deployment.env.clone(),
                calls: self.inner.calls.clone(),
            };
            let created = self
                .inner
                .runtime
                .instantiate(
                    &deployment.pre,
                    guest,
                    self.inner.sockets.clone(),
                    self.meter.clone(),
                )
                .await;
            match created {
                Ok(instance) => {
                    self.slot = Some(Slot::Live {
                        instance,
                        code,
                        permit,
                    })
                }
                Err((e, storage)) => {
                    let storage =
                        storage.expect("an object's instantiation hands its storage back");
                    tracing::warn!(namespace = %self.identity.namespace, object = %self.identity.id, "{e}");
                    if e.is_limit() {
                        self.inner.cpu_share.demote(&self.identity.namespace, &e);
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
    fn finish<T>(&mut self, result: Result<T, EventError>) -> Outcome<(T, Option<Handback>)> {
        self.burned = self.instance().count_fuel();
        let io = self.instance().take_socket_io();
        match result {
            Ok(value) => {
                let committer = self.inner.committer.clone();
                let gate = self.storage().finish_event(&committer);
                self.rest();
                if !io.outputs.is_empty() {
                    let sent = self.inner.metrics.messages.get_or_create(&MessageLabels {
                        namespace: self.identity.namespace.clone(),
                        direction: "out",
                    });
                    sent.inc_by(io.outputs.len() as u64);
                    drop(sent);
                    self.release_behind_gate(gate.clone(), io.outputs);
                }
                Outcome {
                    result: Ok((value, io.accepted)),
                    gate,
                }
            }
            Err(e) => {
                tracing::warn!(namespace = %self.identity.namespace, object = %self.identity.id, "event failed: {e}");
                let tail = self.inner.runtime.tail();
                if tail.watched() {
                    let fields = serde_json::json!({ "code": e.code(), "error": e.to_string() });
                    tail.send(
                        "failure",
                        &self.identity.namespace,
                        &self.identity.name,
                        fields,
                    );
                }
                if e.is_limit() || self.storage().hit_quota() {
                    self.inner.cpu_share.demote(&self.identity.namespace, &e);
                }
                // A socket accepted by a failed event never opens: dropping it forgets it.
                drop(io.accepted);
                self.hibernate();
                let storage = self.storage();
                storage.discard_event();
                Outcome::failed(e, storage.last_commit())
            }
        }
    }

    /// Hands an event's WebSocket output to the sockets once its commit is durable.
    fn release_behind_gate(&mut self, gate: Option<CommitOutcome>, outputs: Vec<(u64, Queued)>) {
        let gated = self.gated.get_or_insert_with(|| {
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
        let _ = gated.send((gate, outputs));
    }

    async fn fetch(
        &mut self,
        namespace: &Namespace,
        request: Request,
        upgrade: bool,
        chain: Option<Chain>,
    ) -> Outcome<(Fetched, Ran)> {
        let started = Instant::now();
        if let Err((e, gate)) = self.prepare(namespace).await {
            return Outcome::failed(e, gate);
        }
        let result = self.instance().fetch(request, upgrade, chain).await;
        let outcome = self.finish(result);
        let ran = Ran {
            started,
            finished: Instant::now(),
        };
        Outcome {
            result: outcome
                .result
                .map(|(response, accepted)| (Fetched { response, accepted }, ran)),
            gate: outcome.gate,
        }
    }

    async fn socket_event(&mut self, namespace: &Namespace, socket: u64, event: SocketEvent) {
        if let Err((e, _)) = self.prepare(namespace).await {
            tracing::warn!(namespace = %self.identity.namespace, object = %self.identity.id, "WebSocket event not delivered: {e}");
            return;
        }
        let result = self.instance().socket_event(socket, event).await;
        self.finish(result);
    }

    async fn alarm(&mut self, namespace: &Namespace, due_at: u64, retries: u32) -> Outcome<()> {
        if let Err(e) = self.trust_storage() {
            return Outcome::failed(e, None);
        }
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
        if let Err((e, gate)) = self.prepare(namespace).await {
            return Outcome::failed(e, gate);
        }
        let result = self.instance().alarm(retries).await;
        if result.is_ok() {
            let storage = self.storage();
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

    /// Runs an operator's storage operation, as an event of its own. A write ends the live
    /// instance, whose memory may hold what it replaced: the next event starts from storage.
    fn storage_op(&mut self, op: StorageOp) -> Outcome<StorageAnswer> {
        if let Err(e) = self.trust_storage() {
            return Outcome::failed(e, None);
        }
        let committer = self.inner.committer.clone();
        let writes = matches!(op, StorageOp::Put(_) | StorageOp::Delete(_));
        if writes {
            self.hibernate();
        }
        let storage = self.storage();
        let answer = match op {
            StorageOp::List(options) => storage.list(&options).map(StorageAnswer::Entries),
            StorageOp::Get(key) => storage.get(&key).map(StorageAnswer::Value),
            StorageOp::Put(entries) => storage.put_many(entries).map(|()| StorageAnswer::Done),
            StorageOp::Delete(key) => storage.delete(&key).map(StorageAnswer::Deleted),
        };
        match answer {
            Ok(answer) => Outcome {
                result: Ok(answer),
                gate: storage.finish_event(&committer),
            },
            Err(e) => {
                storage.discard_event();
                Outcome::failed(ObjectError::Refused(e), storage.last_commit())
            }
        }
    }

    fn drop_alarm(&mut self, due_at: u64) -> Outcome<()> {
        if let Err(e) = self.trust_storage() {
            return Outcome::failed(e, None);
        }
        let committer = self.inner.committer.clone();
        let storage = self.storage();
        match storage.get_alarm() {
            Ok(Some(at)) if at == due_at => {
                storage.delete_alarm();
                let gate = storage.finish_event(&committer);
                // A shared instance's memory may describe the alarm just deleted.
                self.ran_on = None;
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

/// A live object's storage: its instance holds it from instantiation until dropped.
fn object_storage(instance: &mut Instance) -> &mut ObjectStorage {
    instance
        .storage()
        .expect("an object's instance holds its storage")
}
