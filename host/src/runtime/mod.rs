//! wasmtime: the engine, the host side of the WIT imports, and running one event of one object
//! under its limits.
//!
//! A guest gets exactly the imports of its world (`durable-object` of 0.2.0 or 0.3.0,
//! `shared-object`, `worker` or `http-worker`) plus the WASI interfaces a Rust std guest links against; WASI grants
//! nothing: no files, no environment, no network, a closed stdin and discarded stdout/stderr.
//!
//! The files, bottom up:
//! - `bindings`: the Rust side of the worlds, one module per version of `wit/`.
//! - `request`: a request and a response, whatever the version.
//! - `calls`: what a stub call asks of the objects above.
//! - `call_stats`: what stub calls cost beyond their callees' events.
//! - `error`: why an event failed.
//! - `limits`: the memory cap and the log-line bucket of an instance.
//! - `metering`: counting guest instructions toward a namespace's CPU share.
//! - `state`: the store data of an instance.
//! - `epoch`: the epoch ticker: event deadlines and regular yields.
//! - `imports/`: the host side of each WIT interface, one file each.
//! - `pool`: instance slots and the memory mappings they hold.
//! - `engine`: the engine and linker; instantiation.
//! - `instance`: a live instance; delivering one event.
//! - `idle`: idle instances kept for reuse (workers', shared object classes').
//! - `http_worker`: delivering a request to an http-worker through wasi:http.

mod bindings;
mod call_stats;
mod calls;
mod engine;
mod epoch;
mod error;
mod http_worker;
mod idle;
mod imports;
mod instance;
mod limits;
mod metering;
mod outgoing_send;
mod pool;
mod request;
mod state;

pub use call_stats::{CallStats, Caller};
pub use calls::{Call, CallError, Called, Calls, Chain, MAX_CALL_DEPTH};
pub use engine::{Pre, Role, Runtime};
pub use error::EventError;
pub use http_worker::Head;
pub use idle::{IdleLimits, IdlePool};
pub use instance::Instance;
pub use limits::{LOG_BURST, LOG_LINES_PER_SEC, MAX_LOG_LINE};
pub use pool::check_memories;
pub use request::{Request, Response};
pub use state::{Guest, SocketIo};
