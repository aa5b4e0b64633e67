//! What a request hands back besides its answer: the socket it accepted, a WebSocket or a response
//! stream. On one host that is always a socket of this host ([`Accepted`]); in a cluster, a stub
//! call to an object another node serves hands back that node's end instead, which the host
//! relays to the client.

use super::registry::Accepted;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A WebSocket to another node, on which it serves a socket its object accepted.
pub type RemoteWebSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The bytes of a response stream another node's object answers with, as they come.
pub type RemoteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A socket a request's answer comes with.
pub enum Handback {
    /// Accepted by an object of this host.
    Local(Accepted),
    /// Accepted by an object another node serves: relayed message by message. Boxed: the
    /// connection's state is several times the size of a local socket's handle.
    RemoteWebSocket(Box<RemoteWebSocket>),
    /// Answered by an object another node serves: relayed as it comes.
    RemoteStream(RemoteStream),
}
