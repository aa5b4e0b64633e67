// What the SDK's light Request and Response share: a body kept as it was given (text or bytes),
// read at most once, as the Fetch API says, through the same four readers.

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY: Uint8Array<ArrayBuffer> = new Uint8Array(0);

type Kept = string | Uint8Array<ArrayBuffer>;

export interface Body<B extends Kept = Kept> {
  body: B | null;
  used: boolean;
}

/** The body, once: a second read throws, as on an engine Request or Response. */
export function take<B extends Kept>(p: Body<B>): B | Uint8Array<ArrayBuffer> {
  if (p.used) throw new TypeError('the body has already been read');
  if (p.body === null) return EMPTY;
  p.used = true;
  return p.body;
}

/** The body's bytes; a copy when it was given as bytes, so the kept body cannot change. */
export function bytesOf(b: Kept): Uint8Array<ArrayBuffer> {
  return typeof b === 'string' ? encoder.encode(b) : b.slice();
}

/** `text()`, `arrayBuffer()`, `bytes()` and `json()` over the body that `parts` finds. */
export function readers(parts: (self: unknown) => Body): PropertyDescriptorMap {
  const text = async function (this: unknown) {
    const b = take(parts(this));
    return typeof b === 'string' ? b : decoder.decode(b);
  };
  return {
    text: { value: text },
    arrayBuffer: { value: async function (this: unknown) { return bytesOf(take(parts(this))).buffer; } },
    bytes: { value: async function (this: unknown) { return bytesOf(take(parts(this))); } },
    json: { value: async function (this: unknown) { return JSON.parse(await text.call(this)); } },
  };
}
