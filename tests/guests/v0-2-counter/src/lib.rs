//! A counter built against `dohost:object@0.2.0` directly: `POST` increments, any method answers
//! the count as text.

wit_bindgen::generate!({
    world: "durable-object",
    path: "../../../wit/v0.2.0",
});

use dohost::object::storage;
use dohost::object::types::{Request, Response};
use exports::dohost::object::alarm_handler::AlarmInfo;
use exports::dohost::object::websocket_handler::Message;

struct Counter;

impl exports::dohost::object::http_handler::Guest for Counter {
    fn fetch(request: Request) -> Result<Response, String> {
        let stored = storage::get("count").map_err(|e| format!("{e:?}"))?;
        let mut count = stored
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .unwrap_or(0);
        if request.method == "POST" {
            count += 1;
            storage::put("count", &count.to_le_bytes()).map_err(|e| format!("{e:?}"))?;
        }
        Ok(Response {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: format!("v0.2.0 count {count}").into_bytes(),
        })
    }
}

impl exports::dohost::object::websocket_handler::Guest for Counter {
    fn on_message(_: u64, _: Message) -> Result<(), String> {
        Ok(())
    }
    fn on_close(_: u64, _: u16, _: String, _: bool) -> Result<(), String> {
        Ok(())
    }
    fn on_error(_: u64, _: String) -> Result<(), String> {
        Ok(())
    }
}

impl exports::dohost::object::alarm_handler::Guest for Counter {
    fn on_alarm(_: AlarmInfo) -> Result<(), String> {
        Ok(())
    }
}

export!(Counter);
