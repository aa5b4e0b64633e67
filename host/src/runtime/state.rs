//! The store data of one instance: who it is, its storage and sockets, and its running event's
//! limits and meters.

use super::epoch::EPOCH_TICK;
use super::limits::{LogBucket, MemoryCap};
use super::metering::FuelCount;
use crate::config::EventLimits;
use crate::cpu_share::Meter;
use crate::names::ObjectIdentity;
use crate::sockets::{Accepted, Queued, Sockets};
use crate::storage::ObjectStorage;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What one event did with WebSockets, handed to the object's event loop when it ends.
#[derive(Default)]
pub struct SocketIo {
    /// Whether the request being handled asks for a WebSocket upgrade.
    pub(super) upgrade: bool,
    /// The socket accepted by this request, if any.
    pub accepted: Option<Accepted>,
    /// Sends and closes, in order, held until the output gate opens.
    pub outputs: Vec<(u64, Queued)>,
    /// Sockets closed during the event, already hidden from `get-sockets`.
    pub(super) closing: HashSet<u64>,
}

/// The store data of one instance.
pub struct HostState {
    pub(super) identity: ObjectIdentity,
    pub(super) storage: ObjectStorage,
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
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// The state of a new instance, its first event (instantiation) given `limits`.
    pub(super) fn new(
        identity: ObjectIdentity,
        storage: ObjectStorage,
        sockets: Arc<Sockets>,
        memory: MemoryCap,
        meter: Meter,
        limits: EventLimits,
    ) -> Self {
        let now = Instant::now();
        HostState {
            log: LogBucket::new(&identity),
            identity,
            storage,
            sockets,
            io: SocketIo::default(),
            memory,
            deadline: now + limits.timeout,
            next_yield: now + EPOCH_TICK,
            timed_out: false,
            meter,
            counted: FuelCount::new(limits.fuel, now),
            // No preopened dirs, no environment, no arguments, and no network: the default
            // address check already refuses every address; switching the socket kinds off too
            // means no socket can even be created.
            wasi: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
        }
    }
}
