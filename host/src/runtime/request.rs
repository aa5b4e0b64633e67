//! A request and its response as the host handles them, whatever version of the contract the
//! guest speaks; converted to a version's own generated types at the call.

use super::bindings::{v0_2, v0_3};

/// An HTTP request for a worker or an object (see the WIT `types.request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's IP address; guests of 0.2.0 do not see it.
    pub client_address: Option<String>,
}

/// A guest's answer (see the WIT `types.response`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Whether the request asks for a WebSocket.
    pub fn wants_websocket(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"))
    }

    /// The bytes the request holds while it waits: its body, path and headers.
    pub fn queued_bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.method.len() + self.path.len() + headers + self.body.len()
    }
}

impl From<Request> for v0_2::dohost::object::types::Request {
    fn from(r: Request) -> Self {
        Self {
            method: r.method,
            path: r.path,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<Request> for v0_3::dohost::object::types::Request {
    fn from(r: Request) -> Self {
        Self {
            method: r.method,
            path: r.path,
            headers: r.headers,
            body: r.body,
            client_address: r.client_address,
        }
    }
}

impl From<v0_3::dohost::object::types::Request> for Request {
    fn from(r: v0_3::dohost::object::types::Request) -> Self {
        Self {
            method: r.method,
            path: r.path,
            headers: r.headers,
            body: r.body,
            client_address: r.client_address,
        }
    }
}

impl From<v0_2::dohost::object::types::Response> for Response {
    fn from(r: v0_2::dohost::object::types::Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<v0_3::dohost::object::types::Response> for Response {
    fn from(r: v0_3::dohost::object::types::Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<Response> for v0_3::dohost::object::types::Response {
    fn from(r: Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}
