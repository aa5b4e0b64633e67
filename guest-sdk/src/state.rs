//! Who the object is, and the way to its storage and WebSockets.

use crate::websocket::host;
use crate::{Env, ResponseStream, Result, Storage, WebSocket};
use dohost_shared_object_bindings::dohost::object::identity;
use dohost_shared_object_bindings::dohost::object::websockets::{self as wit, AutoResponse};

/// The object's identity, storage and WebSockets, handed to
/// [`DurableObject::new`](crate::DurableObject::new).
///
/// A zero-sized handle: keep it in your object and copy it freely. The identity is the same on
/// every instance of the same object, so it can be used as a stable label.
#[derive(Clone, Copy, Debug)]
pub struct State {
    _private: (),
}

impl State {
    pub(crate) fn new() -> Self {
        State { _private: () }
    }

    /// The app's environment: its variables and secrets, and stubs to call other objects.
    pub fn env(&self) -> Env {
        Env::new()
    }

    /// The object's id: 64 lowercase hex digits, the SHA-256 of the namespace, a zero byte and
    /// the name. Stable forever and unique across namespaces.
    pub fn id(&self) -> String {
        identity::id()
    }

    /// The object's name within its namespace, as the client addressed it (percent-decoded).
    pub fn name(&self) -> String {
        identity::name()
    }

    /// The namespace the object lives in: the name its class was deployed under.
    pub fn namespace(&self) -> String {
        identity::namespace()
    }

    /// The object's private, transactional storage.
    pub fn storage(&self) -> Storage {
        Storage::new()
    }

    /// Accepts the WebSocket upgrade of the request being handled, with up to 10 `tags` (each at
    /// most 256 bytes) to find the socket by later with [`get_websockets`](Self::get_websockets).
    ///
    /// Only valid inside [`fetch`](crate::DurableObject::fetch) for a request that asks for an
    /// upgrade (see [`Request::is_websocket_upgrade`](crate::Request::is_websocket_upgrade)),
    /// once per request. `fetch` must then return
    /// [`Response::websocket_accepted`](crate::Response::websocket_accepted): any other answer
    /// refuses the upgrade and drops the socket. From then on the host holds the connection,
    /// across hibernation, and delivers its messages to
    /// [`websocket_message`](crate::DurableObject::websocket_message).
    pub fn accept_websocket(&self, tags: &[&str]) -> Result<WebSocket> {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        host(wit::accept(&tags)).map(WebSocket::new)
    }

    /// Answers the request being handled with a stream, with up to 10 `tags` (each at most 256
    /// bytes) to find it by later with [`get_streams`](Self::get_streams).
    ///
    /// Only inside [`fetch`](crate::DurableObject::fetch), once, and not for a WebSocket
    /// upgrade. The response `fetch` returns gives the status and headers (use
    /// [`Response::event_stream`](crate::Response::event_stream) for server-sent events) and
    /// its body goes first; then what this and later events
    /// [`write`](ResponseStream::write), until one [`close`](ResponseStream::close)s it or the
    /// client goes away ([`stream_closed`](crate::DurableObject::stream_closed)). If `fetch`
    /// fails, the stream is dropped.
    pub fn open_stream(&self, tags: &[&str]) -> Result<ResponseStream> {
        ResponseStream::open(tags)
    }

    /// The object's open streams, oldest first; with `tag`, only those opened with it.
    pub fn get_streams(&self, tag: Option<&str>) -> Vec<ResponseStream> {
        ResponseStream::list(tag)
    }

    /// The object's open WebSockets, oldest first; with `tag`, only those accepted with it.
    ///
    /// This, not a list kept in a field, is how to find the sockets to broadcast to: the
    /// instance that accepted them may have been dropped since.
    pub fn get_websockets(&self, tag: Option<&str>) -> Vec<WebSocket> {
        wit::get_sockets(tag)
            .into_iter()
            .map(WebSocket::new)
            .collect()
    }

    /// Sets (with `Some((request, response))`) or removes (with `None`) the object's
    /// auto-response: when any of its sockets, present or future, receives exactly the text
    /// `request`, the host replies `response` itself, without waking the object.
    ///
    /// So keep-alive pings cost nothing, and a hibernating object stays asleep. Each text is at
    /// most 2,048 bytes. [`WebSocket::auto_response_timestamp`] tells when a socket was last
    /// answered.
    pub fn set_websocket_auto_response(&self, pair: Option<(&str, &str)>) -> Result<()> {
        let pair = pair.map(|(request, response)| AutoResponse {
            request: request.to_owned(),
            response: response.to_owned(),
        });
        host(wit::set_auto_response(pair.as_ref()))
    }

    /// The object's auto-response as `(request, response)`, if one is set.
    pub fn get_websocket_auto_response(&self) -> Option<(String, String)> {
        wit::get_auto_response().map(|pair| (pair.request, pair.response))
    }
}

/// A fresh random object name: 64 lowercase hex digits, 256 random bits.
///
/// For objects with no natural name, such as a new chat room: hand the name to the client, whose
/// first request to it creates the object.
pub fn new_unique_name() -> String {
    identity::new_unique_name()
}
