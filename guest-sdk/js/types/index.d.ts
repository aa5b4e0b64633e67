// Types of the dohost JavaScript SDK: the Cloudflare API as dohost gives it. Objects and workers
// import from 'cloudflare:workers' (or '@dohost/sdk'); WebSocketPair and friends are globals, as
// on Cloudflare. Everything that dohost lacks is left out here and throws NotSupportedError.

type Json = unknown;

interface DohostListOptions {
  prefix?: string;
  start?: string;
  startAfter?: string;
  end?: string;
  reverse?: boolean;
  limit?: number;
  allowConcurrency?: boolean;
  noCache?: boolean;
}

interface DohostGetOptions {
  allowConcurrency?: boolean;
  noCache?: boolean;
}

interface DohostPutOptions {
  allowConcurrency?: boolean;
  allowUnconfirmed?: boolean;
  noCache?: boolean;
}

/** `ctx.storage`: values are stored as JSON, with tags for what JSON cannot say (README). */
declare class DurableObjectStorage {
  get<T = Json>(key: string, options?: DohostGetOptions): Promise<T | undefined>;
  get<T = Json>(keys: string[], options?: DohostGetOptions): Promise<Map<string, T>>;
  put<T>(key: string, value: T, options?: DohostPutOptions): Promise<void>;
  put<T>(entries: Record<string, T>, options?: DohostPutOptions): Promise<void>;
  delete(key: string, options?: DohostPutOptions): Promise<boolean>;
  delete(keys: string[], options?: DohostPutOptions): Promise<number>;
  list<T = Json>(options?: DohostListOptions): Promise<Map<string, T>>;
  deleteAll(options?: DohostPutOptions): Promise<void>;
  transaction<T>(closure: (txn: DurableObjectTransaction) => Promise<T> | T): Promise<T>;
  getAlarm(options?: DohostGetOptions): Promise<number | null>;
  setAlarm(scheduledTime: number | Date, options?: DohostPutOptions): Promise<void>;
  deleteAlarm(options?: DohostPutOptions): Promise<void>;
  /** Throws NotSupportedError: writes become durable when the event ends. */
  sync(): Promise<void>;
  /** Throws NotSupportedError: dohost storage is key-value. */
  readonly sql: never;
  transactionSync(): never;
  getCurrentBookmark(): never;
  getBookmarkForTime(): never;
  onNextSessionRestoreBookmark(): never;
}

declare class DurableObjectTransaction extends DurableObjectStorage {
  rollback(): void;
}

declare class DurableObjectId {
  /** On dohost an object is its name. */
  readonly name: string;
  toString(): string;
  equals(other: DurableObjectId): boolean;
}

declare class DurableObjectStub {
  readonly id: DurableObjectId;
  readonly name: string;
  /** A call to the object: awaiting several at once runs them one after another. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
}

declare class DurableObjectNamespace {
  idFromName(name: string): DurableObjectId;
  idFromString(id: string): DurableObjectId;
  newUniqueId(options?: { jurisdiction?: string }): DurableObjectId;
  get(id: DurableObjectId, options?: { locationHint?: string }): DurableObjectStub;
  getByName(name: string): DurableObjectStub;
  jurisdiction(name: string): never;
}

declare class WebSocketRequestResponsePair {
  constructor(request: string, response: string);
  readonly request: string;
  readonly response: string;
}

declare class DurableObjectState {
  readonly id: DurableObjectId;
  readonly storage: DurableObjectStorage;
  waitUntil(promise: Promise<unknown>): void;
  blockConcurrencyWhile<T>(callback: () => Promise<T> | T): Promise<T>;
  acceptWebSocket(ws: WebSocket, tags?: string[]): void;
  getWebSockets(tag?: string): WebSocket[];
  getTags(ws: WebSocket): string[];
  setWebSocketAutoResponse(pair?: WebSocketRequestResponsePair): void;
  getWebSocketAutoResponse(): WebSocketRequestResponsePair | null;
  getWebSocketAutoResponseTimestamp(ws: WebSocket): Date | null;
  setHibernatableWebSocketEventTimeout(ms?: number): never;
  abort(reason?: string): never;
}

interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): never;
}

interface AlarmInvocationInfo {
  retryCount: number;
  isRetry: boolean;
}

/** The server end of a WebSocketPair, accepted with ctx.acceptWebSocket, and what handlers get. */
interface WebSocket {
  send(message: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  serializeAttachment(value: unknown): void;
  deserializeAttachment(): any;
  readonly readyState: number;
  /** Throws NotSupportedError: dohost has the Hibernation API only. */
  accept(): never;
  addEventListener(type: string, listener?: unknown): never;
}

declare var WebSocket: {
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;
};

declare class WebSocketPair {
  0: WebSocket;
  1: WebSocket;
}

interface ResponseInit {
  /** With status 101: the client end of the accepted WebSocketPair. */
  webSocket?: WebSocket | null;
}

interface Response {
  readonly webSocket?: WebSocket | null;
}

declare class NotSupportedError extends Error {}

declare module 'cloudflare:workers' {
  export abstract class DurableObject<Env = Record<string, any>> {
    protected readonly ctx: DurableObjectState;
    /** The same as ctx, by its older name. */
    protected readonly state: DurableObjectState;
    protected readonly env: Env;
    constructor(ctx: DurableObjectState, env: Env);
    fetch?(request: Request): Response | Promise<Response>;
    alarm?(info: AlarmInvocationInfo): void | Promise<void>;
    webSocketMessage?(ws: WebSocket, message: string | ArrayBuffer): void | Promise<void>;
    webSocketClose?(ws: WebSocket, code: number, reason: string, wasClean: boolean): void | Promise<void>;
    webSocketError?(ws: WebSocket, error: unknown): void | Promise<void>;
  }
  /** Throws NotSupportedError: a worker is `export default { fetch(request, env, ctx) }`. */
  export abstract class WorkerEntrypoint {}
  /** The app's variables and secrets (strings) and its classes by binding. */
  export const env: Record<string, any>;
  export class CallError extends Error {
    readonly code: string;
  }
  export class StorageError extends Error {
    readonly code: string;
  }
  export class WebSocketError extends Error {
    readonly code: string;
  }
  export {
    DurableObjectId,
    DurableObjectNamespace,
    DurableObjectState,
    DurableObjectStorage,
    DurableObjectStub,
    DurableObjectTransaction,
    NotSupportedError,
    WebSocketPair,
    WebSocketRequestResponsePair,
  };
}

declare module '@dohost/sdk' {
  export * from 'cloudflare:workers';
}
