// The `DurableObject` base class. It imports no WIT interface, so a worker's bundle can hold a class that
// extends it (Cloudflare modules export their objects from the worker's file) without pulling in
// the object world's storage and WebSocket imports, which a worker component does not have.

import { unsupported } from './errors';
import type { DurableObjectState } from './object';

/** The base class of a Durable Object: `this.ctx` (also `this.state`) and `this.env`. */
export abstract class DurableObject<Env = Record<string, any>> {
  protected readonly ctx: DurableObjectState;
  protected readonly state: DurableObjectState;
  protected readonly env: Env;
  constructor(ctx: DurableObjectState, env: Env) {
    this.ctx = ctx;
    this.state = ctx;
    this.env = env;
  }
}

/** Class-based entrypoints (RPC) are not supported: a worker is `export default { fetch }`. */
export abstract class WorkerEntrypoint {
  constructor() {
    unsupported('WorkerEntrypoint', 'a worker is export default { fetch(request, env, ctx) }');
  }
}
