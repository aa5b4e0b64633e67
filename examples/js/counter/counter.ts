// The counter of examples/counter, in TypeScript on the Cloudflare API: `POST` increments the
// count and `GET` reads it, both answering {"count": n}; other methods get a 405.
//
// One object per name runs one event at a time, so a read-modify-write needs no lock: a thousand
// racing POSTs get 1..1000, once each.
import { DurableObject } from 'cloudflare:workers';

export class Counter extends DurableObject {
  async fetch(request: Request): Promise<Response> {
    let count = (await this.ctx.storage.get<number>('count')) ?? 0;
    switch (request.method) {
      case 'GET':
        break;
      case 'POST':
        count += 1;
        await this.ctx.storage.put('count', count);
        break;
      default:
        return Response.json({ error: `${request.method} is not allowed` }, { status: 405 });
    }
    return Response.json({ count });
  }
}
