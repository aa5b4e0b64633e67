// A worker on world `dohost:object/worker@0.3.0`: a Cloudflare module worker,
// `export default { fetch(request, env, ctx) }`, in front of the app's objects.

import { env } from './env';
import { unsupported } from './errors';
import { runEvent, waitUntil } from './events';
import { toRequest, toWitResponse, upgradeOf, type WitRequest } from './http';

export interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
}

export interface WorkerHandler {
  fetch(request: Request, env: Record<string, any>, ctx: ExecutionContext): Response | Promise<Response>;
}

const ctx: ExecutionContext = {
  waitUntil,
  passThroughOnException: () =>
    unsupported('ctx.passThroughOnException()', 'there is no origin behind a dohost worker to pass the request to'),
};

/** The WIT export for the module's default export. */
export function exportsForWorker(handler: WorkerHandler) {
  if (typeof handler === 'function') {
    unsupported('a class as the default export (WorkerEntrypoint)', 'export default { fetch(request, env, ctx) { ... } }');
  }
  if (typeof handler?.fetch !== 'function') throw new TypeError('the default export has no fetch(request, env, ctx) handler');
  return {
    httpHandler: {
      fetch: (request: WitRequest) =>
        runEvent(async () => {
          const response = await handler.fetch(toRequest(request), env, ctx);
          // A 101 from a stub call: the object accepted the upgrade this request forwarded.
          if (response instanceof Response && upgradeOf(response) !== undefined) {
            return { status: 101, headers: [], body: new Uint8Array(0) };
          }
          return toWitResponse(response);
        }),
    },
  };
}
