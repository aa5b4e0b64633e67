//! A hostile object for `tests/hostile.rs`: one endpoint per attack on the host.
//!
//! Every attack first writes the key `inflight` (value `lost`) in its own event, then attacks;
//! the host must fail the event and discard that write.
//!
//! - `GET /loop`: an infinite loop (the CPU limit).
//! - `GET /oom`: allocates and touches 1 MiB chunks for ever (the memory limit).
//! - `GET /recurse`: unbounded recursion (the native stack).
//! - `GET /huge?mib=N`: answers a body of N MiB (the response body limit).
//! - `GET /keys`: writes 1 KiB values under new keys until the host refuses one, and fails with
//!   that refusal (the per-object storage quota).
//! - `GET /log-flood`: logs 20 KiB lines at level warn, for ever (the log rate limit, then the
//!   time limit).
//! - `POST /fill`: stores 64 values of 16 KiB under `big:` (no attack; sets up the next one).
//! - `GET /host-loop`: lists those 1 MiB of values, for ever (the time limit: time inside host
//!   calls burns no fuel).
//! - `GET /sleep`: sleeps for an hour through WASI (the time limit: waiting in a host call runs
//!   no guest code, so neither fuel nor an epoch check can stop it).
//! - `GET /wasi?port=P`: tries files, environment, arguments, stdin and the network through
//!   WASI, including a TCP connection to 127.0.0.1:P, and answers what each attempt got:
//!   `{"<attempt>": {"got": bool, "detail": "..."}}`; `got` is whether it obtained anything.
//! - `GET /spin?n=N`: counts to N and answers `{"counted": N}` (no attack: a busy but honest
//!   request, about 1 ms of CPU for N = 1,000,000).
//! - `GET /get?key=K`: `{"value": V}` (`null` if absent), the way the test reads storage.
//! - `GET /hoard?mib=N`: allocates N MiB, touches every page, and keeps it in the instance (an
//!   in-memory cache, as objects keep; `tests/overload.rs` holds the host to its memory budget).

use std::hint::black_box;
use std::io::Read;

use dohost_sdk::{DurableObject, ListOptions, Request, Response, Result, State, Storage, log};
use serde_json::{Value, json};

struct Hostile {
    state: State,
    /// What `/hoard` keeps for the instance's lifetime.
    hoard: Vec<u8>,
}

/// Writes the key every attack must lose.
fn put_inflight(storage: &Storage) -> Result<()> {
    storage.put_bytes("inflight", b"lost")
}

/// Recursion that keeps its frames on the native WebAssembly stack only (nothing address-taken,
/// so nothing on Rust's shadow stack in linear memory): it ends in the engine's stack guard.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)).wrapping_add(depth)
}

/// What one WASI attempt obtained: `got` is true when it succeeded or saw something.
fn attempt(got: bool, detail: impl std::fmt::Debug) -> Value {
    json!({ "got": got, "detail": format!("{detail:?}") })
}

fn probe_wasi(port: u16) -> Value {
    let read = std::fs::read("/etc/passwd");
    let relative = std::fs::read("Cargo.toml");
    let write = std::fs::write("/tmp/hostile-was-here", b"x");
    let write_here = std::fs::write("hostile-was-here", b"x");
    let list_root = std::fs::read_dir("/").map(|d| d.count());
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let home = std::env::var("HOME");
    let args: Vec<String> = std::env::args().collect();
    let mut stdin = Vec::new();
    let stdin_read = std::io::stdin().read_to_end(&mut stdin);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port));
    let listen = std::net::TcpListener::bind("127.0.0.1:0");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0");
    let dns = std::net::ToSocketAddrs::to_socket_addrs("localhost:80").map(|a| a.count());
    json!({
        "fs_read": attempt(read.is_ok(), read.map(|b| b.len())),
        "fs_read_relative": attempt(relative.is_ok(), relative.map(|b| b.len())),
        "fs_write": attempt(write.is_ok(), &write),
        "fs_write_relative": attempt(write_here.is_ok(), &write_here),
        "fs_read_dir": attempt(list_root.is_ok(), &list_root),
        "env_vars": attempt(!vars.is_empty(), &vars),
        "env_home": attempt(home.is_ok(), &home),
        "args": attempt(!args.is_empty(), &args),
        "stdin": attempt(!stdin.is_empty(), (&stdin_read, stdin.len())),
        "tcp_connect": attempt(tcp.is_ok(), tcp.map(|_| "connected")),
        "tcp_listen": attempt(listen.is_ok(), listen.map(|_| "listening")),
        "udp_bind": attempt(udp.is_ok(), udp.map(|_| "bound")),
        "dns": attempt(matches!(dns, Ok(n) if n > 0), &dns),
    })
}

impl DurableObject for Hostile {
    fn new(state: State) -> Self {
        Hostile {
            state,
            hoard: Vec::new(),
        }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        match req.path() {
            "/get" => {
                let key = req
                    .query_param("key")
                    .ok_or("the query parameter `key` is missing")?;
                let value = storage
                    .get_bytes(&key)?
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                Response::from_json(&json!({ "value": value }))
            }
            "/hoard" => {
                let mib: usize = req
                    .query_param("mib")
                    .and_then(|m| m.parse().ok())
                    .ok_or("the query parameter `mib` is missing")?;
                self.hoard = vec![black_box(1u8); mib << 20];
                Response::from_json(&json!({ "kept": self.hoard.len() }))
            }
            "/fill" => {
                let value = vec![b'v'; 16 << 10];
                for i in 0..64 {
                    storage.put_bytes(&format!("big:{i:02}"), &value)?;
                }
                Ok(Response::empty())
            }
            "/spin" => {
                let n: u64 = req
                    .query_param("n")
                    .and_then(|n| n.parse().ok())
                    .ok_or("the query parameter `n` is missing")?;
                let mut counted = 0u64;
                for _ in 0..n {
                    counted = black_box(counted + 1);
                }
                Response::from_json(&json!({ "counted": counted }))
            }
            "/wasi" => {
                let port = req
                    .query_param("port")
                    .and_then(|p| p.parse().ok())
                    .ok_or("the query parameter `port` is missing or not a port")?;
                Response::from_json(&probe_wasi(port))
            }
            attack => {
                put_inflight(&storage)?;
                match attack {
                    "/loop" => {
                        let mut n = 0u64;
                        loop {
                            n = black_box(n.wrapping_add(1));
                        }
                    }
                    "/oom" => {
                        let mut hoard: Vec<Vec<u8>> = Vec::new();
                        loop {
                            // Written, so the pages are really used.
                            hoard.push(vec![black_box(1u8); 1 << 20]);
                            black_box(&hoard);
                        }
                    }
                    "/recurse" => Response::from_json(&json!({ "depth": recurse(0) })),
                    "/huge" => {
                        let mib: usize = req
                            .query_param("mib")
                            .and_then(|m| m.parse().ok())
                            .ok_or("the query parameter `mib` is missing")?;
                        Ok(Response::from_bytes(vec![b'x'; mib << 20]))
                    }
                    "/keys" => {
                        let value = vec![b'k'; 1 << 10];
                        for i in 0u64.. {
                            storage.put_bytes(&format!("flood:{i:08}"), &value)?;
                        }
                        unreachable!("the host refuses a key long before u64::MAX")
                    }
                    "/log-flood" => {
                        let filler = "f".repeat(20 << 10);
                        for i in 0u64.. {
                            log::warn(format!("flood line {i} {filler}"));
                        }
                        unreachable!("the host stops the event long before u64::MAX")
                    }
                    "/host-loop" => {
                        let mut listed = 0usize;
                        loop {
                            let all = storage.list_bytes(ListOptions::new().prefix("big:"))?;
                            listed = black_box(listed.wrapping_add(all.len()));
                        }
                    }
                    "/sleep" => {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                        Ok(Response::empty())
                    }
                    _ => Ok(Response::error("no such attack", 404)),
                }
            }
        }
    }
}

dohost_sdk::durable_object!(Hostile);
