// Hand-written declarations of the WIT imports as componentize-js 0.23 binds them (`jco
// guest-types` 1.35.0 fails here: "failed to read path for WIT ... (os error 44)").
// Mapping: kebab-case → camelCase; record → object; option<T> → T | undefined; u64 → bigint
// (numbers accepted when lowering); list<u8> → Uint8Array (of another realm: `instanceof
// Uint8Array` is false); list<u64> → BigUint64Array; tuple → array; variant → {tag, val};
// enum → string; result<T, E> → returns T or throws ComponentError with `payload` E.

declare module 'dohost:object/types@0.3.0' {
  export type Header = [string, string];
  export interface Request { method: string; path: string; headers: Header[]; body: Uint8Array<ArrayBuffer>; clientAddress?: string }
  export interface Response { status: number; headers: Header[]; body: Uint8Array<ArrayBuffer> }
}
declare module 'dohost:object/storage@0.3.0' {
  export type StorageError = { tag: 'limit-exceeded' | 'invalid-argument' | 'internal'; val: string };
  export type Entry = [string, Uint8Array<ArrayBuffer>];
  export interface ListOptions { prefix?: string; start?: string; startAfter?: string; end?: string; reverse: boolean; limit?: number }
  export function get(key: string): Uint8Array<ArrayBuffer> | undefined;
  export function getMany(keys: string[]): Entry[];
  export function put(key: string, value: Uint8Array): void;
  export function putMany(entries: [string, Uint8Array][]): void;
  function _delete(key: string): boolean;
  export { _delete as delete };
  export function deleteMany(keys: string[]): number;
  export function list(options: ListOptions): Entry[];
  export function deleteAll(): void;
  export function transactionBegin(): void;
  export function transactionCommit(): void;
  export function transactionRollback(): void;
  export function getAlarm(): bigint | undefined;
  export function setAlarm(scheduledTimeMs: bigint | number): void;
  export function deleteAlarm(): void;
}
declare module 'dohost:object/identity@0.3.0' {
  export function namespace(): string;
  export function name(): string;
  export function id(): string;
  export function newUniqueName(): string;
}
declare module 'dohost:object/logging@0.3.0' {
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
  export function log(level: Level, message: string): void;
}
declare module 'dohost:object/config@0.3.0' {
  export function get(name: string): string | undefined;
}
declare module 'dohost:object/websockets@0.3.0' {
  export type Socket = bigint;
  export interface AutoResponse { request: string; response: string }
  export function accept(tags: string[]): Socket;
  export function getSockets(tag?: string): BigUint64Array;
  export function sendText(s: Socket, text: string): void;
  export function sendBinary(s: Socket, data: Uint8Array): void;
  export function close(s: Socket, code: number, reason: string): void;
  export function getTags(s: Socket): string[];
  export function setAttachment(s: Socket, data: Uint8Array): void;
  export function getAttachment(s: Socket): Uint8Array<ArrayBuffer> | undefined;
  export function setAutoResponse(pair?: AutoResponse): void;
  export function getAutoResponse(): AutoResponse | undefined;
  export function getAutoResponseTimestamp(s: Socket): bigint | undefined;
}
declare module 'dohost:object/stubs@0.3.0' {
  import type { Request, Response } from 'dohost:object/types@0.3.0';
  export function fetch(binding: string, name: string, request: Request): Response;
  export function newUniqueName(): string;
}
