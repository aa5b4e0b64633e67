// `ctx.storage`: the Cloudflare-shaped, promise-returning face of the synchronous WIT storage.
// Every write of an event commits together when the event ends (the host's output gate), so the
// write-coalescing options of the hosted service change nothing here and are accepted as given.

import * as wit from 'dohost:object/storage@0.3.0';
import { decodeValue, encodeValue } from './values';
import { HostError, hostCall, unsupported } from './errors';

/** The most keys one `get`, `put` or `delete` takes, as on the hosted service. */
export const MAX_KEYS = 128;

/** A storage call the host refused; `code` is the WIT error's case. */
export class StorageError extends HostError {
  override name = 'StorageError';
}

function host<T>(call: () => T): T {
  return hostCall(StorageError, call);
}

function checkKeys(keys: string[]): void {
  if (keys.length > MAX_KEYS) throw new RangeError(`at most ${MAX_KEYS} keys at once, not ${keys.length}`);
  for (const k of keys) checkKey(k);
}

function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new TypeError(`a storage key is a string, not ${typeof key}`);
}

export interface ListOptions {
  prefix?: string;
  start?: string;
  startAfter?: string;
  end?: string;
  reverse?: boolean;
  limit?: number;
  allowConcurrency?: boolean;
  noCache?: boolean;
}

export interface GetOptions {
  allowConcurrency?: boolean;
  noCache?: boolean;
}

export interface PutOptions {
  allowConcurrency?: boolean;
  allowUnconfirmed?: boolean;
  noCache?: boolean;
}

export class DurableObjectStorage {
  get<T = unknown>(key: string, options?: GetOptions): Promise<T | undefined>;
  get<T = unknown>(keys: string[], options?: GetOptions): Promise<Map<string, T>>;
  async get(keys: string | string[], _options?: GetOptions): Promise<unknown> {
    if (Array.isArray(keys)) {
      checkKeys(keys);
      const entries = host(() => wit.getMany(keys));
      return new Map(entries.map(([k, v]) => [k, decodeValue(v)]));
    }
    checkKey(keys);
    const v = host(() => wit.get(keys));
    return v === undefined ? undefined : decodeValue(v);
  }

  put<T>(key: string, value: T, options?: PutOptions): Promise<void>;
  put<T>(entries: Record<string, T>, options?: PutOptions): Promise<void>;
  async put(keyOrEntries: string | Record<string, unknown>, value?: unknown): Promise<void> {
    if (typeof keyOrEntries === 'string') {
      const bytes = encodeValue(value);
      host(() => wit.put(keyOrEntries, bytes));
      return;
    }
    if (keyOrEntries === null || typeof keyOrEntries !== 'object') {
      throw new TypeError('put takes a key and a value, or an object of entries');
    }
    const keys = Object.keys(keyOrEntries);
    checkKeys(keys);
    const entries = keys.map((k) => [k, encodeValue(keyOrEntries[k])] as [string, Uint8Array]);
    host(() => wit.putMany(entries));
  }

  delete(key: string, options?: PutOptions): Promise<boolean>;
  delete(keys: string[], options?: PutOptions): Promise<number>;
  async delete(keys: string | string[]): Promise<boolean | number> {
    if (Array.isArray(keys)) {
      checkKeys(keys);
      return host(() => wit.deleteMany(keys));
    }
    checkKey(keys);
    return host(() => wit.delete(keys));
  }

  async list<T = unknown>(options: ListOptions = {}): Promise<Map<string, T>> {
    if (options.start !== undefined && options.startAfter !== undefined) {
      throw new TypeError('list takes start or startAfter, not both');
    }
    if (options.limit !== undefined && !(Number.isInteger(options.limit) && options.limit > 0)) {
      throw new RangeError(`list's limit is a positive integer, not ${options.limit}`);
    }
    const entries = host(() =>
      wit.list({
        prefix: options.prefix,
        start: options.start,
        startAfter: options.startAfter,
        end: options.end,
        reverse: options.reverse ?? false,
        limit: options.limit,
      }),
    );
    return new Map(entries.map(([k, v]) => [k, decodeValue(v) as T]));
  }

  async deleteAll(_options?: PutOptions): Promise<void> {
    host(() => wit.deleteAll());
  }

  /**
   * Runs `closure` in a transaction: its writes commit together when it returns, and are rolled
   * back if it throws (the error is rethrown) or calls `txn.rollback()`.
   */
  async transaction<T>(closure: (txn: DurableObjectTransaction) => Promise<T> | T): Promise<T> {
    host(() => wit.transactionBegin());
    const txn = new DurableObjectTransaction();
    let result: T;
    try {
      result = await closure(txn);
    } catch (e) {
      host(() => wit.transactionRollback());
      throw e;
    }
    host(() => (txn.rolledBack ? wit.transactionRollback() : wit.transactionCommit()));
    return result;
  }

  async getAlarm(_options?: GetOptions): Promise<number | null> {
    const at = host(() => wit.getAlarm());
    return at === undefined ? null : Number(at);
  }

  async setAlarm(scheduledTime: number | Date, _options?: PutOptions): Promise<void> {
    const ms = scheduledTime instanceof Date ? scheduledTime.getTime() : scheduledTime;
    if (typeof ms !== 'number' || !Number.isFinite(ms)) {
      throw new TypeError('setAlarm takes a Date or milliseconds since the Unix epoch');
    }
    host(() => wit.setAlarm(BigInt(Math.max(0, Math.trunc(ms)))));
  }

  async deleteAlarm(_options?: PutOptions): Promise<void> {
    host(() => wit.deleteAlarm());
  }

  /** Writes are durable when the event ends; nothing can make them durable earlier. */
  sync(): Promise<void> {
    return unsupported('ctx.storage.sync()', 'writes become durable together when the event ends');
  }

  get sql(): never {
    return unsupported('ctx.storage.sql', 'dohost storage is key-value; use get/put/list');
  }

  transactionSync(): never {
    return unsupported('ctx.storage.transactionSync()', 'it belongs to the SQL API; use transaction()');
  }

  getCurrentBookmark(): never {
    return unsupported('ctx.storage.getCurrentBookmark()', 'there is no point-in-time recovery');
  }

  getBookmarkForTime(): never {
    return unsupported('ctx.storage.getBookmarkForTime()', 'there is no point-in-time recovery');
  }

  onNextSessionRestoreBookmark(): never {
    return unsupported('ctx.storage.onNextSessionRestoreBookmark()', 'there is no point-in-time recovery');
  }
}

/** The storage inside `transaction()`, with `rollback()`. */
export class DurableObjectTransaction extends DurableObjectStorage {
  rolledBack = false;
  /** Discards the transaction's writes when its closure returns. */
  rollback(): void {
    this.rolledBack = true;
  }
}
