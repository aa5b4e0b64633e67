//! WebSockets that the host holds open on the object's behalf.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::exports::dohost::object::websocket_handler::Message as WitMessage;
use crate::{Result, WebSocketError};
use dohost_shared_object_bindings::dohost::object::websockets as wit;

/// One of the object's WebSockets, accepted with
/// [`State::accept_websocket`](crate::State::accept_websocket) and found again with
/// [`State::get_websockets`](crate::State::get_websockets) or in a WebSocket event.
///
/// The host, not the instance, holds the connection: it stays open while the instance is dropped
/// (hibernation), and its next message wakes the object in a fresh instance. So this is only a
/// handle, the host-assigned number of the socket, stable while the socket is open; copy it,
/// compare it and use it as a map key freely. What the object needs to remember about a socket
/// belongs in its attachment ([`serialize_attachment`](Self::serialize_attachment)), which
/// survives hibernation, not in the instance's fields.
///
/// Messages sent and sockets closed during an event leave the host only once the event's writes
/// are durable, and not at all if the event fails. Every call fails with
/// [`WebSocketError::NotFound`] once the socket has closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WebSocket {
    id: u64,
}

/// A message received on a [`WebSocket`], passed to
/// [`DurableObject::websocket_message`](crate::DurableObject::websocket_message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebSocketMessage {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl From<WitMessage> for WebSocketMessage {
    fn from(m: WitMessage) -> Self {
        match m {
            WitMessage::Text(text) => WebSocketMessage::Text(text),
            WitMessage::Binary(data) => WebSocketMessage::Binary(data),
        }
    }
}

impl From<wit::WebsocketError> for WebSocketError {
    fn from(e: wit::WebsocketError) -> Self {
        match e {
            wit::WebsocketError::NotFound => WebSocketError::NotFound,
            wit::WebsocketError::LimitExceeded(m) => WebSocketError::LimitExceeded(m),
            wit::WebsocketError::InvalidArgument(m) => WebSocketError::InvalidArgument(m),
        }
    }
}

/// Calls a WebSocket import and converts its error.
pub(crate) fn host<T>(result: std::result::Result<T, wit::WebsocketError>) -> Result<T> {
    result.map_err(|e| WebSocketError::from(e).into())
}

impl WebSocket {
    pub(crate) fn new(id: u64) -> Self {
        WebSocket { id }
    }

    /// The host-assigned number of the socket: stable while it is open, across hibernation and
    /// redeploys, and unique among the object's open sockets.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends a text message.
    pub fn send_text(&self, text: &str) -> Result<()> {
        host(wit::send_text(self.id, text))
    }

    /// Sends a binary message.
    pub fn send_binary(&self, data: &[u8]) -> Result<()> {
        host(wit::send_binary(self.id, data))
    }

    /// Sends `value` serialized as JSON in a text message, the usual wire format of browser
    /// clients.
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.send_text(&serde_json::to_string(value)?)
    }

    /// Closes the socket with `code` (1000, or 3000 to 4999) and a `reason` of at most 123
    /// bytes.
    ///
    /// The socket leaves [`State::get_websockets`](crate::State::get_websockets) at once, and no
    /// [`websocket_close`](crate::DurableObject::websocket_close) event follows for it: the
    /// object already knows.
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        host(wit::close(self.id, code, reason))
    }

    /// The tags the socket was accepted with.
    pub fn tags(&self) -> Result<Vec<String>> {
        host(wit::get_tags(self.id))
    }

    /// Keeps `value`, serialized as JSON, with the socket (at most 16 KiB), replacing any earlier
    /// attachment.
    ///
    /// The attachment survives hibernation, so it is where to keep what identifies the
    /// connection (a user name, a session) for later events, which may run in a fresh instance.
    pub fn serialize_attachment<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        host(wit::set_attachment(self.id, &serde_json::to_vec(value)?))
    }

    /// The socket's attachment parsed from JSON, or `None` if none was kept.
    pub fn deserialize_attachment<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match host(wit::get_attachment(self.id))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// When the host last answered the object's auto-response request on this socket, in
    /// milliseconds since the Unix epoch, or `None` if it never did.
    ///
    /// Auto-responses do not wake the object (see
    /// [`State::set_websocket_auto_response`](crate::State::set_websocket_auto_response)), so this
    /// is how it learns that a client is still alive.
    pub fn auto_response_timestamp(&self) -> Result<Option<u64>> {
        host(wit::get_auto_response_timestamp(self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_errors_convert_from_the_wit_types() {
        assert_eq!(
            WebSocketMessage::from(WitMessage::Text("hi".into())),
            WebSocketMessage::Text("hi".into())
        );
        assert_eq!(
            WebSocketMessage::from(WitMessage::Binary(vec![1, 2])),
            WebSocketMessage::Binary(vec![1, 2])
        );
        assert_eq!(
            WebSocketError::from(wit::WebsocketError::LimitExceeded("tags".into())),
            WebSocketError::LimitExceeded("tags".into())
        );
        assert_eq!(
            WebSocketError::from(wit::WebsocketError::NotFound).to_string(),
            "no such open WebSocket"
        );
    }

    #[test]
    fn sockets_are_their_ids() {
        assert_eq!(WebSocket::new(7).id(), 7);
        assert_eq!(WebSocket::new(7), WebSocket::new(7));
        assert_ne!(WebSocket::new(7), WebSocket::new(8));
    }
}
