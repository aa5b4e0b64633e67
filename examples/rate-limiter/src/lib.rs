//! A rate limiter: 100 requests per minute per key, as a token bucket.
//!
//! Shows why one object per key is the natural shape for a limiter: every request for a key
//! reaches the same single object, one at a time, so counting needs no locks and no races, and
//! the count survives restarts. Deployed as `rate-limiter`, the key is the object name: ask
//! `/rate-limiter/KEY/` (any method, any path below it) before doing the limited thing.
//!
//! The bucket holds at most 100 tokens and refills continuously at 100 per 60,000 ms. Each
//! request first refills it, then:
//!
//! - with at least one token, takes one and answers 200 `{"allowed":true,"remaining":n}`;
//! - otherwise answers 429 `{"allowed":false,"retry_after_s":n}` with `Retry-After: n`, the
//!   seconds until a token is back (at least 1).
//!
//! Every answer carries `X-RateLimit-Limit: 100`, `X-RateLimit-Remaining` (whole tokens left)
//! and `X-RateLimit-Reset` (seconds until the bucket is full again, rounded up). The state,
//! `{"tokens": f64, "updated_ms": u64}`, is stored under the key `bucket`.

use dohost_sdk::{DurableObject, Request, Response, Result, State, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Tokens in a full bucket: the requests allowed in a burst.
const CAPACITY: f64 = 100.0;

/// The time in which an empty bucket fills up: CAPACITY tokens per this many milliseconds.
const REFILL_MS: f64 = 60_000.0;

/// The storage key of the bucket.
const KEY: &str = "bucket";

/// The stored bucket.
#[derive(Serialize, Deserialize)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

impl Bucket {
    /// The bucket at `now`, with the tokens that trickled in since it was last updated. A clock
    /// that went back adds nothing.
    fn refilled(self, now: u64) -> Bucket {
        let elapsed = now.saturating_sub(self.updated_ms) as f64;
        Bucket {
            // Multiply before dividing, so that whole tokens come out exact.
            tokens: (self.tokens + elapsed * CAPACITY / REFILL_MS).min(CAPACITY),
            updated_ms: now.max(self.updated_ms),
        }
    }

    /// Whole seconds, rounded up, until the bucket holds `tokens`.
    fn seconds_until(&self, tokens: f64) -> u64 {
        let ms = (tokens - self.tokens).max(0.0) * REFILL_MS / CAPACITY;
        (ms / 1000.0).ceil() as u64
    }
}

struct RateLimiter {
    state: State,
}

impl DurableObject for RateLimiter {
    fn new(state: State) -> Self {
        RateLimiter { state }
    }

    fn fetch(&mut self, _: Request) -> Result<Response> {
        let storage = self.state.storage();
        let now = now_ms();
        let mut bucket = storage.get::<Bucket>(KEY)?.map_or(
            Bucket {
                tokens: CAPACITY,
                updated_ms: now,
            },
            |b| b.refilled(now),
        );
        let response = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Response::from_json(&json!({
                "allowed": true,
                "remaining": bucket.tokens.floor() as u64,
            }))?
        } else {
            let retry_after = bucket.seconds_until(1.0).max(1);
            Response::from_json(&json!({ "allowed": false, "retry_after_s": retry_after }))?
                .with_status(429)
                .with_header("retry-after", retry_after.to_string())
        };
        storage.put(KEY, &bucket)?;
        Ok(response
            .with_header("x-ratelimit-limit", (CAPACITY as u64).to_string())
            .with_header(
                "x-ratelimit-remaining",
                (bucket.tokens.floor() as u64).to_string(),
            )
            .with_header(
                "x-ratelimit-reset",
                bucket.seconds_until(CAPACITY).to_string(),
            ))
    }
}

dohost_sdk::durable_object!(RateLimiter);
