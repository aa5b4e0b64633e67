//! The host side of each WIT interface a guest imports, one file each. Adding an interface: a
//! file here implementing its `Host` trait for [`HostState`], and one line in [`add_to_linker`].

mod identity;
mod logging;
mod storage;
mod websockets;

use super::bindings::dohost::object as wit;
use super::state::HostState;
use wasmtime::component::{HasSelf, Linker};

/// Grants a guest the imports of the `durable-object` world, and the WASI interfaces a Rust std
/// guest links against (which grant nothing: see [`HostState::new`]).
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::identity::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::logging::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::storage::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::websockets::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// The `types` interface has no functions, only the request and response records.
impl wit::types::Host for HostState {}
