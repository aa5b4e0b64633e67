//! wasmtime: the engine, the host side of the WIT imports, and running one event of one object
//! under its CPU and memory limits.
//!
//! A guest gets exactly the imports of the `durable-object` world plus the WASI interfaces a Rust
//! std guest links against; WASI grants nothing: no files, no environment, no network, a closed
//! stdin and discarded stdout/stderr.

use crate::config::EventLimits;
use crate::names::{self, ObjectId};
use crate::storage::{self, ObjectStorage};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "durable-object",
    exports: { default: async },
});

pub use self::dohost::object::types::{Request, Response};
use self::dohost::object::{identity, logging, storage as wit_storage, websockets as wit_ws};
use self::exports::dohost::object::alarm_handler::AlarmInfo;
use self::exports::dohost::object::websocket_handler::Message as WitMessage;
use crate::websockets::{Accepted, Outgoing, SocketError, SocketEvent, Sockets};
use std::collections::HashSet;
use std::sync::Arc;

/// Guest instructions between yields to the async runtime, so a busy guest cannot starve other
/// objects on the same worker thread (about a millisecond of guest work).
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

/// Why an event failed. Every variant discards the event's writes and the instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventError {
    #[error("the object exceeded its CPU limit ({0} ms)")]
    CpuLimit(u64),
    #[error("the object exceeded its memory limit ({0} MiB)")]
    MemoryLimit(usize),
    #[error("the object overflowed its stack")]
    StackOverflow,
    #[error("the object trapped: {0}")]
    Trap(String),
    #[error("the object failed: {0}")]
    Failed(String),
    #[error("the object could not be started: {0}")]
    Instantiate(String),
}

impl EventError {
    /// A stable, machine-readable name for the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::CpuLimit(_) => "cpu_limit_exceeded",
            EventError::MemoryLimit(_) => "memory_limit_exceeded",
            EventError::StackOverflow => "stack_overflow",
            EventError::Trap(_) => "trap",
            EventError::Failed(_) => "object_error",
            EventError::Instantiate(_) => "instantiate_failed",
        }
    }
}

/// Who an object is, as its identity import tells it.
#[derive(Debug, Clone)]
pub struct ObjectIdentity {
    pub namespace: String,
    pub name: String,
    pub id: ObjectId,
}

/// Caps an instance's linear memory, remembering that it did so to name the cause of the trap
/// that usually follows (a Rust guest aborts when allocation fails).
struct MemoryCap {
    max_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.hit |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// What one event did with WebSockets, handed to the object's event loop when it ends.
#[derive(Default)]
pub struct SocketIo {
    /// Whether the request being handled asks for a WebSocket upgrade.
    upgrade: bool,
    /// The socket accepted by this request, if any.
    pub accepted: Option<Accepted>,
    /// Sends and closes, in order, held until the output gate opens.
    pub outputs: Vec<(u64, Outgoing)>,
    /// Sockets closed during the event, already hidden from `get-sockets`.
    closing: HashSet<u64>,
}

/// The store data of one instance.
pub struct HostState {
    identity: ObjectIdentity,
    storage: ObjectStorage,
    sockets: Arc<Sockets>,
    io: SocketIo,
    memory: MemoryCap,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A checked, compiled component, ready to instantiate quickly.
pub type ObjectPre = DurableObjectPre<HostState>;

/// The wasmtime engine and linker, shared by every object.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: EventLimits,
}

/// Address space the pool of linear memories may reserve, in all (16 TiB of the 128 TiB a 64-bit
/// process has): with many instances, each gets a smaller share.
const MEMORY_POOL_BYTES: u64 = 16 << 40;

/// Core instances, tables and linear memories one component may have. A Rust component has one
/// memory and a few core instances (its module plus adapter shims); these leave room for others.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const TABLES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 2;

/// The pooling allocator, sized for `max_instances` live instances of at most `memory_bytes`.
///
/// Instances come from slots reserved once at start-up: creating one is a copy-on-write mapping
/// of the component's memory image instead of fresh mappings per instance (which also run into
/// the kernel's limit on mappings well before 10,000 live instances).
fn pooling(config: &mut Config, max_instances: u32, memory_bytes: usize) {
    let memories = max_instances.saturating_mul(MEMORIES_PER_COMPONENT);
    // Each memory slot reserves its share of the pool, at least the memory limit itself; the
    // full 4 GiB (no bounds checks at all) when the pool is small enough.
    let share = (MEMORY_POOL_BYTES / u64::from(memories.max(1))).min(4 << 30);
    let reservation = share
        .max(memory_bytes as u64)
        .next_power_of_two()
        .min(4 << 30);
    config.memory_reservation(reservation);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(memories)
        .total_tables(max_instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(max_instances)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(memory_bytes.min(reservation as usize));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
}

impl Runtime {
    /// The engine for at most `max_instances` live instances at once.
    pub fn new(limits: EventLimits, max_instances: usize) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let max_instances = u32::try_from(max_instances.max(1)).unwrap_or(u32::MAX);
        pooling(&mut config, max_instances, limits.memory_bytes);
        // A pooled stack is reused by other objects, possibly other tenants': zero it, which also
        // hands its pages back to the kernel, so a hibernated object keeps no stack resident.
        config.async_stack_zeroing(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        DurableObject::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        Ok(Runtime {
            engine,
            linker,
            limits,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> EventLimits {
        self.limits
    }

    /// Checks that `component` is a Durable Object: everything it imports is granted, and it
    /// exports the handler. The error says what is missing.
    pub fn prepare(&self, component: &Component) -> Result<ObjectPre, String> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| format!("{e:#}"))?;
        DurableObjectPre::new(pre).map_err(|e| format!("{e:#}"))
    }

    /// Creates an instance of an object. On failure the storage is handed back.
    pub async fn instantiate(
        &self,
        pre: &ObjectPre,
        identity: ObjectIdentity,
        storage: ObjectStorage,
        sockets: Arc<Sockets>,
    ) -> Result<Instance, (EventError, ObjectStorage)> {
        let state = HostState {
            identity,
            storage,
            sockets,
            io: SocketIo::default(),
            memory: MemoryCap {
                max_bytes: self.limits.memory_bytes,
                hit: false,
            },
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        let setup = store
            .set_fuel(self.limits.fuel)
            .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL)));
        if let Err(e) = setup {
            return Err((
                EventError::Instantiate(format!("{e:#}")),
                store.into_data().storage,
            ));
        }
        match pre.instantiate_async(&mut store).await {
            Ok(bindings) => Ok(Instance {
                store,
                bindings,
                limits: self.limits,
            }),
            Err(e) => {
                let err = classify(&e, &store, self.limits);
                let err = match err {
                    EventError::Trap(msg) => EventError::Instantiate(msg),
                    other => other,
                };
                Err((err, store.into_data().storage))
            }
        }
    }
}

/// A live instance of one object.
pub struct Instance {
    store: Store<HostState>,
    bindings: DurableObject,
    limits: EventLimits,
}

impl Instance {
    fn refuel(&mut self) -> Result<(), EventError> {
        self.store
            .set_fuel(self.limits.fuel)
            .map_err(|e| EventError::Trap(format!("{e:#}")))
    }

    /// Names the outcome of a call into the guest.
    fn outcome<T>(&self, called: wasmtime::Result<Result<T, String>>) -> Result<T, EventError> {
        match called {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(EventError::Failed(message)),
            Err(e) => Err(classify(&e, &self.store, self.limits)),
        }
    }

    /// Delivers one request; `upgrade` says whether it asks for a WebSocket. On `Err` the
    /// instance must be dropped: it may be in any state.
    pub async fn fetch(
        &mut self,
        request: &Request,
        upgrade: bool,
    ) -> Result<Response, EventError> {
        self.refuel()?;
        self.store.data_mut().io.upgrade = upgrade;
        let handler = self.bindings.dohost_object_http_handler();
        let called = handler.call_fetch(&mut self.store, request).await;
        self.outcome(called)
    }

    /// Delivers an event of one of the object's sockets.
    pub async fn socket_event(
        &mut self,
        socket: u64,
        event: SocketEvent,
    ) -> Result<(), EventError> {
        self.refuel()?;
        let handler = self.bindings.dohost_object_websocket_handler();
        let called = match event {
            SocketEvent::Text(t) => {
                handler
                    .call_on_message(&mut self.store, socket, &WitMessage::Text(t))
                    .await
            }
            SocketEvent::Binary(b) => {
                handler
                    .call_on_message(&mut self.store, socket, &WitMessage::Binary(b))
                    .await
            }
            SocketEvent::Close {
                code,
                reason,
                was_clean,
            } => {
                handler
                    .call_on_close(&mut self.store, socket, code, &reason, was_clean)
                    .await
            }
            SocketEvent::Error(e) => handler.call_on_error(&mut self.store, socket, &e).await,
        };
        self.outcome(called)
    }

    /// Delivers the alarm; `retries` is how many deliveries failed before.
    pub async fn alarm(&mut self, retries: u32) -> Result<(), EventError> {
        self.refuel()?;
        let info = AlarmInfo {
            retry_count: retries,
            is_retry: retries > 0,
        };
        let handler = self.bindings.dohost_object_alarm_handler();
        let called = handler.call_on_alarm(&mut self.store, info).await;
        self.outcome(called)
    }

    /// What the event did with WebSockets; resets it for the next event.
    pub fn take_socket_io(&mut self) -> SocketIo {
        std::mem::take(&mut self.store.data_mut().io)
    }

    /// The object's storage, to finish or discard the event.
    pub fn storage(&mut self) -> &mut ObjectStorage {
        &mut self.store.data_mut().storage
    }

    /// Drops the instance, keeping its storage (with any commits still in flight).
    pub fn into_storage(self) -> ObjectStorage {
        self.store.into_data().storage
    }
}

/// Names the cause of a failed call into the guest.
fn classify(e: &wasmtime::Error, store: &Store<HostState>, limits: EventLimits) -> EventError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => EventError::CpuLimit(limits.fuel / crate::config::FUEL_PER_MS),
        Some(Trap::StackOverflow) => EventError::StackOverflow,
        _ if store.data().memory.hit => EventError::MemoryLimit(limits.memory_bytes >> 20),
        _ => EventError::Trap(format!("{e:#}")),
    }
}

impl identity::Host for HostState {
    fn namespace(&mut self) -> String {
        self.identity.namespace.clone()
    }

    fn name(&mut self) -> String {
        self.identity.name.clone()
    }

    fn id(&mut self) -> String {
        self.identity.id.to_hex()
    }

    fn new_unique_name(&mut self) -> String {
        names::new_unique_name()
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String) {
        let ns = self.identity.namespace.as_str();
        let id = self.identity.id.to_hex();
        let id = &id[..16];
        match level {
            logging::Level::Trace => tracing::trace!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Debug => tracing::debug!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Info => tracing::info!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Warn => tracing::warn!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Error => tracing::error!(target: "dohost::guest", ns, id, "{message}"),
        }
    }
}

impl dohost::object::types::Host for HostState {}

type StorageResult<T> = Result<T, wit_storage::StorageError>;

fn to_wit<T>(r: Result<T, storage::StorageError>) -> StorageResult<T> {
    r.map_err(|e| match e {
        storage::StorageError::LimitExceeded(m) => wit_storage::StorageError::LimitExceeded(m),
        storage::StorageError::InvalidArgument(m) => wit_storage::StorageError::InvalidArgument(m),
        storage::StorageError::Internal(m) => wit_storage::StorageError::Internal(m),
    })
}

impl wit_storage::Host for HostState {
    fn get(&mut self, key: String) -> StorageResult<Option<Vec<u8>>> {
        to_wit(self.storage.get(&key))
    }

    fn get_many(&mut self, keys: Vec<String>) -> StorageResult<Vec<(String, Vec<u8>)>> {
        to_wit(self.storage.get_many(&keys))
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> StorageResult<()> {
        to_wit(self.storage.put(&key, value))
    }

    fn put_many(&mut self, entries: Vec<(String, Vec<u8>)>) -> StorageResult<()> {
        to_wit(self.storage.put_many(entries))
    }

    fn delete(&mut self, key: String) -> StorageResult<bool> {
        to_wit(self.storage.delete(&key))
    }

    fn delete_many(&mut self, keys: Vec<String>) -> StorageResult<u32> {
        to_wit(self.storage.delete_many(&keys))
    }

    fn list(&mut self, o: wit_storage::ListOptions) -> StorageResult<Vec<(String, Vec<u8>)>> {
        to_wit(self.storage.list(&storage::ListOptions {
            prefix: o.prefix,
            start: o.start,
            start_after: o.start_after,
            end: o.end,
            reverse: o.reverse,
            limit: o.limit,
        }))
    }

    fn delete_all(&mut self) -> StorageResult<()> {
        self.storage.delete_all();
        Ok(())
    }

    fn transaction_begin(&mut self) -> StorageResult<()> {
        to_wit(self.storage.begin())
    }

    fn transaction_commit(&mut self) -> StorageResult<()> {
        to_wit(self.storage.commit())
    }

    fn transaction_rollback(&mut self) -> StorageResult<()> {
        to_wit(self.storage.rollback())
    }

    fn get_alarm(&mut self) -> StorageResult<Option<u64>> {
        to_wit(self.storage.get_alarm())
    }

    fn set_alarm(&mut self, scheduled_time_ms: u64) -> StorageResult<()> {
        self.storage.set_alarm(storage::Alarm {
            at: scheduled_time_ms,
            namespace: self.identity.namespace.as_str().into(),
            name: self.identity.name.as_str().into(),
        });
        Ok(())
    }

    fn delete_alarm(&mut self) -> StorageResult<()> {
        self.storage.delete_alarm();
        Ok(())
    }
}

type SocketResult<T> = Result<T, wit_ws::WebsocketError>;

fn ws_wit<T>(r: Result<T, SocketError>) -> SocketResult<T> {
    r.map_err(|e| match e {
        SocketError::NotFound => wit_ws::WebsocketError::NotFound,
        SocketError::LimitExceeded(m) => wit_ws::WebsocketError::LimitExceeded(m),
        SocketError::InvalidArgument(m) => wit_ws::WebsocketError::InvalidArgument(m),
    })
}

impl HostState {
    /// A socket this object may use in this event: open, and not closed earlier in the event.
    fn own(&self, socket: u64) -> Result<(), SocketError> {
        let open = self.sockets.exists(&self.identity.id, socket);
        if open && !self.io.closing.contains(&socket) {
            Ok(())
        } else {
            Err(SocketError::NotFound)
        }
    }

    fn send(&mut self, socket: u64, out: Outgoing) -> SocketResult<()> {
        ws_wit(self.own(socket))?;
        self.io.outputs.push((socket, out));
        Ok(())
    }
}

impl wit_ws::Host for HostState {
    fn accept(&mut self, tags: Vec<String>) -> SocketResult<u64> {
        if !self.io.upgrade {
            return ws_wit(Err(SocketError::InvalidArgument(
                "accept is only valid while handling a WebSocket upgrade request".into(),
            )));
        }
        if self.io.accepted.is_some() {
            return ws_wit(Err(SocketError::InvalidArgument(
                "this request's socket was already accepted".into(),
            )));
        }
        let accepted = ws_wit(self.sockets.accept(self.identity.id, tags))?;
        let socket = accepted.socket;
        self.io.accepted = Some(accepted);
        Ok(socket)
    }

    fn get_sockets(&mut self, tag: Option<String>) -> Vec<u64> {
        let mut open = self.sockets.list(&self.identity.id, tag.as_deref());
        open.retain(|s| !self.io.closing.contains(s));
        open
    }

    fn send_text(&mut self, s: u64, text: String) -> SocketResult<()> {
        self.send(s, Outgoing::Text(text))
    }

    fn send_binary(&mut self, s: u64, data: Vec<u8>) -> SocketResult<()> {
        self.send(s, Outgoing::Binary(data))
    }

    fn close(&mut self, s: u64, code: u16, reason: String) -> SocketResult<()> {
        if !(code == 1000 || (3000..=4999).contains(&code)) {
            return ws_wit(Err(SocketError::InvalidArgument(format!(
                "close code {code}: use 1000 or 3000..=4999"
            ))));
        }
        if reason.len() > 123 {
            return ws_wit(Err(SocketError::LimitExceeded(format!(
                "a close reason of {} bytes; at most 123",
                reason.len()
            ))));
        }
        self.send(s, Outgoing::Close(code, reason))?;
        self.io.closing.insert(s);
        Ok(())
    }

    fn get_tags(&mut self, s: u64) -> SocketResult<Vec<String>> {
        ws_wit(
            self.own(s)
                .and_then(|()| self.sockets.tags(&self.identity.id, s)),
        )
    }

    fn set_attachment(&mut self, s: u64, data: Vec<u8>) -> SocketResult<()> {
        ws_wit(self.own(s))?;
        ws_wit(self.sockets.set_attachment(&self.identity.id, s, data))
    }

    fn get_attachment(&mut self, s: u64) -> SocketResult<Option<Vec<u8>>> {
        ws_wit(
            self.own(s)
                .and_then(|()| self.sockets.attachment(&self.identity.id, s)),
        )
    }

    fn set_auto_response(&mut self, pair: Option<wit_ws::AutoResponse>) -> SocketResult<()> {
        let pair = pair.map(|p| (p.request, p.response));
        ws_wit(self.sockets.set_auto_response(self.identity.id, pair))
    }

    fn get_auto_response(&mut self) -> Option<wit_ws::AutoResponse> {
        self.sockets
            .auto_response(&self.identity.id)
            .map(|(request, response)| wit_ws::AutoResponse { request, response })
    }

    fn get_auto_response_timestamp(&mut self, s: u64) -> SocketResult<Option<u64>> {
        ws_wit(
            self.own(s)
                .and_then(|()| self.sockets.auto_response_timestamp(&self.identity.id, s)),
        )
    }
}
