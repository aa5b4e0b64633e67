// `Response` as handlers build it. Nearly every one carries text, bytes or nothing, and the
// engine's own Response wraps each body in a stream that costs tens of microseconds to make and
// to read back (BENCHMARKS.md), on every event. Such a Response is a light object of the SDK's
// own instead: `instanceof Response`, with the Fetch API's status, headers and body readers, that
// keeps its body as given. Other bodies (streams, blobs, forms) get the engine's Response.
//
// It also says what the Fetch spec cannot: `new Response(null, { status: 101, webSocket })`, the
// answer that completes a WebSocket upgrade (the spec allows 200..=599 only).

import { bytesOf, readers, take, type Body } from './body';
import type { WebSocket } from './websockets';

const NativeResponse = globalThis.Response;
const SLOT = Symbol('dohost.response');

interface Parts extends Body {
  status: number;
  statusText: string;
  init?: HeadersInit;
  headers?: Headers;
  /** The content type the body implies, unless the headers give one. */
  type?: string;
  webSocket?: WebSocket | null;
}

type Light = Response & { [SLOT]: Parts };

function parts(r: unknown): Parts {
  const p = (r as Light | undefined)?.[SLOT];
  if (!p) throw new TypeError('not a Response built by new Response()');
  return p;
}

function headersOf(p: Parts): Headers {
  if (!p.headers) {
    p.headers = new Headers(p.init);
    if (p.type && !p.headers.has('content-type')) p.headers.set('content-type', p.type);
  }
  return p.headers;
}

/** The same response as an engine Response, for what only that has (`body`, `blob()`, ...). */
function native(r: Response): Response {
  const p = parts(r);
  if (p.status === 101) throw new TypeError('a 101 response has no body');
  return new NativeResponse(p.body, { status: p.status, statusText: p.statusText, headers: headersOf(p) });
}

const LightResponse = Object.create(NativeResponse.prototype, {
  status: { get: function (this: Light) { return parts(this).status; } },
  statusText: { get: function (this: Light) { return parts(this).statusText; } },
  ok: { get: function (this: Light) { const s = parts(this).status; return s >= 200 && s < 300; } },
  headers: { get: function (this: Light) { return headersOf(parts(this)); } },
  type: { get: () => 'default' },
  url: { get: () => '' },
  redirected: { get: () => false },
  bodyUsed: { get: function (this: Light) { return parts(this).used; } },
  webSocket: { get: function (this: Light) { return parts(this).webSocket ?? null; } },
  body: { get: function (this: Light) { return parts(this).body === null ? null : native(this).body; } },
  ...readers(parts),
  blob: { value: function (this: Light) { return native(this).blob(); } },
  formData: { value: function (this: Light) { return native(this).formData(); } },
  clone: {
    value: function (this: Light) {
      const p = parts(this);
      if (p.used) throw new TypeError('a Response whose body was read cannot be cloned');
      return light({ ...p, init: new Headers(headersOf(p)), headers: undefined });
    },
  },
});

function light(p: Parts): Response {
  const r = Object.create(LightResponse) as Light;
  r[SLOT] = p;
  return r;
}

type Init = ResponseInit & { webSocket?: WebSocket | null };

function build(body: BodyInit | null | undefined, init: Init | undefined, type?: string): Response | undefined {
  const simple = body == null || typeof body === 'string' || body instanceof ArrayBuffer || ArrayBuffer.isView(body);
  const status = init?.status ?? 200;
  if (!simple) {
    if (status === 101) throw new TypeError('a 101 response has no body');
    return undefined;
  }
  if (status !== 101 && !(Number.isInteger(status) && status >= 200 && status <= 599)) {
    throw new RangeError(`a Response's status is 101 (a WebSocket upgrade) or 200..=599, not ${status}`);
  }
  const hasBody = body != null;
  if (hasBody && (status === 101 || status === 204 || status === 205 || status === 304)) {
    throw new TypeError(`a Response with status ${status} has no body`);
  }
  let kept: Parts['body'] = null;
  if (typeof body === 'string') {
    kept = body;
    type ??= 'text/plain;charset=UTF-8';
  } else if (body instanceof ArrayBuffer) {
    kept = new Uint8Array(body.slice(0));
  } else if (body != null) {
    const view = body as ArrayBufferView;
    kept = new Uint8Array(view.byteLength);
    kept.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
  }
  return light({
    status,
    statusText: init?.statusText ?? '',
    init: init?.headers,
    type: hasBody ? type : undefined,
    body: kept,
    used: false,
    webSocket: status === 101 ? (init?.webSocket ?? null) : undefined,
  });
}

/** `Response.json(data, init)`. */
function json(data: unknown, init?: Init): Response {
  const text = JSON.stringify(data);
  if (text === undefined) throw new TypeError('Response.json: the value has no JSON form');
  return build(text, init, 'application/json')!;
}

globalThis.Response = new Proxy(NativeResponse, {
  construct(target, args: [BodyInit | null | undefined, Init?]) {
    return build(args[0], args[1]) ?? Reflect.construct(target, args);
  },
  get(target, prop, receiver) {
    return prop === 'json' ? json : Reflect.get(target, prop, receiver);
  },
});

/** The client end a Response with status 101 carries; `undefined` for any other Response. */
export function upgradeOf(response: Response): WebSocket | null | undefined {
  const p = (response as Light)[SLOT];
  return p?.status === 101 ? (p.webSocket ?? null) : undefined;
}

/** The status, headers (as the Fetch API gives them) and whole body of any Response. */
export async function partsOf(response: Response): Promise<{ status: number; headers: Headers; body: Uint8Array<ArrayBuffer> }> {
  const p = (response as Light)[SLOT];
  if (p) {
    const b = take(p);
    // Sent as it is: nothing reads the kept bytes after this.
    return { status: p.status, headers: headersOf(p), body: typeof b === 'string' ? bytesOf(b) : b };
  }
  return { status: response.status, headers: response.headers, body: new Uint8Array(await response.arrayBuffer()) };
}
