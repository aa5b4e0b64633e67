// A Durable Object class on world `dohost:object/durable-object@0.3.0`: the `DurableObject`
// base class, `ctx` (DurableObjectState), and the four exported WIT interfaces bound to the
// user's class. The instance is built on its first event (its constructor may use storage) and
// kept while the host keeps the component instance.

import * as widentity from 'dohost:object/identity@0.3.0';
import { env, DurableObjectId } from './env';
import { unsupported } from './errors';
import { runEvent, waitUntil } from './events';
import { toRequest, toWitResponse, upgradeOf, type WitResponse } from './http';
import { DurableObjectStorage } from './storage';
import * as sockets from './websockets';
import { WebSocket, WebSocketRequestResponsePair } from './websockets';

export class DurableObjectState {
  readonly id: DurableObjectId;
  readonly storage = new DurableObjectStorage();

  constructor() {
    this.id = new DurableObjectId(widentity.name());
  }

  waitUntil(promise: Promise<unknown>): void {
    waitUntil(promise);
  }

  /** Events already run one at a time, so the callback simply runs now. */
  async blockConcurrencyWhile<T>(callback: () => Promise<T> | T): Promise<T> {
    return callback();
  }

  acceptWebSocket(ws: WebSocket, tags?: string[]): void {
    sockets.acceptWebSocket(ws, tags ?? []);
  }

  getWebSockets(tag?: string): WebSocket[] {
    return sockets.getWebSockets(tag);
  }

  getTags(ws: WebSocket): string[] {
    return sockets.getTags(ws);
  }

  setWebSocketAutoResponse(pair?: WebSocketRequestResponsePair): void {
    sockets.setAutoResponse(pair);
  }

  getWebSocketAutoResponse(): WebSocketRequestResponsePair | null {
    return sockets.getAutoResponse();
  }

  getWebSocketAutoResponseTimestamp(ws: WebSocket): Date | null {
    return sockets.getAutoResponseTimestamp(ws);
  }

  setHibernatableWebSocketEventTimeout(_ms?: number): never {
    return unsupported('ctx.setHibernatableWebSocketEventTimeout()', "a WebSocket event runs under the object's event limits");
  }

  abort(_reason?: string): never {
    return unsupported('ctx.abort()', 'throw from the handler to fail the event and roll back its writes');
  }
}

interface Handlers {
  fetch?(request: Request): Response | Promise<Response>;
  alarm?(info: { retryCount: number; isRetry: boolean }): unknown;
  webSocketMessage?(ws: WebSocket, message: string | ArrayBuffer): unknown;
  webSocketClose?(ws: WebSocket, code: number, reason: string, wasClean: boolean): unknown;
  webSocketError?(ws: WebSocket, error: unknown): unknown;
}

type Class = new (ctx: DurableObjectState, env: any) => Handlers;

/** The WIT exports for the user's class. */
export function exportsForObject(UserClass: Class) {
  if (typeof UserClass !== 'function') throw new TypeError('the Durable Object export is not a class');
  let object: Handlers | undefined;
  const instance = () => (object ??= new UserClass(new DurableObjectState(), env));

  const missing = (handler: string) => {
    throw new TypeError(`${UserClass.name} has no ${handler}() handler`);
  };

  async function answer(request: Request): Promise<WitResponse> {
    const o = instance();
    if (!o.fetch) missing('fetch');
    const response = await o.fetch!(request);
    const client = response instanceof Response ? upgradeOf(response) : undefined;
    if (client !== undefined) {
      sockets.checkUpgrade(client);
      return { status: 101, headers: [], body: new Uint8Array(0) };
    }
    return toWitResponse(response);
  }

  return {
    httpHandler: {
      fetch: (request: Parameters<typeof toRequest>[0]) =>
        runEvent(() => {
          sockets.startRequest();
          return answer(toRequest(request));
        }),
    },
    websocketHandler: {
      onMessage: (s: bigint, m: { tag: 'text'; val: string } | { tag: 'binary'; val: Uint8Array }) =>
        runEvent(async () => {
          const o = instance();
          if (!o.webSocketMessage) missing('webSocketMessage');
          // A copy: the lifted bytes belong to another realm (instanceof fails on them).
          const message = m.tag === 'text' ? m.val : new Uint8Array(m.val).buffer;
          await o.webSocketMessage!(sockets.socketFor(s), message);
        }),
      onClose: (s: bigint, code: number, reason: string, wasClean: boolean) =>
        runEvent(async () => {
          const ws = sockets.socketFor(s);
          // The peer closed it: the socket takes no more calls, and ws.close() does nothing.
          sockets.forget(ws);
          await instance().webSocketClose?.(ws, code, reason, wasClean);
        }),
      onError: (s: bigint, error: string) =>
        runEvent(async () => {
          const ws = sockets.socketFor(s);
          sockets.forget(ws);
          await instance().webSocketError?.(ws, new Error(error));
        }),
    },
    streamHandler: {
      onClose: (_s: bigint) => runEvent(() => undefined),
    },
    alarmHandler: {
      onAlarm: (info: { retryCount: number; isRetry: boolean }) =>
        runEvent(async () => {
          const o = instance();
          if (!o.alarm) missing('alarm');
          await o.alarm!({ retryCount: info.retryCount, isRetry: info.isRetry });
        }),
    },
  };
}

// At build time, inside the snapshot: one request through the paths every event takes, so that a
// fresh instance finds them run once already (a first request is 0.06–0.15 ms faster;
// BENCHMARKS.md). No host call may happen here.
{
  const request = toRequest({
    method: 'POST',
    path: '/warm?up=1',
    headers: [['host', 'warm'], ['content-type', 'text/plain']],
    body: new Uint8Array([1]),
  });
  void request.headers.get('host');
  void new URL(request.url).pathname;
  void toWitResponse(Response.json({ warm: true }, { headers: { 'x-warm': '1' } }));
  void toWitResponse(new Response('warm'));
}
