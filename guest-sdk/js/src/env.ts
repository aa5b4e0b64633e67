// `env`: the app's variables and secrets (`env.API_URL`), and its object classes by binding
// (`env.ROOMS.idFromName(name)`, `env.ROOMS.get(id).fetch(request)`), as the manifest gives them.

import * as wconfig from 'dohost:object/config@0.3.0';
import * as wstubs from 'dohost:object/stubs@0.3.0';
import { HostError, hostCall, unsupported } from './errors';
import { fromWitResponse, toWitRequest } from './http';

/** A stub call the host refused or that failed; `code` is the WIT `call-error` case. */
export class CallError extends HostError {
  override name = 'CallError';
}

/**
 * An object's id. On dohost an object is its name: `toString()` gives the name, which
 * `idFromString` takes back (names from `newUniqueId()` are 64 hex digits, as on Cloudflare).
 */
export class DurableObjectId {
  constructor(readonly name: string) {}
  toString(): string {
    return this.name;
  }
  equals(other: DurableObjectId): boolean {
    return other instanceof DurableObjectId && other.name === this.name;
  }
}

const RPC = 'calls to methods on a stub (RPC) are not supported; send a request with stub.fetch()';

/** A stub: `fetch` is a call to the object, an event on its queue, answered with its Response. */
export class DurableObjectStub {
  constructor(
    readonly binding: string,
    readonly id: DurableObjectId,
  ) {
    // Any other property is an RPC method on Cloudflare: say so when it is used.
    return new Proxy(this, {
      get(target, prop, receiver) {
        if (typeof prop === 'symbol' || prop in target || prop === 'then') return Reflect.get(target, prop, receiver);
        return () => unsupported(`stub.${prop}()`, RPC);
      },
    });
  }

  get name(): string {
    return this.id.name;
  }

  /**
   * Calls the object. The host call is synchronous: awaiting several stub calls at once (for
   * example with Promise.all) runs them one after another.
   */
  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const request = await toWitRequest(input, init);
    const binding = this.binding;
    const name = this.id.name;
    return fromWitResponse(hostCall(CallError, () => wstubs.fetch(binding, name, request)));
  }
}

export class DurableObjectNamespace {
  constructor(readonly binding: string) {}

  idFromName(name: string): DurableObjectId {
    if (typeof name !== 'string') throw new TypeError('idFromName takes a string');
    return new DurableObjectId(name);
  }

  idFromString(id: string): DurableObjectId {
    if (typeof id !== 'string') throw new TypeError('idFromString takes a string');
    return new DurableObjectId(id);
  }

  newUniqueId(_options?: { jurisdiction?: string }): DurableObjectId {
    if (_options?.jurisdiction !== undefined) unsupported('newUniqueId({ jurisdiction })', 'there are no jurisdictions');
    return new DurableObjectId(wstubs.newUniqueName());
  }

  get(id: DurableObjectId, _options?: { locationHint?: string }): DurableObjectStub {
    if (!(id instanceof DurableObjectId)) throw new TypeError('get takes an id from idFromName, idFromString or newUniqueId');
    return new DurableObjectStub(this.binding, id);
  }

  getByName(name: string): DurableObjectStub {
    return this.get(this.idFromName(name));
  }

  jurisdiction(): never {
    return unsupported('namespace.jurisdiction()', 'there are no jurisdictions');
  }
}

/**
 * The guest cannot list its bindings (WIT `config` has only `get(name)`), so `env` is a Proxy:
 * a name with a variable or secret gives its string, any other name a namespace, whose calls fail
 * with `unknown-namespace` if the app binds no class by that name.
 */
export const env: Record<string, any> = new Proxy(
  Object.create(null),
  {
    get(known: Record<string, unknown>, name) {
      if (typeof name !== 'string' || name === 'then') return undefined;
      // Asked of the host once per name: an instance keeps the app's configuration it started
      // with (a new secret or deploy reaches new instances), so the answer cannot change.
      if (!Object.hasOwn(known, name)) {
        const value = wconfig.get(name);
        known[name] = value !== undefined ? value : new DurableObjectNamespace(name);
      }
      return known[name];
    },
  },
);
