//! The worker of an API behind a rate limiter (`examples/rate-limited-api/dohost.toml`).
//!
//! For every request under `/api/` it identifies the client — its `X-API-Key`, else the IP
//! address it connected from — and asks that client's token bucket (the `rate-limiter` example,
//! bound as `RATE_LIMITER`, private to the app) before answering. A 429 from the bucket is passed
//! on as it is, with its `Retry-After`; otherwise the API answers, with the bucket's
//! `X-RateLimit-*` headers added. The API itself:
//!
//! - `GET /api/hello`: `{"hello": CLIENT}`;
//! - `GET /api/time`: `{"now_ms": N}`;
//! - anything else: 404.

use dohost_sdk::{Env, Request, Response, Result, Worker, now_ms};
use serde_json::json;

/// The longest API key taken: the key is an object name (at most 256 bytes), with a prefix.
const MAX_KEY_BYTES: usize = 200;

struct Api {
    env: Env,
}

impl Api {
    fn answer(&self, req: &Request, client: &str) -> Result<Response> {
        match (req.method(), req.path()) {
            ("GET", "/api/hello") => Response::from_json(&json!({ "hello": client })),
            ("GET", "/api/time") => Response::from_json(&json!({ "now_ms": now_ms() })),
            _ => Ok(Response::error("no such API", 404)),
        }
    }
}

impl Worker for Api {
    fn new(env: Env) -> Self {
        Api { env }
    }

    fn fetch(&mut self, req: Request) -> Result<Response> {
        let client = match (req.header("x-api-key"), req.client_address()) {
            (Some(key), _) if key.len() > MAX_KEY_BYTES => {
                return Ok(Response::error("the API key is too long", 400));
            }
            (Some(key), _) => format!("key:{key}"),
            (None, Some(address)) => format!("ip:{address}"),
            (None, None) => return Ok(Response::error("who are you?", 400)),
        };
        let check = self
            .env
            .stub("RATE_LIMITER", &client)
            .fetch(Request::new("POST", "/"))?;
        if check.status() == 429 {
            return Ok(check);
        }
        let mut response = self.answer(&req, &client)?;
        for (name, value) in check.headers() {
            if name.starts_with("x-ratelimit-") {
                response = response.with_header(name.as_str(), value.as_str());
            }
        }
        Ok(response)
    }
}

dohost_sdk::worker!(Api);
