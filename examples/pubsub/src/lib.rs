//! A pub/sub room over server-sent events, with streams that survive hibernation.
//!
//! Shows answering with a stream (`State::open_stream`), writing to it from later events, and
//! hearing when a subscriber goes away. Deployed as `pubsub`, the room `news` lives at
//! `/pubsub/news/`:
//!
//! - `GET /events` subscribes: a `text/event-stream` that receives every event published from
//!   then on, each as `id: N` and `data: TEXT`. With a `Last-Event-ID` header (what a
//!   reconnecting `EventSource` sends) or `?since=N`, the events after N that the room still
//!   keeps (the last 100) come first, so a reconnecting subscriber misses nothing.
//! - `POST /publish` with a text body publishes it: stored, then written to every subscriber;
//!   answers `{"id": N}` once it is durable (and so are the writes to the subscribers).
//! - `GET /subscribers`: `{"subscribers": N, "gone": M}`, the streams open now and how many
//!   subscribers have gone away since the room began.
//! - `GET /` is a page that subscribes with `EventSource` and shows what arrives.
//!
//! The instance keeps nothing in memory: the host holds the streams while the object sleeps,
//! and a publish finds them again with `State::get_streams`. Storage holds `next_id`, the events
//! under `event:{id:020}`, and the count `gone`.

use dohost_sdk::{
    DurableObject, Error, ListOptions, Request, Response, ResponseStream, Result, State,
    StreamError,
};
use serde_json::json;

/// How many events the room keeps for subscribers that reconnect.
const KEPT: u64 = 100;

/// The tag every subscriber's stream is opened with.
const TAG: &str = "subscriber";

fn event_key(id: u64) -> String {
    format!("event:{id:020}")
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>pubsub</title>
<ul id="events"></ul>
<script>
  const list = document.getElementById("events");
  const source = new EventSource("events");
  source.onmessage = (e) => {
    const item = document.createElement("li");
    item.dataset.id = e.lastEventId;
    item.textContent = e.data;
    list.appendChild(item);
  };
</script>
"#;

struct PubSub {
    state: State,
}

impl PubSub {
    /// The events after `since` that the room keeps, oldest first.
    fn since(&self, since: u64) -> Result<Vec<(u64, String)>> {
        let start = event_key(since + 1);
        let kept = self
            .state
            .storage()
            .list::<String>(ListOptions::new().prefix("event:").start(&start))?;
        Ok(kept
            .into_iter()
            .filter_map(|(key, text)| Some((key["event:".len()..].parse().ok()?, text)))
            .collect())
    }

    fn subscribe(&self, req: &Request) -> Result<Response> {
        let since = req
            .header("last-event-id")
            .map(str::to_owned)
            .or_else(|| req.query_param("since"))
            .and_then(|id| id.trim().parse::<u64>().ok());
        let stream = self.state.open_stream(&[TAG])?;
        if let Some(since) = since {
            for (id, text) in self.since(since)? {
                stream.send_event(Some(&id.to_string()), None, &text)?;
            }
        }
        Ok(Response::event_stream())
    }

    fn publish(&self, req: &Request) -> Result<Response> {
        let text = req.text()?;
        let storage = self.state.storage();
        let id: u64 = storage.get("next_id")?.unwrap_or(1);
        storage.put("next_id", &(id + 1))?;
        storage.put(&event_key(id), &text)?;
        if id > KEPT {
            storage.delete(&event_key(id - KEPT))?;
        }
        for subscriber in self.state.get_streams(Some(TAG)) {
            match subscriber.send_event(Some(&id.to_string()), None, &text) {
                // Gone since the list was read: its close event is on its way.
                Err(Error::Stream(StreamError::NotFound)) => {}
                other => other?,
            }
        }
        Response::from_json(&json!({ "id": id }))
    }
}

impl DurableObject for PubSub {
    fn new(state: State) -> Self {
        PubSub { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        match (req.method(), req.path()) {
            ("GET", "/") => Ok(Response::ok(PAGE).with_header("content-type", "text/html")),
            ("GET", "/events") => self.subscribe(&req),
            ("POST", "/publish") => self.publish(&req),
            ("GET", "/subscribers") => Response::from_json(&json!({
                "subscribers": self.state.get_streams(Some(TAG)).len(),
                "gone": self.state.storage().get::<u64>("gone")?.unwrap_or(0),
            })),
            _ => Ok(Response::error("not found", 404)),
        }
    }

    fn stream_closed(&mut self, _: ResponseStream) -> Result<()> {
        let storage = self.state.storage();
        let gone: u64 = storage.get("gone")?.unwrap_or(0);
        storage.put("gone", &(gone + 1))
    }
}

dohost_sdk::durable_object!(PubSub);
