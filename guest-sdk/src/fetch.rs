//! Outbound HTTP: [`fetch`], a blocking client over `wasi:http/outgoing-handler`.

use std::fmt;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::{Request, Response};

/// Largest piece of a request body handed to the host at once: what one blocking write takes.
const WRITE_CHUNK: usize = 4096;
/// Largest piece of a response body read at once.
const READ_CHUNK: u64 = 64 << 10;

/// Sends `request` to the URL it names and returns the whole response, blocking until it is
/// read: `Request::new("GET", "https://api.example.com/v1/items?page=2")`, with the request's
/// headers and body. Redirects are not followed.
///
/// The host sends it only to a destination the app lists in `[outbound] allow` of its
/// `dohost.toml`; loopback, private, link-local and cloud-metadata addresses only if a rule
/// names that address itself; a class deployed alone reaches nothing. The request ends by the
/// event's time limit, at most 8 requests of an instance are in flight at once, and a response
/// body may be at most 16 MiB. A refusal is a [`FetchError`] that names the `wasi:http` error
/// code and says why.
///
/// In an object, the request leaves only once the writes the event made so far are durable (it
/// commits them, as a call through a [`Stub`](crate::Stub) does), and it is refused inside a
/// [`transaction`](crate::Storage::transaction).
pub fn fetch(request: Request) -> Result<Response, FetchError> {
    let outgoing = outgoing_request(&request)?;
    let body = match request.body().is_empty() {
        true => None,
        // Taken before the request is handed over, written after.
        false => Some(
            outgoing
                .body()
                .map_err(|()| invalid("the request body is taken"))?,
        ),
    };
    let future = outgoing_handler::handle(outgoing, None).map_err(FetchError::from)?;
    if let Some(body) = body {
        write_body(body, request.body())?;
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(code.into()),
        Some(Err(())) | None => return Err(invalid("the response was not ready")),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(name, value)| Some((name, String::from_utf8(value).ok()?)))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| invalid("the response body is taken"))?;
    let body = read_body(&incoming)?;
    // The trailers, if any, are not waited for.
    drop(IncomingBody::finish(incoming));
    Ok(Response::from_parts(status, headers, body))
}

/// The request as `wasi:http` takes it: the URL split into scheme, authority and path.
fn outgoing_request(request: &Request) -> Result<OutgoingRequest, FetchError> {
    let url = request.target();
    let (scheme, authority, path) = split_url(url)?;
    let headers = Fields::new();
    for (name, value) in request.headers() {
        headers.append(name, value.as_bytes()).map_err(|e| {
            invalid(match e {
                HeaderError::Forbidden => format!(
                    "the header {name:?} is the host's to set (as are host, connection and \
                     transfer-encoding): leave it out"
                ),
                HeaderError::InvalidSyntax => format!("the header {name:?} is not valid HTTP"),
                HeaderError::Immutable => "the headers cannot be changed".to_owned(),
            })
        })?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    let refused = |what: &str| invalid(format!("{url:?}: the {what} is not valid"));
    outgoing
        .set_method(&method)
        .map_err(|()| refused("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| refused("host"))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|()| refused("path"))?;
    Ok(outgoing)
}

/// `scheme://authority/path?query#fragment` as scheme, authority, and path with query (`/` if
/// empty); the fragment stays with the client.
fn split_url(url: &str) -> Result<(Scheme, &str, String), FetchError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        invalid(format!(
            "{url:?} is not an absolute http:// or https:// URL"
        ))
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => {
            return Err(invalid(format!(
                "{url:?}: only http and https can be fetched"
            )));
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(invalid(format!("{url:?} has no host")));
    }
    let path = path.split('#').next().unwrap_or_default();
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok((scheme, authority, path))
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), FetchError> {
    {
        let stream = body
            .write()
            .map_err(|()| invalid("the request body is taken"))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| stream_error("sending the request body", e))?;
        }
        // The stream must be gone before the body is finished.
    }
    OutgoingBody::finish(body, None).map_err(FetchError::from)
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, FetchError> {
    let stream = incoming
        .stream()
        .map_err(|()| invalid("the response body is taken"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error("reading the response body", e)),
        }
    }
}

/// A body stream's failure: its `wasi:http` error code if the host gave one, else its text.
fn stream_error(doing: &str, e: StreamError) -> FetchError {
    match e {
        StreamError::Closed => FetchError::Body(format!("{doing}: the connection closed")),
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(code) => code.into(),
            None => FetchError::Body(format!("{doing}: {}", e.to_debug_string())),
        },
    }
}

fn invalid(message: impl Into<String>) -> FetchError {
    FetchError::InvalidRequest(message.into())
}

/// Why [`fetch`] failed.
///
/// A guest that uses the `wasip2` crate's `wasi:http` directly gets the same descriptions by
/// converting its `ErrorCode` with `FetchError::from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The request cannot be sent as it is: its URL is not an absolute `http://` or `https://`
    /// one, or it has a header the host sets itself (`host`, `connection`, ...). The text says
    /// what.
    InvalidRequest(String),
    /// The host refused the request, or it failed on the way. `code` is the `wasi:http`
    /// `error-code` as WIT names it (`HTTP-request-denied`, `destination-IP-prohibited`,
    /// `connection-limit-reached`, `connection-read-timeout`, `HTTP-response-body-size`, ...);
    /// `message` says what it means.
    Failed {
        /// The `wasi:http` error code, as WIT names it.
        code: String,
        /// What went wrong, in words.
        message: String,
    },
    /// The response body broke off after its head arrived: cut at the host's size limit or at
    /// the event's time limit, or the connection failed. The text is the host's.
    Body(String),
}

impl FetchError {
    /// The `wasi:http` error code, for [`Failed`](Self::Failed).
    pub fn code(&self) -> Option<&str> {
        match self {
            FetchError::Failed { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::InvalidRequest(m) => write!(f, "invalid outbound request: {m}"),
            FetchError::Failed { code, message } => {
                write!(f, "outbound request failed ({code}): {message}")
            }
            FetchError::Body(m) => write!(f, "outbound response body failed: {m}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<ErrorCode> for FetchError {
    fn from(code: ErrorCode) -> Self {
        let (code, message) = describe(code);
        FetchError::Failed {
            code: code.to_owned(),
            message,
        }
    }
}

/// The WIT name of `code`, and what it means, in dohost's words for the codes dohost gives.
fn describe(code: ErrorCode) -> (&'static str, String) {
    use ErrorCode as E;
    let text = |s: &str| s.to_owned();
    match code {
        E::HttpRequestDenied => (
            "HTTP-request-denied",
            text(
                "the destination (scheme, host and port) is not in the app's [outbound] allow \
                 (dohost.toml); a class deployed alone can reach nothing",
            ),
        ),
        E::DestinationIpProhibited => (
            "destination-IP-prohibited",
            text(
                "the destination is, or resolves to, a loopback, private, link-local or cloud \
                 metadata address; only an [outbound] allow rule naming that IP address admits it",
            ),
        ),
        E::ConnectionLimitReached => (
            "connection-limit-reached",
            text(
                "too many outbound requests in flight: at most 8 per instance, 64 per app, and \
                 the host's own cap; a request is in flight until its response body is read or \
                 dropped",
            ),
        ),
        E::ConnectionTimeout => (
            "connection-timeout",
            text("no connection to the destination in time (or the event's time is up)"),
        ),
        E::ConnectionReadTimeout => (
            "connection-read-timeout",
            text(
                "the destination did not answer in time: a request ends shortly before its \
                 event's time limit",
            ),
        ),
        E::HttpResponseBodySize(size) => (
            "HTTP-response-body-size",
            match size {
                Some(size) => format!("the response body ({size} bytes) is over the 16 MiB limit"),
                None => text("the response body is over the 16 MiB limit"),
            },
        ),
        E::InternalError(m) => (
            "internal-error",
            m.unwrap_or_else(|| text("the host failed to send the request")),
        ),
        E::DnsTimeout => ("DNS-timeout", text("resolving the host name took too long")),
        E::DnsError(p) => (
            "DNS-error",
            format!(
                "the host name could not be resolved{}",
                p.rcode.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        ),
        E::DestinationNotFound => ("destination-not-found", text("no such destination")),
        E::DestinationUnavailable => (
            "destination-unavailable",
            text("the destination cannot be reached"),
        ),
        E::DestinationIpUnroutable => (
            "destination-IP-unroutable",
            text("the destination's address cannot be routed"),
        ),
        E::ConnectionRefused => (
            "connection-refused",
            text("the destination refused the connection"),
        ),
        E::ConnectionTerminated => (
            "connection-terminated",
            text("the connection closed before the response was complete"),
        ),
        E::ConnectionWriteTimeout => (
            "connection-write-timeout",
            text("sending the request took too long"),
        ),
        E::TlsProtocolError => ("TLS-protocol-error", text("the TLS handshake failed")),
        E::TlsCertificateError => (
            "TLS-certificate-error",
            text("the destination's certificate is not valid for its name"),
        ),
        E::TlsAlertReceived(p) => (
            "TLS-alert-received",
            format!(
                "the destination sent a TLS alert{}",
                p.alert_message
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        ),
        E::HttpRequestLengthRequired => (
            "HTTP-request-length-required",
            text("the destination wants a content-length"),
        ),
        E::HttpRequestBodySize(_) => (
            "HTTP-request-body-size",
            text("the request body does not match its content-length"),
        ),
        E::HttpRequestMethodInvalid => ("HTTP-request-method-invalid", text("invalid method")),
        E::HttpRequestUriInvalid => (
            "HTTP-request-URI-invalid",
            text("the URL's host or path is not valid"),
        ),
        E::HttpRequestUriTooLong => ("HTTP-request-URI-too-long", text("the URL is too long")),
        E::HttpRequestHeaderSectionSize(_) => (
            "HTTP-request-header-section-size",
            text("the request headers are too large"),
        ),
        E::HttpRequestHeaderSize(_) => (
            "HTTP-request-header-size",
            text("a request header is too large"),
        ),
        E::HttpRequestTrailerSectionSize(_) => (
            "HTTP-request-trailer-section-size",
            text("the request trailers are too large"),
        ),
        E::HttpRequestTrailerSize(_) => (
            "HTTP-request-trailer-size",
            text("a request trailer is too large"),
        ),
        E::HttpResponseIncomplete => ("HTTP-response-incomplete", text("the response ended early")),
        E::HttpResponseHeaderSectionSize(_) => (
            "HTTP-response-header-section-size",
            text("the response headers are too large"),
        ),
        E::HttpResponseHeaderSize(_) => (
            "HTTP-response-header-size",
            text("a response header is too large"),
        ),
        E::HttpResponseTrailerSectionSize(_) => (
            "HTTP-response-trailer-section-size",
            text("the response trailers are too large"),
        ),
        E::HttpResponseTrailerSize(_) => (
            "HTTP-response-trailer-size",
            text("a response trailer is too large"),
        ),
        E::HttpResponseTransferCoding(_) => (
            "HTTP-response-transfer-coding",
            text("the response's transfer coding is not supported"),
        ),
        E::HttpResponseContentCoding(_) => (
            "HTTP-response-content-coding",
            text("the response's content coding is not supported"),
        ),
        E::HttpResponseTimeout => ("HTTP-response-timeout", text("the response took too long")),
        E::HttpUpgradeFailed => ("HTTP-upgrade-failed", text("the upgrade failed")),
        E::HttpProtocolError => (
            "HTTP-protocol-error",
            text("the destination did not speak valid HTTP/1.1"),
        ),
        E::LoopDetected => ("loop-detected", text("a request loop was detected")),
        E::ConfigurationError => ("configuration-error", text("the host is misconfigured")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let split = |url| {
            let (scheme, authority, path) = split_url(url).unwrap();
            (matches!(scheme, Scheme::Https), authority.to_owned(), path)
        };
        let cases = [
            ("https://api.example.com", (true, "api.example.com", "/")),
            (
                "HTTP://127.0.0.1:9000/a/b?c=d#e",
                (false, "127.0.0.1:9000", "/a/b?c=d"),
            ),
            ("http://[::1]:8080?x", (false, "[::1]:8080", "/?x")),
            ("https://h#frag", (true, "h", "/")),
        ];
        for (url, (https, authority, path)) in cases {
            assert_eq!(
                split(url),
                (https, authority.to_owned(), path.to_owned()),
                "{url}"
            );
        }
        for url in ["/relative", "ftp://x/", "http:///path", "example.com"] {
            assert!(
                matches!(split_url(url), Err(FetchError::InvalidRequest(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn errors_name_the_wasi_code_and_say_why() {
        let denied = FetchError::from(ErrorCode::HttpRequestDenied);
        assert_eq!(denied.code(), Some("HTTP-request-denied"));
        assert!(denied.to_string().contains("[outbound] allow"), "{denied}");
        let size = FetchError::from(ErrorCode::HttpResponseBodySize(Some(17 << 20)));
        assert_eq!(size.code(), Some("HTTP-response-body-size"));
        assert!(size.to_string().contains("17825792 bytes"), "{size}");
        let internal = FetchError::from(ErrorCode::InternalError(Some("why".into())));
        assert_eq!(
            internal.to_string(),
            "outbound request failed (internal-error): why"
        );
        assert_eq!(FetchError::Body("cut".into()).code(), None);
    }
}
