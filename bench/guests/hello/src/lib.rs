//! The benchmark's trivial object: every request gets a 200 `ok`, and storage is never touched.
//!
//! It measures what a request costs in dohost when the object does nothing: routing, the
//! object's queue, one guest call and the response. Deployed as `hello` by `dohost-bench`.

use dohost_sdk::{DurableObject, Request, Response, Result, State};

struct Hello;

impl DurableObject for Hello {
    fn new(_state: State) -> Self {
        Hello
    }

    fn fetch(&mut self, _req: Request) -> Result<Response> {
        Ok(Response::ok("ok"))
    }
}

dohost_sdk::durable_object!(Hello);
