//! An http-worker's request (the world `http-worker`): handed to the guest's
//! `wasi:http/incoming-handler.handle` as wasmtime-wasi-http's `incoming-request`, with a
//! `response-outparam` whose head leaves through a channel while `handle` still runs, so the body
//! can follow as the guest writes it.

use super::error::EventError;
use super::instance::{Bindings, Instance, call_guest};
use bytes::Bytes;
use http_body::Body;
use tokio::sync::oneshot;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// What the guest answers with: the response head and its body (a stream the guest goes on
/// writing), or the error code it set instead.
pub type Head = Result<http::Response<HyperOutgoingBody>, ErrorCode>;

impl Instance {
    /// Delivers one request to an http-worker, whose body the guest reads as it comes. The
    /// response goes to `head` when the guest sets it; this returns when `handle` does, under the
    /// event's CPU, memory and time limits, writing the body included. On `Err` the instance
    /// must be dropped: it may be in any state.
    ///
    /// The request's URI or `Host` header must name its authority (wasi:http requires one).
    pub async fn handle<B>(
        &mut self,
        request: http::Request<B>,
        head: oneshot::Sender<Head>,
    ) -> Result<(), EventError>
    where
        B: Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    {
        let (_busy, deadline) = self.start_event()?;
        let Bindings::HttpWorker(bindings) = &self.bindings else {
            return Err(EventError::Failed(
                "only an http-worker serves wasi:http".into(),
            ));
        };
        let state = self.store.data_mut();
        state.reset_chain();
        let mut http = state.http();
        let resources = http
            .new_incoming_request(Scheme::Http, request)
            .and_then(|request| Ok((request, http.new_response_outparam(head)?)));
        let (request, response_out) =
            resources.map_err(|e| EventError::Failed(format!("{e:#}")))?;
        let call = bindings.wasi_http_incoming_handler().call_handle(
            &mut self.store,
            request,
            response_out,
        );
        let called = call_guest(deadline, &self.heavy, call).await;
        self.outcome(called.map(Ok))
    }
}
