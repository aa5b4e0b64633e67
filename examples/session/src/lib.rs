//! A session that expires after a period of inactivity, cleaned up by an alarm.
//!
//! Shows alarms: the object sets its alarm to the session's expiry and deletes the session when
//! it fires, even if nobody asks for it again and the object has long been dropped from memory.
//! Each use pushes the expiry (and the alarm) back. Deployed as `session`, the session `s1`
//! lives at `/session/s1/`:
//!
//! - `POST /create` with an optional JSON body `{"data": <any JSON>, "ttl_ms": <ms>}` (both
//!   optional: `data` defaults to `null`, `ttl_ms` to 1,800,000, half an hour) starts the
//!   session, replacing any earlier one, and answers 201 `{"expires_at": ms}`. A body that is
//!   not such JSON gets a 400.
//! - `GET /` answers 200 `{"data", "expires_at"}` and extends the session to `ttl_ms` from now;
//!   if there is no session or it has expired, 404 with a JSON error.
//! - `DELETE /` ends the session and cancels its alarm: 204, whether or not there was one.
//! - Anything else: 405 on `/` and `/create`, 404 elsewhere, with a JSON error.
//!
//! Times are milliseconds since the Unix epoch; the session is expired once `expires_at <= now`.

use dohost_sdk::{AlarmInfo, DurableObject, Request, Response, Result, State, Storage, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The storage key of the session.
const KEY: &str = "session";

/// Half an hour.
const DEFAULT_TTL_MS: u64 = 30 * 60 * 1000;

/// What is stored under [`KEY`].
#[derive(Serialize, Deserialize)]
struct Session {
    data: Value,
    ttl_ms: u64,
    expires_at: u64,
}

/// The body of `POST /create`; a missing field takes its default.
#[derive(Deserialize)]
#[serde(default)]
struct Create {
    data: Value,
    ttl_ms: u64,
}

impl Default for Create {
    fn default() -> Self {
        Create {
            data: Value::Null,
            ttl_ms: DEFAULT_TTL_MS,
        }
    }
}

struct SessionObject {
    state: State,
}

impl SessionObject {
    fn storage(&self) -> Storage {
        self.state.storage()
    }

    /// Stores `session` and sets the alarm for its expiry. Both are writes of the event, so they
    /// commit, or roll back, together.
    fn save(&self, session: &Session) -> Result<()> {
        self.storage().put(KEY, session)?;
        self.storage().set_alarm(session.expires_at)
    }

    fn end(&self) -> Result<()> {
        self.storage().delete(KEY)?;
        self.storage().delete_alarm()
    }

    fn create(&self, req: &Request) -> Result<Response> {
        // No body, or `null`, means every default.
        let Create { data, ttl_ms } = if req.body().iter().all(u8::is_ascii_whitespace) {
            Create::default()
        } else {
            match req.json::<Option<Create>>() {
                Ok(body) => body.unwrap_or_default(),
                Err(e) => return Ok(Response::error(format!("bad session body: {e}"), 400)),
            }
        };
        let session = Session {
            data,
            ttl_ms,
            expires_at: now_ms().saturating_add(ttl_ms),
        };
        self.save(&session)?;
        Ok(Response::from_json(&json!({ "expires_at": session.expires_at }))?.with_status(201))
    }

    fn touch(&self) -> Result<Response> {
        let now = now_ms();
        match self.storage().get::<Session>(KEY)? {
            Some(mut session) if session.expires_at > now => {
                session.expires_at = now.saturating_add(session.ttl_ms);
                self.save(&session)?;
                Response::from_json(&json!({
                    "data": session.data,
                    "expires_at": session.expires_at,
                }))
            }
            Some(_) => {
                // Expired, and the alarm has not run yet: clean up now.
                self.end()?;
                Ok(Response::error("the session has expired", 404))
            }
            None => Ok(Response::error("no session", 404)),
        }
    }
}

impl DurableObject for SessionObject {
    fn new(state: State) -> Self {
        SessionObject { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        match (req.method(), req.path()) {
            ("POST", "/create") => self.create(&req),
            ("GET", "/") => self.touch(),
            ("DELETE", "/") => {
                self.end()?;
                Ok(Response::empty())
            }
            (_, "/create") => Ok(Response::error("use POST", 405)),
            (_, "/") => Ok(Response::error("use GET or DELETE", 405)),
            _ => Ok(Response::error("not found", 404)),
        }
    }

    fn alarm(&mut self, _: AlarmInfo) -> Result<()> {
        match self.storage().get::<Session>(KEY)? {
            Some(session) if session.expires_at <= now_ms() => {
                self.storage().delete(KEY)?;
            }
            // Still in use: `save` normally moves the alarm along, but re-arm in case it did not.
            Some(session) => self.storage().set_alarm(session.expires_at)?,
            None => {}
        }
        Ok(())
    }
}

dohost_sdk::durable_object!(SessionObject);
