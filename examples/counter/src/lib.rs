//! The smallest useful Durable Object: a counter per name.
//!
//! Shows typed storage (`get` / `put` of a JSON number) and why state lives in storage rather
//! than in fields: the instance may be dropped between requests. `POST` increments the count and
//! `GET` reads it, both answering `{"count":n}`; other methods get a 405.

use dohost_sdk::{DurableObject, Request, Response, Result, State};

struct Counter {
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

dohost_sdk::durable_object!(Counter);
