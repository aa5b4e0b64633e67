//! The knobs of a host, with the defaults the README documents.

use crate::storage::StorageLimits;
use std::path::PathBuf;
use std::time::Duration;

/// Fuel per millisecond of guest CPU. Fuel counts WebAssembly instructions; on the 2-core
/// machines this was measured on a guest runs 8 to 20 million of them per millisecond, so one
/// millisecond of `--cpu-limit` buys 10 million instructions. Time spent inside host calls
/// (storage, logging) is not counted.
pub const FUEL_PER_MS: u64 = 10_000_000;

/// Wall-clock time one event may take by default. Fuel does not count time spent inside host
/// calls, so a guest looping over expensive imports would otherwise hold its object (and a worker
/// thread) for ever; 30 s is about the wall time of the default CPU budget on a quiet machine,
/// so it stops such an event without cutting short an honest one.
pub const DEFAULT_EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response body an object may return by default, in bytes: the same as the request body.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 16 << 20;

/// What one event of one object may use.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Guest instructions per event, see [`FUEL_PER_MS`].
    pub fuel: u64,
    /// Largest linear memory of an instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time of one event, host calls included.
    pub timeout: Duration,
    /// Largest response body of a `fetch`, in bytes.
    pub max_response_body: usize,
}

impl EventLimits {
    /// Limits from a CPU budget in milliseconds and a memory cap in MiB; the time limit and the
    /// response body cap are the defaults.
    pub fn new(cpu_limit_ms: u64, memory_limit_mib: u64) -> Self {
        EventLimits {
            fuel: cpu_limit_ms.saturating_mul(FUEL_PER_MS),
            memory_bytes: usize::try_from(memory_limit_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            timeout: DEFAULT_EVENT_TIMEOUT,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
        }
    }
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits::new(30_000, 128)
    }
}

/// Everything a host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The data dir: the database, the compiled-component cache and the admin token.
    pub data_dir: PathBuf,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// How long an instance may sit idle before it is dropped.
    pub idle_timeout: Duration,
    /// Most live instances at once; past it the least recently used idle ones are dropped. The
    /// default fits the kernel's limit on memory mappings: see [`default_max_live_objects`].
    pub max_live_objects: usize,
    /// Most bytes of linear memory all live instances may hold together; past it the least
    /// recently used idle ones are dropped, and growth that cannot be made room for fails its
    /// event as `overloaded`. Default half the machine's memory.
    pub max_memory: usize,
    /// Largest request body sent to an object, in bytes.
    pub max_request_body: usize,
    /// Largest component accepted by deploy, in bytes.
    pub max_component_bytes: usize,
    /// Largest incoming WebSocket message, in bytes; a larger one closes the socket with 1009.
    pub max_ws_message: usize,
    /// Most bytes sent to one WebSocket and not yet written to its connection (behind the output
    /// gate or waiting for the client to read); past it the socket is closed with 1008.
    pub max_ws_backlog: usize,
    /// Most such bytes for all sockets together; past it the sockets with the most waiting are
    /// closed first.
    pub max_ws_backlog_total: usize,
    /// How long a client may take to send a request's head (request line and headers), from when
    /// the connection waits for it: a client that sends part of a head and stalls is cut off,
    /// without an answer. An idle keep-alive connection is closed after this long too. The default,
    /// 10 s: a slow link sends a few KiB in well under that.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, from the end of its head; a body not
    /// all arrived by then is answered 408 `body_timeout`. For requests to objects the deadline
    /// is for the whole body, so trickling cannot stretch it: the default, 30 s, takes the
    /// largest default request body, 16 MiB, at 0.6 MB/s. A deploy upload (up to 128 MiB, from
    /// the admin only) may take as long as it keeps coming: this is the longest wait for each
    /// next part of it.
    pub body_timeout: Duration,
    pub event: EventLimits,
    pub storage: StorageLimits,
}

impl HostConfig {
    /// The defaults, for a data dir and token.
    pub fn new(data_dir: PathBuf, admin_token: String) -> Self {
        HostConfig {
            data_dir,
            admin_token,
            idle_timeout: Duration::from_secs(30),
            max_live_objects: default_max_live_objects(),
            max_memory: usize::try_from(machine_memory() / 2).unwrap_or(usize::MAX),
            max_request_body: 16 << 20,
            max_component_bytes: 128 << 20,
            max_ws_message: 1 << 20,
            max_ws_backlog: 4 << 20,
            max_ws_backlog_total: usize::try_from(machine_memory() / 16).unwrap_or(usize::MAX),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            event: EventLimits::default(),
            storage: StorageLimits::default(),
        }
    }
}

/// At most 10,000 live instances, fewer where the kernel's limit on memory mappings
/// (`vm.max_map_count`) would not hold their mappings: see [`crate::memory::max_instances_for_maps`].
pub fn default_max_live_objects() -> usize {
    let fits = crate::memory::map_limit().map_or(usize::MAX, crate::memory::max_instances_for_maps);
    fits.clamp(1, 10_000)
}

/// The memory the host may count on, in bytes: its cgroup's limit where one is set (a container,
/// a systemd unit with `MemoryMax`), else the machine's RAM. Defaults that bound memory as a whole
/// are shares of it.
pub fn machine_memory() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        // Not Linux, or no /proc: assume a small machine.
        .unwrap_or(4 << 30);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    cgroup.map_or(ram, |limit| limit.min(ram))
}
