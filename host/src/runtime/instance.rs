//! A live instance of one object or worker: delivering one event to it under its limits.

use super::bindings::{v0_2, v0_3};
use super::calls::Chain;
use super::epoch::{Busy, EPOCH_TICK, EpochTicker};
use super::error::EventError;
use super::metering::FuelCount;
use super::request::{Request, Response};
use super::state::{HostState, SocketIo};
use crate::config::{EventLimits, FUEL_PER_MS};
use crate::names::{ObjectId, ObjectIdentity};
use crate::scheduling::{Heavy, run_guest, with_long_slice};
use crate::sockets::SocketEvent;
use crate::storage::ObjectStorage;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use wasmtime::component::TypedFunc;
use wasmtime::{AsContextMut, PoolConcurrencyLimitError, Store, Trap};

/// The exports of an instance, in the version of the contract its component speaks.
pub(super) enum Bindings {
    ObjectV0_2(v0_2::DurableObject),
    ObjectV0_3(v0_3::DurableObject),
    Worker(v0_3::worker::Worker),
    HttpWorker(v0_3::http_worker::HttpWorker),
}

/// Runs `$body` with `$b` the object's bindings and `$v` its version's generated module; a
/// worker of either world gets `$worker` instead (it exports no object handlers, and is never
/// sent their events).
macro_rules! on_object {
    ($bindings:expr, |$b:ident, $v:ident| $body:expr, worker => $worker:expr) => {
        match $bindings {
            Bindings::ObjectV0_2($b) => {
                use v0_2 as $v;
                $body
            }
            Bindings::ObjectV0_3($b) => {
                use v0_3 as $v;
                $body
            }
            Bindings::Worker(_) | Bindings::HttpWorker(_) => $worker,
        }
    };
}

/// What a shared class's instance (world `shared-object`) knows of the objects it serves.
pub(super) struct Sharing {
    switch: TypedFunc<(), (Result<(), String>,)>,
    /// Names this instance among all shared instances, for an object to tell whether its last
    /// event ran here.
    serial: u64,
    /// The object whose state memory may hold: that of the instance's last event (`None` before
    /// its first).
    holds: Option<ObjectId>,
    /// Whether the next event must call `switch-object` first.
    switching: bool,
}

impl Sharing {
    pub(super) fn new(switch: TypedFunc<(), (Result<(), String>,)>) -> Self {
        static SERIALS: AtomicU64 = AtomicU64::new(0);
        Sharing {
            switch,
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            holds: None,
            switching: false,
        }
    }
}

/// A live instance of one object or worker, or of a shared class, serving one object at a time.
pub struct Instance {
    pub(super) store: Store<HostState>,
    pub(super) bindings: Bindings,
    sharing: Option<Sharing>,
    limits: EventLimits,
    ticker: Arc<EpochTicker>,
    /// Shared with the store's memory limiter and epoch callback, which mark it.
    pub(super) heavy: Heavy,
}

impl Instance {
    pub(super) fn new(
        store: Store<HostState>,
        bindings: Bindings,
        sharing: Option<Sharing>,
        limits: EventLimits,
        ticker: Arc<EpochTicker>,
        heavy: Heavy,
    ) -> Self {
        Instance {
            store,
            bindings,
            sharing,
            limits,
            ticker,
            heavy,
        }
    }

    /// Gives the next event its CPU and time budgets; the guard keeps the epoch ticking until
    /// the event ends.
    pub(super) fn start_event(&mut self) -> Result<(Busy, Instant), EventError> {
        let now = Instant::now();
        let deadline = now + self.limits.timeout;
        let state = self.store.data_mut();
        state.deadline = deadline;
        state.next_yield = now + EPOCH_TICK;
        state.call_overloaded = None;
        state.memory.new_event();
        self.heavy.reset(self.store.data().memory.is_big());
        self.store.set_epoch_deadline(1);
        self.store
            .set_fuel(self.limits.fuel)
            .map_err(|e| EventError::Trap(format!("{e:#}")))?;
        self.store.data_mut().counted = FuelCount::new(self.limits.fuel, now);
        Ok((self.ticker.busy(), deadline))
    }

    /// [`Self::start_event`], then for a shared instance whose object changed, `switch-object`,
    /// within the event's budgets.
    async fn begin(&mut self) -> Result<(Busy, Instant), EventError> {
        let (busy, deadline) = self.start_event()?;
        let Some(sharing) = &mut self.sharing else {
            return Ok((busy, deadline));
        };
        // From here on memory may hold this object, whatever it held before.
        sharing.holds = Some(self.store.data().identity.id);
        if std::mem::take(&mut sharing.switching) {
            let call = sharing.switch.call_async(&mut self.store, ());
            let called = call_guest(deadline, &self.heavy, call).await;
            self.outcome(called.map(|(r,)| r))?;
        }
        Ok((busy, deadline))
    }

    /// The serial of a shared instance (world `shared-object`); `None` for any other.
    pub fn shared_serial(&self) -> Option<u64> {
        self.sharing.as_ref().map(|s| s.serial)
    }

    /// Makes a shared instance serve `identity` with its `storage` for the next event.
    /// `ran_here_last`: that object's previous event ran on this instance (see
    /// [`Self::shared_serial`]); unless it did and nothing ran here since, the guest is told to
    /// switch objects first.
    pub fn serve(
        &mut self,
        identity: &ObjectIdentity,
        storage: ObjectStorage,
        ran_here_last: bool,
    ) {
        let state = self.store.data_mut();
        if state.identity.id != identity.id {
            // The bucket's tokens stay: an object that keeps changing instances gets no new burst.
            state.log.relabel(identity);
            state.home_chain = Chain::of(identity);
            state.identity = identity.clone();
        }
        // `switch-object` runs before the event sets its own chain: it runs as this object.
        state.reset_chain();
        state.storage = Some(storage);
        if let Some(sharing) = &mut self.sharing {
            let current = sharing.holds == Some(identity.id) && ran_here_last;
            sharing.switching = sharing.holds.is_some() && !current;
        }
    }

    /// Takes the object's storage back from a shared instance after its event, leaving the
    /// instance ready for another object.
    pub fn release(&mut self) -> Option<ObjectStorage> {
        self.store.data_mut().storage.take()
    }

    /// Counts the guest instructions of the event that just ended, whatever its outcome, on the
    /// namespace's [`Meter`]; answers the fuel the whole event burned.
    pub fn count_fuel(&mut self) -> u64 {
        let burned = self
            .limits
            .fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        count_fuel(&mut self.store);
        burned
    }

    /// Names the outcome of a call into the guest.
    pub(super) fn outcome<T>(
        &self,
        called: wasmtime::Result<Result<T, String>>,
    ) -> Result<T, EventError> {
        match called {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(match &self.store.data().call_overloaded {
                Some(why) => EventError::Overloaded(format!("a call was refused: {why}")),
                None => EventError::Failed(message),
            }),
            Err(e) => Err(classify(&e, &self.store, self.limits)),
        }
    }

    /// Delivers one request; `upgrade` says whether it asks for a WebSocket, `chain` which
    /// objects wait on it (an object's event only). On `Err` the instance must be dropped: it
    /// may be in any state.
    pub async fn fetch(
        &mut self,
        request: Request,
        upgrade: bool,
        chain: Option<Chain>,
    ) -> Result<Response, EventError> {
        let (_busy, deadline) = self.begin().await?;
        let state = self.store.data_mut();
        state.io.in_request = true;
        state.io.upgrade = upgrade;
        state.chain = chain.unwrap_or_else(|| state.home_chain.clone());
        let store = &mut self.store;
        // The same call in each version's own generated types.
        macro_rules! call_fetch {
            ($bindings:expr) => {{
                let request = request.into();
                let handler = $bindings.dohost_object_http_handler();
                let call = handler.call_fetch(&mut *store, &request);
                let called = call_guest(deadline, &self.heavy, call).await;
                called.map(|r| r.map(Response::from))
            }};
        }
        let called = match &self.bindings {
            Bindings::ObjectV0_2(b) => call_fetch!(b),
            Bindings::ObjectV0_3(b) => call_fetch!(b),
            Bindings::Worker(b) => call_fetch!(b),
            // Its requests go to `handle` (`http_worker`), never here.
            Bindings::HttpWorker(_) => return Err(not_http_handler()),
        };
        let response = self.outcome(called)?;
        // The body is already a host copy by now (the bindings lift it whole), but that copy is
        // bounded by the guest's memory limit, and it goes no further.
        let limit = self.limits.max_response_body;
        if response.body.len() > limit {
            return Err(EventError::ResponseTooLarge {
                size: response.body.len(),
                limit,
            });
        }
        Ok(response)
    }

    /// Delivers an event of one of the object's sockets.
    pub async fn socket_event(
        &mut self,
        socket: u64,
        mut event: SocketEvent,
    ) -> Result<(), EventError> {
        let (_busy, deadline) = self.begin().await?;
        self.store.data_mut().reset_chain();
        let store = &mut self.store;
        if let (SocketEvent::StreamClosed, Bindings::ObjectV0_3(b)) = (&event, &self.bindings) {
            let call = b
                .dohost_object_stream_handler()
                .call_on_close(&mut *store, socket);
            let called = call_guest(deadline, &self.heavy, call).await;
            return self.outcome(called);
        }
        if let SocketEvent::Close { left, .. } | SocketEvent::Error { left, .. } = &mut event {
            store.data_mut().io.left = Some((socket, std::mem::take(left)));
        }
        let called = on_object!(&self.bindings, |b, v| {
            use v::exports::dohost::object::websocket_handler::Message;
            let handler = b.dohost_object_websocket_handler();
            call_guest(deadline, &self.heavy, async {
                match event {
                    SocketEvent::Text(t) => {
                        handler
                            .call_on_message(&mut *store, socket, &Message::Text(t))
                            .await
                    }
                    SocketEvent::Binary(b) => {
                        handler
                            .call_on_message(&mut *store, socket, &Message::Binary(b))
                            .await
                    }
                    SocketEvent::Close {
                        code,
                        reason,
                        was_clean,
                        ..
                    } => {
                        handler
                            .call_on_close(&mut *store, socket, code, &reason, was_clean)
                            .await
                    }
                    SocketEvent::Error { error, .. } => {
                        handler.call_on_error(&mut *store, socket, &error).await
                    }
                    // Handled above: only 0.3.0 has streams.
                    SocketEvent::StreamClosed => Ok(Ok(())),
                }
            })
            .await
        }, worker => return Err(not_an_object()));
        self.outcome(called)
    }

    /// Delivers the alarm; `retries` is how many deliveries failed before.
    pub async fn alarm(&mut self, retries: u32) -> Result<(), EventError> {
        let (_busy, deadline) = self.begin().await?;
        self.store.data_mut().reset_chain();
        let store = &mut self.store;
        let called = on_object!(&self.bindings, |b, v| {
            let info = v::exports::dohost::object::alarm_handler::AlarmInfo {
                retry_count: retries,
                is_retry: retries > 0,
            };
            let call = b.dohost_object_alarm_handler().call_on_alarm(&mut *store, info);
            call_guest(deadline, &self.heavy, call).await
        }, worker => return Err(not_an_object()));
        self.outcome(called)
    }

    /// What the event did with WebSockets; resets it for the next event.
    pub fn take_socket_io(&mut self) -> SocketIo {
        std::mem::take(&mut self.store.data_mut().io)
    }

    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory.bytes
    }

    /// The object's storage, to finish or discard the event; `None` for a worker.
    pub fn storage(&mut self) -> Option<&mut ObjectStorage> {
        self.store.data_mut().storage.as_mut()
    }

    /// Drops the instance, keeping an object's storage (with any commits still in flight).
    pub fn into_storage(self) -> Option<ObjectStorage> {
        // Unmapping or zeroing a big linear memory does not yield.
        if self.store.data().memory.is_big() {
            with_long_slice(|| self.store.into_data().storage)
        } else {
            self.store.into_data().storage
        }
    }

    /// Drops the instance (and storage it may hold), on the long time slice if its memory is big.
    pub fn discard(self) {
        drop(self.into_storage());
    }
}

/// Only objects get WebSocket events and alarms; the host never routes them to a worker.
fn not_an_object() -> EventError {
    EventError::Failed("a worker has no WebSocket or alarm handler".into())
}

/// An http-worker serves wasi:http, not `http-handler`; the host never sends it a `fetch`.
fn not_http_handler() -> EventError {
    EventError::Failed("an http-worker has no http-handler".into())
}

/// Counts the fuel of the call into the guest that just ended on its namespace's meter.
pub(super) fn count_fuel(store: &mut impl AsContextMut<Data = HostState>) {
    let mut store = store.as_context_mut();
    let left = store.get_fuel().unwrap_or(0);
    let state = store.data_mut();
    state.counted.end(left, &state.meter);
}

/// Runs a call into guest code: under the event's deadline, and with the long time slice once it
/// is heavy (see [`crate::scheduling`]).
///
/// The epoch callback enforces the deadline while guest code runs; this enforces it while the
/// guest waits in a host call (a WASI sleep, or a poll on a clock), where no guest code runs to
/// check it. Dropping the call there is safe: an event that failed drops its instance.
pub(super) async fn call_guest<T>(
    deadline: Instant,
    heavy: &Heavy,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    tokio::time::timeout_at(deadline.into(), run_guest(heavy, call))
        .await
        .unwrap_or_else(|_| Err(wasmtime::Error::new(WaitedPastDeadline)))
}

/// An event's deadline passed while it waited in a host call.
#[derive(Debug, thiserror::Error)]
#[error("the event's time limit passed while it waited in a host call")]
struct WaitedPastDeadline;

/// Names the cause of a failed call into the guest.
pub(super) fn classify(
    e: &wasmtime::Error,
    store: &Store<HostState>,
    limits: EventLimits,
) -> EventError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => EventError::CpuLimit(limits.fuel / FUEL_PER_MS),
        Some(Trap::StackOverflow) => EventError::StackOverflow,
        _ if store.data().timed_out || e.is::<WaitedPastDeadline>() => {
            EventError::TimeLimit(limits.timeout)
        }
        _ if store.data().memory.hit => EventError::MemoryLimit(limits.memory_bytes >> 20),
        _ if store.data().memory.over_budget => EventError::Overloaded(
            "the memories of all live instances reached the host's budget (--max-memory)".into(),
        ),
        // Out of instance slots, stacks or address space: the host's state, not the object's.
        _ if e.is::<PoolConcurrencyLimitError>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::ENOMEM)) =>
        {
            EventError::Overloaded(format!("{e:#}"))
        }
        _ => EventError::Trap(format!("{e:#}")),
    }
}
