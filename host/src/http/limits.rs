//! What a request may send: the size of its head, the encoding of its path, and its body's size
//! and pace; and what the bodies of all requests together may hold of the host's memory.

use super::error::ApiError;
use crate::routing::invalid_escape;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

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

/// The bytes of request bodies the host holds for all requests together (`--max-request-bodies-
/// total`). A body takes its share before the host reads it, and holds it until its request is
/// answered; while the budget is spent the host reads no more, so clients wait in TCP
/// backpressure instead of in the host's memory.
///
/// Not first come, first served: a small body fits in what a large one waits for, so a few large
/// uploads held open cannot keep every other request out.
pub struct BodyBudget {
    limit: usize,
    used: AtomicUsize,
    freed: Notify,
}

/// A share of the [`BodyBudget`], given back when dropped.
pub struct BodyShare {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Drop for BodyShare {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.freed.notify_waiters();
    }
}

impl BodyBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Bytes held by bodies now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    /// Takes `bytes` (at most the whole budget), waiting until `until` for them to be free.
    async fn take(
        self: &Arc<Self>,
        bytes: usize,
        until: Option<tokio::time::Instant>,
    ) -> Option<BodyShare> {
        let bytes = bytes.min(self.limit);
        loop {
            // Registered before the check, so that a share given back in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(bytes) {
                return Some(BodyShare {
                    budget: self.clone(),
                    bytes,
                });
            }
            match until {
                Some(until) => tokio::time::timeout_at(until, freed).await.ok()?,
                None => freed.await,
            }
        }
    }
}

impl BodyShare {
    /// Grows the share by `bytes` more, as a body of unknown length arrives.
    async fn grow(&mut self, bytes: usize, until: Option<tokio::time::Instant>) -> bool {
        match self.budget.take(bytes, until).await {
            Some(more) => {
                self.bytes += more.bytes;
                std::mem::forget(more);
                true
            }
            None => false,
        }
    }
}

/// A body that could not be read because every byte of the budget was held by others.
fn budget_spent(budget: &BodyBudget) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!(
            "the host already holds its limit of request bodies in flight ({} bytes, \
             --max-request-bodies-total); try again shortly",
            budget.limit
        ),
    )
}

/// Reads a whole body of at most `limit` bytes within `deadline`: a larger one is a 413, a slower
/// one a 408, one cut short (the client closed before its `Content-Length`, or sent broken
/// chunks) a 400. With a `budget`, the body first takes its share of it (what `Content-Length`
/// declares, else each part as it comes); one that cannot within the deadline is a 503
/// `overloaded`. The share is the caller's to hold while the bytes live.
pub(super) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: BodyDeadline,
    budget: Option<&Arc<BodyBudget>>,
) -> Result<(Vec<u8>, Option<BodyShare>), ApiError> {
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
    let until = |deadline: BodyDeadline| match deadline {
        BodyDeadline::Whole(d) => started.checked_add(d),
        BodyDeadline::Progress(d) => tokio::time::Instant::now().checked_add(d),
    };
    // The share of a declared length is taken whole, before a byte is read: a body never holds
    // part of the budget while it waits for the rest.
    let mut share = match (budget, declared) {
        (Some(budget), Some(n)) if n > 0 => Some(
            budget
                .take(n as usize, until(deadline))
                .await
                .ok_or_else(|| budget_spent(budget))?,
        ),
        (Some(budget), _) => Some(BodyShare {
            budget: budget.clone(),
            bytes: 0,
        }),
        (None, _) => None,
    };
    let mut body = Limited::new(body, limit);
    // Not sized by `Content-Length`: a client may declare the limit and send nothing.
    let mut bytes = Vec::new();
    loop {
        let until = until(deadline);
        let frame = match until {
            Some(until) => tokio::time::timeout_at(until, body.frame())
                .await
                .map_err(|_| deadline.passed())?,
            // A timeout past what an `Instant` can hold: none.
            None => body.frame().await,
        };
        match frame {
            None => return Ok((bytes, share)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let needed = (bytes.len() + data.len()).saturating_sub(share_bytes(&share));
                    if let Some(share) = share.as_mut().filter(|_| needed > 0)
                        && !share.grow(needed, until).await
                    {
                        return Err(budget_spent(&share.budget));
                    }
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

/// Reads a refused request's body, keeping none of it, up to `limit` bytes and for at most
/// `timeout`, before it is answered: hyper closes a connection whose request body is unread, the
/// kernel then resets it, and the reset can overtake the answer on its way to the client.
pub(super) async fn discard_body(body: Body, limit: usize, timeout: Duration) {
    let mut body = Limited::new(body, limit);
    let _ = tokio::time::timeout(timeout, async move {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// The bytes a share holds; a body read without a budget counts as holding all it reads.
fn share_bytes(share: &Option<BodyShare>) -> usize {
    share.as_ref().map_or(usize::MAX, |s| s.bytes)
}
