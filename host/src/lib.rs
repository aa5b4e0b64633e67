//! dohost: a self-hosted Durable Objects host.
//!
//! A Durable Object is a named address at which one piece of state lives, exactly once. dohost
//! runs object classes compiled to WebAssembly components (the world in `wit/`), keeps at most one
//! live instance per object, delivers its events one at a time, and gives it private,
//! transactional, durable storage.
//!
//! The modules, one concept each:
//! - [`names`]: namespace and object names, object ids.
//! - [`storage`]: the database, group commit, each object's layered view of its keys.
//! - [`runtime`]: wasmtime: the engine, the host imports, running one event under limits.
//! - [`memory`]: the budget for all live instances' memories.
//! - [`registry`]: deployed namespaces: validating, compiling, persisting components.
//! - [`objects`]: object lifecycle: one event loop per live object, hibernation, eviction, the
//!   output gate.
//! - [`websockets`]: sockets held for objects across hibernation; auto-responses.
//! - [`alarms`]: one timer for every object's alarm; delivery with retries.
//! - [`routing`]: which object a request path addresses (pure, fuzzed).
//! - [`http`]: routing requests (and WebSocket upgrades) to objects, and the admin API.
//! - [`server`]: assembling a host from its data dir; the admin token.
//! - [`config`]: the knobs of a host.
//! - [`scheduling`]: time-slice hints to the kernel, so busy guests do not delay other objects;
//!   the background class's threads.
//! - [`classes`]: which namespaces run in the background: after failing on a limit, or while
//!   taking more than their share of the CPU beside others.

pub mod alarms;
pub mod classes;
pub mod config;
pub mod http;
pub mod memory;
pub mod names;
pub mod objects;
pub mod registry;
pub mod routing;
pub mod runtime;
pub mod scheduling;
pub mod server;
pub mod storage;
pub mod websockets;
