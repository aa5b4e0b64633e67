//! A read-through cache (`examples/cache/dohost.toml`): one object per key, at `/cache/{key}/`.
//!
//! `GET` answers the key's value: from storage while it is fresh (`x-cache: hit`), else from the
//! origin — `GET {ORIGIN_URL}/{key}`, through the host's outbound HTTP, which reaches only what the
//! app allows — which it then keeps for `TTL_MS` milliseconds (`x-cache: miss`). Only a 200 from
//! the origin is kept, and only a body storage can hold in one value (`x-cache: bypass` for a
//! larger one); any other answer is passed on as it is, and an origin that cannot be reached is
//! a 502. An alarm at the expiry deletes the stale copy, so a key nobody asks for again costs no
//! storage. `DELETE` forgets the key.
//!
//! One object per key means one fetch per key at a time: requests for a key arrive one at a
//! time, so a burst of misses on a key reaches the origin once, and the others are hits.

use dohost_sdk::{DurableObject, Request, Response, Result, State, fetch, now_ms};
use serde::{Deserialize, Serialize};

/// What is kept of an origin's answer besides its body.
#[derive(Serialize, Deserialize)]
struct Meta {
    content_type: Option<String>,
    expires_ms: u64,
}

/// The body is stored as bytes, apart from its metadata; both are written by one event, so
/// they are committed together.
const BODY: &str = "body";
const META: &str = "meta";
/// Largest body kept: a stored value is at most 2 MiB with its key.
const MAX_BODY: usize = (2 << 20) - 64;

struct Cache {
    state: State,
}

impl Cache {
    fn answer(body: Vec<u8>, content_type: Option<&str>, how: &str) -> Response {
        let response = Response::from_bytes(body).with_header("x-cache", how);
        match content_type {
            Some(content_type) => response.with_header("content-type", content_type),
            None => response,
        }
    }

    fn get(&self) -> Result<Response> {
        let storage = self.state.storage();
        let now = now_ms();
        if let Some(meta) = storage.get::<Meta>(META)?
            && meta.expires_ms > now
            && let Some(body) = storage.get_bytes(BODY)?
        {
            return Ok(Self::answer(body, meta.content_type.as_deref(), "hit"));
        }
        let env = self.state.env();
        let origin = env.var("ORIGIN_URL").ok_or("the app sets no ORIGIN_URL")?;
        let ttl: u64 = env
            .var("TTL_MS")
            .and_then(|t| t.parse().ok())
            .unwrap_or(60_000);
        let url = format!("{}/{}", origin.trim_end_matches('/'), self.state.name());
        let fetched = match fetch(Request::new("GET", &url)) {
            Ok(fetched) => fetched,
            Err(e) => return Ok(Response::error(format!("the origin: {e}"), 502)),
        };
        if fetched.status() != 200 {
            return Ok(fetched.with_header("x-cache", "miss"));
        }
        let content_type = fetched
            .headers()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone());
        let body = fetched.body().to_vec();
        if body.len() > MAX_BODY {
            return Ok(Self::answer(body, content_type.as_deref(), "bypass"));
        }
        let meta = Meta {
            content_type,
            expires_ms: now + ttl,
        };
        storage.put_bytes(BODY, &body)?;
        storage.put(META, &meta)?;
        storage.set_alarm(meta.expires_ms)?;
        Ok(Self::answer(body, meta.content_type.as_deref(), "miss"))
    }
}

impl DurableObject for Cache {
    fn new(state: State) -> Self {
        Cache { state }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        match req.method() {
            "GET" => self.get(),
            "DELETE" => {
                let storage = self.state.storage();
                storage.delete_many(&[BODY, META])?;
                storage.delete_alarm()?;
                Ok(Response::empty())
            }
            _ => Ok(Response::error("use GET or DELETE", 405)),
        }
    }

    fn alarm(&mut self, _: dohost_sdk::AlarmInfo) -> Result<()> {
        let storage = self.state.storage();
        if let Some(meta) = storage.get::<Meta>(META)?
            && meta.expires_ms <= now_ms()
        {
            storage.delete_many(&[BODY, META])?;
        }
        Ok(())
    }
}

dohost_sdk::durable_object!(Cache);
