// Errors: what a refused host call throws, and what a missing Cloudflare API throws. APIs dohost
// does not have fail loudly on first use, never as a silent no-op.

export class NotSupportedError extends Error {
  override name = 'NotSupportedError';
}

export function unsupported(what: string, why: string): never {
  throw new NotSupportedError(`${what} is not supported on dohost: ${why}`);
}

/** An error of one WIT interface's error variant; `code` is the case (`not-found`, ...). */
export class HostError extends Error {
  constructor(readonly code: string, message: string) {
    super(message ? `${code}: ${message}` : code);
  }
}

/**
 * Runs a host call whose WIT result may be an error; componentize-js throws that error as a
 * `ComponentError` with the variant as `payload`, which becomes an `ErrorType`.
 */
export function hostCall<T>(ErrorType: new (code: string, message: string) => HostError, call: () => T): T {
  try {
    return call();
  } catch (e: any) {
    const p = e?.payload;
    if (p && typeof p === 'object' && 'tag' in p) throw new ErrorType(p.tag, p.val ?? '');
    throw e;
  }
}
