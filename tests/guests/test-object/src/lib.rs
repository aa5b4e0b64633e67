//! An instrumented, deliberately hostile object for the host's end-to-end tests.
//!
//! - `GET /loop`, `GET /oom`: burn CPU, or memory in 1 MiB chunks, until the host stops them.
//! - `POST /trap-after-put?key=K`, `POST /err-after-put?key=K`: write `K`, then panic or return
//!   `Err`; the write must be discarded.
//! - `GET /identity`: `{"namespace","name","id","unique"}`.
//! - any method on `/echo...`: `{"method","path" (with the query, as delivered),"query",
//!   "headers","body"}`.
//! - `POST /log`: logs the body at level info, answers 204.
//! - `POST /sleep?ms=N`: a deliberately slow object: the event takes N ms (default 100).
//! - `POST /slow-ticket?ms=N`: reads a count, takes N ms, writes it plus one and answers
//!   `{"ticket": n}`: an event that a pause can catch between its read and its commit.
//! - `POST /ops`: a JSON list of storage operations ([`Op`]), run in order in this one event.
//!   Answers a list with one `{"ok": result}` per operation, or `{"err": {"kind", "message"}}`
//!   where the host refused it (execution then goes on). Values are UTF-8 strings.
//!
//! WebSockets ([`sockets`]):
//!
//! - `GET /ws?tags=a,b`: with an upgrade, accepts it with those tags (none without `tags`) and
//!   answers 101; without one, 426. A refused accept answers 400 `{"err": {"kind", "message"}}`.
//! - Text messages are commands: `echo:X` sends `X` back; `broadcast:X` sends `X` to every open
//!   socket; `close` closes the socket with 4000 `bye`; `fail` fails the event; `tags` sends back
//!   the socket's tags as a JSON list; `attach:X` keeps the string `X` as the attachment;
//!   `attachment` sends back the attachment as JSON (`null` if none); `sleep:MS` takes MS ms.
//!   Other texts are ignored.
//!   A binary message is sent back as it came. A refused WebSocket call sends the sender
//!   `{"err": {"kind", "message"}}` instead.
//! - Every close is appended to the list under key `closes` as
//!   `{"socket","code","reason","was_clean","tags","attachment"}`, every error to `errors` as `{"socket","error"}`;
//!   `GET /closes` and `GET /errors` answer those lists (`[]` if empty).
//! - `POST /auto-response` with `{"request","response"}` sets the auto-response, with `null`
//!   removes it: 204 (or 400 as above). `GET /auto-response`: the pair or `null`.
//! - `GET /sockets?tag=T`: the ids of the open sockets (with tag `T` if given), oldest first.
//! - `GET /auto-response-timestamp?socket=ID`: ms or `null`; 404 if `ID` is not open.
//!
//! Alarms ([`alarms`]):
//!
//! - `POST /alarm/set?in=MS` sets the alarm MS from now, `?at=MS` at that time: `{"alarm": at}`.
//! - `POST /alarm/delete`: 204. `GET /alarm`: `{"alarm": ms}` or `{"alarm": null}`.
//! - `POST /alarm/fail-times?n=N` (stored under `alarm-fail-times`): deliveries with a retry
//!   count below N fail with "deliberate alarm failure". 204.
//! - `POST /alarm/rearm?in=MS` (stored under `alarm-rearm-in`): the next successful delivery
//!   sets a new alarm MS after it and forgets the request. 204.
//! - A successful delivery appends `{"retry_count","is_retry","at"}` to the list under
//!   `alarm-log`; `GET /alarm/log` answers it (`[]` if empty).
//!
//! A malformed query parameter or body fails the event (500).

mod alarms;
mod sockets;

use std::str::FromStr;

use dohost_sdk::{
    AlarmInfo, DurableObject, Error, ListOptions, Request, Response, Result, State, Storage,
    StorageError, WebSocket, WebSocketMessage,
};
use serde::Deserialize;
use serde_json::{Value, json};

struct TestObject {
    state: State,
}

/// One storage operation of `POST /ops`, e.g. `{"op": "get", "key": "k"}`. `begin`, `commit`
/// and `rollback` are the raw transaction calls; `trap` panics and `fail` returns `Err`, failing
/// the whole event.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    GetMany {
        keys: Vec<String>,
    },
    PutMany {
        entries: Vec<(String, String)>,
    },
    DeleteMany {
        keys: Vec<String>,
    },
    List {
        prefix: Option<String>,
        start: Option<String>,
        start_after: Option<String>,
        end: Option<String>,
        reverse: Option<bool>,
        limit: Option<u32>,
    },
    DeleteAll,
    Begin,
    Commit,
    Rollback,
    PutLarge {
        key: String,
        size: usize,
    },
    Trap,
    Fail,
}

/// Entries as `[[key, value], ...]`, values read as UTF-8.
fn strings(entries: Vec<(String, Vec<u8>)>) -> Value {
    let pairs: Vec<(String, String)> = entries
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    json!(pairs)
}

fn refs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

/// Runs one operation: `Ok` is its result, `Err` a refused storage call.
fn run(storage: Storage, op: Op) -> Result<std::result::Result<Value, StorageError>> {
    let r: Result<Value> = match op {
        Op::Get { key } => storage
            .get_bytes(&key)
            .map(|v| json!(v.map(|v| String::from_utf8_lossy(&v).into_owned()))),
        Op::Put { key, value } => storage
            .put_bytes(&key, value.as_bytes())
            .map(|()| Value::Null),
        Op::Delete { key } => storage.delete(&key).map(|b| json!(b)),
        Op::GetMany { keys } => storage.get_many_bytes(&refs(&keys)).map(strings),
        Op::PutMany { entries } => {
            let entries: Vec<(&str, &[u8])> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            storage.put_many_bytes(&entries).map(|()| Value::Null)
        }
        Op::DeleteMany { keys } => storage.delete_many(&refs(&keys)).map(|n| json!(n)),
        Op::List {
            prefix,
            start,
            start_after,
            end,
            reverse,
            limit,
        } => {
            let mut options = ListOptions::new().reverse(reverse.unwrap_or(false));
            if let Some(p) = prefix {
                options = options.prefix(p);
            }
            if let Some(s) = start {
                options = options.start(s);
            }
            if let Some(s) = start_after {
                options = options.start_after(s);
            }
            if let Some(e) = end {
                options = options.end(e);
            }
            if let Some(l) = limit {
                options = options.limit(l);
            }
            storage.list_bytes(options).map(strings)
        }
        Op::DeleteAll => storage.delete_all().map(|()| Value::Null),
        Op::Begin => storage.begin_transaction().map(|()| Value::Null),
        Op::Commit => storage.commit_transaction().map(|()| Value::Null),
        Op::Rollback => storage.rollback_transaction().map(|()| Value::Null),
        Op::PutLarge { key, size } => storage
            .put_bytes(&key, &vec![b'x'; size])
            .map(|()| Value::Null),
        Op::Trap => panic!("deliberate trap"),
        Op::Fail => return Err("deliberate failure".into()),
    };
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(Error::Storage(e)) => Ok(Err(e)),
        Err(other) => Err(other),
    }
}

/// Appends `entry` to the JSON list stored under `key`.
fn append(storage: Storage, key: &str, entry: Value) -> Result<()> {
    let mut list: Vec<Value> = storage.get(key)?.unwrap_or_default();
    list.push(entry);
    storage.put(key, &list)
}

/// The JSON list stored under `key`, `[]` if there is none.
fn stored_list(storage: Storage, key: &str) -> Result<Response> {
    Response::from_json(&storage.get::<Value>(key)?.unwrap_or_else(|| json!([])))
}

/// The query parameter `name` as a number, or `None` if it is absent.
fn number_param<T: FromStr>(req: &Request, name: &str) -> Result<Option<T>> {
    req.query_param(name)
        .map(|v| {
            v.parse()
                .map_err(|_| Error::Message(format!("`{name}` is not a number: {v}")))
        })
        .transpose()
}

/// A refused operation's result: `{"err": {"kind": "limit-exceeded", "message": ...}}`.
fn error_json(e: StorageError) -> Value {
    let (kind, message) = match e {
        StorageError::LimitExceeded(m) => ("limit-exceeded", m),
        StorageError::InvalidArgument(m) => ("invalid-argument", m),
        StorageError::Internal(m) => ("internal", m),
    };
    json!({ "err": { "kind": kind, "message": message } })
}

impl DurableObject for TestObject {
    fn new(state: State) -> Self {
        TestObject { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        let key = || {
            req.query_param("key")
                .ok_or_else(|| Error::from("the query parameter `key` is missing"))
        };
        match (req.method(), req.path()) {
            ("GET", "/loop") => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            ("GET", "/oom") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let chunk = vec![1u8; 1 << 20];
                    hoard.push(std::hint::black_box(chunk));
                }
            }
            ("POST", "/trap-after-put") => {
                storage.put_bytes(&key()?, b"trapped")?;
                panic!("deliberate trap after put");
            }
            ("POST", "/err-after-put") => {
                storage.put_bytes(&key()?, b"failed")?;
                Err("deliberate error after put".into())
            }
            ("POST", "/sleep") => {
                // A deliberately slow object: its event holds it for `ms`.
                let ms = number_param(&req, "ms")?.unwrap_or(100);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(Response::ok(format!("slept {ms} ms")))
            }
            ("POST", "/slow-ticket") => {
                // Reads, works for `ms`, then writes: an event a pause can catch between its read
                // and its commit (the cluster tests' fence).
                let ms = number_param(&req, "ms")?.unwrap_or(100);
                let ticket = storage.get::<u64>("slow-ticket")?.unwrap_or(0) + 1;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                storage.put("slow-ticket", &ticket)?;
                Response::from_json(&json!({ "ticket": ticket }))
            }
            ("GET", "/identity") => Response::from_json(&json!({
                "namespace": self.state.namespace(),
                "name": self.state.name(),
                "id": self.state.id(),
                "unique": dohost_sdk::new_unique_name(),
            })),
            ("POST", "/log") => {
                dohost_sdk::log::info(req.text()?);
                Ok(Response::empty())
            }
            ("POST", "/ops") => {
                let ops: Vec<Op> = req.json()?;
                let mut results = Vec::new();
                for op in ops {
                    results.push(match run(storage, op)? {
                        Ok(v) => json!({ "ok": v }),
                        Err(e) => error_json(e),
                    });
                }
                Response::from_json(&results)
            }
            ("GET", "/ws") => sockets::accept(self.state, &req),
            ("GET", "/closes") => stored_list(storage, "closes"),
            ("GET", "/errors") => stored_list(storage, "errors"),
            ("POST", "/auto-response") => sockets::set_auto_response(self.state, &req),
            ("GET", "/auto-response") => sockets::get_auto_response(self.state),
            ("GET", "/sockets") => sockets::list(self.state, &req),
            ("GET", "/auto-response-timestamp") => {
                sockets::auto_response_timestamp(self.state, &req)
            }
            ("POST", "/alarm/set") => alarms::set(storage, &req),
            ("POST", "/alarm/delete") => {
                storage.delete_alarm()?;
                Ok(Response::empty())
            }
            ("GET", "/alarm") => alarms::get(storage),
            ("POST", "/alarm/fail-times") => alarms::fail_times(storage, &req),
            ("POST", "/alarm/rearm") => alarms::rearm(storage, &req),
            ("GET", "/alarm/log") => alarms::log(storage),
            (method, path) if path.starts_with("/echo") => {
                let full_path = match req.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                Response::from_json(&json!({
                    "method": method,
                    "path": full_path,
                    "query": req.query(),
                    "headers": req.headers(),
                    "body": String::from_utf8_lossy(req.body()),
                }))
            }
            _ => Ok(Response::error("no such test endpoint", 404)),
        }
    }

    fn websocket_message(&mut self, ws: WebSocket, message: WebSocketMessage) -> Result<()> {
        sockets::on_message(self.state, ws, message)
    }

    fn websocket_close(
        &mut self,
        ws: WebSocket,
        code: u16,
        reason: String,
        was_clean: bool,
    ) -> Result<()> {
        sockets::on_close(self.state, ws, code, reason, was_clean)
    }

    fn websocket_error(&mut self, ws: WebSocket, error: String) -> Result<()> {
        sockets::on_error(self.state, ws, error)
    }

    fn alarm(&mut self, info: AlarmInfo) -> Result<()> {
        alarms::on_alarm(self.state.storage(), info)
    }
}

dohost_sdk::durable_object!(TestObject);
