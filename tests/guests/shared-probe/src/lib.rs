//! A counter of the world `shared-object` that keeps its count in a field, read from storage
//! only when the object is built: a correct count after many increments shows that the host told
//! each shared instance when its object changed (`switch-object`), and `built_for` that the field
//! belongs to the object asked.
//!
//! `POST` increments and answers `{"count":n,"built_for":name,"name":name,"instance":k}`; `GET`
//! answers the same without incrementing; `PATCH` panics. `instance` is a random number drawn once per instance,
//! so a client can count the instances that served it.

use dohost_sdk::{DurableObject, Request, Response, Result, State};

struct SharedProbe {
    state: State,
    /// The name of the object this value was built for.
    built_for: String,
    count: u64,
}

thread_local! {
    static INSTANCE_ID: u64 =
        u64::from_str_radix(&dohost_sdk::new_unique_name()[..12], 16).unwrap_or(0);
}

impl DurableObject for SharedProbe {
    fn new(state: State) -> Self {
        let count = state.storage().get("count").ok().flatten().unwrap_or(0);
        SharedProbe {
            built_for: state.name(),
            state,
            count,
        }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        match req.method() {
            "POST" => {
                self.count += 1;
                self.state.storage().put("count", &self.count)?;
            }
            "GET" => {}
            // A trap: the host drops this instance, with whatever other objects it held.
            "PATCH" => panic!("asked to fail"),
            _ => return Ok(Response::error("use GET or POST", 405)),
        }
        Response::from_json(&serde_json::json!({
            "count": self.count,
            "built_for": self.built_for,
            "name": self.state.name(),
            "instance": INSTANCE_ID.with(|id| *id),
        }))
    }
}

dohost_sdk::shared_object!(SharedProbe);
