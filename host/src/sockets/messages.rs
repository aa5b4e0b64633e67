//! What goes through a socket, and why a socket call is refused.

/// Most tags on one socket.
pub const MAX_TAGS: usize = 10;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Largest attachment, in bytes.
pub const MAX_ATTACHMENT_BYTES: usize = 16 * 1024;
/// Longest auto-response request or response text, in bytes.
pub const MAX_AUTO_RESPONSE_BYTES: usize = 2048;

/// What a held connection is: a WebSocket, or a response body the object writes as a stream.
/// Both keep tags, wait behind the output gate and count in the same backlog bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WebSocket,
    Stream,
}

/// What the host sends on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

/// An event from a socket, for its object.
#[derive(Debug, Clone)]
pub enum SocketEvent {
    Text(String),
    Binary(Vec<u8>),
    Close {
        code: u16,
        reason: String,
        was_clean: bool,
        left: Left,
    },
    Error {
        error: String,
        left: Left,
    },
    /// A stream's client went away, or read too slowly and the host ended the stream.
    StreamClosed,
}

/// What a socket that ended leaves with its close or error event: its tags and attachment stay
/// readable during that event (who left is usually in the attachment), though the socket is gone.
#[derive(Debug, Clone, Default)]
pub struct Left {
    pub tags: Vec<String>,
    pub attachment: Option<Vec<u8>>,
}

impl SocketEvent {
    /// The event with what its socket left, for a close or error event.
    pub fn leaving(mut self, what: Left) -> SocketEvent {
        if let SocketEvent::Close { left, .. } | SocketEvent::Error { left, .. } = &mut self {
            *left = what;
        }
        self
    }
}

/// Why a WebSocket call was refused. Mirrors the WIT `websocket-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    #[error("no such open socket")]
    NotFound,
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Outgoing {
    /// What the message costs while it waits: its payload (a close frame's reason, plus its code).
    pub(super) fn size(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Binary(b) => b.len(),
            Outgoing::Close(_, reason) => reason.len() + 2,
        }
    }
}
