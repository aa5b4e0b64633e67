//! The WebSocket endpoints and events of the test object.

use dohost_sdk::{
    Error, Request, Response, Result, State, WebSocket, WebSocketError, WebSocketMessage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{append, number_param};

/// The body of `POST /auto-response`, and the answer of `GET /auto-response`.
#[derive(Serialize, Deserialize)]
struct AutoResponse {
    request: String,
    response: String,
}

/// A refused WebSocket call: `{"err": {"kind": "not-found", "message": ...}}`, as for storage.
fn error_json(e: WebSocketError) -> Value {
    let (kind, message) = match e {
        WebSocketError::NotFound => ("not-found", String::new()),
        WebSocketError::LimitExceeded(m) => ("limit-exceeded", m),
        WebSocketError::InvalidArgument(m) => ("invalid-argument", m),
    };
    json!({ "err": { "kind": kind, "message": message } })
}

/// `outcome` as an HTTP answer: 204, or 400 with the refusal.
fn answer(outcome: Result<()>) -> Result<Response> {
    match outcome {
        Ok(()) => Ok(Response::empty()),
        Err(Error::WebSocket(e)) => Ok(Response::from_json(&error_json(e))?.with_status(400)),
        Err(e) => Err(e),
    }
}

/// `GET /ws?tags=a,b`: accepts the upgrade with those tags.
pub fn accept(state: State, req: &Request) -> Result<Response> {
    if !req.is_websocket_upgrade() {
        return Ok(Response::error("GET /ws needs a WebSocket upgrade", 426));
    }
    let tags = req.query_param("tags").unwrap_or_default();
    let tags: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
    match state.accept_websocket(&tags) {
        // `?then=fail` and `?then=refuse`: the socket is accepted, but never opens.
        Ok(_) => match req.query_param("then").as_deref() {
            Some("fail") => Err(Error::from("deliberate failure after accept")),
            Some("refuse") => Ok(Response::error("refused after accept", 403)),
            _ => Ok(Response::websocket_accepted()),
        },
        Err(e) => answer(Err(e)),
    }
}

/// `POST /auto-response`: sets the pair, or removes it with a `null` body.
pub fn set_auto_response(state: State, req: &Request) -> Result<Response> {
    let pair: Option<AutoResponse> = req.json()?;
    let pair = pair
        .as_ref()
        .map(|p| (p.request.as_str(), p.response.as_str()));
    answer(state.set_websocket_auto_response(pair))
}

/// `GET /auto-response`: the pair, or `null`.
pub fn get_auto_response(state: State) -> Result<Response> {
    let pair = state
        .get_websocket_auto_response()
        .map(|(request, response)| AutoResponse { request, response });
    Response::from_json(&pair)
}

/// `GET /sockets?tag=T`: the ids of the open sockets, with that tag if given.
pub fn list(state: State, req: &Request) -> Result<Response> {
    let tag = req.query_param("tag");
    let ids: Vec<u64> = state
        .get_websockets(tag.as_deref())
        .iter()
        .map(WebSocket::id)
        .collect();
    Response::from_json(&ids)
}

/// `GET /auto-response-timestamp?socket=ID`: when the host last auto-responded on that open
/// socket, or `null`; 404 if it is not open.
pub fn auto_response_timestamp(state: State, req: &Request) -> Result<Response> {
    let id: u64 = number_param(req, "socket")?.ok_or("the query parameter `socket` is missing")?;
    let Some(ws) = state
        .get_websockets(None)
        .into_iter()
        .find(|ws| ws.id() == id)
    else {
        return Ok(Response::error("no such open socket", 404));
    };
    Response::from_json(&ws.auto_response_timestamp()?)
}

/// A message: a command for the text ones (see the crate docs), an echo for binary ones. A
/// refused WebSocket call is reported to the sender as an [`error_json`] message.
pub fn on_message(state: State, ws: WebSocket, message: WebSocketMessage) -> Result<()> {
    let text = match message {
        WebSocketMessage::Text(text) => text,
        WebSocketMessage::Binary(data) => return ws.send_binary(&data),
    };
    let outcome = if let Some(x) = text.strip_prefix("echo:") {
        ws.send_text(x)
    } else if let Some(x) = text.strip_prefix("broadcast:") {
        state
            .get_websockets(None)
            .iter()
            .try_for_each(|s| s.send_text(x))
    } else if let Some(ms) = text.strip_prefix("sleep:") {
        // A slow event: the messages behind it wait in the object's queue.
        let ms = ms
            .parse()
            .map_err(|_| Error::from("sleep:MS takes a number"))?;
        std::thread::sleep(std::time::Duration::from_millis(ms));
        Ok(())
    } else if let Some(x) = text.strip_prefix("attach:") {
        ws.serialize_attachment(x)
    } else {
        match text.as_str() {
            "close" => ws.close(4000, "bye"),
            "fail" => return Err("deliberate websocket failure".into()),
            "tags" => ws.tags().and_then(|tags| ws.send_json(&tags)),
            "attachment" => ws
                .deserialize_attachment::<Value>()
                .and_then(|a| ws.send_json(&a)),
            _ => Ok(()),
        }
    };
    match outcome {
        Err(Error::WebSocket(e)) => ws.send_json(&error_json(e)),
        other => other,
    }
}

/// A close, recorded under `closes`.
pub fn on_close(
    state: State,
    ws: WebSocket,
    code: u16,
    reason: String,
    was_clean: bool,
) -> Result<()> {
    // The socket is gone, but its tags and attachment are still readable in its close event.
    let tags = ws.tags()?;
    let attachment: Option<String> = ws.deserialize_attachment()?;
    append(
        state.storage(),
        "closes",
        json!({
            "socket": ws.id(), "code": code, "reason": reason, "was_clean": was_clean,
            "tags": tags, "attachment": attachment,
        }),
    )
}

/// An error, recorded under `errors`.
pub fn on_error(state: State, ws: WebSocket, error: String) -> Result<()> {
    append(
        state.storage(),
        "errors",
        json!({ "socket": ws.id(), "error": error }),
    )
}
