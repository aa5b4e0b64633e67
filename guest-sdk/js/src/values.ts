// How `ctx.storage` and WebSocket attachments encode values: JSON text, so the Rust SDK
// (serde_json) reads what JavaScript writes and the other way round.
//
// JSON cannot say Date, Map, Set, bytes, undefined, BigInt, NaN, ±Infinity, -0, RegExp or Error,
// which the hosted service's storage (structured clone) keeps. Those are written as
// `{"$type": T, "value": ...}`; a plain object that has its own `$type` key is escaped as
// `{"$type": "Object", "value": {...}}`, so every value reads back as it was written.

export const encoder = new TextEncoder();
export const decoder = new TextDecoder();

/** The error structured clone throws for a value it cannot copy. */
export class DataCloneError extends Error {
  override name = 'DataCloneError';
}

export function encodeValue(value: unknown): Uint8Array {
  // The common cases skip the walk.
  if (typeof value === 'string' || typeof value === 'boolean') return encoder.encode(JSON.stringify(value));
  if (typeof value === 'number' && Number.isFinite(value) && !Object.is(value, -0)) return encoder.encode(String(value));
  return encoder.encode(JSON.stringify(toJson(value, new Set())));
}

export function decodeValue(bytes: ArrayLike<number>): unknown {
  const text = decoder.decode(bytes as Uint8Array);
  const parsed = JSON.parse(text);
  return text.includes('"$type"') ? fromJson(parsed) : parsed;
}

// Typed arrays kept by their constructor's name.
const VIEWS: Record<string, new (b: ArrayBuffer) => ArrayBufferView> = {
  Uint8Array, Int8Array, Uint8ClampedArray, Uint16Array, Int16Array, Uint32Array, Int32Array,
  Float32Array, Float64Array, BigUint64Array, BigInt64Array, DataView,
};

function tag(value: object): string {
  // Realm-independent, unlike instanceof (values lifted from the host come from another realm).
  return Object.prototype.toString.call(value).slice(8, -1);
}

function toJson(value: unknown, seen: Set<object>): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      if (Number.isFinite(value) && !Object.is(value, -0)) return value;
      return { $type: 'Number', value: Object.is(value, -0) ? '-0' : String(value) };
    case 'undefined':
      return { $type: 'undefined' };
    case 'bigint':
      return { $type: 'BigInt', value: value.toString() };
    case 'object':
      break;
    default:
      throw new DataCloneError(`a ${typeof value} cannot be stored`);
  }
  if (value === null) return null;
  if (seen.has(value)) throw new DataCloneError('a value that contains itself cannot be stored');
  seen.add(value);
  try {
    if (Array.isArray(value)) return Array.from(value, (v) => toJson(v, seen));
    const t = tag(value);
    switch (t) {
      case 'Date':
        return { $type: 'Date', value: (value as Date).getTime() };
      case 'Map':
        return { $type: 'Map', value: Array.from(value as Map<unknown, unknown>, ([k, v]) => [toJson(k, seen), toJson(v, seen)]) };
      case 'Set':
        return { $type: 'Set', value: Array.from(value as Set<unknown>, (v) => toJson(v, seen)) };
      case 'ArrayBuffer':
        return { $type: 'ArrayBuffer', value: toBase64(new Uint8Array(value as ArrayBuffer)) };
      case 'RegExp':
        return { $type: 'RegExp', value: [(value as RegExp).source, (value as RegExp).flags] };
      case 'Error':
        return { $type: 'Error', value: { name: (value as Error).name, message: (value as Error).message } };
      case 'Boolean':
      case 'Number':
      case 'String':
      case 'Symbol':
      case 'Function':
      case 'Promise':
      case 'WeakMap':
      case 'WeakSet':
        throw new DataCloneError(`a ${t} cannot be stored`);
    }
    if (ArrayBuffer.isView(value)) {
      if (!(t in VIEWS)) throw new DataCloneError(`a ${t} cannot be stored`);
      const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      return { $type: t, value: toBase64(bytes) };
    }
    // Plain objects and class instances: their own enumerable properties, as structured clone.
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) out[key] = toJson((value as Record<string, unknown>)[key], seen);
    return Object.hasOwn(value, '$type') ? { $type: 'Object', value: out } : out;
  } finally {
    seen.delete(value);
  }
}

function fromJson(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(fromJson);
  const o = value as Record<string, unknown>;
  if (typeof o.$type === 'string') {
    const v = o.value as any;
    switch (o.$type) {
      case 'Object':
        return reviveFields(v);
      case 'undefined':
        return undefined;
      case 'Number':
        return v === '-0' ? -0 : Number(v);
      case 'BigInt':
        return BigInt(v);
      case 'Date':
        return new Date(v ?? NaN);
      case 'Map':
        return new Map((v as [unknown, unknown][]).map(([k, x]) => [fromJson(k), fromJson(x)]));
      case 'Set':
        return new Set((v as unknown[]).map(fromJson));
      case 'ArrayBuffer':
        return fromBase64(v).buffer;
      case 'RegExp':
        return new RegExp(v[0], v[1]);
      case 'Error': {
        const e = new Error(v.message);
        e.name = v.name;
        return e;
      }
    }
    if (o.$type in VIEWS) {
      const bytes = fromBase64(v);
      const View = VIEWS[o.$type] as any;
      const width = View.BYTES_PER_ELEMENT ?? 1;
      return View === DataView ? new DataView(bytes.buffer) : new View(bytes.buffer, 0, bytes.byteLength / width);
    }
  }
  return reviveFields(o);
}

function reviveFields(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(o)) out[key] = fromJson(o[key]);
  return out;
}

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  // Chunks keep String.fromCharCode's argument list short.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, i + 0x8000)));
  }
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
