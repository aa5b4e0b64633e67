//! Response bodies the host holds open for the object, written as they are produced: server-sent
//! events, a live log, a long export.

use crate::{Error, Result};
use dohost_shared_object_bindings::dohost::object::streams as wit;
use std::fmt;

/// A response stream, opened with [`State::open_stream`](crate::State::open_stream) and found
/// again with [`State::get_streams`](crate::State::get_streams) or in
/// [`DurableObject::stream_closed`](crate::DurableObject::stream_closed).
///
/// Like a [`WebSocket`](crate::WebSocket), the host holds the connection: it stays open while
/// the instance sleeps, and any later event may write to it. What is written during an event
/// leaves only once the event's writes are durable, and not at all if the event fails. Every call
/// fails with [`StreamError::NotFound`] once the stream has closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseStream {
    id: u64,
}

/// Why the host refused a stream call. A refused call changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The stream is not one of this object's open streams: its client went away, or it was
    /// closed.
    NotFound,
    /// Over 10 tags, or a tag over 256 bytes.
    LimitExceeded(String),
    /// The call makes no sense here, e.g. opening a stream outside a request, or twice.
    InvalidArgument(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::NotFound => f.write_str("no such open stream"),
            StreamError::LimitExceeded(m) => write!(f, "stream limit exceeded: {m}"),
            StreamError::InvalidArgument(m) => write!(f, "invalid stream argument: {m}"),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<wit::StreamError> for StreamError {
    fn from(e: wit::StreamError) -> Self {
        match e {
            wit::StreamError::NotFound => StreamError::NotFound,
            wit::StreamError::LimitExceeded(m) => StreamError::LimitExceeded(m),
            wit::StreamError::InvalidArgument(m) => StreamError::InvalidArgument(m),
        }
    }
}

fn host<T>(result: std::result::Result<T, wit::StreamError>) -> Result<T> {
    result.map_err(|e| Error::Stream(e.into()))
}

impl ResponseStream {
    pub(crate) fn new(id: u64) -> Self {
        ResponseStream { id }
    }

    pub(crate) fn open(tags: &[&str]) -> Result<Self> {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        host(wit::open(&tags)).map(ResponseStream::new)
    }

    pub(crate) fn list(tag: Option<&str>) -> Vec<Self> {
        wit::get_streams(tag)
            .into_iter()
            .map(ResponseStream::new)
            .collect()
    }

    /// The host-assigned number of the stream, stable while it is open.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends `data`, after what was written before.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        host(wit::write(self.id, data))
    }

    /// Sends one server-sent event (`text/event-stream`): an optional `id` (which a reconnecting
    /// `EventSource` sends back as `Last-Event-ID`), an optional `event` type, and `data`, one
    /// `data:` line per line of it.
    pub fn send_event(&self, id: Option<&str>, event: Option<&str>, data: &str) -> Result<()> {
        let mut out = String::new();
        if let Some(id) = id {
            out.push_str(&format!("id: {id}\n"));
        }
        if let Some(event) = event {
            out.push_str(&format!("event: {event}\n"));
        }
        for line in data.split('\n') {
            out.push_str(&format!("data: {line}\n"));
        }
        out.push('\n');
        self.write(out.as_bytes())
    }

    /// Ends the stream once what was written before is sent. It leaves
    /// [`State::get_streams`](crate::State::get_streams) at once, and no
    /// [`stream_closed`](crate::DurableObject::stream_closed) follows for it.
    pub fn close(&self) -> Result<()> {
        host(wit::close(self.id))
    }

    /// The tags the stream was opened with.
    pub fn tags(&self) -> Result<Vec<String>> {
        host(wit::get_tags(self.id))
    }
}
