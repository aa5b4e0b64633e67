//! The answer an object gives.

use serde::Serialize;

use crate::__private::shared::types::Response as WitResponse;
use crate::Result;

/// An HTTP response, built with one of the constructors and refined with
/// [`with_status`](Self::with_status) and [`with_header`](Self::with_header).
///
/// The host sets `content-length` and ignores hop-by-hop headers such as `connection`.
#[derive(Clone, Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl From<Response> for WitResponse {
    fn from(r: Response) -> Self {
        WitResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<WitResponse> for Response {
    fn from(r: WitResponse) -> Self {
        Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl Response {
    fn new(status: u16, content_type: Option<&str>, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: content_type
                .map(|t| vec![("content-type".to_owned(), t.to_owned())])
                .unwrap_or_default(),
            body,
        }
    }

    /// A 200 for a stream of server-sent events: `content-type: text/event-stream` and
    /// `cache-control: no-cache`, no body of its own. Return it after
    /// [`State::open_stream`](crate::State::open_stream).
    pub fn event_stream() -> Self {
        Response::new(200, Some("text/event-stream"), Vec::new())
            .with_header("cache-control", "no-cache")
    }

    /// A response as received by [`fetch`](crate::fetch).
    pub(crate) fn from_parts(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Response {
            status,
            headers,
            body,
        }
    }

    /// A 200 with a text body, `content-type: text/plain; charset=utf-8`.
    pub fn ok(body: impl Into<String>) -> Self {
        Self::new(
            200,
            Some("text/plain; charset=utf-8"),
            body.into().into_bytes(),
        )
    }

    /// A 200 with `value` serialized as JSON, `content-type: application/json`. Fails only if
    /// `value` cannot be serialized (e.g. a map with non-string keys).
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(Self::new(
            200,
            Some("application/json"),
            serde_json::to_vec(value)?,
        ))
    }

    /// A 200 with a binary body, `content-type: application/octet-stream`.
    pub fn from_bytes(body: impl Into<Vec<u8>>) -> Self {
        Self::new(200, Some("application/octet-stream"), body.into())
    }

    /// An error answer: `status` with the JSON body `{"error": message}`.
    ///
    /// Unlike returning `Err` from [`fetch`](crate::DurableObject::fetch), this is a normal
    /// answer: the event's writes are kept. Use it for the client's mistakes (400, 404, 405, ...)
    /// and `Err` for failures that should undo the event.
    pub fn error(message: impl Into<String>, status: u16) -> Self {
        let body = serde_json::json!({ "error": message.into() }).to_string();
        Self::new(status, Some("application/json"), body.into_bytes())
    }

    /// A 204 No Content, with no body and no headers.
    pub fn empty() -> Self {
        Self::new(204, None, Vec::new())
    }

    /// A 101 Switching Protocols, with no body: the answer that completes a WebSocket upgrade
    /// after [`State::accept_websocket`](crate::State::accept_websocket). The host adds the
    /// handshake headers.
    pub fn websocket_accepted() -> Self {
        Self::new(101, None, Vec::new())
    }

    /// The same response with status `status` (100 to 999).
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same response with header `name` set to `value`, replacing any header of that name
    /// (so that e.g. the constructor's `content-type` can be overridden). Names are stored in
    /// lowercase, as HTTP/2 and the WIT contract want them.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into().to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers, with lowercase names.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_status_and_content_type() {
        let r = Response::ok("hi");
        assert_eq!((r.status(), r.body()), (200, &b"hi"[..]));
        assert_eq!(r.headers()[0].1, "text/plain; charset=utf-8");
        let r = Response::error("nope", 404);
        assert_eq!((r.status(), r.body()), (404, &br#"{"error":"nope"}"#[..]));
        let r = Response::empty();
        assert_eq!((r.status(), r.headers().len(), r.body().len()), (204, 0, 0));
        let r = Response::websocket_accepted();
        assert_eq!((r.status(), r.headers().len(), r.body().len()), (101, 0, 0));
    }

    #[test]
    fn with_header_replaces_and_lowercases() {
        let r = Response::from_bytes(vec![1, 2])
            .with_header("Content-Type", "image/png")
            .with_header("X-A", "1")
            .with_status(201);
        assert_eq!(r.status(), 201);
        assert_eq!(
            r.headers(),
            &[
                ("content-type".to_owned(), "image/png".to_owned()),
                ("x-a".to_owned(), "1".to_owned())
            ]
        );
    }
}
