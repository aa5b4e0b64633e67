// The token bucket of examples/rate-limiter, in plain JavaScript on the Cloudflare API: 100
// requests per minute per key (the object's name), refilled continuously.
//
// 200 {"allowed":true,"remaining":n} while tokens last, else 429 {"allowed":false,
// "retry_after_s":n} with Retry-After; every answer carries X-RateLimit-Limit, -Remaining and
// -Reset. The bucket, {"tokens","updated_ms"}, is stored under `bucket`: the same value the Rust
// example stores, so either can take over the other's objects.
import { DurableObject } from 'cloudflare:workers';

const CAPACITY = 100;
const REFILL_MS = 60_000;
const PER_MS = CAPACITY / REFILL_MS;

export class RateLimiter extends DurableObject {
  async fetch() {
    const now = Date.now();
    const stored = await this.ctx.storage.get('bucket');
    let tokens = stored ? Math.min(CAPACITY, stored.tokens + (now - stored.updated_ms) * PER_MS) : CAPACITY;
    const allowed = tokens >= 1;
    if (allowed) tokens -= 1;
    await this.ctx.storage.put('bucket', { tokens, updated_ms: now });

    const headers = {
      'x-ratelimit-limit': String(CAPACITY),
      'x-ratelimit-remaining': String(Math.floor(tokens)),
      'x-ratelimit-reset': String(Math.ceil((CAPACITY - tokens) / PER_MS / 1000)),
    };
    if (allowed) return Response.json({ allowed: true, remaining: Math.floor(tokens) }, { headers });
    const retryAfter = Math.max(1, Math.ceil((1 - tokens) / PER_MS / 1000));
    return Response.json(
      { allowed: false, retry_after_s: retryAfter },
      { status: 429, headers: { ...headers, 'retry-after': String(retryAfter) } },
    );
  }
}
