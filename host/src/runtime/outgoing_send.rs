//! Sending one admitted outbound request: resolve its host, check every address, wait for the
//! output gate, connect to the checked addresses only (no second lookup, so a name cannot
//! rebind between the check and the connect), and cap the response's time and size.
//!
//! Adapted from `default_send_request` of wasmtime-wasi-http 48.0.8 (Apache-2.0 WITH
//! LLVM-exception, Copyright the Bytecode Alliance developers): the handshake, the origin-form
//! rewrite and driving the connection while the head is awaited are theirs; the checked
//! connect, the TLS configuration built once, the caps and the deadline are ours.

use crate::config::{OUTBOUND_CONNECT_TIMEOUT, OUTBOUND_MAX_PER_INSTANCE, OUTBOUND_MAX_TOTAL};
use crate::env::Env;
use crate::metrics::OutboundLabels;
use crate::outbound::{Destination, Scheme};
use crate::storage::CommitOutcome;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{Sleep, timeout_at};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// The connection's own future, which wasmtime-wasi-http runs beside the response body.
pub type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// What sending a request gives wasmtime-wasi-http: the response with its (capped) body.
pub type Sent = Result<(http::Response<WasiBody>, IoFuture), Error>;

/// What an object's request waits for before it connects: the commit of the event's writes so
/// far (`None` when there is nothing to wait for), or why it cannot leave.
pub type Gate = Result<Option<CommitOutcome>, String>;

/// Largest response head (status line and headers) read from an origin.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Most response headers read from an origin.
const MAX_RESPONSE_HEADERS: usize = 100;

/// What every instance's requests share: the TLS configuration, built once, and the host-wide
/// cap on requests in flight.
pub struct Outbound {
    tls: Arc<rustls::ClientConfig>,
    slots: Arc<Semaphore>,
    /// Requests sent, by app and outcome, for the metrics.
    pub(crate) requests: Family<OutboundLabels, Counter>,
}

impl Outbound {
    /// TLS with rustls on ring and Mozilla's root certificates (`webpki-roots`): the host's own
    /// trust store plays no part, so guests see the same roots on every machine.
    pub fn new() -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        // Deprecated for lacking post-quantum key exchange, which only aws-lc-rs has; ring needs
        // no toolchain beyond a C compiler.
        #[expect(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The connection speaks HTTP/1.1 only.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Outbound {
            tls: Arc::new(tls),
            slots: Arc::new(Semaphore::new(OUTBOUND_MAX_TOTAL)),
            requests: Family::default(),
        })
    }
}

/// The per-instance half of outbound HTTP, handed to wasmtime-wasi-http as its hooks.
pub struct OutboundHooks {
    pub(super) shared: Arc<Outbound>,
    /// The instance's cap on requests in flight.
    pub(super) slots: Arc<Semaphore>,
    /// What `handle` admitted, for the `send_request` it calls next.
    pub(super) next: Option<Admitted>,
    /// The largest response body the instance may read, if its bodies are capped.
    pub(super) max_body: Option<u64>,
}

impl OutboundHooks {
    pub fn new(shared: Arc<Outbound>, max_body: Option<u64>) -> Self {
        OutboundHooks {
            shared,
            slots: Arc::new(Semaphore::new(OUTBOUND_MAX_PER_INSTANCE)),
            next: None,
            max_body,
        }
    }
}

/// A request's places under the three caps on requests in flight: its instance's, its app's
/// and the host's. Held until its connection closes.
pub struct Slots {
    _instance: OwnedSemaphorePermit,
    _app: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

impl Slots {
    /// Takes a place under each cap at once, or names the first that is full.
    pub fn take(
        instance: &Arc<Semaphore>,
        app: &Arc<Semaphore>,
        host: &Outbound,
    ) -> Result<Slots, &'static str> {
        Ok(Slots {
            _instance: instance
                .clone()
                .try_acquire_owned()
                .map_err(|_| "the instance")?,
            _app: app.clone().try_acquire_owned().map_err(|_| "the app")?,
            _host: host
                .slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| "the host")?,
        })
    }
}

/// A request `handle` admitted by its URL.
pub struct Admitted {
    pub destination: Destination,
    /// The app's, for the allow list the resolved addresses are checked against.
    pub env: Arc<Env>,
    /// When the request must be over, body included: a margin before the event's deadline.
    pub deadline: Instant,
    /// The largest response body read, if the instance's are capped
    /// ([`crate::config::OUTBOUND_MAX_RESPONSE_BODY`]; an http-worker's stream through).
    pub max_body: Option<u64>,
    pub slots: Slots,
    /// The output gate, sent once the request is handed to wasmtime-wasi-http.
    pub gate: oneshot::Receiver<Gate>,
}

/// Sends `req` to its admitted destination, and counts its outcome.
pub async fn send(
    shared: Arc<Outbound>,
    admitted: Admitted,
    req: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Sent {
    let app = admitted.env.app.clone().unwrap_or_default();
    let sent = send_admitted(shared.clone(), admitted, req, options).await;
    let outcome = match &sent {
        Ok(_) => "ok".to_owned(),
        // The variant's name alone: its data (a DNS error's text) would make series without end.
        Err(e) => format!("{e:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    shared
        .requests
        .get_or_create(&OutboundLabels { app, outcome })
        .inc();
    sent
}

async fn send_admitted(
    shared: Arc<Outbound>,
    admitted: Admitted,
    mut req: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Sent {
    let Admitted {
        destination,
        env,
        deadline,
        max_body,
        slots,
        gate,
    } = admitted;
    let options = options.unwrap_or_default();
    // Each step ends by the request's deadline, and sooner if it has a time limit of its own.
    let within = |limit: Option<Duration>| {
        limit
            .and_then(|limit| Instant::now().checked_add(limit))
            .map_or(deadline, |by| by.min(deadline))
    };
    let connect_limit = Some(
        options
            .connect_timeout
            .map_or(OUTBOUND_CONNECT_TIMEOUT, |t| {
                t.min(OUTBOUND_CONNECT_TIMEOUT)
            }),
    );

    let addresses = resolve(&destination, within(connect_limit)).await?;
    let addresses = check_addresses(&env, &destination, addresses)?;
    wait_for_gate(gate, deadline).await?;

    let connect_by = within(connect_limit).into();
    let tcp = timeout_at(connect_by, TcpStream::connect(&addresses[..]))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = match destination.scheme() {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            let connector = tokio_rustls::TlsConnector::from(shared.tls.clone());
            let tls = timeout_at(
                connect_by,
                connector.connect(server_name(&destination)?, tcp),
            )
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
            Box::new(tls)
        }
    };
    let (mut sender, conn) = timeout_at(
        connect_by,
        hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_RESPONSE_HEAD)
            .max_headers(MAX_RESPONSE_HEADERS)
            .handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request names the scheme and authority, but only a proxy is sent them: the origin
    // gets the path and query alone.
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let first_byte_by = within(options.first_byte_timeout).into();
    let send = async move {
        timeout_at(first_byte_by, sender.send_request(req))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)
    };
    let mut send = pin!(send);
    let mut conn = Some(conn);
    // Waits for the response head while driving the connection's I/O.
    let response = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(running) = conn.as_mut() else {
                return Poll::Pending;
            };
            let ended = ready!(Pin::new(running).poll(cx));
            conn = None;
            match ended {
                Ok(()) => send.as_mut().poll(cx),
                Err(err) => Poll::Ready(Err(Error::from(err))),
            }
        }
    })
    .await?;

    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&l| max_body.is_some_and(|max| l > max)) {
        return Err(Error::HttpResponseBodySize(Some(length)));
    }
    let between_bytes = options.between_bytes_timeout.map(|limit| {
        let limit = limit.max(Duration::from_nanos(1));
        (limit, Box::pin(tokio::time::sleep(limit)))
    });
    let response = response.map(|incoming| {
        Capped {
            incoming,
            received: 0,
            max_body,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            between_bytes,
            done: false,
        }
        .boxed_unsync()
    });
    // The connection goes on while the body is read, until the deadline; its errors reach the
    // guest through the body, so they are not reported (or logged) twice.
    let io = async move {
        let _slots = slots;
        if let Some(conn) = conn {
            let _ = timeout_at(deadline.into(), conn).await;
        }
        Ok(())
    };
    Ok((response, Box::new(io)))
}

/// The addresses to connect to: the URL's own, or what its name resolves to.
async fn resolve(destination: &Destination, by: Instant) -> Result<Vec<SocketAddr>, Error> {
    let port = destination.port();
    if let Some(ip) = destination.ip() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host = destination.host();
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    match timeout_at(by.into(), lookup).await {
        Err(_) => Err(Error::DnsTimeout),
        Ok(Err(e)) => Err(Error::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        }),
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                return Err(Error::DnsError {
                    rcode: Some(format!("{host} has no address")),
                    info_code: None,
                });
            }
            Ok(found)
        }
    }
}

/// The resolved addresses the app's allow list admits; refused if there are none.
fn check_addresses(
    env: &Env,
    destination: &Destination,
    addresses: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, Error> {
    let mut refused = None;
    let admitted: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|a| match env.outbound.check_address(destination, a.ip()) {
            Ok(()) => true,
            Err(why) => {
                refused.get_or_insert(why);
                false
            }
        })
        .collect();
    if admitted.is_empty() {
        if let Some(why) = refused {
            tracing::debug!(app = ?env.app, "outbound request refused: {why}");
        }
        return Err(Error::DestinationIpProhibited);
    }
    Ok(admitted)
}

/// Waits until the writes the request could depend on are durable.
async fn wait_for_gate(gate: oneshot::Receiver<Gate>, deadline: Instant) -> Result<(), Error> {
    let waited = timeout_at(deadline.into(), async {
        match gate.await {
            Ok(Ok(Some(commit))) => commit
                .await
                .map(drop)
                .map_err(|e| format!("the object's writes before the request: {e}")),
            Ok(Ok(None)) => Ok(()),
            Ok(Err(why)) => Err(why),
            Err(_) => Err("the request was dropped before it could leave".into()),
        }
    })
    .await;
    match waited {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(Error::InternalError(Some(why))),
        Err(_) => Err(Error::ConnectionTimeout),
    }
}

/// The name the origin's certificate must carry: the URL's host, name or address.
fn server_name(destination: &Destination) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    match destination.ip() {
        Some(ip) => Ok(ip.into()),
        None => rustls::pki_types::ServerName::try_from(destination.host())
            .map_err(|_| Error::HttpRequestUriInvalid),
    }
}

/// A plain or TLS connection.
trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// A response body cut off past its cap if it has one, at the request's deadline, and after the
/// guest's between-bytes timeout if it set one.
struct Capped {
    incoming: hyper::body::Incoming,
    received: u64,
    max_body: Option<u64>,
    deadline: Pin<Box<Sleep>>,
    between_bytes: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Set once the body ended or failed: nothing more is read from it.
    done: bool,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.incoming).poll_frame(cx);
        let result = match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                if this.max_body.is_some_and(|max| this.received > max) {
                    Some(Err(Error::HttpResponseBodySize(Some(this.received))))
                } else {
                    if let Some((limit, timer)) = &mut this.between_bytes {
                        timer.as_mut().reset(tokio::time::Instant::now() + *limit);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => Some(Err(Error::HttpResponseTimeout)),
            Poll::Ready(Some(Err(e))) => Some(Err(Error::from(e))),
            Poll::Ready(None) => None,
            Poll::Pending => {
                let between = this
                    .between_bytes
                    .as_mut()
                    .is_some_and(|(_, timer)| timer.as_mut().poll(cx).is_ready());
                if !between && this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Some(Err(Error::ConnectionReadTimeout))
            }
        };
        this.done = true;
        Poll::Ready(result)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
