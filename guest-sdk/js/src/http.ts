// Requests and responses: the WIT records on one side, the Fetch API's objects on the other.
// `request.ts` and `response.ts` hold the SDK's own Request and Response.

import type { Request as WitRequest, Response as WitResponse, Header } from 'dohost:object/types@0.3.0';
import { partsOf } from './response';

export type { WitRequest, WitResponse };
export { toRequest, toWitRequest } from './request';
export { upgradeOf } from './response';

/** What a handler returned, as the WIT response. */
export async function toWitResponse(response: unknown): Promise<WitResponse> {
  if (!(response instanceof Response)) {
    throw new TypeError(`the handler must return a Response, not ${describe(response)}`);
  }
  const { status, headers: all, body } = await partsOf(response);
  const headers: Header[] = [];
  all.forEach((v, k) => {
    if (k !== 'content-length') headers.push([k, v]);
  });
  return { status, headers, body };
}

/** A WIT response (from a stub call) as a Fetch API Response. */
export function fromWitResponse(r: WitResponse): Response {
  const nullBody = r.status === 101 || r.status === 204 || r.status === 205 || r.status === 304;
  return new Response(nullBody ? null : new Uint8Array(r.body), { status: r.status, headers: r.headers });
}

export function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'object') return `a ${(value as object).constructor?.name ?? 'object'}`;
  return `a ${typeof value}`;
}
