// The workerd side of dohost-bench: the same three objects as dohost's, behind the same URLs.
//
//   /counter/{name}/...        -> Counter   (examples/counter)
//   /chat/{room}/...           -> ChatRoom  (examples/chat-room)
//   /hello/{name}/...          -> "ok" from this stateless worker (the ceiling)
//   /w/counter/{name}/...      -> Counter, the same way (dohost's side goes through its front worker)
//   /w/relay/{name}/...        -> Relay, which calls the Counter of the same name through a stub
//   /pubsub/{room}/...         -> PubSub    (examples/pubsub: server-sent events)
//
// Like dohost, the object sees the path below its address with the query kept: `/ws?user=ann`.

import { DurableObject } from "cloudflare:workers";

function error(message, status) {
  return Response.json({ error: message }, { status });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    // `/w/...` is the same as `/...`: like dohost's `/w/` routes, through this front worker.
    const parts = url.pathname.split("/");
    if (parts[1] === "w") parts.splice(1, 1);
    const [, namespace = "", rawName = "", ...rest] = parts;
    if (namespace === "hello") {
      return new Response("ok", { headers: { "content-type": "text/plain; charset=utf-8" } });
    }
    const bindings = { counter: env.COUNTER, chat: env.CHAT, relay: env.RELAY, pubsub: env.PUBSUB };
    const binding = bindings[namespace] ?? null;
    if (!binding) return error(`no namespace ${JSON.stringify(namespace)} is deployed`, 404);
    let name;
    try {
      name = decodeURIComponent(rawName);
    } catch {
      return error("invalid object name", 400);
    }
    if (!name) return error("invalid object name", 400);
    const inner = new URL("/" + rest.join("/") + url.search, url.origin);
    const stub = binding.get(binding.idFromName(name));
    const forwarded = new Request(inner, request);
    if (namespace === "relay") forwarded.headers.set("x-object-name", name);
    return stub.fetch(forwarded);
  },
};

// examples/counter: POST increments the stored "count" and answers {"count":n}; GET reads it.
export class Counter extends DurableObject {
  async fetch(request) {
    let count = (await this.ctx.storage.get("count")) ?? 0;
    if (request.method === "POST") {
      count += 1;
      await this.ctx.storage.put("count", count);
    } else if (request.method !== "GET") {
      return error("use GET or POST", 405);
    }
    return Response.json({ count });
  }
}

// bench/guests/relay: passes each request on to the Counter of its own name.
export class Relay extends DurableObject {
  async fetch(request) {
    // An object does not know its own name here: the front worker passes it on.
    const name = request.headers.get("x-object-name");
    const counter = this.env.COUNTER.get(this.env.COUNTER.idFromName(name));
    return counter.fetch(request);
  }
}

// examples/chat-room, with the WebSocket hibernation API.
const HISTORY = 100;
const TAG = "chat";
const messageKey = (id) => `msg:${String(id).padStart(20, "0")}`;

export class ChatRoom extends DurableObject {
  async fetch(request) {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === "/ws") {
      if ((request.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
        return error("GET /ws needs a WebSocket upgrade", 426);
      }
      const user = url.searchParams.get("user") || "anonymous";
      const [client, server] = Object.values(new WebSocketPair());
      this.ctx.acceptWebSocket(server, [TAG]);
      // dohost keys the user by socket id; a JS socket has none, so the attachment carries one.
      const socket = crypto.randomUUID();
      server.serializeAttachment({ user, socket });
      await this.ctx.storage.put(`socket:${socket}`, user);
      server.send(JSON.stringify({ type: "history", messages: await this.history() }));
      return new Response(null, { status: 101, webSocket: client });
    }
    if (request.method === "GET" && url.pathname === "/messages") {
      return Response.json(await this.history());
    }
    return error("not found", 404);
  }

  async history() {
    const newestFirst = await this.ctx.storage.list({ prefix: "msg:", reverse: true, limit: HISTORY });
    return [...newestFirst.values()].reverse();
  }

  async store(user, text) {
    const storage = this.ctx.storage;
    const id = (await storage.get("next_id")) ?? 1;
    await storage.put("next_id", id + 1);
    const message = { id, user, text, timestamp: Date.now() };
    await storage.put(messageKey(id), message);
    if (id > HISTORY) {
      const oldest = await storage.list({ prefix: "msg:", end: messageKey(id - HISTORY + 1), limit: 128 });
      await storage.delete([...oldest.keys()]);
    }
    return message;
  }

  broadcast(value, except) {
    const text = JSON.stringify(value);
    for (const ws of this.ctx.getWebSockets(TAG)) {
      if (ws === except) continue;
      try {
        ws.send(text);
      } catch {
        // closed meanwhile: its close event follows
      }
    }
  }

  async webSocketMessage(ws, raw) {
    if (typeof raw !== "string") return;
    let text = raw;
    try {
      const incoming = JSON.parse(raw);
      if (incoming && typeof incoming.text === "string") text = incoming.text;
    } catch {
      // plain text
    }
    const user = ws.deserializeAttachment()?.user ?? "anonymous";
    const m = await this.store(user, text);
    this.broadcast({ type: "message", id: m.id, user: m.user, text: m.text, timestamp: m.timestamp });
  }

  async leave(ws) {
    const socket = ws.deserializeAttachment()?.socket;
    const key = `socket:${socket}`;
    const user = (await this.ctx.storage.get(key)) ?? "anonymous";
    await this.ctx.storage.delete(key);
    this.broadcast({ type: "user_left", user }, ws);
  }

  async webSocketClose(ws, code, reason) {
    try {
      ws.close(code, reason);
    } catch {
      // already closed (auto-reply to close)
    }
    await this.leave(ws);
  }

  async webSocketError(ws) {
    await this.leave(ws);
  }
}

// examples/pubsub: GET /events subscribes to server-sent events, POST /publish stores the text
// (the last 100 kept) and writes it to every subscriber. A JavaScript object cannot hand its
// streams to the runtime, so this one keeps their writers in memory and stays awake while any
// subscriber is connected; dohost's hibernates.
const KEPT = 100;
const eventKey = (id) => `event:${String(id).padStart(20, "0")}`;
const encoder = new TextEncoder();

export class PubSub extends DurableObject {
  subscribers = new Set();

  async fetch(request) {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === "/events") {
      const { readable, writable } = new TransformStream();
      const writer = writable.getWriter();
      this.subscribers.add(writer);
      writer.closed.catch(() => this.subscribers.delete(writer));
      return new Response(readable, {
        headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
      });
    }
    if (request.method === "POST" && url.pathname === "/publish") {
      const text = await request.text();
      const storage = this.ctx.storage;
      const id = (await storage.get("next_id")) ?? 1;
      await storage.put("next_id", id + 1);
      await storage.put(eventKey(id), text);
      if (id > KEPT) await storage.delete(eventKey(id - KEPT));
      const frame = encoder.encode(`id: ${id}\ndata: ${text}\n\n`);
      for (const writer of this.subscribers) {
        writer.write(frame).catch(() => this.subscribers.delete(writer));
      }
      return Response.json({ id });
    }
    return error("not found", 404);
  }
}
