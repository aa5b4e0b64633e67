//! Write dohost Durable Objects in Rust.
//!
//! A Durable Object is a named address at which one piece of state lives, exactly once. dohost
//! keeps at most one live instance of your object per name, delivers its events (HTTP requests,
//! WebSocket messages, alarms) one at a time, gives it private transactional storage, and may
//! drop the instance whenever it is idle: its fields are then lost, its storage is kept, and the
//! next event creates a new instance.
//!
//! An object class is a `cdylib` crate built for `wasm32-wasip2`. It implements
//! [`DurableObject`] and registers the type with [`durable_object!`]; that is all the glue there
//! is. This crate hides the component-model bindings (the world `durable-object` of
//! `dohost:object@0.3.0`). A class that keeps its state in storage rather than in fields may
//! register with [`shared_object!`] instead, and the host then serves many of its objects from
//! one instance (the world `shared-object`).
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
//! a fresh instance for the next event. A panic, or running out of CPU time or memory, does the
//! same; the panic message goes to the host's log. To answer an error *and* keep the writes,
//! return `Ok(Response::error(..))` (see [`Response::error`]); to undo only part of the writes,
//! use [`Storage::transaction`].
//!
//! The other handlers fail the same way, without a client to answer: a failed WebSocket event
//! sends nothing and leaves its socket open; a failed alarm is retried.
//!
//! # WebSockets
//!
//! An object can accept WebSocket connections and keep them open while it hibernates: the host
//! holds the connection, and each message wakes the object (in a fresh instance if need be) and
//! arrives at [`DurableObject::websocket_message`]. In [`fetch`](DurableObject::fetch), accept an
//! upgrade request with [`State::accept_websocket`] and answer
//! [`Response::websocket_accepted`]. Later, find the open sockets with [`State::get_websockets`]
//! (by tag, if you gave them tags) rather than keeping them in fields, and keep what identifies a
//! connection in its attachment ([`WebSocket::serialize_attachment`]), which survives
//! hibernation. [`State::set_websocket_auto_response`] lets the host answer keep-alive pings
//! without waking the object.
//!
//! ```
//! use dohost_sdk::{DurableObject, Request, Response, Result, State, WebSocket, WebSocketMessage};
//!
//! struct Echo {
//!     state: State,
//! }
//!
//! impl DurableObject for Echo {
//!     fn new(state: State) -> Self {
//!         Echo { state }
//!     }
//!
//!     fn fetch(&mut self, req: Request) -> Result<Response> {
//!         if !req.is_websocket_upgrade() {
//!             return Ok(Response::error("expected a WebSocket upgrade", 426));
//!         }
//!         self.state.accept_websocket(&[])?;
//!         Ok(Response::websocket_accepted())
//!     }
//!
//!     fn websocket_message(&mut self, ws: WebSocket, message: WebSocketMessage) -> Result<()> {
//!         match message {
//!             WebSocketMessage::Text(text) => ws.send_text(&text),
//!             WebSocketMessage::Binary(data) => ws.send_binary(&data),
//!         }
//!     }
//! }
//!
//! dohost_sdk::durable_object!(Echo);
//! ```
//!
//! Messages sent during an event leave the host only once the event's writes are durable, so a
//! client never hears of a write that could still be lost.
//!
//! # Alarms
//!
//! Each object has one alarm: [`Storage::set_alarm`] with a time in milliseconds since the Unix
//! epoch ([`now_ms`] is the current one), [`Storage::get_alarm`], [`Storage::delete_alarm`]. When
//! it is due, the host calls [`DurableObject::alarm`], waking the object if it sleeps, even after
//! a restart of the host. Setting it is a write like any other, committed with the event. If the
//! handler fails, the host retries with exponential backoff at most 6 times ([`AlarmInfo`] says
//! which delivery this is); when it succeeds the alarm is cleared unless the handler set a new
//! one. This is how an object acts without being asked: expiring a session, flushing a batch.
//!
//! # Outbound HTTP
//!
//! [`fetch`] sends a request to another server and returns the whole response: to the
//! destinations the app lists in `[outbound] allow` of its `dohost.toml`, and nowhere else (a
//! class deployed alone reaches nothing). In an object it first commits the event's writes so far
//! and waits until they are durable, so no other system hears of a write that could be lost.
//! It is the standard `wasi:http/outgoing-handler`, so other HTTP clients built on it work too.
//!
//! ```no_run
//! use dohost_sdk::{Request, Response, Result, fetch};
//!
//! fn weather() -> Result<Response> {
//!     let answer = fetch(Request::new("GET", "https://api.example.com/weather?city=Paris"))?;
//!     Ok(Response::from_bytes(answer.body().to_vec()).with_status(answer.status()))
//! }
//! ```
//!
//! # Workers whose bodies stream
//!
//! A [`Worker`] gets each request's body whole and answers with a whole body. An app's worker
//! that moves large bodies (uploads, downloads, a proxy) implements [`HttpWorker`] instead, with
//! WASI's standard `wasi:http` types from the [`wasip2`] crate: it reads the request body as the
//! client sends it and writes the response body as it goes, and the host holds neither. The
//! component then implements the world `http-worker` (it exports `wasi:http/incoming-handler`),
//! and calls objects with [`Env::stub`] as any worker does.
//!
//! ```no_run
//! use dohost_sdk::wasip2::http::types::{
//!     Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
//! };
//! use dohost_sdk::wasip2::io::streams::StreamError;
//! use dohost_sdk::{Env, HttpWorker};
//! use std::io::Write;
//!
//! struct Echo;
//!
//! impl HttpWorker for Echo {
//!     fn handle(_env: &Env, request: IncomingRequest, response_out: ResponseOutparam) {
//!         let incoming = request.consume().unwrap();
//!         let input = incoming.stream().unwrap();
//!         let response = OutgoingResponse::new(Fields::new());
//!         let body = response.body().unwrap();
//!         // The head leaves now; the body follows as it is written.
//!         ResponseOutparam::set(response_out, Ok(response));
//!         let mut output = body.write().unwrap();
//!         loop {
//!             match input.blocking_read(64 << 10) {
//!                 Ok(chunk) => output.write_all(&chunk).unwrap(),
//!                 Err(StreamError::Closed) => break,
//!                 Err(e) => panic!("reading the request body: {e:?}"),
//!             }
//!         }
//!         output.blocking_flush().unwrap();
//!         drop(output);
//!         OutgoingBody::finish(body, None).unwrap();
//!     }
//! }
//!
//! dohost_sdk::http_worker!(Echo);
//! ```
//!
//! # What else an object can do
//!
//! Only what its world grants: [`State`] (identity, [`Storage`] and WebSockets), [`Env`]
//! (variables, secrets and stubs), [`fetch`], [`new_unique_name`] and [`log`]. The standard
//! library's clocks and random numbers work; files, environment variables and sockets do not, and
//! standard output and error are discarded.

#![warn(missing_docs)]

mod alarm;
mod env;
mod error;
mod fetch;
pub mod log;
mod request;
mod response;
mod state;
mod storage;
mod stream;
mod websocket;

pub use alarm::{AlarmInfo, now_ms};
pub use env::{CallError, Env, Stub};
pub use error::{Error, Result, StorageError, WebSocketError};
pub use fetch::{FetchError, fetch};
pub use request::Request;
pub use response::Response;
pub use state::{State, new_unique_name};
pub use storage::{ListOptions, Storage};
pub use stream::{ResponseStream, StreamError};
/// WASI 0.2's bindings, the version of the host's: the `wasi:http` types an [`HttpWorker`]
/// handles (`wasip2::http::types`), and `wasi:io`'s streams its bodies are.
pub use wasip2;
pub use websocket::{WebSocket, WebSocketMessage};

/// A Durable Object class: what the host creates and delivers events to.
///
/// Register the implementing type with [`durable_object!`]. The host delivers one event at a
/// time, so `&mut self` is never shared. Every handler commits the event's writes when it returns
/// `Ok` and discards them when it returns `Err`. Only [`fetch`](Self::fetch) is required: the
/// others default to doing nothing, for objects without WebSockets or alarms.
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

    /// Handles a message received on one of the object's WebSockets (other than the
    /// auto-response request, which the host answers itself).
    ///
    /// `Err` discards the event's writes (and the messages it sent); the socket stays open.
    fn websocket_message(&mut self, ws: WebSocket, message: WebSocketMessage) -> Result<()> {
        let _ = (ws, message);
        Ok(())
    }

    /// Called when the client closed `ws` (`was_clean`), or the connection was lost (`code`
    /// 1006, not clean): the chance to tell the others, or to clean up what was kept for it.
    ///
    /// The socket is already gone: it is not in [`State::get_websockets`], and calls on `ws`,
    /// reading its attachment included, fail with [`WebSocketError::NotFound`]. So what a
    /// goodbye needs (say, the user's name) must also be kept in [`Storage`], keyed by
    /// [`WebSocket::id`].
    fn websocket_close(
        &mut self,
        ws: WebSocket,
        code: u16,
        reason: String,
        was_clean: bool,
    ) -> Result<()> {
        let _ = (ws, code, reason, was_clean);
        Ok(())
    }

    /// Called when `ws` failed, for example with a message over the host's size limit, after
    /// which the host closes it (code 1009). No [`websocket_close`](Self::websocket_close)
    /// follows, so clean up here too; as there, calls on `ws` may fail with
    /// [`WebSocketError::NotFound`].
    fn websocket_error(&mut self, ws: WebSocket, error: String) -> Result<()> {
        let _ = (ws, error);
        Ok(())
    }

    /// Called when the client of `stream` went away, or read so slowly that the host ended the
    /// stream. It is already gone from [`State::get_streams`]. Streams closed by the object
    /// itself get no call.
    fn stream_closed(&mut self, stream: ResponseStream) -> Result<()> {
        let _ = stream;
        Ok(())
    }

    /// Called when the alarm set with [`Storage::set_alarm`] is due.
    ///
    /// `Ok` commits the event's writes and clears the alarm, unless the handler set a new one.
    /// `Err` discards the writes and makes the host retry later (see [`AlarmInfo`]).
    fn alarm(&mut self, info: AlarmInfo) -> Result<()> {
        let _ = info;
        Ok(())
    }
}

/// Registers `$ty`, a type implementing [`DurableObject`], as the crate's object class.
///
/// Use it once, at the top level of the `cdylib` crate. It exports the component's
/// `http-handler`, `websocket-handler`, `stream-handler` and `alarm-handler` interfaces and keeps the one instance
/// of `$ty` in a thread-local slot, created with [`DurableObject::new`] on the first event of any
/// kind. On that first event it also installs a panic hook that writes the panic message to the
/// host's log at level error, because a panic otherwise leaves only a bare trap (standard error
/// is discarded).
#[macro_export]
macro_rules! durable_object {
    ($ty:ty) => {
        const _: () = {
            $crate::__object_exports!($ty, []);
    $crate::__private::export!(DohostObject with_types_in $crate::__private);
        };
    };
}

/// Registers `$ty` as the crate's object class, like [`durable_object!`], and lets the host serve
/// many objects of the class from one instance (the world `shared-object`): an object that wakes
/// then costs no new instance, which makes a class with many objects several times faster.
///
/// The price is that fields are a cache of storage, never state: the host may run other objects'
/// events on the instance between two events of one object. Before an event whose object is not
/// the one whose `$ty` the slot holds (or whose state may have changed elsewhere since), the slot
/// is emptied and [`DurableObject::new`] builds the next object afresh. So use it for classes that
/// keep their state in storage and in WebSocket attachments, and [`durable_object!`] for classes
/// that keep state only in fields.
#[macro_export]
macro_rules! shared_object {
    ($ty:ty) => {
        const _: () = {
            $crate::__object_exports!($ty, [shared_object]);

            impl $crate::__private::shared_object::exports::dohost::object::sharing::Guest
                for DohostObject
            {
                fn switch_object() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::switch_object(&INSTANCE)
                }
            }

            $crate::__private::shared_object::export!(
                DohostObject with_types_in $crate::__private::shared_object
            );
        };
    };
}

/// The slot and the handlers both object macros export, in the bindings module `[$m]` of
/// `__private` (the world's own exported types).
#[doc(hidden)]
#[macro_export]
macro_rules! __object_exports {
    ($ty:ty, [$($m:ident)?]) => {
        ::std::thread_local! {
            static INSTANCE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        struct DohostObject;

        impl $crate::__private $(::$m)?::exports::dohost::object::http_handler::Guest for DohostObject {
            fn fetch(
                request: $crate::__private::shared::types::Request,
            ) -> ::core::result::Result<
                $crate::__private::shared::types::Response,
                ::std::string::String,
            > {
                $crate::__private::fetch(&INSTANCE, request)
            }
        }

        impl $crate::__private $(::$m)?::exports::dohost::object::websocket_handler::Guest
            for DohostObject
        {
            fn on_message(
                socket: u64,
                message: $crate::__private $(::$m)?::exports::dohost::object::websocket_handler::Message,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::on_message(&INSTANCE, socket, message.into())
            }

            fn on_close(
                socket: u64,
                code: u16,
                reason: ::std::string::String,
                was_clean: bool,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::on_close(&INSTANCE, socket, code, reason, was_clean)
            }

            fn on_error(
                socket: u64,
                error: ::std::string::String,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::on_error(&INSTANCE, socket, error)
            }
        }

        impl $crate::__private $(::$m)?::exports::dohost::object::stream_handler::Guest
            for DohostObject
        {
            fn on_close(stream: u64) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::on_stream_close(&INSTANCE, stream)
            }
        }

        impl $crate::__private $(::$m)?::exports::dohost::object::alarm_handler::Guest for DohostObject {
            fn on_alarm(
                info: $crate::__private $(::$m)?::exports::dohost::object::alarm_handler::AlarmInfo,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::on_alarm(&INSTANCE, info.into())
            }
        }
    };
}

/// An app's worker: the stateless front that receives the requests of the app's routes, checks
/// them, and calls objects through [`Stub`]s (from [`Env::stub`]).
///
/// Register the implementing type with [`worker!`]. Requests run concurrently, each on an
/// instance of its own; the host reuses an instance for later requests, so fields may hold
/// caches, never state that matters.
pub trait Worker: Sized + 'static {
    /// Called once per instance, before its first request.
    fn new(env: Env) -> Self;

    /// Handles one request. `Err` answers 500 with the error's message.
    ///
    /// To hand a WebSocket upgrade to an object, forward the request through a stub and return
    /// the object's answer: its `101` completes the handshake, with the socket the object's.
    fn fetch(&mut self, req: Request) -> Result<Response>;
}

/// Registers `$ty`, a type implementing [`Worker`], as the crate's worker: the component then
/// implements the world `worker` of `dohost:object@0.3.0`. Use it once, at the top level of the
/// `cdylib` crate, instead of [`durable_object!`].
#[macro_export]
macro_rules! worker {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct DohostWorker;

            impl $crate::__private::worker::exports::dohost::object::http_handler::Guest
                for DohostWorker
            {
                fn fetch(
                    request: $crate::__private::shared::types::Request,
                ) -> ::core::result::Result<
                    $crate::__private::shared::types::Response,
                    ::std::string::String,
                > {
                    $crate::__private::worker::fetch(&INSTANCE, request)
                }
            }

            $crate::__private::worker::export!(
                DohostWorker with_types_in $crate::__private::worker
            );
        };
    };
}

/// An app's worker whose request and response bodies stream: WASI's standard
/// `wasi:http/incoming-handler`, for the world `http-worker`.
///
/// Register the implementing type with [`http_worker!`]. Set the response head with
/// `ResponseOutparam::set` as soon as it is known: the host sends it then, and the body follows
/// as `handle` writes it. A body with a `content-length` header is complete with its last byte
/// (the host may then close the stream, so a flush after it may fail); one without ends when
/// `OutgoingBody::finish` was called and `handle` returned. A panic, or a limit reached, after the
/// head was sent cuts an incomplete body, and before, answers 500, as does returning without
/// setting the response. The whole of `handle`, writing
/// the body included, runs under the limits of a worker request. Requests run concurrently, each
/// on an instance of its own, reused for later requests like a [`Worker`]'s.
///
/// wasi:http has no WebSocket upgrade: a worker that hands WebSockets to objects is a [`Worker`].
pub trait HttpWorker: 'static {
    /// Handles one request. `env` reaches the app's variables and objects.
    fn handle(
        env: &Env,
        request: wasip2::http::types::IncomingRequest,
        response_out: wasip2::http::types::ResponseOutparam,
    );
}

/// Registers `$ty`, a type implementing [`HttpWorker`], as the crate's worker: the component then
/// exports `wasi:http/incoming-handler` and implements the world `http-worker` of
/// `dohost:object@0.3.0`. Use it once, at the top level of the `cdylib` crate, instead of
/// [`worker!`].
#[macro_export]
macro_rules! http_worker {
    ($ty:ty) => {
        const _: () = {
            struct DohostHttpWorker;

            impl $crate::wasip2::exports::http::incoming_handler::Guest for DohostHttpWorker {
                fn handle(
                    request: $crate::wasip2::http::types::IncomingRequest,
                    response_out: $crate::wasip2::http::types::ResponseOutparam,
                ) {
                    $crate::__private::http_worker::handle::<$ty>(request, response_out)
                }
            }

            $crate::wasip2::http::proxy::export!(DohostHttpWorker);
        };
    };
}

/// What [`durable_object!`] expands to needs: the generated bindings and the bodies of the
/// exported functions. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use crate::{DurableObject, State, WebSocket};

    wit_bindgen::generate!({
        world: "durable-object",
        path: "../wit/v0.3.0",
        // The export macro is invoked from the object's crate, not from this one.
        pub_export_macro: true,
        with: {
            "dohost:object/types@0.3.0": dohost_worker_bindings::dohost::object::types,
            "dohost:object/logging@0.3.0": dohost_worker_bindings::dohost::object::logging,
            "dohost:object/config@0.3.0": dohost_worker_bindings::dohost::object::config,
            "dohost:object/stubs@0.3.0": dohost_worker_bindings::dohost::object::stubs,
            "dohost:object/identity@0.3.0": dohost_shared_object_bindings::dohost::object::identity,
            "dohost:object/storage@0.3.0": dohost_shared_object_bindings::dohost::object::storage,
            "dohost:object/websockets@0.3.0": dohost_shared_object_bindings::dohost::object::websockets,
            "dohost:object/streams@0.3.0": dohost_shared_object_bindings::dohost::object::streams,
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        },
    });

    /// The world `shared-object`: the same imports and handlers, and `sharing` (a crate of its
    /// own, like the worker world's).
    pub mod shared_object {
        pub use dohost_shared_object_bindings::*;

        use super::exports::dohost::object::{alarm_handler, websocket_handler};
        use exports::dohost::object::alarm_handler::AlarmInfo;
        use exports::dohost::object::websocket_handler::Message;

        impl From<Message> for websocket_handler::Message {
            fn from(message: Message) -> Self {
                match message {
                    Message::Text(text) => websocket_handler::Message::Text(text),
                    Message::Binary(bytes) => websocket_handler::Message::Binary(bytes),
                }
            }
        }

        impl From<AlarmInfo> for alarm_handler::AlarmInfo {
            fn from(info: AlarmInfo) -> Self {
                alarm_handler::AlarmInfo {
                    retry_count: info.retry_count,
                    is_retry: info.is_retry,
                }
            }
        }
    }

    /// The worker world's bindings (a crate of their own: see there), and the body of its export.
    pub mod worker {
        pub use dohost_worker_bindings::*;

        use crate::Worker;

        /// Handles one request: creates the worker in `slot` if there is none, then hands it
        /// the request.
        pub fn fetch<T: Worker>(
            slot: &'static super::Slot<T>,
            request: super::shared::types::Request,
        ) -> Result<super::shared::types::Response, String> {
            super::with_slot(
                slot,
                || T::new(crate::Env::new()),
                |worker| worker.fetch(request.into()).map(Into::into),
            )
        }
    }

    /// The body of the http-worker's export.
    pub mod http_worker {
        use crate::HttpWorker;
        use std::sync::Once;
        use wasip2::http::types::{IncomingRequest, ResponseOutparam};

        /// Handles one request. The first also installs the panic hook that logs a panic's
        /// message (standard error is discarded).
        pub fn handle<T: HttpWorker>(request: IncomingRequest, response_out: ResponseOutparam) {
            static HOOK: Once = Once::new();
            HOOK.call_once(|| {
                std::panic::set_hook(Box::new(|info| crate::log::error(info.to_string())))
            });
            T::handle(&crate::Env::new(), request, response_out)
        }
    }

    /// The interfaces both worlds import, generated once (with the worker world).
    pub use dohost_worker_bindings::dohost::object as shared;

    use exports::dohost::object::alarm_handler::AlarmInfo;
    use exports::dohost::object::websocket_handler::Message;

    /// The slot holding the object's one instance, filled on its first event.
    type Slot<T> = LocalKey<RefCell<Option<T>>>;

    /// Runs one event: creates the instance in `slot` with `new` if there is none, then passes
    /// it to `handle` and turns an error into the message the host wants. The first instance also
    /// installs the panic hook that logs a panic's message (standard error is discarded).
    fn with_slot<T, R>(
        slot: &'static Slot<T>,
        new: impl FnOnce() -> T,
        handle: impl FnOnce(&mut T) -> crate::Result<R>,
    ) -> Result<R, String> {
        slot.with_borrow_mut(|slot| {
            let instance = slot.get_or_insert_with(|| {
                std::panic::set_hook(Box::new(|info| crate::log::error(info.to_string())));
                new()
            });
            handle(instance).map_err(|e| e.to_string())
        })
    }

    /// [`with_slot`] for an object.
    fn with_instance<T: DurableObject, R>(
        slot: &'static Slot<T>,
        handle: impl FnOnce(&mut T) -> crate::Result<R>,
    ) -> Result<R, String> {
        with_slot(slot, || T::new(State::new()), handle)
    }

    /// Handles one `fetch` event, converting the request and the answer.
    pub fn fetch<T: DurableObject>(
        slot: &'static Slot<T>,
        request: shared::types::Request,
    ) -> Result<shared::types::Response, String> {
        with_instance(slot, |object| object.fetch(request.into()).map(Into::into))
    }

    /// Runs one event of WebSocket `socket` as [`with_instance`] does, giving `handle` its handle.
    fn with_socket<T: DurableObject>(
        slot: &'static Slot<T>,
        socket: u64,
        handle: impl FnOnce(&mut T, WebSocket) -> crate::Result<()>,
    ) -> Result<(), String> {
        with_instance(slot, |object| handle(object, WebSocket::new(socket)))
    }

    /// Handles one `on-message` event.
    pub fn on_message<T: DurableObject>(
        slot: &'static Slot<T>,
        socket: u64,
        message: Message,
    ) -> Result<(), String> {
        with_socket(slot, socket, |object, ws| {
            object.websocket_message(ws, message.into())
        })
    }

    /// Handles one `on-close` event.
    pub fn on_close<T: DurableObject>(
        slot: &'static Slot<T>,
        socket: u64,
        code: u16,
        reason: String,
        was_clean: bool,
    ) -> Result<(), String> {
        with_socket(slot, socket, |object, ws| {
            object.websocket_close(ws, code, reason, was_clean)
        })
    }

    /// Handles one `on-error` event.
    pub fn on_error<T: DurableObject>(
        slot: &'static Slot<T>,
        socket: u64,
        error: String,
    ) -> Result<(), String> {
        with_socket(slot, socket, |object, ws| object.websocket_error(ws, error))
    }

    /// Handles one `on-close` event of a stream.
    pub fn on_stream_close<T: DurableObject>(
        slot: &'static Slot<T>,
        stream: u64,
    ) -> Result<(), String> {
        with_instance(slot, |object| {
            object.stream_closed(crate::ResponseStream::new(stream))
        })
    }

    /// Handles `switch-object` (world `shared-object`): the next event is another object's, so
    /// the one in the slot goes.
    pub fn switch_object<T: DurableObject>(slot: &'static Slot<T>) -> Result<(), String> {
        let previous = slot.with_borrow_mut(Option::take);
        drop(previous);
        Ok(())
    }

    /// Handles one `on-alarm` event.
    pub fn on_alarm<T: DurableObject>(
        slot: &'static Slot<T>,
        info: AlarmInfo,
    ) -> Result<(), String> {
        with_instance(slot, |object| object.alarm(info.into()))
    }
}
