import { IDBFactory } from "fake-indexeddb";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Herald, type JournalEvent, readEvents, retryAfter } from "../src/index.js";

/** A scripted events endpoint: it answers each request with the next status, then 202. */
class Server {
  requests: JournalEvent[][] = [];
  recorded = new Map<string, JournalEvent>();
  script: (number | { status: number; headers?: Record<string, string>; body?: unknown })[] = [];
  maxEvents = Infinity;
  tokens: string[] = [];

  fetch = async (_url: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const events = (JSON.parse(String(init?.body)) as { events: JournalEvent[] }).events;
    this.requests.push(events);
    this.tokens.push(new Headers(init?.headers).get("Authorization") ?? "");
    const next = this.script.shift();
    if (next === -1) throw new TypeError("Failed to fetch");
    const step = typeof next === "number" ? { status: next } : next;
    if (step && step.status !== 202) {
      return new Response(JSON.stringify(step.body ?? { error: "no" }), { status: step.status, headers: step.headers });
    }
    if (events.length > this.maxEvents) return new Response("{}", { status: 413 });
    for (const e of events) this.recorded.set(e.id, e);
    return new Response(JSON.stringify({ accepted: events.length }), { status: 202 });
  };
}

const open: Herald[] = [];
function client(idb: IDBFactory, s: Server, extra: Partial<ConstructorParameters<typeof Herald>[0]> = {}): Herald {
  const h = new Herald({ url: "https://api.test/inbox/", token: "t1", indexedDB: idb, fetch: s.fetch, maxBackoff: 20, ...extra });
  open.push(h);
  return h;
}

async function until(f: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

afterEach(async () => {
  for (const h of open.splice(0)) await h.close();
  vi.unstubAllGlobals();
});

describe("the journal", () => {
  it("holds an event before track resolves, and until the server has it", async () => {
    const s = new Server();
    s.script = [503, 503];
    const h = client(new IDBFactory(), s);
    const id = await h.event("added_to_cart", { sku: "A-1", qty: 2 });
    expect(await h.pending()).toBe(1); // committed; the server has not taken it (two 503s first)
    await until(() => s.recorded.has(id));
    await until(async () => (await h.pending()) === 0);
    expect(s.requests.length).toBe(3);
    expect(s.requests.every((r) => r[0]?.id === id)).toBe(true); // the same ID every time
    expect(s.recorded.get(id)).toMatchObject({ type: "custom", name: "added_to_cart", props: { sku: "A-1", qty: 2 } });
  });

  it("commits a burst together and keeps every event", async () => {
    const s = new Server();
    s.script = [503];
    const h = client(new IDBFactory(), s, { batchSize: 50 });
    const ids = await Promise.all(Array.from({ length: 300 }, (_, n) => h.event("tap", { n })));
    expect(new Set(ids).size).toBe(300);
    await until(() => s.recorded.size === 300);
    expect([...s.recorded.keys()].sort()).toEqual([...ids].sort());
  });

  it("survives a reload: the next page sends what the last one left", async () => {
    const idb = new IDBFactory();
    const down = new Server();
    down.script = Array(1000).fill(503);
    const first = client(idb, down);
    const ids = [await first.event("a"), await first.event("b")];
    await first.close(); // the tab is gone, the server never took them
    expect(down.recorded.size).toBe(0);
    const up = new Server();
    const second = client(idb, up);
    await until(() => up.recorded.size === 2);
    expect([...up.recorded.keys()].sort()).toEqual(ids.sort());
    expect(await second.pending()).toBe(0);
  });

  it("keeps one reaction per message and kind", async () => {
    const s = new Server();
    s.script = [503];
    const h = client(new IDBFactory(), s);
    await h.react("m1", "clicked");
    await h.react("m1", "clicked");
    await h.react("m1", "dismissed");
    await until(() => s.recorded.size === 2);
    expect([...s.recorded.keys()].sort()).toEqual(["clicked:m1", "dismissed:m1"]);
  });
});

describe("the sender", () => {
  it("honours Retry-After and retries network errors", async () => {
    const s = new Server();
    s.script = [{ status: 429, headers: { "Retry-After": "0.2" } }, -1];
    const h = client(new IDBFactory(), s, { maxBackoff: 5000 });
    const t0 = Date.now();
    await h.event("x");
    await until(() => s.recorded.size === 1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(s.requests.length).toBe(3);
  });

  it("halves a batch the server finds too large", async () => {
    const s = new Server();
    s.maxEvents = 10;
    s.script = [503];
    const h = client(new IDBFactory(), s, { batchSize: 64 });
    await Promise.all(Array.from({ length: 40 }, () => h.event("x")));
    await until(() => s.recorded.size === 40);
    expect(Math.max(...s.requests.slice(-2).map((r) => r.length))).toBeLessThanOrEqual(10);
  });

  it("drops only the events the server names as malformed", async () => {
    const s = new Server();
    const rejected: string[] = [];
    s.script = [503, { status: 400, body: { accepted: 1, rejected: [{ index: 1, reason: "name: too long" }] } }];
    const h = client(new IDBFactory(), s, { onRejected: (evs, why) => rejected.push(...evs.map((e, i) => `${e.name}: ${why[i]}`)) });
    await h.event("ok");
    await h.event("bad");
    await until(async () => (await h.pending()) === 0);
    expect(rejected).toEqual(["bad: name: too long"]);
  });

  it("waits while offline and sends when the browser is back online", async () => {
    const nav = { onLine: false };
    vi.stubGlobal("navigator", nav);
    const listeners: Record<string, (() => void)[]> = {};
    vi.stubGlobal("addEventListener", (t: string, f: () => void) => (listeners[t] ??= []).push(f));
    vi.stubGlobal("removeEventListener", () => {});
    const s = new Server();
    const h = client(new IDBFactory(), s, { maxBackoff: 60_000 });
    await h.event("x");
    await new Promise((r) => setTimeout(r, 100));
    expect(s.requests.length).toBe(0);
    nav.onLine = true;
    for (const f of listeners["online"] ?? []) f();
    await until(() => s.recorded.size === 1, 1000);
  });

  it("asks for a fresh token after a 401 and resends", async () => {
    const s = new Server();
    s.script = [401];
    let n = 0;
    const h = client(new IDBFactory(), s, { token: async () => `tok-${++n}` });
    await h.event("x");
    await until(() => s.recorded.size === 1);
    expect(s.tokens).toEqual(["Bearer tok-1", "Bearer tok-2"]);
  });
});

describe("helpers", () => {
  it("parses Retry-After as seconds or a date", () => {
    expect(retryAfter("3")).toBe(3000);
    expect(retryAfter(new Date(10_000).toUTCString(), 4000)).toBe(6000);
    expect(retryAfter("soon")).toBeNull();
    expect(retryAfter(null)).toBeNull();
  });

  it("reads server-sent events split anywhere", async () => {
    const text = 'retry: 2000\n\nevent: counts\ndata: {"unread":1,"unseen":2}\n\n: ping\n\nevent: inapp\ndata: {}\n\n';
    const chunks = [text.slice(0, 17), text.slice(17, 40), text.slice(40)];
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const ch of chunks) c.enqueue(new TextEncoder().encode(ch));
        c.close();
      },
    });
    const got: string[] = [];
    await readEvents(body, (e, d) => got.push(`${e} ${d}`));
    expect(got).toEqual(['counts {"unread":1,"unseen":2}', "inapp {}"]);
  });
});
