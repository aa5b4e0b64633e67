//! A response the object writes as a stream (`streams.open`): its body, fed from the stream's
//! outbox by this and later events until the object closes it or the client goes away. The
//! counterpart of `websocket.rs` for a one-way connection.
//!
//! A task pumps the outbox into the body one batch at a time. It, not hyper, watches the outbox:
//! hyper stops polling a body whose client does not read, so only a task of its own can see that
//! the client fell past the backlog bounds, end the stream and tell the object.

use crate::names::ObjectIdentity;
use crate::objects::Objects;
use crate::sockets::{Accepted, Outbox, Outgoing, Queued, SocketEvent, Sockets};
use axum::body::{Body, Bytes};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;

/// The body of a streamed response: `first` (the body the handler returned), then what the
/// outbox releases.
pub(super) fn body(
    first: Vec<u8>,
    accepted: Accepted,
    sockets: Arc<Sockets>,
    objects: Objects,
) -> Body {
    let owner = accepted.owner().clone();
    let socket = accepted.socket;
    let outbox = accepted.open();
    // One batch in hand-over at a time: what waits beyond it stays in the outbox, counted.
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(pump(tx, outbox, owner, socket, sockets, objects));
    let mut first = (!first.is_empty()).then(|| Bytes::from(first));
    Body::from_stream(futures::stream::poll_fn(move |cx| {
        if let Some(first) = first.take() {
            return Poll::Ready(Some(Ok::<_, Infallible>(first)));
        }
        rx.poll_recv(cx).map(|data| data.map(Ok))
    }))
}

/// What the pump woke up for.
enum Wake {
    Output,
    Slow,
}

/// Moves what the object writes from the outbox into the body, until the object closes the
/// stream, the client goes away (the body is dropped) or falls too far behind.
async fn pump(
    tx: mpsc::Sender<Bytes>,
    outbox: Arc<Outbox>,
    owner: Arc<ObjectIdentity>,
    socket: u64,
    sockets: Arc<Sockets>,
    objects: Objects,
) {
    // The stream's one way out but the object's own close: forgotten, and its object told.
    let end = || {
        if sockets.remove(&owner.id, socket).is_some() {
            let (namespace, name) = (&owner.namespace, &owner.name);
            // Never refused: an end is admitted past the queue's bound.
            let _ = objects.websocket_event(namespace, name, socket, SocketEvent::StreamClosed);
        }
    };
    let slow = || {
        std::future::poll_fn(|cx| {
            outbox.waker.register(cx.waker());
            match outbox.slow() {
                Some(_) => Poll::Ready(()),
                None => Poll::Pending,
            }
        })
    };
    loop {
        let woke = std::future::poll_fn(|cx| {
            outbox.waker.register(cx.waker());
            if outbox.slow().is_some() {
                return Poll::Ready(Wake::Slow);
            }
            if !outbox.is_empty() {
                return Poll::Ready(Wake::Output);
            }
            Poll::Pending
        });
        let woke = tokio::select! {
            woke = woke => woke,
            () = tx.closed() => return end(),
        };
        if let Wake::Slow = woke {
            return end();
        }
        let mut data = Vec::new();
        let mut charges = Vec::new();
        let mut closed = false;
        for Queued { out, charge } in outbox.take() {
            charges.push(charge);
            match out {
                Outgoing::Binary(bytes) => data.extend_from_slice(&bytes),
                Outgoing::Text(text) => data.extend_from_slice(text.as_bytes()),
                // The object closed it; it left the registry when the close was released.
                Outgoing::Close(..) => {
                    closed = true;
                    break;
                }
            }
        }
        if !data.is_empty() {
            // Counted until the body takes it: a client that does not read is found slow here.
            tokio::select! {
                sent = tx.send(Bytes::from(data)) => if sent.is_err() { return end() },
                () = slow() => return end(),
            }
        }
        drop(charges);
        if closed {
            return;
        }
    }
}
