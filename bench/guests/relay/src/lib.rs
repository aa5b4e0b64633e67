//! The benchmark's relay object: passes each request on to the counter of its own name (the
//! public namespace `counter`) through a stub, and answers what the counter answered. What a call between two objects costs is this
//! object's event on top of the counter's.

use dohost_sdk::{DurableObject, Request, Response, Result, State};

struct Relay {
    state: State,
}

impl DurableObject for Relay {
    fn new(state: State) -> Self {
        Relay { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let name = self.state.name();
        Ok(self.state.env().stub("counter", &name).fetch(req)?)
    }
}

dohost_sdk::durable_object!(Relay);
