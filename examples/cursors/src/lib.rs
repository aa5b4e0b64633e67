//! Live cursors: everyone on the same page sees everyone else's mouse, in real time.
//!
//! Shows WebSockets carrying their identity in attachments, broadcasting to every socket but the
//! sender, and serving a browser page from an object. Deployed as `cursors`, open
//! `http://127.0.0.1:8787/cursors/ROOM/` in a few windows (the trailing `/` matters: the page
//! connects to `ws` relative to itself).
//!
//! - `GET /` answers the page (`text/html`), which connects to `GET /ws`, sends its mouse moves
//!   and clicks and draws the other peers' cursors.
//! - `GET /ws` with a WebSocket upgrade joins the room (without one: 426). The peer gets a random
//!   id (8 hex digits), name (adjective and animal) and colour (`hsl(...)`), kept as the socket's
//!   attachment, and first receives `{"type":"welcome","id","name","color"}`.
//! - A peer sends `{"type":"move"|"click","x":number,"y":number}` (page coordinates); every
//!   other peer receives `{"type":"move"|"click","id","name","color","x","y"}`. Anything else is
//!   ignored.
//! - When a peer leaves, the others receive `{"type":"leave","id"}`.
//! - Anything else is a 404 with a JSON error.
//!
//! Moves touch no storage: the sender's identity comes from its attachment, which survives
//! hibernation. Only joining and leaving write one key, `peer:{socket id}`, so that the leave
//! notice can name a peer whose socket (and attachment) is already gone.

use dohost_sdk::{
    DurableObject, Error, Request, Response, Result, State, Storage, WebSocket, WebSocketError,
    WebSocketMessage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value, json};

/// The page, with its CSS and JavaScript inline.
const PAGE: &str = include_str!("page.html");

const ADJECTIVES: [&str; 16] = [
    "Brave", "Calm", "Clever", "Curious", "Eager", "Gentle", "Happy", "Jolly", "Lively", "Lucky",
    "Mighty", "Nimble", "Quiet", "Swift", "Witty", "Zesty",
];

const ANIMALS: [&str; 16] = [
    "Badger", "Beaver", "Falcon", "Ferret", "Fox", "Hedgehog", "Koala", "Lynx", "Otter", "Owl",
    "Panda", "Penguin", "Rabbit", "Seal", "Tiger", "Wombat",
];

/// Who a peer is: its socket's attachment, and the header of everything it sends.
#[derive(Serialize, Deserialize)]
struct Peer {
    id: String,
    name: String,
    color: String,
}

impl Peer {
    /// A peer with a random id, name and colour, drawn from a fresh unique name: 64 random hex
    /// digits, plenty for an 8-digit id, two table picks and a hue.
    fn random() -> Peer {
        let entropy = dohost_sdk::new_unique_name();
        let number = |range: std::ops::Range<usize>| {
            u32::from_str_radix(&entropy[range], 16).expect("unique names are hex")
        };
        Peer {
            id: entropy[..8].to_owned(),
            name: format!(
                "{} {}",
                ADJECTIVES[number(8..9) as usize],
                ANIMALS[number(9..10) as usize]
            ),
            color: format!("hsl({}, 75%, 45%)", number(10..14) % 360),
        }
    }
}

/// A move or click from the page; coordinates are passed on exactly as sent.
#[derive(Deserialize)]
struct Pointer {
    #[serde(rename = "type")]
    kind: Kind,
    x: Number,
    y: Number,
}

/// What the pointer did, named as on the wire.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Move,
    Click,
}

/// Where a peer is kept from join to leave. The attachment has it too, but a closed socket's
/// attachment can no longer be read, and the close is exactly when the others must be told who
/// left.
fn peer_key(ws: WebSocket) -> String {
    format!("peer:{}", ws.id())
}

struct Cursors {
    state: State,
}

impl Cursors {
    fn storage(&self) -> Storage {
        self.state.storage()
    }

    /// Sends `value` to every peer but `except`. A peer that closed meanwhile is skipped: its
    /// close event will follow.
    fn broadcast(&self, value: &Value, except: WebSocket) -> Result<()> {
        let text = serde_json::to_string(value)?;
        for ws in self.state.get_websockets(None) {
            if ws == except {
                continue;
            }
            match ws.send_text(&text) {
                Ok(()) | Err(Error::WebSocket(WebSocketError::NotFound)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn join(&self, req: &Request) -> Result<Response> {
        if !req.is_websocket_upgrade() {
            return Ok(Response::error("GET /ws needs a WebSocket upgrade", 426));
        }
        let ws = self.state.accept_websocket(&[])?;
        let peer = Peer::random();
        ws.serialize_attachment(&peer)?;
        self.storage().put(&peer_key(ws), &peer)?;
        ws.send_json(&json!({
            "type": "welcome",
            "id": peer.id,
            "name": peer.name,
            "color": peer.color,
        }))?;
        Ok(Response::websocket_accepted())
    }

    /// Tells the others that the peer on `ws` is gone, and forgets it.
    fn leave(&self, ws: WebSocket) -> Result<()> {
        let key = peer_key(ws);
        let peer: Option<Peer> = self.storage().get(&key)?;
        self.storage().delete(&key)?;
        match peer {
            Some(peer) => self.broadcast(&json!({ "type": "leave", "id": peer.id }), ws),
            None => Ok(()),
        }
    }
}

impl DurableObject for Cursors {
    fn new(state: State) -> Self {
        Cursors { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        match (req.method(), req.path()) {
            ("GET", "/") => {
                Ok(Response::ok(PAGE).with_header("content-type", "text/html; charset=utf-8"))
            }
            ("GET", "/ws") => self.join(&req),
            _ => Ok(Response::error("not found", 404)),
        }
    }

    fn websocket_message(&mut self, ws: WebSocket, message: WebSocketMessage) -> Result<()> {
        let WebSocketMessage::Text(text) = message else {
            return Ok(());
        };
        let Ok(pointer) = serde_json::from_str::<Pointer>(&text) else {
            return Ok(());
        };
        let Some(peer) = ws.deserialize_attachment::<Peer>()? else {
            return Ok(());
        };
        self.broadcast(
            &json!({
                "type": pointer.kind,
                "id": peer.id,
                "name": peer.name,
                "color": peer.color,
                "x": pointer.x,
                "y": pointer.y,
            }),
            ws,
        )
    }

    fn websocket_close(&mut self, ws: WebSocket, _: u16, _: String, _: bool) -> Result<()> {
        self.leave(ws)
    }

    fn websocket_error(&mut self, ws: WebSocket, _: String) -> Result<()> {
        self.leave(ws)
    }
}

dohost_sdk::durable_object!(Cursors);
