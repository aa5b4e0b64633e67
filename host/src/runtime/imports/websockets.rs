//! `dohost:object/websockets`: accepting, tagging and sending to the sockets the host keeps for
//! the object. The same in 0.2.0 and 0.3.0.

use crate::runtime::state::HostState;
use crate::sockets::{Handback, Kind, Left, Outgoing, SocketError};

/// What WebSockets and streams share: both are connections the host holds for the object.
impl HostState {
    /// A socket (or stream) this object may use in this event: open, of `kind`, and not closed
    /// earlier in the event.
    pub(super) fn own(&self, socket: u64, kind: Kind) -> Result<(), SocketError> {
        let open = self.sockets.is_open(&self.identity.id, socket, kind);
        if open && !self.io.closing.contains(&socket) {
            Ok(())
        } else {
            Err(SocketError::NotFound)
        }
    }

    /// What socket `s` left, if this is its close or error event.
    fn left(&self, s: u64) -> Option<&Left> {
        self.io
            .left
            .as_ref()
            .filter(|(id, _)| *id == s)
            .map(|(_, left)| left)
    }

    /// Queues `out` behind the output gate, counted in the socket's backlog from now on.
    pub(super) fn send(
        &mut self,
        socket: u64,
        kind: Kind,
        out: Outgoing,
    ) -> Result<(), SocketError> {
        self.own(socket, kind)?;
        if let Some(queued) = self.sockets.queue(&self.identity.id, socket, out)? {
            self.io.outputs.push((socket, queued));
        }
        Ok(())
    }

    /// Registers the connection this request opens (a WebSocket it accepts, or the stream it
    /// answers with): once per request.
    pub(super) fn open(&mut self, kind: Kind, tags: Vec<String>) -> Result<u64, SocketError> {
        if self.io.accepted.is_some() {
            return Err(SocketError::InvalidArgument(
                "this request's socket or stream was already opened".into(),
            ));
        }
        let accepted = self.sockets.accept(&self.identity, kind, tags)?;
        let socket = accepted.socket;
        self.io.accepted = Some(Handback::Local(accepted));
        Ok(socket)
    }

    /// Closes a socket or stream at the output gate; it leaves the object's lists at once.
    pub(super) fn close_held(
        &mut self,
        socket: u64,
        kind: Kind,
        out: Outgoing,
    ) -> Result<(), SocketError> {
        self.send(socket, kind, out)?;
        self.io.closing.insert(socket);
        Ok(())
    }
}

macro_rules! websockets_host {
    ($version:ident) => {
        mod $version {
            use super::HostState;
            use crate::runtime::bindings::$version::dohost::object::websockets::{
                AutoResponse, Host, WebsocketError,
            };
            use crate::sockets::{Kind, Outgoing, SocketError};

            type SocketResult<T> = Result<T, WebsocketError>;

            fn ws_wit<T>(r: Result<T, SocketError>) -> SocketResult<T> {
                r.map_err(|e| match e {
                    SocketError::NotFound => WebsocketError::NotFound,
                    SocketError::LimitExceeded(m) => WebsocketError::LimitExceeded(m),
                    SocketError::InvalidArgument(m) => WebsocketError::InvalidArgument(m),
                })
            }

            impl Host for HostState {
                fn accept(&mut self, tags: Vec<String>) -> SocketResult<u64> {
                    if !self.io.upgrade {
                        return ws_wit(Err(SocketError::InvalidArgument(
                            "accept is only valid while handling a WebSocket upgrade request"
                                .into(),
                        )));
                    }
                    if self.io.accepted.is_some() {
                        return ws_wit(Err(SocketError::InvalidArgument(
                            "this request's socket was already accepted".into(),
                        )));
                    }
                    ws_wit(self.open(Kind::WebSocket, tags))
                }

                fn get_sockets(&mut self, tag: Option<String>) -> Vec<u64> {
                    let mut open =
                        self.sockets
                            .list(&self.identity.id, Kind::WebSocket, tag.as_deref());
                    open.retain(|s| !self.io.closing.contains(s));
                    open
                }

                fn send_text(&mut self, s: u64, text: String) -> SocketResult<()> {
                    ws_wit(self.send(s, Kind::WebSocket, Outgoing::Text(text)))
                }

                fn send_binary(&mut self, s: u64, data: Vec<u8>) -> SocketResult<()> {
                    ws_wit(self.send(s, Kind::WebSocket, Outgoing::Binary(data)))
                }

                fn close(&mut self, s: u64, code: u16, reason: String) -> SocketResult<()> {
                    if !(code == 1000 || (3000..=4999).contains(&code)) {
                        return ws_wit(Err(SocketError::InvalidArgument(format!(
                            "close code {code}: use 1000 or 3000..=4999"
                        ))));
                    }
                    if reason.len() > 123 {
                        return ws_wit(Err(SocketError::LimitExceeded(format!(
                            "a close reason of {} bytes; at most 123",
                            reason.len()
                        ))));
                    }
                    ws_wit(self.close_held(s, Kind::WebSocket, Outgoing::Close(code, reason)))
                }

                fn get_tags(&mut self, s: u64) -> SocketResult<Vec<String>> {
                    if let Some(left) = self.left(s) {
                        return Ok(left.tags.clone());
                    }
                    ws_wit(
                        self.own(s, Kind::WebSocket)
                            .and_then(|()| self.sockets.tags(&self.identity.id, s)),
                    )
                }

                fn set_attachment(&mut self, s: u64, data: Vec<u8>) -> SocketResult<()> {
                    ws_wit(self.own(s, Kind::WebSocket))?;
                    ws_wit(self.sockets.set_attachment(&self.identity.id, s, data))
                }

                fn get_attachment(&mut self, s: u64) -> SocketResult<Option<Vec<u8>>> {
                    if let Some(left) = self.left(s) {
                        return Ok(left.attachment.clone());
                    }
                    ws_wit(
                        self.own(s, Kind::WebSocket)
                            .and_then(|()| self.sockets.attachment(&self.identity.id, s)),
                    )
                }

                fn set_auto_response(&mut self, pair: Option<AutoResponse>) -> SocketResult<()> {
                    let pair = pair.map(|p| (p.request, p.response));
                    ws_wit(self.sockets.set_auto_response(self.identity.id, pair))
                }

                fn get_auto_response(&mut self) -> Option<AutoResponse> {
                    self.sockets
                        .auto_response(&self.identity.id)
                        .map(|(request, response)| AutoResponse { request, response })
                }

                fn get_auto_response_timestamp(&mut self, s: u64) -> SocketResult<Option<u64>> {
                    ws_wit(
                        self.own(s, Kind::WebSocket).and_then(|()| {
                            self.sockets.auto_response_timestamp(&self.identity.id, s)
                        }),
                    )
                }
            }
        }
    };
}

websockets_host!(v0_2);
websockets_host!(v0_3);
