//! Serving a request on an http-worker (the world `http-worker`), whose bodies stream both ways.
//!
//! The request body goes to the guest as it comes from the client's connection: it is never read
//! in advance, so neither the request-body size limit nor the bodies' budget applies (nothing of
//! it is held but what the guest has not read yet of hyper's buffer). `handle` runs in a task of
//! its own, because the response head leaves as soon as the guest sets its `response-outparam`
//! while the guest goes on writing the body. wasmtime-wasi-http's body channel holds two chunks
//! of at most 1 MiB, so a client that stops reading blocks the guest's writes, and the event's
//! deadline then ends both.
//!
//! The instance is held until `handle` returns, under the limits of any worker request, then
//! pooled like any worker's, or dropped if it failed. The response body ends cleanly only once
//! `handle` returned without failing: a failure after the head was sent, or a body the guest
//! neither finished nor dropped, cuts it, and the client sees the connection end early instead of
//! a complete response. (A body with a `content-length` is whole with its last byte: hyper stops
//! reading it there.)

use super::Workers;
use crate::objects::ObjectError;
use crate::registry::App;
use crate::runtime::{EventError, Head, Instance};
use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Why an http-worker's request got no response head from the guest.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("the request names no host: an http-worker's request needs a Host header")]
    NoAuthority,
    #[error("the worker answered with the informational status {0}, which cannot end a request")]
    Informational(u16),
}

/// How `handle` ended, sent by its task once the instance is pooled or dropped.
type Outcome = Result<(), EventError>;

impl Workers {
    /// Runs a request on the app's http-worker. Returns once the guest sets the response head;
    /// its body streams from the guest afterwards.
    pub async fn serve(
        self: &Arc<Self>,
        app: &App,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, StreamingError> {
        let Some(worker) = &app.worker else {
            return Err(ObjectError::UnknownNamespace(app.name.clone()).into());
        };
        if request.uri().authority().is_none()
            && !request.headers().contains_key(http::header::HOST)
        {
            return Err(StreamingError::NoAuthority);
        }
        let (instance, permit) = self.instance(app, worker).await?;
        let (request, client_body) = ClientBody::wrap(request);
        let (head_tx, mut head_rx) = oneshot::channel();
        let (done_tx, mut done_rx) = oneshot::channel();
        let pooled = Pooled {
            workers: self.clone(),
            app: app.name.clone(),
            version: app.version,
            permit,
        };
        tokio::spawn(run(
            instance,
            pooled,
            request,
            client_body,
            head_tx,
            done_tx,
        ));

        // The head, or the end of `handle` without one. A guest may also keep its outparam
        // alive past `handle` (in a global), so the end is waited for beside the head.
        let first = tokio::select! {
            biased;
            head = &mut head_rx => First::Head(head.ok()),
            done = &mut done_rx => First::Done(flatten(done)),
        };
        let (head, outcome) = match first {
            First::Head(head) => (head, Pending::Waiting(done_rx)),
            // `set` sends the head before `handle` returns: it is there if it was set.
            First::Done(done) => (head_rx.try_recv().ok(), Pending::Done(done)),
        };
        let response = match head {
            Some(Ok(response)) => response,
            Some(Err(code)) => {
                let message = format!("the worker answered with the error code {code:?}");
                return Err(ObjectError::Event(EventError::Failed(message)).into());
            }
            // No head: `handle` failed before it set one, or returned without setting it.
            None => {
                let done = match outcome {
                    Pending::Waiting(done) => flatten(done.await),
                    Pending::Done(done) => done,
                };
                let e = done.err().unwrap_or_else(|| {
                    EventError::Failed(
                        "the worker returned without setting its response \
                         (response-outparam.set)"
                            .into(),
                    )
                });
                return Err(ObjectError::Event(e).into());
            }
        };
        // hyper would take a 1xx for an interim answer and wait for another head.
        if response.status().is_informational() {
            return Err(StreamingError::Informational(response.status().as_u16()));
        }
        Ok(response.map(|body| {
            Body::new(GuestBody {
                inner: body,
                outcome,
                ended: false,
            })
        }))
    }
}

/// What was seen first while waiting for the head.
enum First {
    Head(Option<Head>),
    Done(Outcome),
}

/// An outcome not known yet, or known.
enum Pending {
    Waiting(oneshot::Receiver<Outcome>),
    Done(Outcome),
}

/// `handle`'s outcome; a task that ended without saying (it panicked) failed.
fn flatten(received: Result<Outcome, oneshot::error::RecvError>) -> Outcome {
    received.unwrap_or_else(|_| {
        Err(EventError::Failed(
            "the worker's task ended without an outcome".into(),
        ))
    })
}

/// Where an instance goes back when its request succeeded.
struct Pooled {
    workers: Arc<Workers>,
    app: String,
    version: u64,
    permit: OwnedSemaphorePermit,
}

/// The task of one request: runs `handle` to its end, then pools the instance (or drops it, if
/// it failed) and reports how it ended.
async fn run(
    mut instance: Instance,
    pooled: Pooled,
    request: http::Request<ClientBody>,
    client_body: ClientBodyHandle,
    head: oneshot::Sender<Head>,
    done: oneshot::Sender<Outcome>,
) {
    let result = instance.handle(request, head).await;
    instance.count_fuel();
    // A socket that an object accepted from an upgrade the worker forwarded has no one to
    // answer its `101`: dropping it unregisters it.
    drop(instance.take_socket_io());
    // The request is over: a body the guest kept (in a global) is no longer the client's to
    // send, and the connection must not wait on it.
    client_body.close();
    let Pooled {
        workers,
        app,
        version,
        permit,
    } = pooled;
    match &result {
        Ok(()) => workers.idle.keep(&app, version, instance, permit),
        Err(e) => {
            tracing::warn!(app = %app, "worker request failed: {e}");
            drop(instance);
            drop(permit);
        }
    }
    let _ = done.send(result);
}

/// The client's request body, as the guest reads it. The host closes it when `handle` returns.
struct ClientBody {
    inner: Arc<Mutex<Option<Body>>>,
}

/// The host's side of a [`ClientBody`].
struct ClientBodyHandle {
    inner: Arc<Mutex<Option<Body>>>,
}

impl ClientBody {
    fn wrap(request: http::Request<Body>) -> (http::Request<ClientBody>, ClientBodyHandle) {
        let inner = Arc::new(Mutex::new(None));
        let request = request.map(|body| {
            *inner.lock().unwrap() = Some(body);
            ClientBody {
                inner: inner.clone(),
            }
        });
        (request, ClientBodyHandle { inner })
    }
}

impl ClientBodyHandle {
    /// Drops the client's body: hyper then finishes the exchange without it.
    fn close(self) {
        let body = self.inner.lock().unwrap().take();
        drop(body);
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut inner = self.inner.lock().unwrap();
        let Some(body) = inner.as_mut() else {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                "the request this body belongs to is over".into(),
            )))));
        };
        Pin::new(body)
            .poll_frame(cx)
            .map_err(|e| match e.into_inner().downcast::<hyper::Error>() {
                Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
                Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
            })
    }
}

/// Why a response body was cut rather than ended.
#[derive(Debug, Clone, thiserror::Error)]
enum BodyCut {
    #[error("the worker's request failed after its response head was sent: {0}")]
    Failed(EventError),
    #[error("the worker's response body failed: {0}")]
    Body(String),
    #[error("the worker returned without finishing its response body")]
    Unfinished,
}

/// The guest's response body, as the client receives it: ended only once `handle` returned
/// without failing.
struct GuestBody {
    inner: HyperOutgoingBody,
    outcome: Pending,
    /// Set once an end or a cut was returned: nothing more is read.
    ended: bool,
}

impl GuestBody {
    /// `handle`'s outcome, if it ended.
    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Option<Outcome> {
        if let Pending::Waiting(done) = &mut self.outcome {
            match Pin::new(done).poll(cx) {
                Poll::Pending => return None,
                Poll::Ready(received) => self.outcome = Pending::Done(flatten(received)),
            }
        }
        match &self.outcome {
            Pending::Done(done) => Some(done.clone()),
            Pending::Waiting(_) => None,
        }
    }
}

impl http_body::Body for GuestBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // The outcome first: once `handle` has returned, the body's channel holds everything
        // the guest did, so what it says next is final.
        let outcome = this.poll_outcome(cx);
        let end = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
            // The guest aborted the body, or wrote other than its `content-length`.
            Poll::Ready(Some(Err(e))) => Err(BodyCut::Body(e.to_string())),
            // Finished (or dropped) by the guest: whole once `handle` succeeded.
            Poll::Ready(None) => match outcome {
                None => return Poll::Pending,
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(BodyCut::Failed(e)),
            },
            Poll::Pending => match outcome {
                None => return Poll::Pending,
                // `handle` returned, leaving the body open: it can never end.
                Some(Ok(())) => Err(BodyCut::Unfinished),
                Some(Err(e)) => Err(BodyCut::Failed(e)),
            },
        };
        this.ended = true;
        match end {
            Ok(()) => Poll::Ready(None),
            Err(cut) => Poll::Ready(Some(Err(cut))),
        }
    }
}
