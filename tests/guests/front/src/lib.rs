//! A test worker: forwards `/to/{binding}/{name}/{rest}` to that object through a stub (with the
//! path `/{rest}`), answers `/var/{NAME}` from the app's variables and secrets, and `/whoami`
//! with the client's address. A failed call answers 502 with `{"call_error": kind, "message"}`,
//! except an overloaded one, which fails the request (the host answers 503).

use dohost_sdk::{CallError, Env, Request, Response, Result, Worker};

struct Front {
    env: Env,
}

impl Worker for Front {
    fn new(env: Env) -> Self {
        Front { env }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let path = req.path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
        match segments.as_slice() {
            ["var", name] => Ok(match self.env.var(name) {
                Some(value) => Response::ok(value),
                None => Response::error(format!("no variable {name}"), 404),
            }),
            ["whoami"] => Response::from_json(&serde_json::json!({
                "client_address": req.client_address(),
            })),
            ["panic"] => panic!("the front worker was asked to panic"),
            ["to", binding, name, rest @ ..] => {
                let mut forwarded = format!("/{}", rest.first().unwrap_or(&""));
                if let Some(query) = req.query() {
                    forwarded.push('?');
                    forwarded.push_str(query);
                }
                let stub = self.env.stub(binding, name);
                match stub.fetch(req.with_path(&forwarded)) {
                    Ok(response) => Ok(response),
                    Err(e) => call_error(&e),
                }
            }
            _ => Ok(Response::error("front: no such route", 404)),
        }
    }
}

/// A failed call as JSON, so tests can check its kind; an overloaded one fails the request, which
/// the host then answers 503 `overloaded`.
pub fn call_error(e: &CallError) -> Result<Response> {
    let kind = match e {
        CallError::Overloaded(_) => return Err(e.clone().into()),
        CallError::UnknownNamespace(_) => "unknown-namespace",
        CallError::InvalidName(_) => "invalid-name",
        CallError::Failed(_) => "failed",
        CallError::TimedOut(_) => "timed-out",
        CallError::Cycle(_) => "cycle",
        CallError::InvalidArgument(_) => "invalid-argument",
        CallError::Internal(_) => "internal",
    };
    Ok(
        Response::from_json(&serde_json::json!({ "call_error": kind, "message": e.to_string() }))?
            .with_status(502),
    )
}

dohost_sdk::worker!(Front);
