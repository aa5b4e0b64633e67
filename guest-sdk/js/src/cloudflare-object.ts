// What `cloudflare:workers` (and `@dohost/sdk`) gives a Durable Object's build, and the globals
// the hosted runtime has (`new WebSocketPair()` needs no import there).

import { WebSocket, WebSocketPair, WebSocketRequestResponsePair } from './websockets';

Object.assign(globalThis, { WebSocket, WebSocketPair, WebSocketRequestResponsePair });

export { DurableObject, WorkerEntrypoint } from './base';
export { CallError, DurableObjectId, DurableObjectNamespace, DurableObjectStub, env } from './env';
export { NotSupportedError } from './errors';
export { DurableObjectState } from './object';
export { DurableObjectStorage, DurableObjectTransaction, StorageError } from './storage';
export { WebSocket, WebSocketError, WebSocketPair, WebSocketRequestResponsePair } from './websockets';
