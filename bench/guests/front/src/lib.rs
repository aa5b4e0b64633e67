//! The benchmark's front worker, like workerd's (`bench/workerd/worker.js`): `/w/counter/{name}/
//! {rest}` goes to the counter `name` (the public namespace `counter`, the same objects as the
//! direct route) through a stub, `/w/relay/{name}/{rest}` to the app's relay `name` (which calls
//! the counter `name` in turn), each seeing `/{rest}` with the query kept.

use dohost_sdk::{Env, Request, Response, Result, Worker};

struct Front {
    env: Env,
}

impl Worker for Front {
    fn new(env: Env) -> Self {
        Front { env }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let path = req.path().to_owned();
        let mut segments = path.trim_start_matches('/').splitn(4, '/');
        let (Some("w"), Some(class), Some(name)) =
            (segments.next(), segments.next(), segments.next())
        else {
            return Ok(Response::error("not found", 404));
        };
        let binding = match class {
            "counter" => "counter",
            "relay" => "RELAY",
            _ => return Ok(Response::error("not found", 404)),
        };
        let mut inner = format!("/{}", segments.next().unwrap_or(""));
        if let Some(query) = req.query() {
            inner.push('?');
            inner.push_str(query);
        }
        Ok(self.env.stub(binding, name).fetch(req.with_path(&inner))?)
    }
}

dohost_sdk::worker!(Front);
