//! What a request may send: the size of its head, the encoding of its path, and its body's size
//! and pace.

use super::error::ApiError;
use crate::routing::invalid_escape;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::time::Duration;

/// Longest request target (path and query, and the authority of an absolute-form target), in
/// bytes: a longer one is a 414. Object names are at most 256 bytes, so this leaves an object
/// 15 KiB of path and query.
pub const MAX_TARGET_BYTES: usize = 16 * 1024;

/// Most bytes of request headers (each name and value, plus 4 for `: ` and CRLF): more is a 431.
/// hyper's own limits, 100 headers and a head of about 400 KiB, sit above this one and answer a
/// bare 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses a request whose target or headers are too long, or whose path is not valid
/// percent-encoding, before any route sees it.
pub(super) async fn check_head(req: axum::extract::Request, next: Next) -> Response {
    let uri = req.uri();
    let target = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let too_long = [
        (
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "target is",
            target,
            MAX_TARGET_BYTES,
        ),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "headers are",
            headers,
            MAX_HEADER_BYTES,
        ),
    ];
    for (status, code, what, size, limit) in too_long {
        if size > limit {
            let message = format!("the request {what} {size} bytes; at most {limit}");
            return ApiError::new(status, code, message).into_response();
        }
    }
    if let Some(at) = invalid_escape(uri.path()) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!(
                "the path has an invalid percent-encoding at byte {at}: `%` must be followed by \
                 two hex digits"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// How long a request body may take to arrive.
#[derive(Debug, Clone, Copy)]
pub(super) enum BodyDeadline {
    /// All of it within this, from the end of the head: requests to objects, which anyone may
    /// send, so a client trickling a byte at a time holds its connection no longer than one
    /// that stalls.
    Whole(Duration),
    /// Each part within this of the one before: deploy uploads, which come from the admin
    /// (authorized before the body is read) and may be 128 MiB over a slow link.
    Progress(Duration),
}

impl BodyDeadline {
    /// The 408 of a body that did not make it.
    fn passed(self) -> ApiError {
        let message = match self {
            BodyDeadline::Whole(d) => {
                format!(
                    "the request body did not arrive within {} s",
                    d.as_secs_f64()
                )
            }
            BodyDeadline::Progress(d) => {
                format!(
                    "no part of the request body arrived for {} s",
                    d.as_secs_f64()
                )
            }
        };
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message)
    }
}

/// Reads a whole body of at most `limit` bytes within `deadline`: a larger one is a 413, a slower
/// one a 408, one cut short (the client closed before its `Content-Length`, or sent broken
/// chunks) a 400.
pub(super) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: BodyDeadline,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let started = tokio::time::Instant::now();
    let mut body = Limited::new(body, limit);
    // Not sized by `Content-Length`: a client may declare the limit and send nothing.
    let mut bytes = Vec::new();
    loop {
        let until = match deadline {
            BodyDeadline::Whole(d) => started.checked_add(d),
            BodyDeadline::Progress(d) => tokio::time::Instant::now().checked_add(d),
        };
        let frame = match until {
            Some(until) => tokio::time::timeout_at(until, body.frame())
                .await
                .map_err(|_| deadline.passed())?,
            // A timeout past what an `Instant` can hold: none.
            None => body.frame().await,
        };
        match frame {
            None => return Ok(bytes),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large()),
            Some(Err(e)) => {
                // hyper's own words are one level down: "end of file before message length
                // reached", "invalid chunk size line".
                let mut message = format!("the request body is incomplete or malformed: {e}");
                let mut cause = e.source();
                while let Some(c) = cause {
                    message.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message));
            }
        }
    }
}
