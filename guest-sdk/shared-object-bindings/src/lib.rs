//! The bindings of the world `shared-object` of `dohost:object@0.3.0`, for `dohost-sdk`.
//!
//! A crate of their own for the reason `dohost-worker-bindings` is one: this world exports the
//! same handlers as `durable-object`, and wit-bindgen's export macros are exported at the root of
//! their crate. The imports the worker world shares are that crate's; `dohost-sdk` generates
//! `durable-object` with the rest of this crate's imports, so all worlds share one set of types.

wit_bindgen::generate!({
    world: "shared-object",
    path: "../../wit/v0.3.0",
    // The export macro is invoked from the object's crate, through `dohost_sdk::shared_object!`.
    pub_export_macro: true,
    with: {
        "dohost:object/types@0.3.0": dohost_worker_bindings::dohost::object::types,
        "dohost:object/logging@0.3.0": dohost_worker_bindings::dohost::object::logging,
        "dohost:object/config@0.3.0": dohost_worker_bindings::dohost::object::config,
        "dohost:object/stubs@0.3.0": dohost_worker_bindings::dohost::object::stubs,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
});
