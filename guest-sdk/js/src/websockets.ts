// The WebSocket Hibernation API: `new WebSocketPair()`, `ctx.acceptWebSocket(server, tags)`,
// `new Response(null, { status: 101, webSocket: client })`, then `webSocketMessage` and friends.
// The host holds the sockets (and their tags and attachments) while the object sleeps; a socket
// here is the host's number for it, wrapped in one WebSocket object per instance so that
// `ws === ctx.getWebSockets()[0]` holds as it does on Cloudflare.

import * as wit from 'dohost:object/websockets@0.3.0';
import { HostError, hostCall, unsupported } from './errors';
import { decodeValue, encodeValue } from './values';

/** A WebSocket call the host refused; `code` is the WIT error's case. */
export class WebSocketError extends HostError {
  override name = 'WebSocketError';
}

function host<T>(call: () => T): T {
  return hostCall(WebSocketError, call);
}

const HIBERNATION_ONLY = 'dohost has the WebSocket Hibernation API only: ctx.acceptWebSocket(server) and the webSocketMessage/webSocketClose/webSocketError handlers';
const internal = Symbol('dohost socket');

export class WebSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;

  #handle: bigint | undefined;
  #closed = false;
  /** The other end of a WebSocketPair, until the server end is accepted. */
  peer: WebSocket | undefined;

  constructor(url?: unknown) {
    if (url !== internal) unsupported('new WebSocket(url)', 'an object cannot open WebSockets to other servers');
  }

  /** The host's number for the socket (after `ctx.acceptWebSocket`). */
  get handle(): bigint {
    if (this.#handle === undefined) {
      throw new WebSocketError('invalid-state', 'the socket is not accepted: call ctx.acceptWebSocket(ws) first');
    }
    return this.#handle;
  }

  get readyState(): number {
    return this.#closed ? WebSocket.CLOSED : this.#handle === undefined ? WebSocket.CONNECTING : WebSocket.OPEN;
  }

  send(message: string | ArrayBuffer | ArrayBufferView): void {
    const h = this.handle;
    if (typeof message === 'string') host(() => wit.sendText(h, message));
    else if (message instanceof ArrayBuffer) host(() => wit.sendBinary(h, new Uint8Array(message)));
    else if (ArrayBuffer.isView(message)) {
      host(() => wit.sendBinary(h, new Uint8Array(message.buffer, message.byteOffset, message.byteLength)));
    } else throw new TypeError('send takes a string, an ArrayBuffer or a typed array');
  }

  /** Closes the socket (1000, or 3000..=4999). Closing a socket that has closed does nothing. */
  close(code = 1000, reason = ''): void {
    if (this.#closed) return;
    const h = this.handle;
    try {
      host(() => wit.close(h, code, reason));
    } catch (e) {
      if (!(e instanceof WebSocketError && e.code === 'not-found')) throw e;
    }
    forget(this);
  }

  /** Keeps up to 16 KiB with the socket, through hibernation (same encoding as storage). */
  serializeAttachment(value: unknown): void {
    const bytes = encodeValue(value);
    const h = this.handle;
    host(() => wit.setAttachment(h, bytes));
  }

  deserializeAttachment(): any {
    const h = this.handle;
    const bytes = host(() => wit.getAttachment(h));
    return bytes === undefined ? null : decodeValue(bytes);
  }

  accept(): never {
    return unsupported('WebSocket.accept()', HIBERNATION_ONLY);
  }

  addEventListener(type: string): never {
    return unsupported(`WebSocket.addEventListener('${type}')`, HIBERNATION_ONLY);
  }

  static bind(ws: WebSocket, handle: bigint): void {
    ws.#handle = handle;
  }

  static markClosed(ws: WebSocket): void {
    ws.#closed = true;
  }
}

/** `new WebSocketPair()`: `[client, server] = Object.values(pair)`. */
export class WebSocketPair {
  0: WebSocket;
  1: WebSocket;
  constructor() {
    this[0] = new WebSocket(internal);
    this[1] = new WebSocket(internal);
    this[0].peer = this[1];
    this[1].peer = this[0];
  }
}

/** The pair for `ctx.setWebSocketAutoResponse`: a socket receiving `request` gets `response`. */
export class WebSocketRequestResponsePair {
  constructor(
    readonly request: string,
    readonly response: string,
  ) {}
}

// One WebSocket object per socket, for the life of the instance.
const sockets = new Map<bigint, WebSocket>();

/** The WebSocket object for a host socket number. */
export function socketFor(handle: bigint): WebSocket {
  let ws = sockets.get(handle);
  if (!ws) {
    ws = new WebSocket(internal);
    WebSocket.bind(ws, handle);
    sockets.set(handle, ws);
  }
  return ws;
}

/** The socket has closed (by either side): it no longer takes calls. */
export function forget(ws: WebSocket): void {
  if (ws.readyState === WebSocket.OPEN) sockets.delete(ws.handle);
  WebSocket.markClosed(ws);
}

/** The server end of a pair, accepted during this event; cleared when each request starts. */
let accepted: WebSocket | undefined;

export function acceptWebSocket(ws: WebSocket, tags: string[] = []): void {
  if (!(ws instanceof WebSocket) || ws.peer === undefined) {
    throw new TypeError('acceptWebSocket takes the server end of a new WebSocketPair()');
  }
  if (ws.readyState !== WebSocket.CONNECTING) throw new TypeError('this WebSocket is already accepted');
  const handle = host(() => wit.accept(tags));
  WebSocket.bind(ws, handle);
  sockets.set(handle, ws);
  accepted = ws;
}

export function startRequest(): void {
  accepted = undefined;
}

/**
 * Checks a 101 answer: it must carry the client end of the pair whose server end this request
 * accepted, since only that completes the handshake the host holds.
 */
export function checkUpgrade(client: WebSocket | null): void {
  if (accepted === undefined) {
    throw new TypeError('a 101 response needs ctx.acceptWebSocket(server) first (WebSocket.accept() is not supported)');
  }
  if (client !== accepted.peer) {
    throw new TypeError('a 101 response must carry the client end of the accepted WebSocketPair as `webSocket`');
  }
}

export function getWebSockets(tag?: string): WebSocket[] {
  // list<u64> arrives as a BigUint64Array, whose own map() could only hold BigInts.
  return Array.from(wit.getSockets(tag), socketFor);
}

export function getTags(ws: WebSocket): string[] {
  const h = ws.handle;
  return host(() => wit.getTags(h));
}

export function setAutoResponse(pair?: WebSocketRequestResponsePair): void {
  if (pair !== undefined && !(pair instanceof WebSocketRequestResponsePair)) {
    throw new TypeError('setWebSocketAutoResponse takes a WebSocketRequestResponsePair');
  }
  host(() => wit.setAutoResponse(pair && { request: pair.request, response: pair.response }));
}

export function getAutoResponse(): WebSocketRequestResponsePair | null {
  const pair = wit.getAutoResponse();
  return pair ? new WebSocketRequestResponsePair(pair.request, pair.response) : null;
}

export function getAutoResponseTimestamp(ws: WebSocket): Date | null {
  const h = ws.handle;
  const at = host(() => wit.getAutoResponseTimestamp(h));
  return at === undefined ? null : new Date(Number(at));
}
