// The chat room of examples/chat-room, in TypeScript on Cloudflare's WebSocket Hibernation API.
//
// GET /ws?user=NAME (an upgrade) joins; the joiner first gets {"type":"history","messages"}.
// A text message, plain or {"text"}, is stored as {"id","user","text","timestamp"} (ids from 1,
// the last 100 kept) and broadcast as {"type":"message",...} to everyone, the sender included.
// When someone leaves, the others get {"type":"user_left","user"}. GET /messages: the history.
//
// The instance keeps nothing in memory: who is on a socket lives in its attachment, so the room
// works the same after it hibernates between messages, or after a redeploy.
import { DurableObject } from 'cloudflare:workers';

const HISTORY = 100;

interface Message {
  id: number;
  user: string;
  text: string;
  timestamp: number;
}

const key = (id: number) => `msg:${String(id).padStart(20, '0')}`;

export class ChatRoom extends DurableObject {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/ws') {
      if (request.headers.get('upgrade') !== 'websocket') {
        return Response.json({ error: 'expected a WebSocket upgrade' }, { status: 426 });
      }
      const [client, server] = Object.values(new WebSocketPair());
      this.ctx.acceptWebSocket(server, ['chat']);
      server.serializeAttachment({ user: url.searchParams.get('user') ?? 'anonymous' });
      server.send(JSON.stringify({ type: 'history', messages: await this.history() }));
      return new Response(null, { status: 101, webSocket: client });
    }
    if (url.pathname === '/messages' && request.method === 'GET') {
      return Response.json(await this.history());
    }
    return Response.json({ error: 'not found' }, { status: 404 });
  }

  async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer) {
    if (typeof data !== 'string') return;
    let text = data;
    try {
      const parsed = JSON.parse(data);
      if (typeof parsed?.text === 'string') text = parsed.text;
    } catch {}
    const { user } = ws.deserializeAttachment() as { user: string };
    const id = ((await this.ctx.storage.get<number>('next_id')) ?? 1);
    const message: Message = { id, user, text, timestamp: Date.now() };
    await this.ctx.storage.put({ next_id: id + 1, [key(id)]: message });
    if (id > HISTORY) await this.ctx.storage.delete(key(id - HISTORY));
    this.broadcast({ type: 'message', ...message });
  }

  async webSocketClose(ws: WebSocket) {
    this.left(ws);
  }

  async webSocketError(ws: WebSocket) {
    this.left(ws);
  }

  private left(ws: WebSocket) {
    const { user } = ws.deserializeAttachment() as { user: string };
    this.broadcast({ type: 'user_left', user });
  }

  private broadcast(message: object) {
    const text = JSON.stringify(message);
    for (const socket of this.ctx.getWebSockets('chat')) socket.send(text);
  }

  private async history(): Promise<Message[]> {
    const stored = await this.ctx.storage.list<Message>({ prefix: 'msg:', reverse: true, limit: HISTORY });
    return [...stored.values()].reverse();
  }
}
