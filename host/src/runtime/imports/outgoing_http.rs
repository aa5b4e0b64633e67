//! `wasi:http/outgoing-handler`: a guest's outbound HTTP requests, admitted by its app's
//! `[outbound] allow`, capped, ended by the event's deadline, and behind an object's output gate.
//!
//! The rest of `wasi:http` (fields, requests, responses, bodies) is wasmtime-wasi-http's. Its
//! `handle` sends through [`WasiHttpHooks::send_request`], which sees neither the app nor the
//! object's storage, so `handle` is ours: it checks the URL, takes the request's slots, lets
//! wasmtime-wasi-http build the request and call [`OutboundHooks::send_request`] with what it
//! admitted, and then takes the output gate, which the request waits for before it connects
//! (`runtime/outgoing_send.rs`, beside this folder: it is no WIT interface).

use crate::config::OUTBOUND_DEADLINE_MARGIN;
use crate::outbound::{Destination, Refused};
use crate::runtime::outgoing_send::{self, Admitted, Gate, OutboundHooks, Slots};
use crate::runtime::state::HostState;
use crate::storage::StorageError;
use std::time::Instant;
use tokio::sync::oneshot;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::bindings::http::types::{self, ErrorCode, Scheme};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::p2::{HttpError, HttpResult};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView};

/// Links `wasi:http/outgoing-handler`'s one function to [`HostState::handle_outgoing`]. By hand: the
/// generated `add_to_linker` would want the store to implement all of `wasi:http/types` too,
/// which is wasmtime-wasi-http's.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker
        .instance("wasi:http/outgoing-handler@0.2.12")?
        .func_wrap(
            "handle",
            |mut store: StoreContextMut<'_, HostState>,
             (request, options): (
                Resource<HostOutgoingRequest>,
                Option<Resource<RequestOptions>>,
            )| {
                // An error code is the guest's answer; anything else traps.
                let answer = match store.data_mut().handle_outgoing(request, options) {
                    Ok(future) => Ok(future),
                    Err(e) => Err(e.downcast()?),
                };
                Ok((answer,))
            },
        )?;
    Ok(())
}

impl HostState {
    /// `handle`: sends `request`, or answers why not.
    fn handle_outgoing(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> HttpResult<Resource<HostFutureIncomingResponse>> {
        // The guest gave both up with the call; wasmtime-wasi-http reads the options but leaves
        // them in the table.
        let options_rep = options.as_ref().map(|o| o.rep());
        let drop_options = |state: &mut HostState| -> HttpResult<()> {
            if let Some(rep) = options_rep {
                state
                    .table
                    .delete(Resource::<RequestOptions>::new_own(rep))?;
            }
            Ok(())
        };
        let (admitted, gate) = match self.admit(&request)? {
            Ok(admitted) => admitted,
            Err(code) => {
                self.table.delete(request)?;
                drop_options(self)?;
                return Err(code.into());
            }
        };
        self.outbound.next = Some(admitted);
        let handled = outgoing_handler::Host::handle(&mut self.http(), request, options);
        drop_options(self)?;
        // Still there only if wasmtime-wasi-http refused the request before sending it.
        if self.outbound.next.take().is_some() {
            return handled;
        }
        let future = handled?;
        // The request is on its way; it connects once the event's writes so far are durable.
        let _ = gate.send(self.commit_before_request());
        Ok(future)
    }

    /// Checks a request before anything of it happens: its URL against the app's allow list,
    /// the event's time left, an open transaction, and the caps on requests in flight. The outer
    /// error traps (a bad resource); the inner one is the guest's answer.
    fn admit(
        &mut self,
        request: &Resource<HostOutgoingRequest>,
    ) -> Result<Result<(Admitted, oneshot::Sender<Gate>), ErrorCode>, HttpError> {
        let req = self.table.get(request)?;
        let destination = match self.check_url(req) {
            Ok(destination) => destination,
            Err(code) => return Ok(Err(code)),
        };
        let Some(deadline) = self
            .deadline
            .checked_sub(OUTBOUND_DEADLINE_MARGIN)
            .filter(|&d| d > Instant::now())
        else {
            return Ok(Err(ErrorCode::ConnectionTimeout));
        };
        if self.storage.as_ref().is_some_and(|s| s.in_transaction()) {
            return Ok(Err(ErrorCode::InternalError(Some(
                "an outbound request cannot leave inside an open transaction: commit or roll it \
                 back first"
                    .into(),
            ))));
        }
        let slots = match Slots::take(
            &self.outbound.slots,
            &self.env.outbound_slots,
            &self.outbound.shared,
        ) {
            Ok(slots) => slots,
            Err(full) => {
                tracing::debug!(
                    namespace = %self.identity.namespace,
                    "outbound request refused: {full} has too many in flight"
                );
                return Ok(Err(ErrorCode::ConnectionLimitReached));
            }
        };
        let (tx, rx) = oneshot::channel();
        let admitted = Admitted {
            destination,
            env: self.env.clone(),
            deadline,
            max_body: self.outbound.max_body,
            slots,
            gate: rx,
        };
        Ok(Ok((admitted, tx)))
    }

    /// The request's destination, if the app's `[outbound] allow` admits its URL; an IP
    /// address is checked here too, so that a refused one commits nothing.
    fn check_url(&self, req: &HostOutgoingRequest) -> Result<Destination, ErrorCode> {
        // wasmtime-wasi-http's default, which `handle` applies too.
        let scheme = match &req.scheme {
            None | Some(Scheme::Https) => "https",
            Some(Scheme::Http) => "http",
            Some(Scheme::Other(other)) => other.as_str(),
        };
        let authority = req.authority.as_deref().unwrap_or_default();
        // A user name or password would go out in the `Host` header.
        let authority = authority
            .parse::<http::uri::Authority>()
            .ok()
            .filter(|a| !a.as_str().contains('@'))
            .ok_or(ErrorCode::HttpRequestUriInvalid)?;
        let allow = &self.env.outbound;
        let checked = allow
            .check_url(scheme, authority.host(), authority.port_u16())
            .and_then(|destination| match destination.ip() {
                Some(ip) => allow.check_address(&destination, ip).map(|()| destination),
                None => Ok(destination),
            });
        checked.map_err(|refused| {
            tracing::debug!(
                namespace = %self.identity.namespace,
                "outbound request refused: {refused}"
            );
            match refused {
                Refused::Host { .. } => ErrorCode::HttpRequestUriInvalid,
                Refused::Address { .. } => ErrorCode::DestinationIpProhibited,
                Refused::Scheme { .. } | Refused::NotListed { .. } => ErrorCode::HttpRequestDenied,
            }
        })
    }

    /// The output gate for outbound requests, as for calls: commits the event's writes so far
    /// and returns what the request must wait for. A worker has no writes.
    fn commit_before_request(&mut self) -> Gate {
        let (Some(storage), Some(committer)) = (self.storage.as_mut(), self.committer.as_ref())
        else {
            return Ok(None);
        };
        storage.commit_before_call(committer).map_err(|e| match e {
            StorageError::InvalidArgument(m) => m,
            other => other.to_string(),
        })
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = outgoing_send::Sent> + Send> {
        match self.next.take() {
            Some(admitted) => Box::new(outgoing_send::send(
                self.shared.clone(),
                admitted,
                request,
                options,
            )),
            // Only our `handle` sends, and it always admits first.
            None => Box::new(async { Err(Error::HttpRequestDenied) }),
        }
    }

    // The defaults of these three log a warning for every failed request: a guest could flood
    // the host's log with them.

    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        if err.is_timeout() {
            ErrorCode::HttpResponseTimeout
        } else if err.is_parse_too_large() {
            // Over `MAX_RESPONSE_HEAD` or `MAX_RESPONSE_HEADERS`.
            ErrorCode::HttpResponseHeaderSectionSize(None)
        } else if err.is_incomplete_message() {
            ErrorCode::HttpResponseIncomplete
        } else if err.is_closed() || err.is_canceled() {
            ErrorCode::ConnectionTerminated
        } else {
            ErrorCode::HttpProtocolError
        }
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::TimedOut => ErrorCode::ConnectionTimeout,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                ErrorCode::DestinationUnavailable
            }
            _ => ErrorCode::ConnectionRefused,
        }
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        match err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(_)) => ErrorCode::TlsCertificateError,
            Some(rustls::Error::AlertReceived(alert)) => {
                ErrorCode::TlsAlertReceived(types::TlsAlertReceivedPayload {
                    alert_id: Some(u8::from(*alert)),
                    alert_message: Some(format!("{alert:?}")),
                })
            }
            _ => ErrorCode::TlsProtocolError,
        }
    }
}
