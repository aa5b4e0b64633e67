//! The knobs of a host, with the defaults the README documents.

use crate::storage::StorageLimits;
use std::path::PathBuf;
use std::time::Duration;

/// Fuel per millisecond of guest CPU. Fuel counts WebAssembly instructions; on the 2-core
/// machines this was measured on a guest runs 8 to 20 million of them per millisecond, so one
/// millisecond of `--cpu-limit` buys 10 million instructions. Time spent inside host calls
/// (storage, logging) is not counted.
pub const FUEL_PER_MS: u64 = 10_000_000;

// The defaults of every knob, written once: the CLI's flags (`main.rs`), `HostConfig::new` and
// the README's CLI section (checked by a test in `main.rs`) all take them from here.

/// Address `serve` listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The data dir of `serve`, and where admin commands look for the token.
pub const DEFAULT_DATA_DIR: &str = "./dohost-data";
/// The admin commands' host.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787";
/// Seconds an instance may sit idle before it is dropped.
pub const DEFAULT_IDLE_TIMEOUT: Seconds = Seconds::new(30);
/// CPU budget of one event, in milliseconds of guest execution: 15 to 40 s of pure computation.
pub const DEFAULT_CPU_LIMIT_MS: u64 = 30_000;
/// Wall-clock time one event may take. Fuel does not count time inside host calls, so a guest
/// looping over expensive imports would otherwise hold its object for ever; this is about the
/// wall time of the default CPU budget, so it does not cut short an honest event.
pub const DEFAULT_EVENT_TIMEOUT: Seconds = Seconds::new(30);
/// Largest linear memory of one instance, in MiB.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 128;
/// Largest request body delivered to an object, in bytes.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 16 << 20;
/// Largest response body an object may return, in bytes: the same as the request body.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 16 << 20;
/// Largest component accepted by deploy, in bytes.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 128 << 20;
/// Largest incoming WebSocket message, in bytes.
pub const DEFAULT_MAX_WS_MESSAGE: usize = 1 << 20;
/// Most bytes waiting for one WebSocket's client.
pub const DEFAULT_MAX_WS_BACKLOG: usize = 4 << 20;
/// Most events one object may have waiting or running: a hot object serves thousands a second,
/// so this is a second or more of its work, while a flood to a slow one is refused at once.
pub const DEFAULT_MAX_OBJECT_QUEUE: usize = 1_000;
/// Most bytes of requests and messages waiting for one object: two of the largest request bodies.
pub const DEFAULT_MAX_OBJECT_QUEUE_BYTES: usize = 32 << 20;
/// Seconds a client may take to send a request's head: a slow link sends a few KiB well within.
pub const DEFAULT_HEADER_TIMEOUT: Seconds = Seconds::new(10);
/// Seconds a client may take to send a request's body: the largest default body at 0.6 MB/s.
pub const DEFAULT_BODY_TIMEOUT: Seconds = Seconds::new(30);
/// Most bytes (keys plus values) one object may store.
pub const DEFAULT_MAX_OBJECT_STORAGE: u64 = crate::storage::DEFAULT_MAX_OBJECT_BYTES;
/// The database's page cache, in MiB: redb's own default. It keeps the pages last written as well
/// as those read, so a host that writes a lot grows by up to this much.
pub const DEFAULT_STORAGE_CACHE_MIB: u64 = 1024;

// Outbound HTTP (`wasi:http/outgoing-handler`): fixed limits, not flags.

/// Largest response body of one outbound request, in bytes: as large as an object's own
/// response may be.
pub const OUTBOUND_MAX_RESPONSE_BODY: u64 = 16 << 20;
/// Outbound requests one instance may have in flight at once: enough for a fan-out, few enough
/// that a guest cannot take its app's share alone.
pub const OUTBOUND_MAX_PER_INSTANCE: usize = 8;
/// Outbound requests all instances of one app may have in flight at once. Object names are free,
/// so a client could otherwise wake as many fetching instances as it likes.
pub const OUTBOUND_MAX_PER_APP: usize = 64;
/// Outbound requests the whole host may have in flight at once: each may hold a socket and a
/// blocking thread for its DNS lookup (tokio has 512), which the host's own work needs too.
pub const OUTBOUND_MAX_TOTAL: usize = 256;
/// Longest time to resolve, connect and finish the TLS and HTTP handshakes of one request; a
/// guest may ask for less.
pub const OUTBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An outbound request ends this long before its event's deadline, so that the guest gets the
/// time-out error with time left to answer, instead of the event failing as it waits.
pub const OUTBOUND_DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// The bound on one object's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most events waiting or running.
    pub events: usize,
    /// Most bytes of requests and messages waiting or running. One event larger than this alone
    /// passes when nothing else waits, so that it is refused by its own limits instead.
    pub bytes: usize,
}

/// A duration given in whole or fractional seconds, as the CLI takes and shows it: positive, and
/// at most a year (so that it fits every deadline computed from it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

impl Seconds {
    pub const fn new(secs: u64) -> Self {
        Seconds(Duration::from_secs(secs))
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The PostgreSQL database, `postgres://user@host:port/db`.
    pub url: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Where the other nodes reach this one, `http://host:port`.
    pub advertise: String,
    /// What node-to-node requests carry, to be believed.
    pub secret: String,
    /// How long a node's heartbeat holds its shards: after it, a silent node's shards move.
    pub lease: Duration,
}

/// A cluster node's lease, in seconds (`--lease`): long enough to ride out a pause of the
/// database or the network, short enough that a dead node's objects move soon.
pub const DEFAULT_LEASE: Seconds = Seconds::new(5);

impl std::str::FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 3.2e7 => {
                Ok(Seconds(Duration::from_secs_f64(s)))
            }
            _ => Err(format!(
                "{text:?} is not a positive number of seconds, at most a year"
            )),
        }
    }
}

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
            timeout: DEFAULT_EVENT_TIMEOUT.0,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
        }
    }
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits::new(DEFAULT_CPU_LIMIT_MS, DEFAULT_MEMORY_LIMIT_MIB)
    }
}

/// Everything a host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The data dir: the database, the compiled-component cache and the admin token.
    pub data_dir: PathBuf,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// Where compiled components are kept (the data dir's `cache` unless set).
    pub compile_cache: PathBuf,
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
    /// Most bytes of request bodies the host holds for all requests together; past it, it reads
    /// no further body until some are answered (the clients wait in TCP backpressure), and a
    /// body that cannot start within the body timeout is answered 503 `overloaded`. Default a
    /// sixteenth of the machine's memory.
    pub max_request_bodies_total: usize,
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
    /// The bound on each object's queue (see [`DEFAULT_MAX_OBJECT_QUEUE`]): past it a request is
    /// answered 503 `overloaded`, and a WebSocket message closes its socket with 1013.
    pub queue: QueueLimits,
    /// Bytes of the database's page cache (see [`DEFAULT_STORAGE_CACHE_MIB`]).
    pub storage_cache: usize,
    pub event: EventLimits,
    pub storage: StorageLimits,
    /// The cluster this host is a node of (`--cluster`); none: one machine on its own database.
    pub cluster: Option<ClusterConfig>,
}

impl HostConfig {
    /// The defaults, for a data dir and token.
    pub fn new(data_dir: PathBuf, admin_token: String) -> Self {
        let memory = machine_memory();
        let share = |parts: u64| usize::try_from(memory / parts).unwrap_or(usize::MAX);
        let max_namespace_bytes = default_max_namespace_storage(&data_dir);
        HostConfig {
            compile_cache: data_dir.join("cache"),
            data_dir,
            admin_token,
            idle_timeout: DEFAULT_IDLE_TIMEOUT.0,
            max_live_objects: default_max_live_objects(),
            max_memory: share(2),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_request_bodies_total: share(16),
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_ws_message: DEFAULT_MAX_WS_MESSAGE,
            max_ws_backlog: DEFAULT_MAX_WS_BACKLOG,
            max_ws_backlog_total: share(16),
            header_timeout: DEFAULT_HEADER_TIMEOUT.0,
            body_timeout: DEFAULT_BODY_TIMEOUT.0,
            queue: QueueLimits {
                events: DEFAULT_MAX_OBJECT_QUEUE,
                bytes: DEFAULT_MAX_OBJECT_QUEUE_BYTES,
            },
            storage_cache: mib_to_bytes(DEFAULT_STORAGE_CACHE_MIB),
            event: EventLimits::default(),
            storage: StorageLimits {
                max_namespace_bytes,
                ..StorageLimits::default()
            },
            cluster: None,
        }
    }
}

/// A quarter of the size of the filesystem `data_dir` is on (or will be, once created): what
/// the objects of one namespace may store together. Unbounded where its size cannot be read.
pub fn default_max_namespace_storage(data_dir: &std::path::Path) -> u64 {
    let mut dir = data_dir;
    while !dir.exists() {
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
            _ => dir = std::path::Path::new("."),
        }
    }
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return u64::MAX;
    };
    // SAFETY: statvfs writes only into the struct we own, and reads a NUL-terminated path.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut fs) } != 0 {
        return u64::MAX;
    }
    (fs.f_blocks as u64).saturating_mul(fs.f_frsize as u64) / 4
}

/// `mib` MiB in bytes, saturating.
pub fn mib_to_bytes(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
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
