//! WebSockets held by the host on behalf of objects.
//!
//! A socket belongs to the object that accepted it, but lives here, not in the object's instance:
//! the instance may be dropped (hibernation) or replaced (redeploy) while the socket, its tags
//! and its attachment stay. What the object sends waits in the socket's outbox, counted against
//! per-socket and host-wide bounds, until the socket's connection task (`http::websocket`)
//! writes it.

mod backlog;
mod handback;
mod messages;
mod registry;

pub use backlog::{Backlog, Outbox, Queued, Slow};
pub use handback::{Handback, RemoteStream, RemoteWebSocket};
pub use messages::{
    Kind, Left, MAX_ATTACHMENT_BYTES, MAX_AUTO_RESPONSE_BYTES, MAX_TAG_BYTES, MAX_TAGS, Outgoing,
    SocketError, SocketEvent,
};
pub use registry::{Accepted, Sockets};
