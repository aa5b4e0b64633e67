//! A test worker: forwards `/to/{binding}/{name}/{rest}` to that object through a stub (with the
//! path `/{rest}`), answers `/var/{NAME}` from the app's variables and secrets, and `/whoami`
//! with the client's address. A failed call answers 502 with `{"call_error": kind, "message"}`,
//! except an overloaded one, which fails the request (the host answers 503).
//!
//! Outbound HTTP: `/fetch?url=URL` fetches it and answers `{"status", "bytes", "body"}`, or 502
//! with `{"fetch_error": code, "message"}`; `/fetch-many?url=URL&n=N` starts N requests at once
//! and answers `{"ok": how many got a response, "errors": {code: count}}`.

use dohost_sdk::{CallError, Env, FetchError, Request, Response, Result, Worker, fetch};
use std::collections::BTreeMap;

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
            ["fetch"] => {
                let url = req.query_param("url").ok_or("missing ?url=")?;
                fetched(fetch(Request::new("GET", &url)))
            }
            ["fetch-many"] => {
                let url = req.query_param("url").ok_or("missing ?url=")?;
                let n: usize = req
                    .query_param("n")
                    .ok_or("missing ?n=")?
                    .parse()
                    .map_err(|_| "bad n")?;
                Response::from_json(&fetch_many(&url, n))
            }
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

/// A fetch's outcome as JSON, so tests can check it.
pub fn fetched(result: std::result::Result<Response, FetchError>) -> Result<Response> {
    match result {
        Ok(r) => Response::from_json(&serde_json::json!({
            "status": r.status(),
            "bytes": r.body().len(),
            "body": String::from_utf8_lossy(r.body()),
        })),
        Err(e) => {
            let code = match &e {
                FetchError::Failed { code, .. } => code.as_str(),
                FetchError::InvalidRequest(_) => "invalid-request",
                FetchError::Body(_) => "body",
            };
            let error = serde_json::json!({ "fetch_error": code, "message": e.to_string() });
            Ok(Response::from_json(&error)?.with_status(502))
        }
    }
}

/// Starts `n` GETs of `url` (`http://authority/path`) at once, then reads every response.
fn fetch_many(url: &str, n: usize) -> serde_json::Value {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    let mut error = |code| {
        let code = FetchError::from(code).code().unwrap_or_default().to_owned();
        *errors.entry(code).or_default() += 1;
    };
    let mut pending = Vec::new();
    for _ in 0..n {
        let request = OutgoingRequest::new(Fields::new());
        request.set_scheme(Some(&Scheme::Http)).unwrap();
        request.set_authority(Some(authority)).unwrap();
        request.set_path_with_query(Some(path)).unwrap();
        match outgoing_handler::handle(request, None) {
            Ok(future) => pending.push(future),
            Err(code) => error(code),
        }
    }
    let mut ok = 0;
    for future in pending {
        future.subscribe().block();
        match future.get() {
            Some(Ok(Ok(response))) => {
                let body = response.consume().unwrap();
                let stream = body.stream().unwrap();
                loop {
                    match stream.blocking_read(64 << 10) {
                        Ok(_) => {}
                        Err(StreamError::Closed) => break,
                        Err(StreamError::LastOperationFailed(e)) => {
                            panic!("{}", e.to_debug_string())
                        }
                    }
                }
                ok += 1;
            }
            Some(Ok(Err(code))) => error(code),
            other => panic!("a response future gave {other:?}"),
        }
    }
    serde_json::json!({ "ok": ok, "errors": errors })
}

dohost_sdk::worker!(Front);
