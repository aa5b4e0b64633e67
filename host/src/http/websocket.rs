//! A WebSocket's connection task: frames in become events for the object (or the auto-response,
//! without waking it); what the object sends goes out once the output gate opens.
//!
//! Idle sockets are most sockets, so what one costs at rest is kept small: one task, a 256-byte
//! read buffer, no preallocated channel.
//!
//! A peer that breaks the protocol is answered with a close frame and then dropped, and its object
//! gets an error event: 1009 for a message over the limit, 1007 for a text message that is not
//! UTF-8, 1002 for any other violation (an unmasked frame, reserved bits, a bad continuation).
//! A connection lost without a close frame, even mid-frame, is a 1006 close event. A message that
//! finds its object's queue full closes its socket with 1013 (try again later), and the object
//! gets an error event: the client is sending faster than the object serves.

use crate::names::ObjectIdentity;
use crate::objects::Objects;
use crate::sockets::{
    Accepted, Left, Outbox, Outgoing, Queued, RemoteWebSocket, Slow, SocketEvent, Sockets,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::task::Poll;

/// Turns a frame (or the end of the stream) into an event for the object, and, when the peer
/// broke the protocol, the close frame the host answers with before it drops the connection.
fn event_of(
    frame: Option<Result<Message, axum::Error>>,
    max_message: usize,
) -> Option<(SocketEvent, Option<Outgoing>)> {
    let lost = SocketEvent::Close {
        code: 1006,
        reason: String::new(),
        was_clean: false,
        left: Left::default(),
    };
    let event = match frame {
        Some(Ok(Message::Text(text))) => SocketEvent::Text(text.as_str().to_owned()),
        Some(Ok(Message::Binary(data))) => SocketEvent::Binary(data.to_vec()),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return None,
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = frame.map_or((1005, String::new()), |f| {
                (f.code, f.reason.as_str().to_owned())
            });
            SocketEvent::Close {
                code,
                reason,
                was_clean: true,
                left: Left::default(),
            }
        }
        Some(Err(e)) => {
            return Some(match violation(e, max_message) {
                Some((code, reason, error)) => (
                    SocketEvent::Error {
                        error,
                        left: Left::default(),
                    },
                    Some(Outgoing::Close(code, reason.to_owned())),
                ),
                None => (lost, None),
            });
        }
        None => lost,
    };
    Some((event, None))
}

/// What the peer got wrong, if a read error is its fault rather than a lost connection: the
/// close code (RFC 6455, section 7.4.1), its reason, and the error the object is told.
fn violation(e: axum::Error, max_message: usize) -> Option<(u16, &'static str, String)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let e = e.into_inner().downcast::<WsError>().ok()?;
    match *e {
        WsError::Capacity(_) => Some((
            1009,
            "message too big",
            format!(
                "{e}; the limit is {max_message} bytes, so the host closed the socket with 1009"
            ),
        )),
        WsError::Utf8(_) => Some((
            1007,
            "invalid UTF-8",
            format!(
                "{e}: a text message that is not UTF-8, so the host closed the socket with 1007"
            ),
        )),
        // The connection was lost (mid-frame or not): a 1006 close, with nobody to send a frame to.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((
            1002,
            "protocol error",
            format!("{e}, so the host closed the socket with 1002"),
        )),
        _ => None,
    }
}

fn message_of(out: Outgoing) -> Message {
    match out {
        Outgoing::Text(t) => Message::Text(t.into()),
        Outgoing::Binary(b) => Message::Binary(b.into()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

/// Runs an upgraded socket until it closes: frames in become events, output goes out.
///
/// Not an `async fn`: those keep their arguments twice in the future (as arguments, and as the
/// locals they are moved into; rust-lang/rust#62958), which for the socket alone is 368 bytes of
/// every idle connection. The `async move` block below uses its captures in place.
pub fn serve(
    mut ws: WebSocket,
    sockets: Arc<Sockets>,
    objects: Objects,
    owner: Arc<ObjectIdentity>,
    accepted: Accepted,
) -> impl Future<Output = ()> + Send {
    // Opened here, not in the task: the task then holds only the socket's id and outbox.
    let socket = accepted.socket;
    let outbox = accepted.open();
    async move {
        let outbox = &*outbox;
        let deliver = |event: SocketEvent| {
            objects.websocket_event(&owner.namespace, &owner.name, socket, event)
        };
        // The socket's one way out: forgotten, and its object told how it ended, unless the
        // object closed it itself (then it is gone already, and hears nothing more).
        let end = |event: SocketEvent| {
            if let Some(left) = sockets.remove(&owner.id, socket) {
                // Never refused: an end is admitted past the queue's bound.
                let _ = deliver(event.leaving(left));
            }
        };
        // Once a close frame is sent, only the peer's answer is awaited.
        let mut closing = false;
        // Once a close frame is sent: how long the client has to answer it.
        let mut answer_by = None;
        loop {
            // Most sockets spend their life here, so what is held across this wait is kept small:
            // the socket, the owner, and a future of two references. Writing happens in a boxed
            // future that exists only while there is something to write.
            let wake = std::future::poll_fn(|cx| {
                if let Poll::Ready(frame) = ws.poll_next_unpin(cx) {
                    return Poll::Ready(Activity::Frame(frame));
                }
                if !closing {
                    outbox.waker.register(cx.waker());
                    if let Some(why) = outbox.slow() {
                        return Poll::Ready(Activity::Slow(why));
                    }
                    if !outbox.is_empty() {
                        return Poll::Ready(Activity::Output);
                    }
                }
                Poll::Pending
            });
            let wake = match answer_by {
                None => wake.await,
                // Boxed: only closing sockets pay for the timer.
                Some(until) => match Box::pin(tokio::time::timeout_at(until, wake)).await {
                    Ok(wake) => wake,
                    Err(_) => break,
                },
            };
            match wake {
                Activity::Frame(frame) => {
                    if let Some(Ok(Message::Text(text))) = &frame
                        && sockets.try_auto_response(&owner.id, socket, text.as_str())
                    {
                        continue;
                    }
                    let Some((event, answer)) = event_of(frame, sockets.max_message) else {
                        continue;
                    };
                    if let SocketEvent::Text(_) | SocketEvent::Binary(_) = event {
                        // After the object closed the socket, what the client still sends is dropped.
                        if sockets.exists(&owner.id, socket)
                            && let Err(full) = deliver(event)
                        {
                            let error = format!("{full}, so the host closed the socket with 1013");
                            close_with(&mut ws, 1013, "try again later", error, &end).await;
                            break;
                        }
                        continue;
                    }
                    if let Some(close) = answer {
                        let _ = Box::pin(ws.send(message_of(close))).await;
                    }
                    end(event);
                    break;
                }
                Activity::Slow(why) => {
                    close_slow(&mut ws, &sockets, why, &end).await;
                    break;
                }
                Activity::Output => {
                    // A write the client does not read stalls here: the outbox's verdict ends it.
                    let mut write = Box::pin(write_out(&mut ws, outbox));
                    let written = std::future::poll_fn(|cx| {
                        outbox.waker.register(cx.waker());
                        if let Some(why) = outbox.slow() {
                            return Poll::Ready(Err(Some(why)));
                        }
                        write.as_mut().poll(cx).map(|r| r.map_err(|()| None))
                    })
                    .await;
                    drop(write);
                    match written {
                        Ok(closed) => {
                            closing = closed;
                            if closed {
                                answer_by = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                            }
                        }
                        Err(Some(why)) => {
                            close_slow(&mut ws, &sockets, why, &end).await;
                            break;
                        }
                        Err(None) => {
                            end(SocketEvent::Close {
                                code: 1006,
                                reason: String::new(),
                                was_clean: false,
                                left: Left::default(),
                            });
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// What a socket's task woke up for.
enum Activity {
    Frame(Option<Result<Message, axum::Error>>),
    Output,
    Slow(Slow),
}

/// The close code for a client that did not read what was sent to it: 1008, policy violation.
pub const SLOW_CLOSE_CODE: u16 = 1008;

/// How long a close frame the host sends may take to get through (after what the connection
/// already holds), and then the client's answer to arrive, before the connection is dropped.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Tells the object of a client that fell too far behind with an error event, and closes its
/// socket with 1008.
async fn close_slow(ws: &mut WebSocket, sockets: &Sockets, why: Slow, end: &impl Fn(SocketEvent)) {
    let backlog = &sockets.backlog;
    let error = match why {
        Slow::Socket => format!(
            "the client read too slowly: more than {} bytes waited to be written to it, so the \
             host closed the socket with {SLOW_CLOSE_CODE}",
            backlog.per_socket
        ),
        Slow::Host => format!(
            "the client read too slowly: the host's sockets together had more than {} bytes \
             waiting, this one among the most, so the host closed it with {SLOW_CLOSE_CODE}",
            backlog.total
        ),
    };
    close_with(ws, SLOW_CLOSE_CODE, "client too slow", error, end).await;
}

/// Tells the object of a socket the host ends with an error event, and closes it with `code`.
async fn close_with(
    ws: &mut WebSocket,
    code: u16,
    reason: &str,
    error: String,
    end: &impl Fn(SocketEvent),
) {
    // The object learns at once; the close frame may take a while, behind what the connection
    // already holds.
    end(SocketEvent::Error {
        error,
        left: Left::default(),
    });
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(close)).await;
}

/// Writes what the outbox holds, up to and including a close frame; returns whether it sent
/// one, or `Err` if the connection failed.
///
/// A batch that closes the socket gets [`CLOSE_GRACE`] to be written: the socket has left the
/// registry, so a client that does not read could no longer be found slow, and would hold its
/// task for ever.
async fn write_out(ws: &mut WebSocket, outbox: &Outbox) -> Result<bool, ()> {
    let batch = outbox.take();
    let closes = batch.iter().any(|q| matches!(q.out, Outgoing::Close(..)));
    let write = async {
        let mut closing = false;
        for Queued { out, charge } in batch {
            closing = matches!(out, Outgoing::Close(..));
            let fed = ws.feed(message_of(out)).await;
            // Handed to the connection: it no longer waits here.
            drop(charge);
            if fed.is_err() || closing {
                break;
            }
        }
        ws.flush().await.map_err(drop)?;
        Ok(closing)
    };
    if closes {
        tokio::time::timeout(CLOSE_GRACE, write)
            .await
            .unwrap_or(Err(()))
    } else {
        write.await
    }
}

/// Relays a client's socket to the node whose object accepted it (a stub call made from this node
/// handed it back, see `cluster::calls`), message by message both ways, until either end closes.
/// Each way waits for its send before it reads again, so a slow end holds back the other instead
/// of filling memory here; the other node's bounds then apply to its socket.
pub async fn relay(client: WebSocket, node: RemoteWebSocket) {
    use tokio_tungstenite::tungstenite::Message as Remote;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame as RemoteClose;
    let (client_out, client_in) = client.split();
    let (node_out, node_in) = node.split();
    let up = pump(client_in, node_out, |message| {
        Some(match message {
            Message::Text(t) => Remote::Text(t.as_str().into()),
            Message::Binary(b) => Remote::Binary(b),
            Message::Ping(p) => Remote::Ping(p),
            Message::Pong(p) => Remote::Pong(p),
            Message::Close(frame) => Remote::Close(frame.map(|f| RemoteClose {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            })),
        })
    });
    let down = pump(node_in, client_out, |message| {
        Some(match message {
            Remote::Text(t) => Message::Text(t.as_str().into()),
            Remote::Binary(b) => Message::Binary(b),
            Remote::Ping(p) => Message::Ping(p),
            Remote::Pong(p) => Message::Pong(p),
            Remote::Close(frame) => Message::Close(frame.map(|f| CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            })),
            Remote::Frame(_) => return None,
        })
    });
    // Either way ending ends the relay: its other way has no one left to talk to.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// One way of a relay: each message `from` gives, as `convert` makes it (or skips it), sent `to`
/// before the next is read; then `to` is closed.
async fn pump<M, N, E, S>(
    mut from: impl futures::Stream<Item = Result<M, E>> + Unpin,
    mut to: S,
    convert: impl Fn(M) -> Option<N>,
) where
    S: futures::Sink<N> + Unpin,
{
    while let Some(Ok(message)) = from.next().await {
        let Some(message) = convert(message) else {
            continue;
        };
        if to.send(message).await.is_err() {
            break;
        }
    }
    let _ = to.close().await;
}
