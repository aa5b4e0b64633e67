//! A test object (world 0.3.0) that calls other objects through stubs:
//! - `POST /hops[?linger_before_ms=MS]` with a JSON list of `[binding, name]`: counts the visit,
//!   (sleeps MS,) then calls the first hop with the rest; answers the names visited, or 502 with
//!   the failed call's kind.
//! - `POST /write-then-call?to=BINDING&name=NAME[&linger_ms=MS]`: increments its `n`, then calls
//!   `/seen?n=N` on the other object, then sleeps MS; `POST /call-then-write` does the same in the
//!   wrong order (calls, sleeps, then writes). `POST /seen?n=N` keeps the largest `n` seen;
//!   `GET /n` and `GET /seen` read them.
//! - `POST /call-in-transaction?to=BINDING&name=NAME`: calls inside an open transaction.
//! - `POST /send?to=BINDING&name=NAME&count=N`: N calls of `/record?seq=i`, in order;
//!   `POST /record?seq=I` appends to `log`; `GET /log` reads it.
//! - A WebSocket upgrade (also one a worker hands on) is accepted and echoed.
//! - `GET /env/{NAME}`: the app's variable or secret.
//! - `POST /fetch?url=URL`: increments its `fetches`, then fetches URL; answers
//!   `{"fetches", "status", "bytes", "body"}` or 502 `{"fetches", "fetch_error", "message"}`.
//!   With `&fail=1` the event fails after the fetch whatever it gave. `GET /fetches` reads it.
//! - `POST /fetch-in-transaction?url=URL`: fetches inside an open transaction.

use dohost_sdk::{
    CallError, DurableObject, FetchError, Request, Response, Result, State, WebSocket,
    WebSocketMessage, fetch,
};

struct Caller {
    state: State,
}

fn kind(e: &CallError) -> &'static str {
    match e {
        CallError::UnknownNamespace(_) => "unknown-namespace",
        CallError::InvalidName(_) => "invalid-name",
        CallError::Failed(_) => "failed",
        CallError::TimedOut(_) => "timed-out",
        CallError::Overloaded(_) => "overloaded",
        CallError::Cycle(_) => "cycle",
        CallError::InvalidArgument(_) => "invalid-argument",
        CallError::Internal(_) => "internal",
    }
}

/// A failed call as a 502 naming its kind; an overloaded one fails the event (the host answers
/// 503).
fn failed(e: &CallError) -> Result<Response> {
    if let CallError::Overloaded(_) = e {
        return Err(e.clone().into());
    }
    Ok(Response::from_json(
        &serde_json::json!({ "call_error": kind(e), "message": e.to_string() }),
    )?
    .with_status(502))
}

impl Caller {
    fn target(&self, req: &Request) -> Result<dohost_sdk::Stub> {
        let to = req.query_param("to").ok_or("missing ?to=")?;
        let name = req.query_param("name").ok_or("missing ?name=")?;
        Ok(self.state.env().stub(&to, &name))
    }
}

/// Sleeps `?linger_ms=` after the call, so that a test can kill the host while the event is
/// still running.
fn linger(req: &Request) {
    if let Some(ms) = req.query_param("linger_ms").and_then(|ms| ms.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

impl DurableObject for Caller {
    fn new(state: State) -> Self {
        Caller { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        if req.is_websocket_upgrade() {
            self.state.accept_websocket(&[])?;
            return Ok(Response::websocket_accepted());
        }
        if let Some(name) = req.path().strip_prefix("/env/") {
            return Ok(Response::ok(self.state.env().var(name).unwrap_or_default()));
        }
        match (req.method(), req.path()) {
            ("POST", "/hops") => {
                let mut hops: Vec<(String, String)> = req.json()?;
                let visits: u64 = storage.get("visits")?.unwrap_or(0);
                storage.put("visits", &(visits + 1))?;
                let me = self.state.name();
                if hops.is_empty() {
                    return Response::from_json(&vec![me]);
                }
                if let Some(ms) = req
                    .query_param("linger_before_ms")
                    .and_then(|ms| ms.parse().ok())
                {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                let (binding, name) = hops.remove(0);
                let next = Request::new("POST", "/hops").with_body(serde_json::to_vec(&hops)?);
                match self.state.env().stub(&binding, &name).fetch(next) {
                    Ok(response) if response.status() == 200 => {
                        let mut names: Vec<String> = serde_json::from_slice(response.body())?;
                        names.insert(0, me);
                        Response::from_json(&names)
                    }
                    Ok(response) => Ok(response),
                    Err(e) => failed(&e),
                }
            }
            ("POST", "/write-then-call") => {
                let n: u64 = storage.get("n")?.unwrap_or(0) + 1;
                storage.put("n", &n)?;
                let call = Request::new("POST", &format!("/seen?n={n}"));
                if let Err(e) = self.target(&req)?.fetch(call) {
                    return failed(&e);
                }
                linger(&req);
                Response::from_json(&n)
            }
            // The wrong order, for the negative control: the callee sees `n` before it is written.
            ("POST", "/call-then-write") => {
                let n: u64 = storage.get("n")?.unwrap_or(0) + 1;
                let call = Request::new("POST", &format!("/seen?n={n}"));
                if let Err(e) = self.target(&req)?.fetch(call) {
                    return failed(&e);
                }
                linger(&req);
                storage.put("n", &n)?;
                Response::from_json(&n)
            }
            ("POST", "/seen") => {
                let n: u64 = req
                    .query_param("n")
                    .ok_or("missing ?n=")?
                    .parse()
                    .map_err(|_| "bad n")?;
                let seen: u64 = storage.get("seen")?.unwrap_or(0);
                storage.put("seen", &seen.max(n))?;
                Ok(Response::empty())
            }
            ("GET", "/n") => Response::from_json(&storage.get::<u64>("n")?.unwrap_or(0)),
            ("GET", "/seen") => Response::from_json(&storage.get::<u64>("seen")?.unwrap_or(0)),
            ("POST", "/call-in-transaction") => {
                let stub = self.target(&req)?;
                let answer = storage.transaction(|_| {
                    Ok(match stub.fetch(Request::new("GET", "/n")) {
                        Ok(r) => format!("called: {}", r.status()),
                        Err(e) => format!("{}: {e}", kind(&e)),
                    })
                })?;
                Ok(Response::ok(answer))
            }
            ("POST", "/send") => {
                let stub = self.target(&req)?;
                let count: u32 = req
                    .query_param("count")
                    .ok_or("missing ?count=")?
                    .parse()
                    .map_err(|_| "bad count")?;
                for seq in 0..count {
                    if let Err(e) = stub.fetch(Request::new("POST", &format!("/record?seq={seq}")))
                    {
                        return failed(&e);
                    }
                }
                Ok(Response::empty())
            }
            ("POST", "/record") => {
                let seq: u32 = req
                    .query_param("seq")
                    .ok_or("missing ?seq=")?
                    .parse()
                    .map_err(|_| "bad seq")?;
                let mut log: Vec<u32> = storage.get("log")?.unwrap_or_default();
                log.push(seq);
                storage.put("log", &log)?;
                Ok(Response::empty())
            }
            ("POST", "/fetch") => {
                let url = req.query_param("url").ok_or("missing ?url=")?;
                let fetches: u64 = storage.get::<u64>("fetches")?.unwrap_or(0) + 1;
                storage.put("fetches", &fetches)?;
                let result = fetch(Request::new("GET", &url));
                if req.query_param("fail").is_some() {
                    return Err("failing after the fetch, as asked".into());
                }
                let mut answer = fetched(result);
                answer.0["fetches"] = fetches.into();
                Ok(Response::from_json(&answer.0)?.with_status(answer.1))
            }
            ("GET", "/fetches") => {
                Response::from_json(&storage.get::<u64>("fetches")?.unwrap_or(0))
            }
            ("POST", "/fetch-in-transaction") => {
                let url = req.query_param("url").ok_or("missing ?url=")?;
                let result = storage.transaction(|_| Ok(fetch(Request::new("GET", &url))))?;
                let (answer, status) = fetched(result);
                Ok(Response::from_json(&answer)?.with_status(status))
            }
            ("GET", "/log") => {
                Response::from_json(&storage.get::<Vec<u32>>("log")?.unwrap_or_default())
            }
            _ => Ok(Response::error("caller: no such route", 404)),
        }
    }

    fn websocket_message(&mut self, ws: WebSocket, message: WebSocketMessage) -> Result<()> {
        match message {
            WebSocketMessage::Text(text) => ws.send_text(&format!("{}: {text}", self.state.name())),
            WebSocketMessage::Binary(data) => ws.send_binary(&data),
        }
    }
}

/// A fetch's outcome as JSON, and the status to answer it with.
fn fetched(result: std::result::Result<Response, FetchError>) -> (serde_json::Value, u16) {
    match result {
        Ok(r) => (
            serde_json::json!({
                "status": r.status(),
                "bytes": r.body().len(),
                "body": String::from_utf8_lossy(r.body()),
            }),
            200,
        ),
        Err(e) => {
            let code = match &e {
                FetchError::Failed { code, .. } => code.as_str(),
                FetchError::InvalidRequest(_) => "invalid-request",
                FetchError::Body(_) => "body",
            };
            (
                serde_json::json!({ "fetch_error": code, "message": e.to_string() }),
                502,
            )
        }
    }
}

dohost_sdk::durable_object!(Caller);
