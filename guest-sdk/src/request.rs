//! The request a worker or an object is asked to handle, or sends through a stub.

use serde::de::DeserializeOwned;

use crate::__private::shared::types::Request as WitRequest;
use crate::{Error, Result};

/// An HTTP request.
///
/// For an object reached at its address, the path is what follows it: for
/// `/counter/alice/a/b?x=1` it is `/a/b` with the query `x=1`; for `/counter/alice` it is `/`. A
/// worker sees the whole path; an object called through a stub, the path its caller gave. The
/// body has been read in full.
///
/// Build one to send through a [`Stub`](crate::Stub) with [`Request::new`], or forward the one
/// being handled (changed with [`with_path`](Self::with_path) and the other `with_` methods). To
/// send one to another server with [`fetch`](crate::fetch), give the whole URL as its path:
/// `Request::new("GET", "https://api.example.com/v1/items")`.
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    /// The path and query as delivered, still percent-encoded.
    target: String,
    /// Where the `?` is in `target`, if anywhere.
    query_at: Option<usize>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    client_address: Option<String>,
}

impl From<WitRequest> for Request {
    fn from(r: WitRequest) -> Self {
        Request {
            query_at: r.path.find('?'),
            method: r.method,
            target: r.path,
            headers: r.headers,
            body: r.body,
            client_address: r.client_address,
        }
    }
}

impl From<Request> for WitRequest {
    fn from(r: Request) -> Self {
        WitRequest {
            method: r.method,
            path: r.target,
            headers: r.headers,
            body: r.body,
            client_address: r.client_address,
        }
    }
}

impl Request {
    /// A request with `method` (`GET`, `POST`, ...) for `path` (starting with `/`, with an
    /// optional `?query`, percent-encoded), no headers and an empty body.
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_owned(),
            target: path.to_owned(),
            query_at: path.find('?'),
            headers: Vec::new(),
            body: Vec::new(),
            client_address: None,
        }
    }

    /// The same request for another path (and query).
    pub fn with_path(mut self, path: &str) -> Self {
        self.query_at = path.find('?');
        self.target = path.to_owned();
        self
    }

    /// Adds a header (its name lower-cased).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The IP address of the client that sent the request over the network, if the host knows
    /// it; through a stub, whatever the caller passed on.
    pub fn client_address(&self) -> Option<&str> {
        self.client_address.as_deref()
    }

    /// The path and query as given, or for [`fetch`](crate::fetch) the whole URL.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The method, upper case as sent by the client: `GET`, `POST`, ...
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path below the object's address, starting with `/`, without the query and still
    /// percent-encoded (so that an encoded `/` stays distinguishable from a separator).
    pub fn path(&self) -> &str {
        match self.query_at {
            Some(at) => &self.target[..at],
            None => &self.target,
        }
    }

    /// The query string after the `?`, still percent-encoded, or `None` if there is no `?`.
    pub fn query(&self) -> Option<&str> {
        self.query_at.map(|at| &self.target[at + 1..])
    }

    /// The value of the first query parameter called `name`, decoded as in an HTML form
    /// (`%XX` escapes and `+` for a space), or `None` if there is none.
    ///
    /// A parameter with no `=` has the empty value. Bytes that do not decode to UTF-8 are
    /// replaced with U+FFFD.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| decode_form(key) == name)
            .map(|(_, value)| decode_form(value))
    }

    /// The headers in the order the client sent them, with lowercase names. Headers whose
    /// value is not valid UTF-8 are not delivered.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The value of the first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client asks to upgrade the connection to a WebSocket (its `upgrade` header is
    /// `websocket`, in any case): the requests that may call
    /// [`State::accept_websocket`](crate::State::accept_websocket).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    }

    /// The whole body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text; an error if it is not valid UTF-8.
    pub fn text(&self) -> Result<String> {
        match std::str::from_utf8(&self.body) {
            Ok(text) => Ok(text.to_owned()),
            Err(e) => Err(Error::Message(format!(
                "the request body is not valid UTF-8: {e}"
            ))),
        }
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// Decodes one `application/x-www-form-urlencoded` component. Malformed escapes are kept as
/// they are, as browsers do.
fn decode_form(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_pair) {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte written as two hex digits, if `pair` is two hex digits.
fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> Request {
        Request::new("GET", path)
            .with_header("X-Thing", "value")
            .with_body(b"{\"a\":1}".to_vec())
    }

    #[test]
    fn a_forwarded_request_keeps_everything_but_what_it_changes() {
        let wit = WitRequest {
            method: "POST".into(),
            path: "/api/rooms/x?y=1".into(),
            headers: vec![("x-api-key".into(), "k".into())],
            body: b"hi".to_vec(),
            client_address: Some("203.0.113.7".into()),
        };
        let forwarded: WitRequest = Request::from(wit).with_path("/join?z=2").into();
        assert_eq!(forwarded.method, "POST");
        assert_eq!(forwarded.path, "/join?z=2");
        assert_eq!(
            forwarded.headers,
            vec![("x-api-key".to_owned(), "k".to_owned())]
        );
        assert_eq!(forwarded.body, b"hi");
        assert_eq!(forwarded.client_address.as_deref(), Some("203.0.113.7"));
        let r = Request::new("GET", "/a").with_path("/b?c=d");
        assert_eq!((r.path(), r.query()), ("/b", Some("c=d")));
    }

    #[test]
    fn path_and_query_are_split_at_the_first_question_mark() {
        let r = request("/a%2Fb?x=1&y=%3F?");
        assert_eq!((r.path(), r.query()), ("/a%2Fb", Some("x=1&y=%3F?")));
        let r = request("/a");
        assert_eq!((r.path(), r.query()), ("/a", None));
        let r = request("/?");
        assert_eq!((r.path(), r.query()), ("/", Some("")));
    }

    #[test]
    fn query_params_are_decoded_like_forms() {
        let r = request("/?key=a%20b+c&flag&k%65y2=%E2%82%AC&bad=%zz%4&key=second");
        assert_eq!(r.query_param("key").as_deref(), Some("a b c"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("key2").as_deref(), Some("€"));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(request("/").query_param("key"), None);
    }

    #[test]
    fn headers_match_case_insensitively_and_bodies_parse() {
        let r = request("/");
        assert_eq!(r.header("X-Thing"), Some("value"));
        assert_eq!(r.header("other"), None);
        assert_eq!(r.text().unwrap(), "{\"a\":1}");
        assert_eq!(r.json::<serde_json::Value>().unwrap()["a"], 1);
    }

    #[test]
    fn websocket_upgrades_are_recognised_by_their_upgrade_header() {
        let with_upgrade = |value: &str| -> Request {
            Request::new("GET", "/ws")
                .with_header("connection", "Upgrade")
                .with_header("upgrade", value)
        };
        assert!(with_upgrade("websocket").is_websocket_upgrade());
        assert!(with_upgrade("WebSocket").is_websocket_upgrade());
        assert!(!with_upgrade("h2c").is_websocket_upgrade());
        assert!(!request("/ws").is_websocket_upgrade());
    }
}
