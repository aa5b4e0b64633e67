//! The live tail: what happens in the host as it happens (requests answered, guests' log lines,
//! events that failed, alarms delivered), for `dohost tail` over the admin API.
//!
//! One broadcast channel of bounded size: nothing is built while nobody watches, and a watcher
//! that reads too slowly misses lines (and is told how many) rather than holding any.

use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

/// Lines kept for watchers that fall behind; past it the slowest miss lines.
const BUFFERED: usize = 4096;

/// Most watchers at once: each holds a connection and a place in the channel.
pub const MAX_WATCHERS: usize = 16;

/// One line of the tail: its namespace and object, for the watchers' filters, and the line as
/// JSON (`{"type": "request" | "log" | "failure" | "alarm", "ts": ms, "namespace", "object", ...}`).
#[derive(Debug)]
pub struct TailLine {
    pub namespace: String,
    pub object: String,
    pub json: Value,
}

/// The channel every line goes through. Cheap to clone.
#[derive(Clone)]
pub struct Tail {
    lines: broadcast::Sender<Arc<TailLine>>,
    watchers: Arc<Semaphore>,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            lines: broadcast::channel(BUFFERED).0,
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
        }
    }
}

/// A watcher's end of the tail, and its place among the [`MAX_WATCHERS`].
pub struct Watcher {
    pub lines: broadcast::Receiver<Arc<TailLine>>,
    _place: OwnedSemaphorePermit,
}

impl Tail {
    /// Whether anyone watches: lines are built only then.
    pub fn watched(&self) -> bool {
        self.lines.receiver_count() > 0
    }

    /// Sends a line of `kind` about `object` of `namespace`, with `fields` added to it.
    pub fn send(&self, kind: &str, namespace: &str, object: &str, fields: Value) {
        if !self.watched() {
            return;
        }
        let mut line = json!({
            "type": kind,
            "ts": crate::clock::now_ms(),
            "namespace": namespace,
            "object": object,
        });
        if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        let _ = self.lines.send(Arc::new(TailLine {
            namespace: namespace.to_owned(),
            object: object.to_owned(),
            json: line,
        }));
    }

    /// A new watcher, or `None` when [`MAX_WATCHERS`] already watch.
    pub fn watch(&self) -> Option<Watcher> {
        let place = self.watchers.clone().try_acquire_owned().ok()?;
        Some(Watcher {
            lines: self.lines.subscribe(),
            _place: place,
        })
    }
}
