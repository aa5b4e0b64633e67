// The session of examples/session, in TypeScript on the Cloudflare API: an alarm at the TTL
// deletes the session, even if nobody asks for it again and the object sleeps meanwhile.
//
// POST /create {"data", "ttl_ms"} → 201 {"expires_at"}; GET / → {"data", "expires_at"} and
// pushes the expiry back by ttl_ms; DELETE / → 204. Expired or missing: 404.
import { DurableObject } from 'cloudflare:workers';

const DEFAULT_TTL_MS = 30 * 60 * 1000;

interface SessionData {
  data: unknown;
  ttl_ms: number;
  expires_at: number;
}

const error = (message: string, status: number) => Response.json({ error: message }, { status });

export class Session extends DurableObject {
  async fetch(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    if (path === '/create') {
      if (request.method !== 'POST') return error('use POST', 405);
      let body: { data?: unknown; ttl_ms?: unknown } = {};
      const text = await request.text();
      if (text) {
        try {
          body = JSON.parse(text);
        } catch {
          return error('the body is not JSON', 400);
        }
      }
      const ttl = body.ttl_ms ?? DEFAULT_TTL_MS;
      if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 0) return error('ttl_ms is a whole number of ms', 400);
      return Response.json({ expires_at: await this.keep({ data: body.data ?? null, ttl_ms: ttl, expires_at: 0 }) }, { status: 201 });
    }
    if (path !== '/') return error('not found', 404);
    if (request.method === 'DELETE') {
      await this.ctx.storage.deleteAll();
      await this.ctx.storage.deleteAlarm();
      return new Response(null, { status: 204 });
    }
    if (request.method !== 'GET') return error('use GET or DELETE', 405);
    const session = await this.ctx.storage.get<SessionData>('session');
    if (!session || session.expires_at <= Date.now()) return error('no such session', 404);
    const expires_at = await this.keep(session);
    return Response.json({ data: session.data, expires_at });
  }

  /** Stores the session with its expiry ttl_ms from now, and the alarm at that expiry. */
  private async keep(session: SessionData): Promise<number> {
    session.expires_at = Date.now() + session.ttl_ms;
    await this.ctx.storage.put('session', session);
    await this.ctx.storage.setAlarm(session.expires_at);
    return session.expires_at;
  }

  async alarm() {
    const session = await this.ctx.storage.get<SessionData>('session');
    if (!session) return;
    // A read may have pushed the expiry back after this alarm was due.
    if (session.expires_at > Date.now()) await this.ctx.storage.setAlarm(session.expires_at);
    else await this.ctx.storage.deleteAll();
  }
}
