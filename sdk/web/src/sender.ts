// The sender: sends the journal's oldest events in batches and removes
// them only once the server has them (202). 5xx, 429 and network errors
// wait (the server's Retry-After, else exponential backoff with jitter)
// and resend the same events with the same IDs; offline waits for the
// network; 413 halves the batch.

import type { Entry, Journal, JournalEvent } from "./journal.js";

export interface SenderOptions {
  /** The events endpoint (…/events). */
  endpoint: string;
  /** The current user token, or null when there is none to send with. */
  token: () => Promise<string | null>;
  /** Called after a 401: the token may be refreshed; false stops until wake(). */
  unauthorized: () => Promise<boolean>;
  fetch: typeof fetch;
  batchSize: number;
  maxBackoff: number;
  /** The lock name that keeps one tab sending at a time. */
  lock: string;
  /** Called with events the server refused as malformed (they are dropped). */
  onRejected?: (events: JournalEvent[], reasons: string[]) => void;
}

const sleepOr = (ms: number, wake: Promise<void>) =>
  Promise.race([new Promise<void>((r) => setTimeout(r, ms)), wake]);

/** Parses Retry-After (seconds or an HTTP date) into milliseconds. */
export function retryAfter(h: string | null, now = Date.now()): number | null {
  if (!h) return null;
  const s = Number(h);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const t = Date.parse(h);
  return Number.isNaN(t) ? null : Math.max(0, t - now);
}

type Outcome = "sent" | "empty" | { wait: number } | "stop";

export class Sender {
  private wakeUp: () => void = () => {};
  private kicked = false;
  private closed = false;
  private failures = 0;
  private size: number;
  private loop: Promise<void> | null = null;
  /** Events the server has acknowledged since load. */
  acked = 0;
  /** Requests made, retries included. */
  requests = 0;

  constructor(
    private readonly journal: Journal,
    private readonly o: SenderOptions,
  ) {
    this.size = o.batchSize;
  }

  /** Starts sending (idempotent). */
  start(): void {
    this.loop ??= this.run();
  }

  /** Sends now instead of waiting out a backoff or the idle wait. */
  wake(): void {
    this.kicked = true;
    this.wakeUp();
  }

  async stop(): Promise<void> {
    this.closed = true;
    this.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      this.kicked = false;
      let out: Outcome;
      try {
        out = await this.locked(() => this.once());
      } catch {
        out = { wait: 1000 }; // the journal itself failed: try again
      }
      if (out === "sent" || this.kicked || this.closed) continue;
      const woken = new Promise<void>((r) => (this.wakeUp = r));
      if (out === "empty" || out === "stop") await woken;
      else await sleepOr(out.wait, woken);
    }
  }

  private async locked(f: () => Promise<Outcome>): Promise<Outcome> {
    const locks = (globalThis.navigator as Navigator | undefined)?.locks;
    if (!locks) return f();
    return locks.request(this.o.lock, f) as Promise<Outcome>;
  }

  private backoff(hint: number | null): { wait: number } {
    this.failures++;
    const exp = Math.min(this.o.maxBackoff, 500 * 2 ** Math.min(this.failures - 1, 16));
    const wait = hint ?? exp * (0.5 + Math.random() / 2);
    return { wait: Math.min(wait, this.o.maxBackoff) };
  }

  /** Sends one batch. */
  private async once(): Promise<Outcome> {
    const batch = await this.journal.peek(this.size);
    if (batch.length === 0) return "empty";
    const nav = globalThis.navigator as Navigator | undefined;
    if (nav && nav.onLine === false) return this.backoff(null);
    const token = await this.o.token();
    if (token === null) return "stop";
    let res: Response;
    try {
      this.requests++;
      res = await this.o.fetch(this.o.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify({ events: batch.map((e) => e.ev) }),
      });
    } catch {
      return this.backoff(null); // offline, refused, reset
    }
    return this.answer(res, batch);
  }

  private async answer(res: Response, batch: Entry[]): Promise<Outcome> {
    const s = res.status;
    if (s === 202 || s === 400) {
      if (s === 400) await this.rejected(res, batch);
      await this.journal.remove(batch.map((e) => e.seq));
      this.acked += batch.length;
      this.failures = 0;
      this.size = Math.min(this.o.batchSize, this.size * 2);
      return "sent";
    }
    if (s === 413) {
      if (this.size > 1) {
        this.size = Math.max(1, Math.floor(this.size / 2));
        return "sent";
      }
      await this.drop(batch, "too large");
      return "sent";
    }
    if (s === 401 || s === 403) {
      return (await this.o.unauthorized()) ? "sent" : "stop";
    }
    return this.backoff(retryAfter(res.headers.get("Retry-After")));
  }

  /** A 400 names the malformed events; the others were recorded. */
  private async rejected(res: Response, batch: Entry[]): Promise<void> {
    let body: { rejected?: { index: number; reason: string }[] } = {};
    try {
      body = (await res.json()) as typeof body;
    } catch {
      /* a 400 without reasons: the batch as a whole was refused */
    }
    const r = body.rejected ?? batch.map((_, index) => ({ index, reason: "refused" }));
    this.o.onRejected?.(
      r.map((x) => batch[x.index]?.ev).filter((e): e is JournalEvent => e !== undefined),
      r.map((x) => x.reason),
    );
  }

  private async drop(batch: Entry[], reason: string): Promise<void> {
    this.o.onRejected?.(batch.map((e) => e.ev), batch.map(() => reason));
    await this.journal.remove(batch.map((e) => e.seq));
  }
}
