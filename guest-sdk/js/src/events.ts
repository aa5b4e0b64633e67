// What every event needs, in objects and workers alike: console output to the host's log, timers
// that cannot outlive their event, `waitUntil`, and failures turned into the WIT result's error.

import * as wlogging from 'dohost:object/logging@0.3.0';

// dohost connects no stdio, so console output goes to the host's log (and its live tail).
function format(args: unknown[]): string {
  return args
    .map((a) => (typeof a === 'string' ? a : a instanceof Error ? String(a.stack ? `${a}\n${a.stack}` : a) : json(a)))
    .join(' ');
}

function json(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, x) => (typeof x === 'bigint' ? `${x}` : x)) ?? String(value);
  } catch {
    return String(value);
  }
}

const log = (level: wlogging.Level) => (...args: unknown[]) => wlogging.log(level, format(args));
(globalThis as any).console = {
  log: log('info'),
  info: log('info'),
  debug: log('debug'),
  trace: log('trace'),
  warn: log('warn'),
  error: log('error'),
};

// The engine runs its event loop only until the handler's promise settles, so a timer still
// pending then would fire inside some later event and land its writes in that event's commit.
// Timers are tracked, and those left at the end of an event are cancelled with a warning.
const pending = new Set<unknown>();
const g = globalThis as any;
const [setTimeout0, clearTimeout0, setInterval0, clearInterval0] = [g.setTimeout, g.clearTimeout, g.setInterval, g.clearInterval];
g.setTimeout = (f: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
  const id = setTimeout0((...a: unknown[]) => {
    pending.delete(id);
    f(...a);
  }, ms, ...args);
  pending.add(id);
  return id;
};
g.clearTimeout = (id: unknown) => {
  pending.delete(id);
  clearTimeout0(id);
};
g.setInterval = (f: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
  const id = setInterval0(f, ms, ...args);
  pending.add(id);
  return id;
};
g.clearInterval = (id: unknown) => {
  pending.delete(id);
  clearInterval0(id);
};

let waiting: Promise<unknown>[] = [];

/** Work the event waits for before it ends and commits: there is no background execution. */
export function waitUntil(promise: Promise<unknown>): void {
  waiting.push(Promise.resolve(promise));
}

async function endOfEvent(): Promise<void> {
  while (waiting.length) {
    const batch = waiting;
    waiting = [];
    await Promise.allSettled(batch);
  }
  if (pending.size) {
    console.warn(`dohost: cancelling ${pending.size} timer(s) still pending at the end of the event; use ctx.waitUntil to wait for them`);
    for (const id of pending) {
      clearTimeout0(id);
      clearInterval0(id);
    }
    pending.clear();
  }
}

/**
 * Runs one event's handler. A failure becomes the WIT result's `err` string: componentize-js
 * lowers a thrown string as `err`, while a thrown Error would trap the instance.
 */
export function runEvent<T>(handler: () => Promise<T> | T): Promise<T> {
  // Plain promise chaining, and the end-of-event work only when there is some: in this engine
  // each async frame and await costs microseconds on every event.
  const settle = () => (waiting.length || pending.size ? endOfEvent() : undefined);
  return new Promise<T>((resolve) => resolve(handler())).then(
    (value) => {
      const more = settle();
      return more ? more.then(() => value) : value;
    },
    (e) => {
      const more = settle();
      const fail = () => {
        throw failure(e);
      };
      return more ? more.then(fail) : fail();
    },
  );
}

function failure(e: any): string {
  return e instanceof Error ? (e.stack ? `${e}\n${e.stack}` : String(e)) : `uncaught: ${json(e)}`;
}
