// Requests and responses: the WIT records on one side, the engine's Fetch API objects (Request,
// Response, Headers) on the other, and the two places where the Fetch API as specified cannot say
// what a Durable Object must say.

import type { Request as WitRequest, Response as WitResponse, Header } from 'dohost:object/types@0.3.0';
import { partsOf } from './response';

export type { WitRequest, WitResponse };
export { upgradeOf } from './response';

// The Fetch spec's "forbidden request headers" (host, upgrade, connection, ...) are dropped by
// `new Request`, but an object must see `upgrade` to accept a WebSocket. Every Request built here
// or by user code keeps its headers in a free-standing Headers object, which has no guard.
// Responses are in `response.ts`.
const NativeRequest = globalThis.Request;

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

/** The WIT request as a Fetch API Request. */
export function toRequest(r: WitRequest): Request {
  // Built natively, in as few steps as possible: every line of JavaScript counts per event.
  const headers = new Headers(r.headers);
  const hasBody = r.body.length > 0 && r.method !== 'GET' && r.method !== 'HEAD';
  const request = new NativeRequest(`http://${headers.get('host') ?? 'dohost.local'}${r.path}`, {
    method: r.method,
    body: hasBody ? new Uint8Array(r.body) : undefined,
  });
  Object.defineProperty(request, 'headers', { value: headers, enumerable: true });
  if (r.clientAddress !== undefined && !headers.has('cf-connecting-ip')) {
    headers.set('cf-connecting-ip', r.clientAddress);
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
  if (!(response instanceof Response)) {
    throw new TypeError(`the handler must return a Response, not ${describe(response)}`);
  }
  const { status, headers: all, body } = await partsOf(response);
  const headers: Header[] = [];
  all.forEach((v, k) => {
    if (k !== 'content-length') headers.push([k, v]);
  });
  return { status, headers, body };
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
