//! The bindings of the world `worker` of `dohost:object@0.3.0`, for `dohost-sdk`.
//!
//! A crate of their own because both worlds export `http-handler`, and the export macros
//! wit-bindgen generates are exported at the root of their crate: two worlds in one crate would
//! define the same macro twice. `dohost-sdk` generates the object world with this crate's
//! imports, so both worlds share one set of types.

wit_bindgen::generate!({
    world: "worker",
    path: "../../wit/v0.3.0",
    // The export macro is invoked from the worker's crate, through `dohost_sdk::worker!`.
    pub_export_macro: true,
    // WASI's interfaces are the `wasip2` crate's, which `dohost-sdk`'s fetch uses.
    with: {
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
});
