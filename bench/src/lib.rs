//! `dohost-bench`: the same load, driven by the same client, against dohost and against workerd.
//!
//! The scenarios are plain async functions over a [`Target`] (a running server: its address, its
//! process id, and for dohost its admin token) and a [`Settings`] (how long and how many), so that
//! `src/main.rs` runs them at full size against both servers and `tests/smoke.rs` runs them in
//! miniature against a debug dohost.
//!
//! - [`load`]: the HTTP load generator (hyper 1, one keep-alive HTTP/1.1 connection per virtual
//!   client, requests back to back) and the HTTP scenarios: increments, reads, increments spread
//!   over many objects, the trivial handler, cold starts, memory per object, redeploy under load.
//! - [`ws`]: the WebSocket scenarios (tokio-tungstenite): fan-out, throughput, memory per socket.
//! - [`calls`]: dohost's own count of what stub calls between objects cost, read around a
//!   scenario.
//! - [`syncs`]: a server's fsync-family calls during a scenario, counted with strace.
//! - [`peers`]: starting dohost and workerd, installing workerd from npm, deploying.
//! - [`report`]: the results table and `BENCHMARKS.md`.
//! - [`cluster`]: the cluster section (`--cluster`): one node on redb, one on PostgreSQL, three.
//!
//! Every loop is bounded in time and in count, and every wait has a limit.

pub mod calls;
pub mod cluster;
pub mod download;
pub mod load;
pub mod peers;
pub mod report;
pub mod sse;
pub mod syncs;
pub mod ws;

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How many times each scenario runs on each server: the table shows the median and the range.
pub const RUNS: usize = 3;

/// Which server a [`Target`] is.
#[derive(Clone, Debug)]
pub enum Kind {
    /// dohost, with the admin token of its API (stats, deploy).
    Dohost {
        /// The bearer token of `/_admin/...`.
        token: String,
    },
    /// workerd: no admin API, no live deploy.
    Workerd,
}

/// A running server under test, as the scenarios see it.
#[derive(Clone, Debug)]
pub struct Target {
    /// `"dohost"` or `"workerd"`, for messages.
    pub name: &'static str,
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// The server's process id, for its memory (`VmRSS`) and CPU time.
    pub pid: u32,
    /// Which server it is.
    pub kind: Kind,
}

/// The guest packages the benchmark deploys (built to `target/wasm32-wasip2/release/`).
pub const GUESTS: [&str; 9] = [
    "counter",
    "shared-counter",
    "chat-room",
    "pubsub",
    "hello",
    "ticket-counter",
    "bench-front",
    "bench-relay",
    "bench-download",
];

/// How long and how many: one value for the full run, one for `--quick`, one for the smoke test.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The measured window of every HTTP load scenario and of WebSocket throughput.
    pub duration: Duration,
    /// Load sent before the window opens, not measured (connections open, objects wake).
    pub warmup: Duration,
    /// At most this many requests are measured in one load scenario, whatever the duration.
    pub max_requests: u64,
    /// Connections of the "many connections" scenarios (64 in the full run).
    pub conns: usize,
    /// Connections of the "some connections" increment row and of the redeploy load (16).
    pub mid_conns: usize,
    /// How many objects the spread scenario draws from (10,000).
    pub spread_objects: usize,
    /// Fresh objects of the cold-start scenario (200).
    pub cold_objects: usize,
    /// How many objects the "past the live-instance cap" scenario draws from (1,000,000): far
    /// more than either server keeps live, so most requests wake an object that sleeps.
    pub fresh_objects: usize,
    /// Clients in the fan-out room (1,000).
    pub fanout_clients: usize,
    /// Fan-out rounds; the median is reported.
    pub fanout_rounds: usize,
    /// Bytes of each streamed download, and how many in a row.
    pub download_bytes: u64,
    pub downloads: usize,
    /// Clients in the throughput room (100), each sending.
    pub throughput_clients: usize,
    /// Idle WebSockets of the memory scenario (10,000) ...
    pub memory_sockets: usize,
    /// ... spread over this many chat rooms (1,000).
    pub memory_rooms: usize,
    /// Counter objects touched once by the memory scenario (10,000).
    pub memory_objects: usize,
    /// Most WebSocket handshakes or requests in flight while setting a scenario up.
    pub setup_concurrency: usize,
    /// Longest wait for a server to hibernate its objects or to go quiet.
    pub idle_limit: Duration,
    /// workerd has no stats: wait at least this long for its ~10 s eviction before sampling.
    pub workerd_idle_min: Duration,
    /// Redeploy: load before the deploy call, and after it returns.
    pub redeploy_before: Duration,
    /// See `redeploy_before`.
    pub redeploy_after: Duration,
}

impl Settings {
    /// The numbers of `BENCHMARKS.md`: 10 s per load scenario.
    pub fn full() -> Self {
        Settings {
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            max_requests: 20_000_000,
            conns: 64,
            mid_conns: 16,
            spread_objects: 10_000,
            cold_objects: 200,
            fresh_objects: 1_000_000,
            fanout_clients: 1_000,
            fanout_rounds: 10,
            download_bytes: 256 << 20,
            downloads: 5,
            throughput_clients: 100,
            memory_sockets: 10_000,
            memory_rooms: 1_000,
            memory_objects: 10_000,
            setup_concurrency: 200,
            idle_limit: Duration::from_secs(45),
            workerd_idle_min: Duration::from_secs(15),
            redeploy_before: Duration::from_secs(2),
            redeploy_after: Duration::from_secs(3),
        }
    }

    /// `--quick`: 1.5 s per load scenario and a tenth of the counts. Checks the harness, not
    /// numbers to quote.
    pub fn quick() -> Self {
        Settings {
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(300),
            cold_objects: 50,
            spread_objects: 1_000,
            fresh_objects: 100_000,
            fanout_clients: 200,
            fanout_rounds: 3,
            download_bytes: 16 << 20,
            downloads: 2,
            throughput_clients: 50,
            memory_sockets: 1_000,
            memory_rooms: 100,
            memory_objects: 1_000,
            redeploy_before: Duration::from_millis(500),
            redeploy_after: Duration::from_secs(1),
            ..Settings::full()
        }
    }

    /// The smoke test's: about a second per scenario, tens of sockets. Against a debug build.
    pub fn smoke() -> Self {
        Settings {
            duration: Duration::from_millis(800),
            warmup: Duration::from_millis(200),
            max_requests: 1_000_000,
            conns: 16,
            mid_conns: 4,
            spread_objects: 200,
            cold_objects: 10,
            fresh_objects: 1_000,
            fanout_clients: 50,
            fanout_rounds: 3,
            download_bytes: 1 << 20,
            downloads: 2,
            throughput_clients: 10,
            memory_sockets: 100,
            memory_rooms: 10,
            memory_objects: 100,
            setup_concurrency: 50,
            idle_limit: Duration::from_secs(15),
            workerd_idle_min: Duration::from_secs(15),
            redeploy_before: Duration::from_millis(300),
            redeploy_after: Duration::from_millis(700),
        }
    }
}

/// Memory in kibibytes, from `VmRSS` in `/proc/{pid}/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// How many memory mappings a process holds: the lines of `/proc/{pid}/maps`.
pub fn map_count(pid: u32) -> Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    Ok(maps.lines().count() as u64)
}

/// The soft limit on open files of a process, from `/proc/{pid}/limits`.
pub fn fd_limit(pid: u32) -> Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .with_context(|| format!("reading /proc/{pid}/limits"))?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no open-files limit in /proc/{pid}/limits"))
}

/// How many of a process's open files have a path ending in `suffix`, from `/proc/{pid}/fd`.
pub fn open_files_ending(pid: u32, suffix: &str) -> Result<u64> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
    // A descriptor closed while we look is simply not counted.
    let count = entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().ends_with(suffix))
        .count();
    Ok(count as u64)
}

/// CPU time (user plus system) the process has used so far, from `/proc/{pid}/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")" come field 3 (state) onwards: utime is field 14, stime field 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(14), ticks(15)) else {
        bail!("unreadable /proc/{pid}/stat");
    };
    // The kernel reports in USER_HZ, which is 100 on Linux.
    Ok(Duration::from_millis((user + system) * 10))
}

/// What [`Target::wait_idle`] saw.
#[derive(Clone, Debug)]
pub struct IdleWait {
    /// How long it waited.
    pub waited: Duration,
    /// Whether the server was seen idle (dohost: no live instance; workerd: memory stopped
    /// moving) before the limit.
    pub idle: bool,
}

impl Target {
    /// `host:port`, for URLs.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The admin token, for dohost; an error for workerd.
    pub fn token(&self) -> Result<&str> {
        match &self.kind {
            Kind::Dohost { token } => Ok(token),
            Kind::Workerd => bail!("workerd has no admin API"),
        }
    }

    /// What shows how many objects the server holds awake. dohost: `live_instances` of
    /// `/_admin/stats`. workerd has no such view, but an awake object keeps its SQLite database
    /// open (its `.sqlite`, `-wal` and `-shm` files) and an evicted one does not: the open
    /// `.sqlite` files in `/proc/PID/fd`.
    pub async fn objects_held(&self) -> Result<u64> {
        match self.kind {
            Kind::Dohost { .. } => self.stats().await?["live_instances"]
                .as_u64()
                .context("no live_instances in /_admin/stats"),
            Kind::Workerd => open_files_ending(self.pid, ".sqlite"),
        }
    }

    /// dohost's `GET /_admin/stats`.
    pub async fn stats(&self) -> Result<serde_json::Value> {
        let token = self.token()?;
        let auth = format!("Bearer {token}");
        let (status, body) = load::request_once(
            self.addr,
            hyper::Method::GET,
            "/_admin/stats",
            &[("authorization", &auth)],
            bytes::Bytes::new(),
        )
        .await?;
        if status != 200 {
            bail!(
                "stats answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Waits until the server has hibernated its objects and its memory has settled, at most
    /// `s.idle_limit`.
    ///
    /// dohost: until `/_admin/stats` shows no live instance. workerd has no such view: at least
    /// `s.workerd_idle_min` (it evicts an object about 10 s after its last event). Then, on both,
    /// until two RSS samples a second apart differ by less than 1 %: each server gets the same
    /// chance to hand freed memory back before it is measured.
    pub async fn wait_idle(&self, s: &Settings) -> Result<IdleWait> {
        let start = Instant::now();
        let deadline = start + s.idle_limit;
        let gave_up = || IdleWait {
            waited: start.elapsed(),
            idle: false,
        };
        match self.kind {
            Kind::Dohost { .. } => loop {
                if self.stats().await?["live_instances"] == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    return Ok(gave_up());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            },
            Kind::Workerd => tokio::time::sleep(s.workerd_idle_min.min(s.idle_limit)).await,
        }
        let mut last = rss_kib(self.pid)?;
        loop {
            if Instant::now() >= deadline {
                return Ok(gave_up());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = rss_kib(self.pid)?;
            if now.abs_diff(last) * 100 < last.max(1) {
                return Ok(IdleWait {
                    waited: start.elapsed(),
                    idle: true,
                });
            }
            last = now;
        }
    }

    /// Waits until the server is quiet, so that one scenario's tail (closing sockets, their close
    /// events and `user_left` broadcasts) does not run into the next one's measurements: until
    /// it used under 5 % of a core for two half-second windows in a row (and, for dohost, holds
    /// no open socket), at most `limit`. Returns whether it went quiet.
    pub async fn settle(&self, limit: Duration) -> Result<bool> {
        let deadline = Instant::now() + limit;
        let window = Duration::from_millis(500);
        let mut quiet = 0;
        let mut before = cpu_time(self.pid)?;
        while Instant::now() < deadline {
            tokio::time::sleep(window).await;
            let now = cpu_time(self.pid)?;
            let busy = now.saturating_sub(before);
            before = now;
            let sockets_closed = match self.kind {
                Kind::Dohost { .. } => self.stats().await?["open_sockets"] == 0,
                Kind::Workerd => true,
            };
            if busy * 20 <= window && sockets_closed {
                quiet += 1;
                if quiet >= 2 {
                    return Ok(true);
                }
            } else {
                quiet = 0;
            }
        }
        Ok(false)
    }
}

/// A random lowercase hex string, to keep each run's object names apart from earlier runs'.
pub fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The median of some durations, in milliseconds (0 for none).
pub fn median_ms(samples: &[Duration]) -> f64 {
    percentile_ms(samples, 50.0)
}

/// The `p`th percentile (nearest rank) of some durations, in milliseconds (0 for none).
pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// Memory used by many idle things: what the memory scenarios return.
#[derive(Clone, Debug)]
pub struct Memory {
    /// How many sockets or objects.
    pub count: usize,
    /// Server RSS before, in KiB (after it went idle).
    pub before_kib: u64,
    /// Server RSS right after the last one was set up, in KiB, while objects were still awake.
    pub awake_kib: u64,
    /// Server RSS once idle again (objects hibernated), in KiB.
    pub after_kib: u64,
    /// How long the wait for hibernation took, and whether it was seen.
    pub idle: IdleWait,
    /// [`Target::objects_held`] before, awake and after: whether the objects were evicted.
    pub held: [u64; 3],
}

impl Memory {
    /// What `set_up` leaves in the server: waits until the server is idle and reads its RSS, runs
    /// `set_up` (which says how many items it made, and hands back what must stay alive, such as
    /// open sockets), reads the RSS, waits until the items hibernate, and reads it a last time.
    pub async fn measure<T>(
        target: &Target,
        s: &Settings,
        set_up: impl AsyncFnOnce() -> Result<(usize, T)>,
    ) -> Result<(Memory, T)> {
        target.wait_idle(s).await?;
        let before_kib = rss_kib(target.pid)?;
        let held_before = target.objects_held().await?;
        let (count, kept) = set_up().await?;
        let awake_kib = rss_kib(target.pid)?;
        let held_awake = target.objects_held().await?;
        let idle = target.wait_idle(s).await?;
        let after_kib = rss_kib(target.pid)?;
        let memory = Memory {
            count,
            before_kib,
            awake_kib,
            after_kib,
            idle,
            held: [held_before, held_awake, target.objects_held().await?],
        };
        Ok((memory, kept))
    }

    /// `(after - before) / count`, in bytes: what each one costs once hibernated.
    pub fn per_item_bytes(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) * 1024.0 / self.count.max(1) as f64
    }

    /// `(awake - before) / count`, in bytes: what each one costs while its object is awake.
    pub fn per_item_awake_bytes(&self) -> f64 {
        (self.awake_kib as f64 - self.before_kib as f64) * 1024.0 / self.count.max(1) as f64
    }

    /// Objects still held after the idle wait, beyond those held before.
    pub fn still_held(&self) -> u64 {
        self.held[2].saturating_sub(self.held[0])
    }
}
