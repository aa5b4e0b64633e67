//! The store data of one instance: who it is, its storage and sockets, its app, and its running
//! event's limits and meters.

use super::calls::{Calls, Chain};
use super::epoch::EPOCH_TICK;
use super::limits::{LogBucket, MemoryCap};
use super::metering::FuelCount;
use super::outgoing_send::OutboundHooks;
use crate::config::EventLimits;
use crate::cpu_share::Meter;
use crate::env::Env;
use crate::names::ObjectIdentity;
use crate::sockets::{Handback, Left, Queued, Sockets};
use crate::storage::{Committer, ObjectStorage, StorageError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What one event did with WebSockets, handed to the object's event loop when it ends.
#[derive(Default)]
pub struct SocketIo {
    /// Whether the event is a request (which may open a stream).
    pub(super) in_request: bool,
    /// Whether the request being handled asks for a WebSocket upgrade.
    pub(super) upgrade: bool,
    /// The socket this request accepted, or the stream it answers with, if any (in a cluster,
    /// perhaps another node's, through a stub call).
    pub accepted: Option<Handback>,
    /// Sends and closes, in order, held until the output gate opens.
    pub outputs: Vec<(u64, Queued)>,
    /// Sockets closed during the event, already hidden from `get-sockets`.
    pub(super) closing: HashSet<u64>,
    /// The socket whose close or error event this is, and what it left: its tags and attachment
    /// stay readable during the event.
    pub(super) left: Option<(u64, Left)>,
}

/// Who an instance serves: an object with its storage, or a worker (its identity then names its
/// app, with an empty object name).
pub struct Guest {
    pub identity: ObjectIdentity,
    /// The object's storage, and the committer that flushes it before a call; `None` for a
    /// worker.
    pub storage: Option<(ObjectStorage, Committer)>,
    pub env: Arc<Env>,
    pub calls: Arc<dyn Calls>,
}

/// The store data of one instance.
pub struct HostState {
    pub(super) identity: ObjectIdentity,
    pub(super) storage: Option<ObjectStorage>,
    pub(super) committer: Option<Committer>,
    pub(super) env: Arc<Env>,
    pub(super) calls: Arc<dyn Calls>,
    /// The objects waiting on the running event, this one last: a call to one of them is a
    /// cycle.
    pub(super) chain: Chain,
    /// The chain of an event no call started: this object alone, or nothing for a worker.
    pub(super) home_chain: Chain,
    /// Why a stub call of the running event was refused as overloaded, if one was: an event
    /// that then fails is the host's lack of room, not the guest's fault (a 503, not a 500).
    pub(super) call_overloaded: Option<String>,
    pub(super) sockets: Arc<Sockets>,
    pub(super) io: SocketIo,
    pub(super) memory: MemoryCap,
    pub(super) log: LogBucket,
    /// When the running event must end.
    pub(super) deadline: Instant,
    /// When the running event next yields to the async runtime (see [`EPOCH_TICK`]).
    pub(super) next_yield: Instant,
    /// Whether the event was stopped at its deadline, to name the cause of the trap.
    pub(super) timed_out: bool,
    /// Counts the guest instructions toward the namespace's share of the CPU (see [`Meter`]).
    pub(super) meter: Meter,
    /// What was counted of the running call into the guest (instantiation or event).
    pub(super) counted: FuelCount,
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    /// wasi:http's state: an http-worker's request and response, and outgoing requests, sent
    /// through [`OutboundHooks`].
    pub(super) http: WasiHttpCtx,
    pub(super) outbound: OutboundHooks,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl HostState {
    /// The state of a new instance, its first event (instantiation) given `limits`.
    pub(super) fn new(
        guest: Guest,
        sockets: Arc<Sockets>,
        memory: MemoryCap,
        meter: Meter,
        log: LogBucket,
        limits: EventLimits,
        outbound: OutboundHooks,
    ) -> Self {
        let now = Instant::now();
        let Guest {
            identity,
            storage,
            env,
            calls,
        } = guest;
        let (storage, committer) = storage.unzip();
        HostState {
            log,
            chain: Chain::default(),
            call_overloaded: None,
            home_chain: if storage.is_some() {
                Chain::of(&identity)
            } else {
                Chain::default()
            },
            identity,
            storage,
            committer,
            env,
            calls,
            sockets,
            io: SocketIo::default(),
            memory,
            deadline: now + limits.timeout,
            next_yield: now + EPOCH_TICK,
            timed_out: false,
            meter,
            counted: FuelCount::new(limits.fuel, now),
            // No preopened dirs, no environment, no arguments, and no sockets: the default
            // address check already refuses every address; switching the socket kinds off too
            // means no socket can even be created. (Outbound HTTP does not go through WASI's
            // sockets: see `imports::outgoing_http`.)
            wasi: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound,
        }
    }
}

impl HostState {
    /// Starts an event no call started.
    pub(super) fn reset_chain(&mut self) {
        self.chain = self.home_chain.clone();
    }

    /// The object's storage; a worker has none (its world does not import `storage`, so only a
    /// host bug gets this error).
    pub(super) fn storage(&mut self) -> Result<&mut ObjectStorage, StorageError> {
        self.storage
            .as_mut()
            .ok_or_else(|| StorageError::Internal("a worker has no storage".into()))
    }
}
