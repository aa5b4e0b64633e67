//! Write dohost Durable Objects in Rust.
//!
//! A Durable Object is a named address at which one piece of state lives, exactly once. dohost
//! keeps at most one live instance of your object per name, delivers its requests one at a time,
//! gives it private transactional storage, and may drop the instance whenever it is idle: its
//! fields are then lost, its storage is kept, and the next request creates a new instance.
//!
//! An object class is a `cdylib` crate built for `wasm32-wasip2`. It implements
//! [`DurableObject`] and registers the type with [`durable_object!`]; that is all the glue there
//! is. This crate hides the component-model bindings (the world `durable-object` of
//! `dohost:object@0.1.0`).
//!
//! # Example: a counter
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "counter"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! dohost-sdk = { path = "../../guest-sdk" }
//! serde_json = "1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use dohost_sdk::{DurableObject, Request, Response, Result, State};
//!
//! struct Counter {
//!     state: State,
//! }
//!
//! impl DurableObject for Counter {
//!     fn new(state: State) -> Self {
//!         Counter { state }
//!     }
//!
//!     fn fetch(&mut self, req: Request) -> Result<Response> {
//!         let storage = self.state.storage();
//!         // Read from storage on every request: a new instance may be serving this one.
//!         let mut count: u64 = storage.get("count")?.unwrap_or(0);
//!         match req.method() {
//!             "POST" => {
//!                 count += 1;
//!                 storage.put("count", &count)?;
//!             }
//!             "GET" => {}
//!             _ => return Ok(Response::error("use GET or POST", 405)),
//!         }
//!         Response::from_json(&serde_json::json!({ "count": count }))
//!     }
//! }
//!
//! dohost_sdk::durable_object!(Counter);
//! ```
//!
//! Build and deploy it:
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2 -p counter
//! dohost deploy target/wasm32-wasip2/release/counter.wasm --name counter
//! curl -X POST http://127.0.0.1:8787/counter/alice/    # {"count":1}
//! ```
//!
//! # Failures
//!
//! Everything a request writes is committed together when [`DurableObject::fetch`] returns `Ok`,
//! and the response is only sent once the writes are durable. Returning `Err` fails the request:
//! its writes are discarded, the client gets a 500 with the error's message, and the host starts
//! a fresh instance for the next request. A panic, or running out of CPU time or memory, does the
//! same; the panic message goes to the host's log. To answer an error *and* keep the writes,
//! return `Ok(Response::error(..))` (see [`Response::error`]); to undo only part of the writes,
//! use [`Storage::transaction`].
//!
//! # What else an object can do
//!
//! Only what its world grants: [`State`] (identity and [`Storage`]), [`new_unique_name`] and
//! [`log`]. The standard library's clocks and random numbers work; files, environment variables
//! and the network do not, and standard output and error are discarded.

#![warn(missing_docs)]

mod error;
pub mod log;
mod request;
mod response;
mod state;
mod storage;

pub use error::{Error, Result, StorageError};
pub use request::Request;
pub use response::Response;
pub use state::{State, new_unique_name};
pub use storage::{ListOptions, Storage};

/// A Durable Object class: what the host creates and sends requests to.
///
/// Register the implementing type with [`durable_object!`]. The host calls
/// [`fetch`](Self::fetch) for one request at a time, so `&mut self` is never shared.
pub trait DurableObject: Sized + 'static {
    /// Called once per instance, before its first event. The host may drop an idle instance at
    /// any time; the next event creates a new one.
    ///
    /// So keep only caches in fields, and anything that must survive in [`Storage`].
    fn new(state: State) -> Self;

    /// Handles one HTTP request addressed to this object.
    ///
    /// `Ok` commits the request's writes and sends the response. `Err` discards the writes and
    /// answers 500 with the error's message.
    fn fetch(&mut self, req: Request) -> Result<Response>;
}

/// Registers `$ty`, a type implementing [`DurableObject`], as the crate's object class.
///
/// Use it once, at the top level of the `cdylib` crate. It exports the `http-handler` interface
/// of the component and keeps the one instance of `$ty` in a thread-local slot, created with
/// [`DurableObject::new`] on the first event. On that first event it also installs a panic hook
/// that writes the panic message to the host's log at level error, because a panic otherwise
/// leaves only a bare trap (standard error is discarded).
#[macro_export]
macro_rules! durable_object {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct DohostHttpHandler;

            impl $crate::__private::exports::dohost::object::http_handler::Guest
                for DohostHttpHandler
            {
                fn fetch(
                    request: $crate::__private::dohost::object::types::Request,
                ) -> ::core::result::Result<
                    $crate::__private::dohost::object::types::Response,
                    ::std::string::String,
                > {
                    $crate::__private::fetch(&INSTANCE, request)
                }
            }

            $crate::__private::export!(DohostHttpHandler with_types_in $crate::__private);
        };
    };
}

/// What [`durable_object!`] expands to needs: the generated bindings and the body of the exported
/// `fetch`. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use crate::{DurableObject, State};

    wit_bindgen::generate!({
        world: "durable-object",
        path: "../wit",
        // The export macro is invoked from the object's crate, not from this one.
        pub_export_macro: true,
    });

    /// Handles one `fetch` event: creates the instance in `slot` if there is none, then passes
    /// the request to it and converts the answer for the host.
    pub fn fetch<T: DurableObject>(
        slot: &'static LocalKey<RefCell<Option<T>>>,
        request: dohost::object::types::Request,
    ) -> Result<dohost::object::types::Response, String> {
        slot.with_borrow_mut(|slot| {
            let object = slot.get_or_insert_with(|| {
                std::panic::set_hook(Box::new(|info| crate::log::error(info.to_string())));
                T::new(State::new())
            });
            object
                .fetch(request.into())
                .map(Into::into)
                .map_err(|e| e.to_string())
        })
    }
}
