//! dohost: a self-hosted Durable Objects host.
//!
//! A Durable Object is a named address at which one piece of state lives, exactly once. dohost
//! runs object classes compiled to WebAssembly components (the worlds in `wit/`), keeps at most one
//! live instance per object, delivers its events one at a time, and gives it private,
//! transactional, durable storage. An app puts a stateless worker in front of its classes.
//!
//! The modules, one concept each, bottom up (a module uses only those above it in this list);
//! [ARCHITECTURE.md](../../ARCHITECTURE.md) follows a request and a WebSocket message through them:
//! - [`clock`]: the wall clock.
//! - [`config`]: the knobs of a host and their defaults, written once.
//! - [`metrics`]: the Prometheus series the host counts, and their exposition.
//! - [`tail`]: the live stream of requests, guests' log lines, failures and alarms.
//! - [`names`]: namespace and object names, object ids.
//! - [`memory`]: the budget for all live instances' memories.
//! - [`outbound`]: which outbound HTTP destinations a guest may reach, by URL and by resolved
//!   address (pure).
//! - [`manifest`]: the app manifest `dohost.toml`: worker, routes, object classes, vars, outbound
//!   rules (pure).
//! - [`env`]: what an app gives its guests: bindings, variables, secrets.
//! - [`scheduling`]: time-slice hints to the kernel; the background class's threads.
//! - [`cpu_share`]: which namespaces run in the background: after failing on a limit, or while
//!   taking more than their share of the CPU beside others.
//! - [`storage`]: the database, group commit, each object's layered view of its keys.
//! - [`sockets`]: WebSockets held for objects across hibernation; what waits for slow clients.
//! - [`runtime`]: wasmtime: the engine, the host side of each WIT interface, one event under
//!   limits.
//! - [`registry`]: deployed namespaces and apps: validating, compiling, persisting components;
//!   all-or-nothing app deploys, routes, secrets.
//! - [`objects`]: object lifecycle: one event loop per live object, hibernation, eviction, the
//!   output gate, stub calls between objects.
//! - [`workers`]: apps' stateless workers, concurrently on pooled instances.
//! - [`alarms`]: one timer for every object's alarm; delivery with retries.
//! - [`routing`]: which object a request path addresses (pure, fuzzed).
//! - [`http`]: requests to workers and objects, WebSocket upgrades, the admin API, the JSON
//!   errors.
//! - [`server`]: assembling a host from its data dir; the admin token.

pub mod alarms;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cpu_share;
pub mod env;
pub mod http;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod objects;
pub mod outbound;
pub mod registry;
pub mod routing;
pub mod runtime;
pub mod scheduling;
pub mod server;
pub mod sockets;
pub mod storage;
pub mod tail;
pub mod workers;
