// `Request`: the one a handler receives, and the ones user code builds.
//
// The request a handler receives is a light object of the SDK's own, `instanceof Request`, that
// keeps the WIT request's parts and builds its Headers only when asked: the engine's Request
// costs tens of microseconds to build on every event (BENCHMARKS.md). What only the engine's has
// (`body` as a stream, `signal`, passing it to `fetch`) gets one, built once.
//
// The Fetch spec's "forbidden request headers" (host, upgrade, connection, ...) are dropped by the
// engine's `new Request`, but an object must see `upgrade` to accept a WebSocket: every Request
// keeps its headers in a free-standing Headers object, which has no guard.

import type { Request as WitRequest, Header } from 'dohost:object/types@0.3.0';
import { readers, take, type Body } from './body';

const NativeRequest = globalThis.Request;
const nativeFetch = globalThis.fetch;
const SLOT = Symbol('dohost.request');

interface Parts extends Body<Uint8Array<ArrayBuffer>> {
  method: string;
  url: string;
  pairs: Header[];
  clientAddress?: string;
  headers?: Headers;
  native?: Request;
}

type Light = Request & { [SLOT]: Parts };

function parts(r: unknown): Parts {
  const p = (r as Light | undefined)?.[SLOT];
  if (!p) throw new TypeError('not a Request');
  return p;
}

function headersOf(p: Parts): Headers {
  if (!p.headers) {
    p.headers = new Headers(p.pairs);
    if (p.clientAddress !== undefined && !p.headers.has('cf-connecting-ip')) {
      p.headers.set('cf-connecting-ip', p.clientAddress);
    }
  }
  return p.headers;
}

/** The engine's Request for the same request, built once. */
function native(r: Request): Request {
  const p = parts(r);
  if (!p.native) {
    p.native = new NativeRequest(p.url, { method: p.method, body: p.body ?? undefined });
    Object.defineProperty(p.native, 'headers', { value: headersOf(p), enumerable: true });
  }
  return p.native;
}

const fromNative = (name: string) => ({
  get: function (this: Light) {
    return (native(this) as any)[name];
  },
});

const LightRequest = Object.create(NativeRequest.prototype, {
  method: { get: function (this: Light) { return parts(this).method; } },
  url: { get: function (this: Light) { return parts(this).url; } },
  headers: { get: function (this: Light) { return headersOf(parts(this)); } },
  bodyUsed: { get: function (this: Light) { return parts(this).used; } },
  body: { get: function (this: Light) { return parts(this).body === null ? null : native(this).body; } },
  signal: fromNative('signal'),
  redirect: fromNative('redirect'),
  cache: fromNative('cache'),
  credentials: fromNative('credentials'),
  mode: fromNative('mode'),
  referrer: fromNative('referrer'),
  referrerPolicy: fromNative('referrerPolicy'),
  integrity: fromNative('integrity'),
  keepalive: fromNative('keepalive'),
  destination: fromNative('destination'),
  ...readers(parts),
  blob: { value: function (this: Light) { return native(this).blob(); } },
  formData: { value: function (this: Light) { return native(this).formData(); } },
  clone: {
    value: function (this: Light) {
      const p = parts(this);
      if (p.used) throw new TypeError('a Request whose body was read cannot be cloned');
      return light({ ...p, pairs: [...headersOf(p)], headers: undefined, clientAddress: undefined, native: undefined });
    },
  },
});

function light(p: Parts): Request {
  const r = Object.create(LightRequest) as Light;
  r[SLOT] = p;
  return r;
}

/** The WIT request as a Fetch API Request. */
export function toRequest(r: WitRequest): Request {
  let host = 'dohost.local';
  for (const h of r.headers) {
    if (h[0] === 'host') {
      host = h[1];
      break;
    }
  }
  const hasBody = r.body.length > 0 && r.method !== 'GET' && r.method !== 'HEAD';
  return light({
    method: r.method,
    url: `http://${host}${r.path}`,
    pairs: r.headers,
    clientAddress: r.clientAddress,
    body: hasBody ? new Uint8Array(r.body) : null,
    used: false,
  });
}

function unguardedHeaders(init: HeadersInit | undefined): Headers {
  const headers = new Headers();
  if (init === undefined) return headers;
  const pairs = init instanceof Headers ? [...init] : Array.isArray(init) ? init : Object.entries(init);
  for (const [k, v] of pairs) headers.append(k, v);
  return headers;
}

/** A light request as what `new Request(url, init)` takes for `init`. */
function asInit(p: Parts): RequestInit {
  const hasBody = p.body !== null && p.method !== 'GET' && p.method !== 'HEAD';
  return { method: p.method, headers: headersOf(p), body: hasBody ? take(p) : undefined };
}

globalThis.Request = new Proxy(NativeRequest, {
  construct(target, args: [RequestInfo | URL, RequestInit?]) {
    let [input, init] = args;
    const fromInput = (input as Light)?.[SLOT];
    if (fromInput) {
      init = { ...asInit(fromInput), ...init };
      input = fromInput.url;
    }
    const fromInit = (init as Light | undefined)?.[SLOT];
    if (fromInit) init = asInit(fromInit);
    const request = Reflect.construct(target, [input, init]) as Request;
    const source = init?.headers ?? (input instanceof NativeRequest ? input.headers : undefined);
    Object.defineProperty(request, 'headers', { value: unguardedHeaders(source), enumerable: true });
    return request;
  },
});

globalThis.fetch = (input: RequestInfo | URL, init?: RequestInit) =>
  nativeFetch((input as Light)?.[SLOT] ? native(input as Request) : input, init);

/** A Request (or what `fetch` takes) as the WIT record a stub call sends. */
export async function toWitRequest(input: RequestInfo | URL, init?: RequestInit): Promise<WitRequest> {
  const p = (input as Light)?.[SLOT];
  if (p && init === undefined) {
    const url = new URL(p.url);
    return {
      method: p.method,
      path: url.pathname + url.search,
      headers: [...headersOf(p)],
      body: take(p),
      clientAddress: headersOf(p).get('cf-connecting-ip') ?? undefined,
    };
  }
  const request = input instanceof NativeRequest && init === undefined ? input : new Request(input as RequestInfo, init);
  const url = new URL(request.url, 'http://dohost.local');
  const headers: Header[] = [];
  request.headers.forEach((v, k) => headers.push([k, v]));
  return {
    method: request.method,
    path: url.pathname + url.search,
    headers,
    body: new Uint8Array(await request.arrayBuffer()),
    clientAddress: request.headers.get('cf-connecting-ip') ?? undefined,
  };
}

