//! Hands out numbered tickets, each exactly once.
//!
//! Shows `Storage::transaction`: `POST` claims the next ticket by reading, incrementing and
//! storing `next` inside one transaction and answers `{"ticket":n}`; `GET` answers
//! `{"issued":n}`, how many tickets were claimed. However many clients race, every number from 1
//! up is handed out once, because the host runs one request at a time per object and commits
//! each request's writes before answering it.

use dohost_sdk::{DurableObject, Request, Response, Result, State};

struct TicketCounter {
    state: State,
}

impl DurableObject for TicketCounter {
    fn new(state: State) -> Self {
        TicketCounter { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        match req.method() {
            "POST" => {
                // All or nothing: if storing failed, the read-increment-store would be undone.
                let ticket = storage.transaction(|tx| {
                    let ticket = tx.get::<u64>("next")?.unwrap_or(0) + 1;
                    tx.put("next", &ticket)?;
                    Ok(ticket)
                })?;
                Response::from_json(&serde_json::json!({ "ticket": ticket }))
            }
            "GET" => {
                let issued = storage.get::<u64>("next")?.unwrap_or(0);
                Response::from_json(&serde_json::json!({ "issued": issued }))
            }
            _ => Ok(Response::error("use GET or POST", 405)),
        }
    }
}

dohost_sdk::durable_object!(TicketCounter);
