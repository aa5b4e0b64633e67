// A JavaScript test object for host/tests/js.rs: each path runs one check of the SDK and answers
// JSON. Paths under /unsupported/ call an API dohost does not have and answer the error thrown.
import { DurableObject, WebSocketRequestResponsePair, WorkerEntrypoint } from 'cloudflare:workers';

const VALUES: Record<string, unknown> = {
  number: 1.5,
  negativeZero: -0,
  nan: NaN,
  infinity: -Infinity,
  big: 12345678901234567890n,
  string: 'héllo',
  boolean: true,
  null: null,
  undefined: undefined,
  array: [1, 'two', [3]],
  object: { a: 1, nested: { b: [true] }, $type: 'not a tag' },
  date: new Date(Date.UTC(2024, 1, 29, 12, 0, 0)),
  map: new Map<unknown, unknown>([['k', 1], [2, { v: 'x' }]]),
  set: new Set([1, 'a']),
  bytes: new Uint8Array([0, 1, 254, 255]),
  buffer: new Uint8Array([9, 8, 7]).buffer,
  regexp: /a+b/gi,
};

const UNSUPPORTED: Record<string, (o: any) => unknown> = {
  sql: (o) => o.ctx.storage.sql,
  sync: (o) => o.ctx.storage.sync(),
  transactionSync: (o) => o.ctx.storage.transactionSync(),
  bookmark: (o) => o.ctx.storage.getCurrentBookmark(),
  abort: (o) => o.ctx.abort(),
  hibernationTimeout: (o) => o.ctx.setHibernatableWebSocketEventTimeout(1000),
  websocketAccept: () => new WebSocketPair()[1].accept(),
  websocketListener: () => new WebSocketPair()[1].addEventListener('message'),
  websocketClient: () => new WebSocket('ws://example.com/'),
  rpc: (o) => (o.env.PROBES.getByName('x') as any).increment(),
  jurisdiction: (o) => o.env.PROBES.jurisdiction('eu'),
  entrypoint: () => new (class extends WorkerEntrypoint {})(),
};

export class Probe extends DurableObject {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const s = this.ctx.storage;
    const [, first, second] = url.pathname.split('/');
    switch (first) {
      case 'values':
        if (request.method === 'POST') {
          await s.put(VALUES);
          return Response.json({ stored: Object.keys(VALUES).length });
        }
        return Response.json(describe(await s.get(Object.keys(VALUES))));
      case 'raw':
        // A value as the Rust SDK would read it: the stored JSON, or one written here.
        if (request.method === 'PUT') {
          await s.put(second, await request.json());
          return new Response(null, { status: 204 });
        }
        return Response.json({ value: (await s.get(second)) ?? null });
      case 'transaction': {
        await s.put('t', 'before');
        let thrown = '';
        try {
          await s.transaction(async (txn) => {
            await txn.put('t', 'inside');
            throw new Error('roll me back');
          });
        } catch (e) {
          thrown = String(e);
        }
        const afterThrow = await s.get('t');
        await s.transaction(async (txn) => {
          await txn.put('t', 'explicit');
          txn.rollback();
        });
        const afterRollback = await s.get('t');
        await s.transaction(async (txn) => txn.put('t', 'committed'));
        return Response.json({ thrown, afterThrow, afterRollback, committed: await s.get('t') });
      }
      case 'list': {
        await s.put({ 'l:a': 1, 'l:b': 2, 'l:c': 3, 'l:d': 4, other: 0 });
        const keys = async (o: object) => [...(await s.list(o)).keys()];
        return Response.json({
          prefix: await keys({ prefix: 'l:' }),
          reverseLimit: await keys({ prefix: 'l:', reverse: true, limit: 2 }),
          startEnd: await keys({ start: 'l:b', end: 'l:d' }),
          startAfter: await keys({ startAfter: 'l:b', prefix: 'l:' }),
          deleted: await s.delete(['l:a', 'l:b', 'nope']),
          deletedOne: await s.delete('l:c'),
        });
      }
      case 'too-many': {
        const keys = Array.from({ length: 129 }, (_, i) => `k${i}`);
        try {
          await s.get(keys);
          return Response.json({ error: null });
        } catch (e: any) {
          return Response.json({ error: `${e.name}: ${e.message}` });
        }
      }
      case 'alarm':
        if (request.method === 'POST') await s.setAlarm(Date.now() + Number(url.searchParams.get('in')));
        return Response.json({ alarm: await s.getAlarm(), fired: (await s.get('fired')) ?? [] });
      case 'ws': {
        const [client, server] = Object.values(new WebSocketPair());
        this.ctx.acceptWebSocket(server, (url.searchParams.get('tags') ?? '').split(',').filter(Boolean));
        server.serializeAttachment({ since: new Date(0), who: url.searchParams.get('who') });
        this.ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('ping', 'pong'));
        return new Response(null, { status: 101, webSocket: client });
      }
      case 'sockets':
        return Response.json(this.ctx.getWebSockets(second || undefined).map((ws) => ws.deserializeAttachment().who));
      case 'id':
        return Response.json({ name: this.ctx.id.name, string: this.ctx.id.toString(), env: this.env.GREETING ?? null });
      case 'outbound': {
        // fetch() leaves through the host's outbound rules (wasi:http).
        try {
          const r = await fetch(url.searchParams.get('url')!);
          return Response.json({ status: r.status, body: await r.text() });
        } catch (e: any) {
          return Response.json({ error: String(e) });
        }
      }
      case 'response': {
        // The Fetch API's Response, as the SDK builds it.
        const attempt = (f: () => unknown) => {
          try {
            f();
            return 'no error';
          } catch (e: any) {
            return e.name;
          }
        };
        const read = new Response('x');
        await read.text();
        const cloned = new Response('twice').clone();
        const stream = new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode('streamed'));
            c.close();
          },
        });
        const json = Response.json({ a: 1 }, { status: 201, headers: { 'x-a': 'b' } });
        return Response.json({
          textType: new Response('hi').headers.get('content-type'),
          bytesType: new Response(new Uint8Array([1])).headers.get('content-type'),
          json: await new Response('{"a":1}').json(),
          bytes: (await new Response(new Uint8Array([1, 2, 3]).subarray(1)).arrayBuffer()).byteLength,
          usedAfterRead: read.bodyUsed,
          secondRead: await read.text().then(() => 'no error', (e) => e.name),
          cloned: await cloned.text(),
          stream: await new Response(stream).text(),
          instance: read instanceof Response,
          badStatus: attempt(() => new Response(null, { status: 99 })),
          bodyOn204: attempt(() => new Response('x', { status: 204 })),
          jsonResponse: [json.status, json.ok, json.headers.get('content-type'), json.headers.get('x-a'), await json.text()],
        });
      }
      case 'request': {
        // The Fetch API's Request, as the handler receives it and as user code rebuilds it.
        const copy = request.clone();
        // As on Cloudflare, the rebuilt request takes the body over.
        const rebuilt = new Request('http://elsewhere/x?y=1', request);
        const body = await rebuilt.text();
        return Response.json({
          method: request.method,
          path: url.pathname + url.search,
          header: request.headers.get('x-probe'),
          upgradeKept: rebuilt.headers.get('x-probe'),
          rebuiltMethod: rebuilt.method,
          body,
          usedAfterRead: request.bodyUsed,
          cloneBody: await copy.text(),
          instance: request instanceof Request,
          hasSignal: typeof request.signal === 'object',
        });
      }
      case 'answer':
        return new Response(new TextEncoder().encode('made of bytes'), { status: 202, headers: { 'x-k': 'v' } });
      case 'fail':
        throw new Error('deliberate failure');
      case 'late-timer':
        setTimeout(() => s.put('late', 'a timer fired after its event'), 200);
        this.ctx.waitUntil(new Promise((r) => setTimeout(r, 20)).then(() => s.put('waited', true)));
        return Response.json({ scheduled: true });
      case 'timers':
        return Response.json({ late: (await s.get('late')) ?? null, waited: (await s.get('waited')) ?? null });
      case 'unsupported': {
        const call = UNSUPPORTED[second];
        if (!call) return Response.json(Object.keys(UNSUPPORTED));
        try {
          await call(this);
          return Response.json({ error: null });
        } catch (e: any) {
          return Response.json({ error: `${e.name}: ${e.message}` });
        }
      }
    }
    return new Response('not found', { status: 404 });
  }

  async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer) {
    const reply = typeof message === 'string' ? `echo:${message}` : `bytes:${message.byteLength}`;
    ws.send(JSON.stringify({ reply, tags: this.ctx.getTags(ws), same: this.ctx.getWebSockets().includes(ws) }));
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string) {
    const { who, since } = ws.deserializeAttachment();
    await this.ctx.storage.put(`closed:${who}`, { code, reason, sinceIsDate: since instanceof Date });
  }

  async webSocketError(ws: WebSocket, error: unknown) {
    const { who } = ws.deserializeAttachment();
    await this.ctx.storage.put(`errored:${who}`, { isError: error instanceof Error, message: String((error as Error)?.message) });
  }

  async alarm(info: { retryCount: number; isRetry: boolean }) {
    const fired = ((await this.ctx.storage.get<unknown[]>('fired')) ?? []) as unknown[];
    await this.ctx.storage.put('fired', [...fired, info]);
  }
}

/** Each value's type as read back, and its JSON (with the special numbers spelled out). */
function describe(values: Map<string, unknown>) {
  const out: Record<string, unknown> = {};
  for (const [k, v] of values) {
    const type = v === null ? 'null' : typeof v === 'object' ? Object.prototype.toString.call(v).slice(8, -1) : typeof v;
    let shown: unknown = v;
    if (typeof v === 'number' && (!Number.isFinite(v) || Object.is(v, -0))) shown = Object.is(v, -0) ? '-0' : String(v);
    else if (typeof v === 'bigint') shown = v.toString();
    else if (v instanceof Map) shown = [...v];
    else if (v instanceof Set) shown = [...v];
    else if (v instanceof Uint8Array) shown = [...v];
    else if (v instanceof ArrayBuffer) shown = [...new Uint8Array(v)];
    else if (v instanceof Date) shown = v.toISOString();
    else if (v instanceof RegExp) shown = String(v);
    out[k] = { type, value: shown === undefined ? '(undefined)' : shown };
  }
  return out;
}
