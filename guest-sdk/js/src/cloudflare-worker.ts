// What `cloudflare:workers` (and `@dohost/sdk`) gives a worker's build. A worker holds no
// WebSockets: it forwards an upgrade to an object with `stub.fetch(request)`.

import { unsupported } from './errors';

const OBJECTS_ONLY = 'a worker cannot accept WebSockets; forward the upgrade request to an object with stub.fetch(request)';

export class WebSocketPair {
  constructor() {
    unsupported('new WebSocketPair() in a worker', OBJECTS_ONLY);
  }
}

Object.assign(globalThis, { WebSocketPair });

export { DurableObject, WorkerEntrypoint } from './base';
export { CallError, DurableObjectId, DurableObjectNamespace, DurableObjectStub, env } from './env';
export { NotSupportedError } from './errors';
