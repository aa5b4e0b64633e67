//! A chat room per object name, over WebSockets that survive hibernation.
//!
//! Shows accepting WebSockets, tags, attachments, broadcasting with `State::get_websockets`, and
//! keeping history in storage. Deployed as `chat`, the room `lobby` lives at `/chat/lobby/`:
//!
//! - `GET /ws?user=NAME` with a WebSocket upgrade joins the room as `NAME` (default
//!   `anonymous`); the joiner first receives `{"type":"history","messages":[...]}`, the last 100
//!   messages in ascending id order. Without an upgrade it answers 426.
//! - A text message, plain or as `{"text": "..."}`, is stored as
//!   `{"id","user","text","timestamp"}` (ids count from 1, timestamps are ms since the epoch)
//!   and broadcast as `{"type":"message","id","user","text","timestamp"}` to everyone in the room,
//!   the sender included. Only the last 100 messages are kept. Binary messages are ignored.
//! - When someone leaves (closes, drops or fails), the others receive
//!   `{"type":"user_left","user":NAME}`.
//! - `GET /messages` answers the stored messages as a JSON array, ascending by id.
//! - Anything else is a 404 with a JSON error.
//!
//! Deployed in an app with a class bound as `LOBBY` (`examples/chat-app`), the room tells the
//! lobby object `lobby` how many are in it, through a stub, each time someone joins or leaves
//! (`PUT /rooms` with `{"room": NAME, "members": N}`); deployed alone, it has no lobby to tell.
//!
//! The instance keeps nothing in memory: who is on a socket lives in its attachment, and the
//! sockets themselves are found through the host, so the room keeps working while the object
//! sleeps between messages. Storage holds `next_id`, the messages under `msg:{id:020}`, and each
//! connected user's name under `socket:{socket id}` from join to leave.

use dohost_sdk::{
    CallError, DurableObject, Error, ListOptions, Request, Response, Result, State, Storage,
    WebSocket, WebSocketError, WebSocketMessage, log, now_ms,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How many messages the room keeps and shows to a joiner.
const HISTORY: u32 = 100;

/// The tag every chat socket is accepted with.
const TAG: &str = "chat";

/// Where message `id` is stored: zero-padded, so that key order is id order.
fn message_key(id: u64) -> String {
    format!("msg:{id:020}")
}

/// Where the name of the user on socket `ws` is kept from join to leave. The attachment has it
/// too, but a closed socket's attachment can no longer be read, and the close is exactly when the
/// others must be told who left.
fn socket_key(ws: WebSocket) -> String {
    format!("socket:{}", ws.id())
}

/// A stored chat message.
#[derive(Serialize, Deserialize)]
struct Message {
    id: u64,
    user: String,
    text: String,
    timestamp: u64,
}

/// What each socket carries through hibernation.
#[derive(Serialize, Deserialize)]
struct Attachment {
    user: String,
}

/// A message sent as JSON.
#[derive(Deserialize)]
struct Incoming {
    text: String,
}

struct ChatRoom {
    state: State,
}

impl ChatRoom {
    fn storage(&self) -> Storage {
        self.state.storage()
    }

    /// The last [`HISTORY`] messages, ascending by id.
    fn history(&self) -> Result<Vec<Message>> {
        let newest_first = ListOptions::new()
            .prefix("msg:")
            .reverse(true)
            .limit(HISTORY);
        let mut messages: Vec<Message> = self
            .storage()
            .list(newest_first)?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        messages.reverse();
        Ok(messages)
    }

    /// Stores a new message by `user`, drops what falls out of the history, and returns it.
    fn store(&self, user: String, text: String) -> Result<Message> {
        let storage = self.storage();
        let id: u64 = storage.get("next_id")?.unwrap_or(1);
        storage.put("next_id", &(id + 1))?;
        let message = Message {
            id,
            user,
            text,
            timestamp: now_ms(),
        };
        storage.put(&message_key(id), &message)?;
        if id > u64::from(HISTORY) {
            // The messages that fell out of the history: normally just one.
            let oldest = ListOptions::new()
                .prefix("msg:")
                .end(message_key(id - u64::from(HISTORY) + 1))
                .limit(128);
            let keys: Vec<String> = storage
                .list_bytes(oldest)?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            storage.delete_many(&keys.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(message)
    }

    /// Sends `value` to every socket of the room but `except`. A socket that closed meanwhile is
    /// skipped: its close event will follow.
    fn broadcast(&self, value: &Value, except: Option<WebSocket>) -> Result<()> {
        let text = serde_json::to_string(value)?;
        for ws in self.state.get_websockets(Some(TAG)) {
            if Some(ws) == except {
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
        let user = req
            .query_param("user")
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "anonymous".to_owned());
        let ws = self.state.accept_websocket(&[TAG])?;
        ws.serialize_attachment(&Attachment { user: user.clone() })?;
        self.storage().put(&socket_key(ws), &user)?;
        ws.send_json(&json!({ "type": "history", "messages": self.history()? }))?;
        self.tell_lobby();
        Ok(Response::websocket_accepted())
    }

    /// Tells the app's lobby how many are in the room now. A room deployed alone has no lobby;
    /// a lobby that fails is logged and does not stop the chat.
    fn tell_lobby(&self) {
        let members = self.state.get_websockets(Some(TAG)).len();
        let body = json!({ "room": self.state.name(), "members": members }).to_string();
        let request = Request::new("PUT", "/rooms").with_body(body);
        match self.state.env().stub("LOBBY", "lobby").fetch(request) {
            Ok(_) | Err(CallError::UnknownNamespace(_)) => {}
            Err(e) => log::warn(format!("the lobby did not hear of this room: {e}")),
        }
    }

    /// Tells the others that the user on `ws` is gone, and forgets the socket.
    fn leave(&self, ws: WebSocket) -> Result<()> {
        let key = socket_key(ws);
        let user: Option<String> = self.storage().get(&key)?;
        self.storage().delete(&key)?;
        let user = user.unwrap_or_else(|| "anonymous".to_owned());
        self.broadcast(&json!({ "type": "user_left", "user": user }), Some(ws))?;
        self.tell_lobby();
        Ok(())
    }
}

impl DurableObject for ChatRoom {
    fn new(state: State) -> Self {
        ChatRoom { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        match (req.method(), req.path()) {
            ("GET", "/ws") => self.join(&req),
            ("GET", "/messages") => Response::from_json(&self.history()?),
            _ => Ok(Response::error("not found", 404)),
        }
    }

    fn websocket_message(&mut self, ws: WebSocket, message: WebSocketMessage) -> Result<()> {
        let WebSocketMessage::Text(raw) = message else {
            return Ok(());
        };
        let text = match serde_json::from_str::<Incoming>(&raw) {
            Ok(incoming) => incoming.text,
            Err(_) => raw,
        };
        let user = ws
            .deserialize_attachment::<Attachment>()?
            .map_or_else(|| "anonymous".to_owned(), |a| a.user);
        let m = self.store(user, text)?;
        self.broadcast(
            &json!({
                "type": "message",
                "id": m.id,
                "user": m.user,
                "text": m.text,
                "timestamp": m.timestamp,
            }),
            None,
        )
    }

    fn websocket_close(&mut self, ws: WebSocket, _: u16, _: String, _: bool) -> Result<()> {
        self.leave(ws)
    }

    fn websocket_error(&mut self, ws: WebSocket, _: String) -> Result<()> {
        self.leave(ws)
    }
}

dohost_sdk::durable_object!(ChatRoom);
