// Requests and responses: the WIT records on one side, the engine's Fetch API objects (Request,
// Response, Headers) on the other, and the two places where the Fetch API as specified cannot say
// what a Durable Object must say.

import type { Request as WitRequest, Response as WitResponse, Header } from 'dohost:object/types@0.3.0';
import type { WebSocket } from './websockets';

export type { WitRequest, WitResponse };

// 1. The Fetch spec's "forbidden request headers" (host, upgrade, connection, ...) are dropped by
//    `new Request`, but an object must see `upgrade` to accept a WebSocket. Every Request built
//    here or by user code keeps its headers in a free-standing Headers object, which has no guard.
// 2. `new Response(null, { status: 101, webSocket })` answers a WebSocket upgrade on Cloudflare;
//    the spec allows 200..=599 only, so such a Response is built as 200 and its status shadowed.
const NativeRequest = globalThis.Request;
const NativeResponse = globalThis.Response;

function unguardedHeaders(init: HeadersInit | undefined): Headers {
  const headers = new Headers();
  if (init === undefined) return headers;
  const pairs = init instanceof Headers ? [...init] : Array.isArray(init) ? init : Object.entries(init);
  for (const [k, v] of pairs) headers.append(k, v);
  return headers;
}

globalThis.Request = new Proxy(NativeRequest, {
  construct(target, args: [RequestInfo | URL, RequestInit?]) {
    const [input, init] = args;
    const request = Reflect.construct(target, args) as Request;
    const source = init?.headers ?? (input instanceof NativeRequest ? input.headers : undefined);
    Object.defineProperty(request, 'headers', { value: unguardedHeaders(source), enumerable: true });
    return request;
  },
});

/** What a Response built with `status: 101` answers: the handshake, with the client end. */
const upgrades = new WeakMap<Response, WebSocket | null>();

globalThis.Response = new Proxy(NativeResponse, {
  construct(target, args: [BodyInit | null | undefined, (ResponseInit & { webSocket?: WebSocket | null })?]) {
    const [body, init] = args;
    if (init?.status !== 101) return Reflect.construct(target, args);
    const response = Reflect.construct(target, [body, { ...init, status: 200 }]) as Response;
    Object.defineProperty(response, 'status', { value: 101, enumerable: true });
    Object.defineProperty(response, 'webSocket', { value: init.webSocket ?? null, enumerable: true });
    upgrades.set(response, init.webSocket ?? null);
    return response;
  },
});

/** The client end a Response with status 101 carries, `undefined` for any other Response. */
export function upgradeOf(response: Response): WebSocket | null | undefined {
  return upgrades.has(response) ? upgrades.get(response) : undefined;
}

/** The WIT request as a Fetch API Request. */
export function toRequest(r: WitRequest): Request {
  const host = r.headers.find(([k]) => k === 'host')?.[1] ?? 'dohost.local';
  const hasBody = r.method !== 'GET' && r.method !== 'HEAD';
  const request = new Request(`http://${host}${r.path}`, {
    method: r.method,
    headers: r.headers,
    body: hasBody ? new Uint8Array(r.body) : undefined,
  });
  if (r.clientAddress !== undefined && !request.headers.has('cf-connecting-ip')) {
    request.headers.set('cf-connecting-ip', r.clientAddress);
  }
  return request;
}

/** A Request (or what `fetch` takes) as the WIT record a stub call sends. */
export async function toWitRequest(input: RequestInfo | URL, init?: RequestInit): Promise<WitRequest> {
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

/** What a handler returned, as the WIT response. */
export async function toWitResponse(response: unknown): Promise<WitResponse> {
  if (!(response instanceof NativeResponse)) {
    throw new TypeError(`the handler must return a Response, not ${describe(response)}`);
  }
  const headers: Header[] = [];
  response.headers.forEach((v, k) => {
    if (k !== 'content-length') headers.push([k, v]);
  });
  return { status: response.status, headers, body: new Uint8Array(await response.arrayBuffer()) };
}

/** A WIT response (from a stub call) as a Fetch API Response. */
export function fromWitResponse(r: WitResponse): Response {
  const nullBody = r.status === 101 || r.status === 204 || r.status === 205 || r.status === 304;
  return new Response(nullBody ? null : new Uint8Array(r.body), { status: r.status, headers: r.headers });
}

export function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'object') return `a ${(value as object).constructor?.name ?? 'object'}`;
  return `a ${typeof value}`;
}
