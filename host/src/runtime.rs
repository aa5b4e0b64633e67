//! wasmtime: the engine, the host side of the WIT imports, and running one event of one object
//! under its CPU and memory limits.
//!
//! A guest gets exactly the imports of the `durable-object` world plus the WASI interfaces a Rust
//! std guest links against; WASI grants nothing: no files, no environment, no network, a closed
//! stdin and discarded stdout/stderr.
//!
//! Limits of one event: fuel for guest instructions ([`EventLimits::fuel`]), a wall-clock
//! deadline for everything else ([`EventLimits::timeout`], enforced with epoch interruption, so
//! it also stops a guest that spends its time inside host calls), the linear memory cap, the
//! response body cap, and a token bucket on log lines ([`LOG_BURST`], [`LOG_LINES_PER_SEC`],
//! [`MAX_LOG_LINE`]).

use crate::classes::{Meter, WINDOW};
use crate::config::{EventLimits, FUEL_PER_MS};
use crate::memory::MemoryBudget;
use crate::names::{self, ObjectId};
use crate::scheduling::{Heavy, run_guest, with_long_slice};
use crate::storage::{self, ObjectStorage};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    AsContextMut, Config, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
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
use crate::websockets::{Accepted, Outgoing, Queued, SocketError, SocketEvent, Sockets};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the engine's epoch advances. At every tick a running guest checks its event's
/// deadline and, once it has run a whole tick, yields: to the async runtime (so other objects on
/// its worker thread run, whether it computes or spends its time in host calls, which burn no
/// fuel) and to the kernel (so a thread woken to answer a request runs next, even where
/// [`crate::scheduling`]'s slices are not supported). At 250 µs a busy guest adds at most about
/// that to the latency of other objects; at 1 ms the bystander of an infinite loop measured
/// 1.2 ms p99 against 0.3 ms. The ticking thread runs only while some guest code does.
const EPOCH_TICK: Duration = Duration::from_micros(250);

/// How often the epoch advances while an event of the background class runs (see
/// [`crate::classes`]). Its threads give their CPU to the kernel at every tick: a woken
/// foreground thread the kernel did not yet owe the CPU when it woke (it ran just before) gets it
/// then, instead of waiting for the scheduler's own tick (4 ms at 250 Hz). At [`EPOCH_TICK`] a
/// stack-overflow attack in the background still cost its bystander 2-3x its p99; at 50 µs,
/// 1.3-1.7x. The extra wake-ups (20,000 a second) happen only while such an event runs.
const BACKGROUND_TICK: Duration = Duration::from_micros(50);

/// Log lines an instance may write at once; then [`LOG_LINES_PER_SEC`] more each second. Lines
/// over the budget are dropped and counted, and the count is reported in one warning when the
/// next line gets through (or the instance ends). The host's log cannot be flooded by a guest.
pub const LOG_BURST: f64 = 100.0;

/// Log lines per second an instance may write once its burst is spent.
pub const LOG_LINES_PER_SEC: f64 = 10.0;

/// Longest log line, in bytes; a longer message is cut there and marked as truncated.
pub const MAX_LOG_LINE: usize = 16 << 10;

/// Why an event failed. Every variant discards the event's writes and the instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventError {
    #[error("the object exceeded its CPU limit ({0} ms)")]
    CpuLimit(u64),
    #[error("the object exceeded its memory limit ({0} MiB)")]
    MemoryLimit(usize),
    #[error("the object overflowed its stack")]
    StackOverflow,
    #[error("the object exceeded its time limit ({0:?} of wall-clock time)")]
    TimeLimit(Duration),
    #[error("the object returned a response body over the limit ({limit} bytes): {size} bytes")]
    ResponseTooLarge { size: usize, limit: usize },
    #[error("the object trapped: {0}")]
    Trap(String),
    #[error("the object failed: {0}")]
    Failed(String),
    #[error("the object could not be started: {0}")]
    Instantiate(String),
    #[error("the host is overloaded: {0}")]
    Overloaded(String),
}

impl EventError {
    /// Whether the event was stopped for exceeding one of the host's limits (as opposed to
    /// failing on its own, or trapping).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            EventError::CpuLimit(_)
                | EventError::MemoryLimit(_)
                | EventError::StackOverflow
                | EventError::TimeLimit(_)
                | EventError::ResponseTooLarge { .. }
        )
    }

    /// A stable, machine-readable name for the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::CpuLimit(_) => "cpu_limit_exceeded",
            EventError::MemoryLimit(_) => "memory_limit_exceeded",
            EventError::StackOverflow => "stack_overflow",
            EventError::TimeLimit(_) => "time_limit_exceeded",
            EventError::ResponseTooLarge { .. } => "response_too_large",
            EventError::Trap(_) => "trap",
            EventError::Failed(_) => "object_error",
            EventError::Instantiate(_) => "instantiate_failed",
            EventError::Overloaded(_) => "overloaded",
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
/// that usually follows (a Rust guest aborts when allocation fails). It also sees the memory grow
/// big, which makes the instance's code heavy (see [`Heavy`]).
struct MemoryCap {
    max_bytes: usize,
    hit: bool,
    /// The host's budget for all instances' memories, which this one's is counted in.
    budget: Arc<MemoryBudget>,
    /// Whether the budget refused a growth: the host, not the object, is out of memory.
    over_budget: bool,
    /// The linear memory's size now.
    bytes: usize,
    /// The instance's; kept here because the limiter is all the store hands the growth hook (the
    /// epoch callback marks it too).
    heavy: Heavy,
}

impl MemoryCap {
    /// Whether the memory is big enough that one fill, copy or teardown of it does not yield for
    /// a while.
    fn is_big(&self) -> bool {
        self.bytes >= HEAVY_MEMORY_BYTES
    }
}

/// Linear memory from which an instance's code takes the long time slice: see [`Heavy`]. A
/// `memory.fill` or a copy of this much takes about a millisecond.
const HEAVY_MEMORY_BYTES: usize = 16 << 20;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.hit |= !ok;
        if !ok {
            return Ok(false);
        }
        if !self.budget.grow(desired.saturating_sub(self.bytes)) {
            self.over_budget = true;
            return Ok(false);
        }
        self.bytes = desired;
        if self.is_big() {
            self.heavy.mark();
        }
        Ok(true)
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

impl Drop for MemoryCap {
    /// The instance is gone, and its memory back in the pool.
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The token bucket of an instance's log lines: see [`LOG_BURST`].
struct LogBucket {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last one written.
    dropped: u64,
    /// Who logs, for the warning about dropped lines.
    namespace: String,
    id: String,
}

impl LogBucket {
    fn new(identity: &ObjectIdentity) -> Self {
        LogBucket {
            tokens: LOG_BURST,
            refilled: Instant::now(),
            dropped: 0,
            namespace: identity.namespace.clone(),
            id: identity.id.to_hex()[..16].to_owned(),
        }
    }

    /// Whether one more line may be written at `now`; if so, reports the lines dropped before it.
    fn admit(&mut self, now: Instant) -> bool {
        let earned = now.duration_since(self.refilled).as_secs_f64() * LOG_LINES_PER_SEC;
        self.tokens = (self.tokens + earned).min(LOG_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return false;
        }
        self.tokens -= 1.0;
        self.report_dropped();
        true
    }

    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            let (ns, id) = (self.namespace.as_str(), self.id.as_str());
            tracing::warn!(
                ns,
                id,
                "{} log lines dropped (an object may log {LOG_BURST} lines at once, then \
                 {LOG_LINES_PER_SEC} a second)",
                self.dropped
            );
            self.dropped = 0;
        }
    }
}

impl Drop for LogBucket {
    fn drop(&mut self) {
        self.report_dropped();
    }
}

/// `message` cut to [`MAX_LOG_LINE`] bytes (at a character boundary), saying so.
fn truncate_line(mut message: String) -> String {
    let size = message.len();
    if size > MAX_LOG_LINE {
        let mut end = MAX_LOG_LINE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(&format!("... [truncated, {size} bytes]"));
    }
    message
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while some guest code runs (every
/// [`BACKGROUND_TICK`] while some of the background class does), until dropped.
///
/// An idle host has no guest to interrupt, so the thread parks instead of waking a thousand
/// times a second for nothing: [`EpochTicker::busy`] marks guest code running and wakes it.
struct EpochTicker {
    /// Guest calls in progress (events and instantiations).
    busy: AtomicUsize,
    /// Those of them on threads of the background class.
    background: AtomicUsize,
    /// Whether the thread is parked for want of guest code to interrupt (and not waiting for its
    /// next tick, which an unpark would only cost a wake-up).
    idle: AtomicBool,
    stop: AtomicBool,
    thread: std::thread::Thread,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<EpochTicker>>();
        let handle = std::thread::Builder::new()
            .name("dohost-epoch".into())
            .spawn(move || {
                let Ok(ticker) = rx.recv() else { return };
                while !ticker.stop.load(Ordering::Acquire) {
                    // Idle is announced before busy is checked, and busy counted before idle is
                    // checked (`busy`): one side sees the other, so no event waits for a tick
                    // from a parked thread. An unpark before the park makes it return at once.
                    ticker.idle.store(true, Ordering::SeqCst);
                    if ticker.busy.load(Ordering::SeqCst) == 0 {
                        std::thread::park();
                        continue;
                    }
                    ticker.idle.store(false, Ordering::SeqCst);
                    ticker.wait_for_tick();
                    engine.increment_epoch();
                }
            })?;
        let ticker = Arc::new(EpochTicker {
            busy: AtomicUsize::new(0),
            background: AtomicUsize::new(0),
            idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: handle.thread().clone(),
        });
        // The thread holds the ticker only once it exists; it ends when `stop` is set.
        let _ = tx.send(ticker.clone());
        Ok(ticker)
    }

    /// Waits one tick: [`EPOCH_TICK`], or [`BACKGROUND_TICK`] while a background event runs. A
    /// background event starting unparks the thread, so that its first tick is not a whole
    /// [`EPOCH_TICK`] late; any other unpark (a foreground event starting) does not shorten it,
    /// or events starting at a high rate would make the epoch tick at that rate.
    fn wait_for_tick(&self) {
        let started = Instant::now();
        loop {
            let tick = if self.background.load(Ordering::Acquire) > 0 {
                BACKGROUND_TICK
            } else {
                EPOCH_TICK
            };
            match tick.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                _ => return,
            }
        }
    }

    /// Marks guest code running until the guard is dropped; of the background class if called
    /// on one of its threads.
    fn busy(self: &Arc<Self>) -> Busy {
        let background = crate::scheduling::in_background();
        let first_background = background && self.background.fetch_add(1, Ordering::AcqRel) == 0;
        let first = self.busy.fetch_add(1, Ordering::SeqCst) == 0;
        if (first && self.idle.load(Ordering::SeqCst)) || first_background {
            self.thread.unpark();
        }
        Busy(self.clone(), background)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Guest code is running: the epoch must advance. The flag: on a background thread.
struct Busy(Arc<EpochTicker>, bool);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.1 {
            self.0.background.fetch_sub(1, Ordering::AcqRel);
        }
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
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
    pub outputs: Vec<(u64, Queued)>,
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
    log: LogBucket,
    /// When the running event must end.
    deadline: Instant,
    /// When the running event next yields to the async runtime (see [`EPOCH_TICK`]).
    next_yield: Instant,
    /// Whether the event was stopped at its deadline, to name the cause of the trap.
    timed_out: bool,
    /// Counts the guest instructions toward the namespace's share of the CPU (see [`Meter`]).
    meter: Meter,
    /// What was counted of the running call into the guest (instantiation or event).
    counted: GuestTime,
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
    ticker: Arc<EpochTicker>,
    budget: Arc<MemoryBudget>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// Address space the pool of linear memories may reserve, in all (16 TiB of the 128 TiB a 64-bit
/// process has): with many instances, each gets a smaller share.
const MEMORY_POOL_BYTES: u64 = 16 << 40;

/// Core instances, tables and linear memories one component may have. A Rust component has one
/// memory and a few core instances (its module plus adapter shims); these leave room for others.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const TABLES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 1;

/// Memory mappings the pool holds per live instance, at most: its stack slot is two (the stack
/// and its guard page, from start-up), and a memory slot once used keeps four (the image mapped
/// copy-on-write, the accessible heap, the reservation around them) until the process ends. With
/// no warm slots kept aside, slots are reused before fresh ones are taken, so the memory slots
/// ever used are at most the live instances at the busiest moment.
const MAPS_PER_INSTANCE: u64 = 2 + 4 * MEMORIES_PER_COMPONENT as u64;

/// Mappings left for everything else: threads' stacks, libraries, compiled code, the allocator's
/// arenas. The host at start holds about a hundred.
const MAPS_RESERVED: u64 = 4096;

/// The kernel's limit on a process's memory mappings (`vm.max_map_count`), where it can be read.
pub fn map_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Refuses a component with more linear memories than an instance slot holds: the pool, and the
/// mapping budget behind the live-instance cap, hold one each.
pub fn check_memories(component: &Component) -> Result<(), String> {
    let memories = component.resources_required().map_or(0, |r| r.num_memories);
    if memories > MEMORIES_PER_COMPONENT {
        return Err(format!(
            "it defines {memories} linear memories; dohost runs components with at most \
             {MEMORIES_PER_COMPONENT}"
        ));
    }
    Ok(())
}

/// The memory mappings `instances` live instances and the rest of the process need at most.
pub fn maps_needed(instances: usize) -> u64 {
    (instances as u64)
        .saturating_mul(MAPS_PER_INSTANCE)
        .saturating_add(MAPS_RESERVED)
}

/// The most live instances whose mappings fit under `map_limit`: past the kernel's limit a
/// mapping fails, and the allocator aborts the process when its own does.
pub fn max_instances_for_maps(map_limit: u64) -> usize {
    usize::try_from(map_limit.saturating_sub(MAPS_RESERVED) / MAPS_PER_INSTANCE)
        .unwrap_or(usize::MAX)
}

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
        .max_unused_warm_slots(0)
        .max_memory_size(memory_bytes.min(reservation as usize));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
}

impl Runtime {
    /// The engine for at most `max_instances` live instances at once.
    pub fn new(
        limits: EventLimits,
        max_instances: usize,
        budget: Arc<MemoryBudget>,
    ) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        let max_instances = u32::try_from(max_instances.max(1)).unwrap_or(u32::MAX);
        pooling(&mut config, max_instances, limits.memory_bytes);
        // A pooled stack is reused by other objects, possibly other tenants': zero it, which also
        // hands its pages back to the kernel, so a hibernated object keeps no stack resident.
        config.async_stack_zeroing(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        DurableObject::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Runtime {
            engine,
            linker,
            limits,
            ticker,
            budget,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> EventLimits {
        self.limits
    }

    /// The budget every instance's memory is counted in.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.budget
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

    /// Creates an instance of an object, counting its guest instructions (instantiation's
    /// included) on `meter`. On failure the storage is handed back.
    pub async fn instantiate(
        &self,
        pre: &ObjectPre,
        identity: ObjectIdentity,
        storage: ObjectStorage,
        sockets: Arc<Sockets>,
        meter: Meter,
    ) -> Result<Instance, (EventError, ObjectStorage)> {
        // Instantiating may first reset memory a big instance left in the pool: it starts heavy.
        let heavy = Heavy::default();
        heavy.reset(true);
        let state = HostState {
            log: LogBucket::new(&identity),
            identity,
            storage,
            sockets,
            io: SocketIo::default(),
            memory: MemoryCap {
                max_bytes: self.limits.memory_bytes,
                hit: false,
                budget: self.budget.clone(),
                over_budget: false,
                bytes: 0,
                heavy: heavy.clone(),
            },
            deadline: Instant::now() + self.limits.timeout,
            next_yield: Instant::now() + EPOCH_TICK,
            timed_out: false,
            meter,
            counted: GuestTime::new(self.limits.fuel, Instant::now()),
            // No preopened dirs, no environment, no arguments, and no network: the default
            // address check already refuses every address; switching the socket kinds off too
            // means no socket can even be created.
            wasi: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        // Instantiation has a time limit and a CPU budget of its own, as an event has.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut store| {
            let state = store.data_mut();
            let now = Instant::now();
            state.counted.tick(now, &state.meter);
            if now >= state.deadline {
                state.timed_out = true;
                return Err(wasmtime::Error::msg("the event's time limit passed"));
            }
            // See BACKGROUND_TICK.
            let background = crate::scheduling::in_background();
            if background {
                std::thread::yield_now();
            }
            // The epoch is global: a tick comes at a random moment of an event, so most events
            // that see one are short. Only one that has run a whole tick is a long one.
            if now < state.next_yield {
                return Ok(UpdateDeadline::Continue(1));
            }
            state.next_yield = now + EPOCH_TICK;
            state.memory.heavy.mark();
            if !background {
                // See EPOCH_TICK: the kernel's share of the yield.
                std::thread::yield_now();
            }
            Ok(UpdateDeadline::Yield(1))
        });
        if let Err(e) = store.set_fuel(self.limits.fuel) {
            return Err((
                EventError::Instantiate(format!("{e:#}")),
                store.into_data().storage,
            ));
        }
        let busy = self.ticker.busy();
        let deadline = store.data().deadline;
        let instantiated = call_guest(deadline, &heavy, pre.instantiate_async(&mut store)).await;
        drop(busy);
        count_fuel(&mut store);
        match instantiated {
            Ok(bindings) => Ok(Instance {
                store,
                bindings,
                limits: self.limits,
                ticker: self.ticker.clone(),
                heavy,
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
    ticker: Arc<EpochTicker>,
    /// Shared with the store's memory limiter and epoch callback, which mark it.
    heavy: Heavy,
}

impl Instance {
    /// Gives the next event its CPU and time budgets; the guard keeps the epoch ticking until
    /// the event ends.
    fn start_event(&mut self) -> Result<(Busy, Instant), EventError> {
        let now = Instant::now();
        let deadline = now + self.limits.timeout;
        let state = self.store.data_mut();
        state.deadline = deadline;
        state.next_yield = now + EPOCH_TICK;
        // What refused a growth in an earlier event names no cause of this one's failure.
        state.memory.hit = false;
        state.memory.over_budget = false;
        self.heavy.reset(self.store.data().memory.is_big());
        self.store.set_epoch_deadline(1);
        self.store
            .set_fuel(self.limits.fuel)
            .map_err(|e| EventError::Trap(format!("{e:#}")))?;
        self.store.data_mut().counted = GuestTime::new(self.limits.fuel, now);
        Ok((self.ticker.busy(), deadline))
    }

    /// Counts the guest instructions of the event that just ended, whatever its outcome, on the
    /// namespace's [`Meter`].
    pub fn count_fuel(&mut self) {
        count_fuel(&mut self.store);
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
        let (_busy, deadline) = self.start_event()?;
        self.store.data_mut().io.upgrade = upgrade;
        let handler = self.bindings.dohost_object_http_handler();
        let called = call_guest(
            deadline,
            &self.heavy,
            handler.call_fetch(&mut self.store, request),
        )
        .await;
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
        event: SocketEvent,
    ) -> Result<(), EventError> {
        let (_busy, deadline) = self.start_event()?;
        let handler = self.bindings.dohost_object_websocket_handler();
        let called = call_guest(deadline, &self.heavy, async {
            match event {
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
            }
        })
        .await;
        self.outcome(called)
    }

    /// Delivers the alarm; `retries` is how many deliveries failed before.
    pub async fn alarm(&mut self, retries: u32) -> Result<(), EventError> {
        let (_busy, deadline) = self.start_event()?;
        let info = AlarmInfo {
            retry_count: retries,
            is_retry: retries > 0,
        };
        let handler = self.bindings.dohost_object_alarm_handler();
        let called = call_guest(
            deadline,
            &self.heavy,
            handler.call_on_alarm(&mut self.store, info),
        )
        .await;
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

    /// The object's storage, to finish or discard the event.
    pub fn storage(&mut self) -> &mut ObjectStorage {
        &mut self.store.data_mut().storage
    }

    /// Drops the instance, keeping its storage (with any commits still in flight).
    pub fn into_storage(self) -> ObjectStorage {
        // Unmapping or zeroing a big linear memory does not yield.
        if self.store.data().memory.is_big() {
            with_long_slice(|| self.store.into_data().storage)
        } else {
            self.store.into_data().storage
        }
    }
}

/// Counts a call into the guest on the namespace's [`Meter`]: by its fuel when it ends, and a
/// call longer than a share's [`WINDOW`] also while it runs. A long event's namespace must go
/// to the background during it, so that its next events run there (counted at its end, a short
/// demotion would pass before they start). But the store's fuel is only brought up to date when
/// guest code calls out or returns, not at the epoch ticks where a loop can be seen; so past a
/// window the call is counted at every tick it is seen at, as the time since the last one in
/// fuel ([`FUEL_PER_MS`]), and at its end by its fuel less what the ticks counted. (Counted by
/// ticks from the start, short events would count their host work as guest code: a debug
/// build's counter reads went past the share.)
struct GuestTime {
    /// The fuel the call started with.
    budget: u64,
    started: Instant,
    /// Fuel counted at ticks.
    ticked: u64,
    /// The last tick the call was seen at.
    last: Option<Instant>,
}

impl GuestTime {
    fn new(budget: u64, started: Instant) -> GuestTime {
        GuestTime {
            budget,
            started,
            ticked: 0,
            last: None,
        }
    }

    /// An epoch tick found the guest running: it ran since the last one, up to a tick's length
    /// (longer gaps are waits: a yield to the runtime, or the thread preempted).
    fn tick(&mut self, now: Instant, meter: &Meter) {
        if now.saturating_duration_since(self.started) < WINDOW {
            return;
        }
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let ran = now.saturating_duration_since(last).min(EPOCH_TICK);
        let fuel = u64::try_from(ran.as_nanos()).unwrap_or(u64::MAX) * FUEL_PER_MS / 1_000_000;
        self.ticked += fuel;
        meter.add(fuel);
    }
}

/// Counts what the call into the guest that just ended ran, beyond what its ticks counted, and
/// starts the count afresh from the fuel left (the next event's start sets it anew).
fn count_fuel(store: &mut impl AsContextMut<Data = HostState>) {
    let mut store = store.as_context_mut();
    let left = store.get_fuel().unwrap_or(0);
    let counted = &mut store.data_mut().counted;
    let used = counted.budget.saturating_sub(left);
    let unticked = used.saturating_sub(counted.ticked);
    *counted = GuestTime::new(left, counted.started);
    store.data().meter.add(unticked);
}

/// Runs a call into guest code: under the event's deadline, and with the long time slice once it
/// is heavy (see [`crate::scheduling`]).
///
/// The epoch callback enforces the deadline while guest code runs; this enforces it while the
/// guest waits in a host call (a WASI sleep, or a poll on a clock), where no guest code runs to
/// check it. Dropping the call there is safe: an event that failed drops its instance.
async fn call_guest<T>(
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
fn classify(e: &wasmtime::Error, store: &Store<HostState>, limits: EventLimits) -> EventError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => EventError::CpuLimit(limits.fuel / crate::config::FUEL_PER_MS),
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
        use tracing::Level;
        // Lines the host's filter drops anyway cost nothing and spend no budget.
        let enabled = match level {
            logging::Level::Trace => tracing::enabled!(target: "dohost::guest", Level::TRACE),
            logging::Level::Debug => tracing::enabled!(target: "dohost::guest", Level::DEBUG),
            logging::Level::Info => tracing::enabled!(target: "dohost::guest", Level::INFO),
            logging::Level::Warn => tracing::enabled!(target: "dohost::guest", Level::WARN),
            logging::Level::Error => tracing::enabled!(target: "dohost::guest", Level::ERROR),
        };
        if !enabled || !self.log.admit(Instant::now()) {
            return;
        }
        let message = truncate_line(message);
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

    /// Queues `out` behind the output gate, counted in the socket's backlog from now on.
    fn send(&mut self, socket: u64, out: Outgoing) -> SocketResult<()> {
        if self.io.closing.contains(&socket) {
            return ws_wit(Err(SocketError::NotFound));
        }
        if let Some(queued) = ws_wit(self.sockets.queue(&self.identity.id, socket, out))? {
            self.io.outputs.push((socket, queued));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_line_is_cut_at_a_character_boundary() {
        let short = "short".to_owned();
        assert_eq!(truncate_line(short.clone()), short);
        // 'é' is two bytes: the cut must not split it.
        let long = format!("x{}", "é".repeat(MAX_LOG_LINE));
        let cut = truncate_line(long.clone());
        assert!(cut.len() <= MAX_LOG_LINE + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("... [truncated, {} bytes]", long.len())));
        assert!(long.starts_with(cut.split("... [truncated").next().unwrap()));
    }

    #[test]
    fn the_log_bucket_admits_a_burst_then_drops_and_counts() {
        let identity = ObjectIdentity {
            namespace: "ns".into(),
            name: "o".into(),
            id: ObjectId::new("ns", "o"),
        };
        let mut bucket = LogBucket::new(&identity);
        let start = bucket.refilled;
        let admitted = (0..1000).filter(|_| bucket.admit(start)).count();
        assert_eq!((admitted, bucket.dropped), (100, 900));
        // A second later ten more get through; the first reports and resets the count.
        let later = start + Duration::from_secs(1);
        assert!(bucket.admit(later));
        assert_eq!(bucket.dropped, 0);
        let more = (0..100).filter(|_| bucket.admit(later)).count();
        assert_eq!((more, bucket.dropped), (9, 91));
        // Never more than the burst, however long the quiet.
        let much_later = later + Duration::from_secs(3600);
        let burst = (0..1000).filter(|_| bucket.admit(much_later)).count();
        assert_eq!(burst, 100);
    }
}
