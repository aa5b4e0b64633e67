//! The engine and linkers every instance shares, and instantiating an object or a worker.

use super::bindings::{v0_2, v0_3};
use super::epoch::{EPOCH_TICK, EpochTicker};
use super::error::EventError;
use super::imports;
use super::instance::{Bindings, Instance, Sharing, call_guest, classify, count_fuel};
use super::limits::{LogBucket, MemoryCap};
use super::outgoing_send::{Outbound, OutboundHooks};
use super::pool;
use super::state::{Guest, HostState};
use crate::config::{EventLimits, OUTBOUND_MAX_RESPONSE_BODY};
use crate::cpu_share::Meter;
use crate::memory::MemoryBudget;
use crate::metrics::{Metrics, OutboundLabels};
use crate::scheduling::{Heavy, in_background};
use crate::sockets::Sockets;
use crate::storage::ObjectStorage;
use crate::tail::Tail;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Component, ComponentExportIndex, Linker};
use wasmtime::{Config, Engine, Store, StoreContextMut, UpdateDeadline};

/// What a component is deployed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A Durable Object class: the world `durable-object` of any version the host serves.
    Object,
    /// An app's worker: the world `worker` or `http-worker` of 0.3.0.
    Worker,
}

/// A checked, compiled component, ready to instantiate quickly.
#[derive(Clone)]
pub enum Pre {
    ObjectV0_2(v0_2::DurableObjectPre<HostState>),
    ObjectV0_3(v0_3::DurableObjectPre<HostState>),
    /// A class of the world `shared-object`: the handlers of 0.3.0's `durable-object`, and the
    /// export of `sharing`'s `switch-object`.
    SharedObject(v0_3::DurableObjectPre<HostState>, ComponentExportIndex),
    Worker(v0_3::worker::WorkerPre<HostState>),
    HttpWorker(v0_3::http_worker::HttpWorkerPre<HostState>),
}

impl Pre {
    /// Whether this is an http-worker, served through wasi:http with streamed bodies.
    pub fn is_http_worker(&self) -> bool {
        matches!(self, Pre::HttpWorker(_))
    }

    /// Whether the class lets the host serve many of its objects from one instance (the world
    /// `shared-object`).
    pub fn shares_instances(&self) -> bool {
        matches!(self, Pre::SharedObject(..))
    }
}

/// The wasmtime engine and linkers, shared by every instance.
pub struct Runtime {
    engine: Engine,
    objects: Linker<HostState>,
    workers: Linker<HostState>,
    limits: EventLimits,
    ticker: Arc<EpochTicker>,
    budget: Arc<MemoryBudget>,
    outbound: Arc<Outbound>,
    /// What the host counts as it serves: every event runs on this engine.
    metrics: Metrics,
    /// Where guests' log lines go besides the host's log, for watchers.
    tail: Tail,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
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
        pool::configure(
            &mut config,
            max_instances,
            limits.memory_bytes,
            budget.limit,
        );
        // A pooled stack is reused by other objects, possibly other tenants': zero it, which also
        // hands its pages back to the kernel, so a hibernated object keeps no stack resident.
        config.async_stack_zeroing(true);
        let engine = Engine::new(&config)?;
        let mut objects = Linker::new(&engine);
        imports::add_object_imports(&mut objects)?;
        let mut workers = Linker::new(&engine);
        imports::add_worker_imports(&mut workers)?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Runtime {
            engine,
            objects,
            workers,
            limits,
            ticker,
            budget,
            metrics: Metrics::default(),
            tail: Tail::default(),
            outbound: Arc::new(Outbound::new()?),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> EventLimits {
        self.limits
    }

    /// What the host counts as it serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The live tail.
    pub fn tail(&self) -> &Tail {
        &self.tail
    }

    /// Outbound HTTP requests sent, by app and outcome.
    pub fn outbound_requests(&self) -> Family<OutboundLabels, Counter> {
        self.outbound.requests.clone()
    }

    /// The budget every instance's memory is counted in.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Checks that `component` implements the world of `role`: everything it imports is
    /// granted, and it exports the handlers. A worker may implement either worker world; one
    /// that exports wasi:http's `incoming-handler` is an http-worker. The error says what is
    /// missing.
    pub fn prepare(&self, component: &Component, role: Role) -> Result<Pre, String> {
        let linker = match role {
            Role::Object => &self.objects,
            Role::Worker => &self.workers,
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| format!("{e:#}"))?;
        let exports = |wanted: fn(&str) -> bool| {
            component
                .component_type()
                .exports(&self.engine)
                .any(|(name, _)| wanted(name))
        };
        let checked = match role {
            // The version an object targets is the one of the handler it exports.
            Role::Object if exports(|name| name == "dohost:object/http-handler@0.2.0") => {
                v0_2::DurableObjectPre::new(pre).map(Pre::ObjectV0_2)
            }
            Role::Object if exports(|name| name == SHARING) => {
                let switch = component
                    .get_export_index(None, SHARING)
                    .and_then(|sharing| component.get_export_index(Some(&sharing), SWITCH_OBJECT))
                    .ok_or_else(|| format!("its `{SHARING}` has no `{SWITCH_OBJECT}`"))?;
                v0_3::DurableObjectPre::new(pre).map(|pre| Pre::SharedObject(pre, switch))
            }
            Role::Object => v0_3::DurableObjectPre::new(pre).map(Pre::ObjectV0_3),
            Role::Worker if exports(|name| name.starts_with(INCOMING_HANDLER)) => {
                v0_3::http_worker::HttpWorkerPre::new(pre).map(Pre::HttpWorker)
            }
            Role::Worker if exports(|name| name == HTTP_HANDLER) => {
                v0_3::worker::WorkerPre::new(pre).map(Pre::Worker)
            }
            Role::Worker => {
                return Err(format!(
                    "it exports neither `{HTTP_HANDLER}` (world `worker`) nor \
                     `{INCOMING_HANDLER}x` (world `http-worker`)"
                ));
            }
        };
        checked.map_err(|e| format!("{e:#}"))
    }

    /// Creates an instance of an object or a worker, counting its guest instructions
    /// (instantiation's included) on `meter`. On failure an object's storage is handed back.
    pub async fn instantiate(
        &self,
        pre: &Pre,
        guest: Guest,
        sockets: Arc<Sockets>,
        meter: Meter,
    ) -> Result<Instance, (EventError, Option<ObjectStorage>)> {
        // Instantiating may first reset memory a big instance left in the pool: it starts heavy.
        let heavy = Heavy::default();
        heavy.reset(true);
        let memory = MemoryCap::new(self.limits.memory_bytes, self.budget.clone(), heavy.clone());
        // An http-worker's outbound response bodies stream through it to its client, so only
        // the deadline ends them; everyone else's are read whole, and capped.
        let body_cap = (!pre.is_http_worker()).then_some(OUTBOUND_MAX_RESPONSE_BODY);
        let outbound = OutboundHooks::new(self.outbound.clone(), body_cap);
        let log = LogBucket::new(&guest.identity, self.tail.clone());
        let state = HostState::new(guest, sockets, memory, meter, log, self.limits, outbound);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        // Instantiation has a time limit and a CPU budget of its own, as an event has.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(on_tick);
        if let Err(e) = store.set_fuel(self.limits.fuel) {
            return Err((
                EventError::Instantiate(format!("{e:#}")),
                store.into_data().storage,
            ));
        }
        let busy = self.ticker.busy();
        let deadline = store.data().deadline;
        let instantiated = call_guest(deadline, &heavy, pre.instantiate(&mut store)).await;
        drop(busy);
        count_fuel(&mut store);
        match instantiated {
            Ok((bindings, sharing)) => Ok(Instance::new(
                store,
                bindings,
                sharing,
                self.limits,
                self.ticker.clone(),
                heavy,
            )),
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

impl Pre {
    /// Instantiates the component in `store`, with the bindings of its world, and for a shared
    /// class its `switch-object`.
    async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<(Bindings, Option<Sharing>)> {
        Ok(match self {
            Pre::ObjectV0_2(pre) => (
                Bindings::ObjectV0_2(pre.instantiate_async(store).await?),
                None,
            ),
            Pre::ObjectV0_3(pre) => (
                Bindings::ObjectV0_3(pre.instantiate_async(store).await?),
                None,
            ),
            Pre::SharedObject(pre, switch) => {
                let instance = pre.instance_pre().instantiate_async(&mut *store).await?;
                let bindings = v0_3::DurableObject::new(&mut *store, &instance)?;
                let switch = instance.get_typed_func(&mut *store, switch)?;
                (Bindings::ObjectV0_3(bindings), Some(Sharing::new(switch)))
            }
            Pre::Worker(pre) => (Bindings::Worker(pre.instantiate_async(store).await?), None),
            Pre::HttpWorker(pre) => (
                Bindings::HttpWorker(pre.instantiate_async(store).await?),
                None,
            ),
        })
    }
}

/// What an epoch tick does to the running call into the guest: counts it toward its namespace's
/// share, stops it past its deadline, and makes a call that has run a whole tick yield.
fn on_tick(mut store: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data_mut();
    let now = Instant::now();
    state.counted.tick(now, &state.meter);
    if now >= state.deadline {
        state.timed_out = true;
        return Err(wasmtime::Error::msg("the event's time limit passed"));
    }
    let background = in_background();
    if background {
        std::thread::yield_now();
    }
    // The epoch is global: a tick comes at a random moment of an event, so most events that see
    // one are short. Only one that has run a whole tick is a long one; time it waited in host
    // calls (a stub call waiting for its callee, say) is not running.
    state.next_yield += state.memory.heavy.take_waited();
    if now < state.next_yield {
        return Ok(UpdateDeadline::Continue(1));
    }
    state.next_yield = now + EPOCH_TICK;
    state.memory.heavy.mark();
    if !background {
        // The kernel's share of the yield: a woken thread that answers a request runs next.
        std::thread::yield_now();
    }
    Ok(UpdateDeadline::Yield(1))
}

/// The interface a `shared-object` class exports besides the handlers, and its function.
const SHARING: &str = "dohost:object/sharing@0.3.0";
const SWITCH_OBJECT: &str = "switch-object";

/// The export of the world `worker`.
const HTTP_HANDLER: &str = "dohost:object/http-handler@0.3.0";
/// The export of the world `http-worker`, in any 0.2 version of wasi:http: wasmtime finds a
/// semver-compatible export under 0.2.12's name.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2.";
