// herald's web SDK. Events are written to IndexedDB before track()
// resolves and leave it only when the server has them: a 503, a 429, an
// offline stretch, a reload or a closed tab delays them, never loses them
// (the next load sends what is pending). It also reads the user's Inbox
// and in-app messages and sends attribute updates.

import { Journal, type JournalEvent, type Prop } from "./journal.js";
import { Sender } from "./sender.js";

export type { JournalEvent, Prop } from "./journal.js";
export { retryAfter } from "./sender.js";

export interface HeraldOptions {
  /** The client API's base URL, where the host mounted inbox.Handler ("/inbox"). */
  url: string;
  /**
   * The user's token, signed by the host's backend (inbox.Tokens), or a
   * function that fetches a fresh one (called again after a 401).
   */
  token: string | (() => Promise<string>);
  /** Events per request. Default 100. */
  batchSize?: number;
  /** The longest wait between retries, ms. Default 60,000. */
  maxBackoff?: number;
  /** The IndexedDB database's name (one per user is wise). Default "herald". */
  db?: string;
  /** IndexedDB durability of each write. Default "strict" (on disk before track resolves). */
  durability?: "strict" | "relaxed" | "default";
  /** Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Defaults to globalThis.indexedDB. */
  indexedDB?: IDBFactory;
  /** Told of events the server refused as malformed (they are dropped). */
  onRejected?: (events: JournalEvent[], reasons: string[]) => void;
}

/** An item of the user's Inbox. */
export interface InboxItem {
  id: string;
  title?: string;
  body?: string;
  data?: Record<string, string>;
  category?: string;
  campaign?: string;
  created: string;
  expires?: string;
  read_at?: string;
  seen_at?: string;
  archived_at?: string;
}

/** An in-app message to show now (decided eligible by the server at this moment). */
export type InAppMessage = Omit<InboxItem, "read_at" | "seen_at" | "archived_at">;

export interface Counts {
  unread: number;
  unseen: number;
}

export type Mark = "read" | "seen" | "archived" | "unread" | "unarchived";

/** An error answer of the client API. */
export class HeraldError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "HeraldError";
  }
}

/** A random event ID (crypto.randomUUID where the page is a secure context). */
export function eventID(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** The body a keepalive request may carry (browsers allow 64 KiB in flight). */
const KEEPALIVE_BYTES = 60_000;

export class Herald {
  private readonly url: string;
  private readonly journal: Journal;
  private readonly sender: Sender;
  private readonly fetch: typeof fetch;
  private current: string | null;
  /** Events tracked on this page and not yet acknowledged, for pagehide. */
  private readonly recent = new Map<string, JournalEvent>();
  private readonly off: (() => void)[] = [];

  constructor(private readonly o: HeraldOptions) {
    this.url = o.url.replace(/\/+$/, "");
    this.fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
    this.current = typeof o.token === "string" ? o.token : null;
    const name = o.db ?? "herald";
    this.journal = new Journal(name, o.indexedDB ?? globalThis.indexedDB, o.durability ?? "strict");
    this.sender = new Sender(this.journal, {
      endpoint: `${this.url}/events`,
      token: () => this.token(),
      unauthorized: () => this.refresh(),
      fetch: (input, init) => this.fetch(input, init),
      batchSize: o.batchSize ?? 100,
      maxBackoff: o.maxBackoff ?? 60_000,
      lock: `herald:${name}:send`,
      onRejected: o.onRejected,
    });
    this.listen();
    this.sender.start(); // what an earlier page left is sent now
  }

  private listen(): void {
    const w = globalThis as unknown as Partial<Window>;
    if (typeof w.addEventListener !== "function") return;
    const online = () => this.sender.wake();
    const hide = () => this.beacon();
    w.addEventListener("online", online);
    w.addEventListener("pagehide", hide);
    this.off.push(() => {
      w.removeEventListener?.("online", online);
      w.removeEventListener?.("pagehide", hide);
    });
  }

  private async token(): Promise<string | null> {
    if (this.current === null && typeof this.o.token === "function") {
      this.current = await this.o.token();
    }
    return this.current;
  }

  private async refresh(): Promise<boolean> {
    if (typeof this.o.token !== "function") {
      this.current = null; // stop until setToken()
      return false;
    }
    this.current = await this.o.token();
    return true;
  }

  /** Replaces the user token (after a login, or when it was refused). */
  setToken(token: string): void {
    this.current = token;
    this.sender.wake();
  }

  private async add(ev: JournalEvent): Promise<string> {
    await this.journal.add(ev);
    this.recent.set(ev.id, ev);
    if (this.recent.size > 1000) this.recent.delete(this.recent.keys().next().value as string);
    this.sender.wake();
    return ev.id;
  }

  /**
   * Tracks an engagement with a message (opened, clicked, converted,
   * dismissed). Resolves with the event's ID once it is in the journal.
   */
  track(type: "opened" | "clicked" | "converted" | "dismissed", messageID: string, props?: Record<string, Prop>): Promise<string> {
    return this.add({ id: eventID(), type, message_id: messageID, at: new Date().toISOString(), props });
  }

  /** Tracks an event of the host's own ("added_to_cart"). */
  event(name: string, props?: Record<string, Prop>): Promise<string> {
    return this.add({ id: eventID(), type: "custom", name, at: new Date().toISOString(), props });
  }

  /** Updates the user's attributes (null unsets one), journaled like events. */
  setAttributes(props: Record<string, Prop>): Promise<string> {
    return this.add({ id: eventID(), type: "attributes", at: new Date().toISOString(), props });
  }

  /** How many events wait in the journal. */
  pending(): Promise<number> {
    return this.journal.size();
  }

  /** Sends what is pending now (it is sent anyway; this only skips a wait). */
  flush(): void {
    this.sender.wake();
  }

  /** Counters of this page's sender. */
  stats(): { acked: number; requests: number } {
    return { acked: this.sender.acked, requests: this.sender.requests };
  }

  /**
   * On pagehide the page may be gone before the sender's next request:
   * this page's unacknowledged events go out in a keepalive request. They
   * stay in the journal; the next load resends them, and the server
   * deduplicates.
   */
  private beacon(): void {
    if (this.current === null || this.recent.size === 0) return;
    const events: JournalEvent[] = [];
    let bytes = 20;
    for (const ev of this.recent.values()) {
      const n = JSON.stringify(ev).length + 1;
      if (bytes + n > KEEPALIVE_BYTES) break;
      events.push(ev);
      bytes += n;
    }
    try {
      void this.fetch(`${this.url}/events`, {
        method: "POST",
        keepalive: true,
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.current}` },
        body: JSON.stringify({ events }),
      }).catch(() => {});
    } catch {
      /* the journal still has them */
    }
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const token = await this.token();
    if (token === null) throw new HeraldError(401, "no user token");
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await this.fetch(`${this.url}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401 && typeof this.o.token === "function") {
      this.current = null;
    }
    if (!res.ok) {
      let msg = res.statusText;
      try {
        msg = ((await res.json()) as { error?: string }).error ?? msg;
      } catch {
        /* not JSON */
      }
      throw new HeraldError(res.status, msg);
    }
    return res.status === 204 ? (undefined as T) : ((await res.json()) as T);
  }

  /** A page of the Inbox, newest first, and the cursor of the next ("" at the end). */
  feed(q: { after?: string; limit?: number; archived?: boolean } = {}): Promise<{ items: InboxItem[]; next: string }> {
    const p = new URLSearchParams();
    if (q.after) p.set("after", q.after);
    if (q.limit) p.set("limit", String(q.limit));
    if (q.archived) p.set("archived", "true");
    const qs = p.toString();
    return this.call("GET", `/feed${qs ? `?${qs}` : ""}`);
  }

  /** The unread and unseen counts (the badge). */
  counts(): Promise<Counts> {
    return this.call("GET", "/counts");
  }

  /** Marks items; resolves with how many changed. */
  async mark(ids: string[], mark: Mark): Promise<number> {
    return (await this.call<{ changed: number }>("POST", "/mark", { ids, mark })).changed;
  }

  /** The in-app messages to show now; each is returned once, so show it. */
  async inApp(): Promise<InAppMessage[]> {
    return (await this.call<{ messages: InAppMessage[] }>("GET", "/inapp")).messages;
  }

  /**
   * Records what the user did with a displayed in-app message, through
   * the journal (so it survives going offline); a repeat counts once.
   */
  react(id: string, reaction: "clicked" | "dismissed"): Promise<string> {
    return this.add({ id: `${reaction}:${id}`, type: reaction, message_id: id, at: new Date().toISOString() });
  }

  /**
   * Follows the user's stream: counts when they change, and a hint when
   * in-app messages may be due. Reconnects (with a fresh token) until the
   * returned function is called.
   */
  subscribe(h: { counts?: (c: Counts) => void; inApp?: () => void }): () => void {
    const ctl = new AbortController();
    void this.follow(h, ctl.signal);
    return () => ctl.abort();
  }

  private async follow(h: { counts?: (c: Counts) => void; inApp?: () => void }, signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        const token = await this.token();
        const res = await this.fetch(`${this.url}/stream`, { headers: { Authorization: `Bearer ${token}` }, signal });
        if (res.status === 401) await this.refresh();
        if (!res.ok || !res.body) throw new HeraldError(res.status, "stream refused");
        failures = 0;
        await readEvents(res.body, (event, data) => {
          if (event === "counts") h.counts?.(JSON.parse(data) as Counts);
          if (event === "inapp") h.inApp?.();
        });
      } catch {
        failures++;
      }
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, Math.min(30_000, 1000 * 2 ** Math.min(failures, 5))));
    }
  }

  /** Stops sending and following; pending events stay in the journal. */
  async close(): Promise<void> {
    for (const f of this.off) f();
    await this.sender.stop();
    await this.journal.close();
  }
}

/** Reads a server-sent-events body, calling on for each event. */
export async function readEvents(body: ReadableStream<Uint8Array>, on: (event: string, data: string) => void): Promise<void> {
  const reader = body.getReader();
  const text = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += text.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length > 0) on(event, data.join("\n"));
    }
  }
}
