//! The counter class, registered by this crate (an instance per object) and by
//! `examples/shared-counter` (shared instances).

use dohost_sdk::{DurableObject, Request, Response, Result, State};

pub struct Counter {
    state: State,
}

impl DurableObject for Counter {
    fn new(state: State) -> Self {
        Counter { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        let mut count: u64 = storage.get("count")?.unwrap_or(0);
        match req.method() {
            "POST" => {
                count += 1;
                storage.put("count", &count)?;
            }
            "GET" => {}
            _ => return Ok(Response::error("use GET or POST", 405)),
        }
        Response::from_json(&serde_json::json!({ "count": count }))
    }
}
