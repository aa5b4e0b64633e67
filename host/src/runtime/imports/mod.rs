//! The host side of each WIT interface a guest imports, one file each. Adding an interface: a
//! file here implementing its `Host` trait for [`HostState`]; each world's `add_to_linker` below
//! links every interface the world imports.
//!
//! An interface unchanged between versions of the contract is implemented once, for every
//! version, by a macro in its file.

mod config;
mod identity;
mod logging;
mod outgoing_http;
mod storage;
mod streams;
mod stubs;
mod websockets;

use super::bindings::{v0_2, v0_3};
use super::state::HostState;
use v0_3::dohost::object as v3;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi_http::WasiHttp;
use wasmtime_wasi_http::p2::bindings::{LinkOptions, http};

// The 0.3.0 worlds are linked interface by interface: their generated `add_to_linker` would add
// the WASI interfaces they import a second time, and all of wasi:http with one store view.

/// Grants an object the imports of its world in every version the host serves, and the WASI
/// interfaces a Rust std guest links against (which grant nothing: see [`HostState::new`]).
pub(super) fn add_object_imports(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    add_outgoing_http(linker)?;
    v0_2::DurableObject::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::identity::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::storage::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::logging::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::websockets::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::streams::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::config::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::stubs::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Grants a worker the imports of its world: no storage, identity or WebSockets.
pub(super) fn add_worker_imports(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    add_outgoing_http(linker)?;
    v3::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::logging::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::config::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v3::stubs::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// `wasi:http/outgoing-handler` (ours, see [`outgoing_http`]) and the `wasi:http/types` it uses
/// (wasmtime-wasi-http's). The rest of wasi:http (serving requests) is not granted.
fn add_outgoing_http(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi_http::WasiHttpView;
    outgoing_http::add_to_linker(linker)?;
    http::types::add_to_linker::<_, WasiHttp>(linker, &LinkOptions::default().into(), |s| {
        s.http()
    })?;
    Ok(())
}

/// The `types` interface has no functions, only the request and response records.
impl v0_2::dohost::object::types::Host for HostState {}
impl v0_3::dohost::object::types::Host for HostState {}
