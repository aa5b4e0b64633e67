//! `dohost:object/streams`: response bodies the host holds open for the object, written by later
//! events. They are held connections like WebSockets, and share their registry, backlog bounds
//! and output gate (see `websockets.rs`).

use crate::runtime::bindings::v0_3::dohost::object::streams::{Host, StreamError};
use crate::runtime::state::HostState;
use crate::sockets::{Kind, Outgoing, SocketError};

type StreamResult<T> = Result<T, StreamError>;

fn to_wit<T>(r: Result<T, SocketError>) -> StreamResult<T> {
    r.map_err(|e| match e {
        SocketError::NotFound => StreamError::NotFound,
        SocketError::LimitExceeded(m) => StreamError::LimitExceeded(m),
        SocketError::InvalidArgument(m) => StreamError::InvalidArgument(m),
    })
}

impl Host for HostState {
    fn open(&mut self, tags: Vec<String>) -> StreamResult<u64> {
        if !self.io.in_request || self.io.upgrade {
            return to_wit(Err(SocketError::InvalidArgument(
                "a stream answers a request: open it while handling one that is not a WebSocket \
                 upgrade"
                    .into(),
            )));
        }
        to_wit(HostState::open(self, Kind::Stream, tags))
    }

    fn get_streams(&mut self, tag: Option<String>) -> Vec<u64> {
        let mut open = self
            .sockets
            .list(&self.identity.id, Kind::Stream, tag.as_deref());
        open.retain(|s| !self.io.closing.contains(s));
        open
    }

    fn write(&mut self, s: u64, data: Vec<u8>) -> StreamResult<()> {
        to_wit(self.send(s, Kind::Stream, Outgoing::Binary(data)))
    }

    fn close(&mut self, s: u64) -> StreamResult<()> {
        to_wit(self.close_held(s, Kind::Stream, Outgoing::Close(0, String::new())))
    }

    fn get_tags(&mut self, s: u64) -> StreamResult<Vec<String>> {
        to_wit(
            self.own(s, Kind::Stream)
                .and_then(|()| self.sockets.tags(&self.identity.id, s)),
        )
    }
}
