// The journal: events wait in IndexedDB until the server has them. A
// track() resolves once its event is committed; calls made together share
// one transaction (a group commit), so a burst costs one disk write.

/** A property value: flat, as the server takes it. */
export type Prop = string | number | boolean | null;

/** An event as it is journaled and sent. */
export interface JournalEvent {
  /** Made by the client; the server deduplicates by it, so resending is safe. */
  id: string;
  type: string;
  /** RFC 3339 time of the event. */
  at: string;
  message_id?: string;
  name?: string;
  props?: Record<string, Prop>;
}

/** A journaled event and its place in the journal. */
export interface Entry {
  seq: number;
  ev: JournalEvent;
}

interface Waiting {
  ev: JournalEvent;
  resolve: () => void;
  reject: (e: unknown) => void;
}

const STORE = "events";

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("herald: journal transaction aborted"));
  });
}

export class Journal {
  private readonly db: Promise<IDBDatabase>;
  private waiting: Waiting[] = [];
  private writing = false;

  constructor(
    name: string,
    idb: IDBFactory = indexedDB,
    private readonly durability: "strict" | "relaxed" | "default" = "strict",
  ) {
    this.db = new Promise((resolve, reject) => {
      const r = idb.open(name, 1);
      r.onupgradeneeded = () => {
        const s = r.result.createObjectStore(STORE, { keyPath: "seq", autoIncrement: true });
        s.createIndex("id", "ev.id", { unique: true });
      };
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
      r.onblocked = () => reject(new Error("herald: journal blocked by another version"));
    });
  }

  /** Adds an event (once per ID) and resolves when it is committed. */
  add(ev: JournalEvent): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ ev, resolve, reject });
      if (!this.writing) void this.write();
    });
  }

  private async write(): Promise<void> {
    this.writing = true;
    try {
      while (this.waiting.length > 0) {
        const group = this.waiting;
        this.waiting = [];
        try {
          const db = await this.db;
          const tx = db.transaction(STORE, "readwrite", { durability: this.durability });
          const s = tx.objectStore(STORE);
          const ids = s.index("id");
          for (const w of group) {
            const c = ids.count(w.ev.id);
            c.onsuccess = () => {
              if (c.result === 0) s.add({ ev: w.ev });
            };
          }
          await done(tx);
          for (const w of group) w.resolve();
        } catch (e) {
          for (const w of group) w.reject(e);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /** The oldest events, at most limit. */
  async peek(limit: number): Promise<Entry[]> {
    const db = await this.db;
    const tx = db.transaction(STORE, "readonly");
    const out: Entry[] = [];
    await new Promise<void>((resolve, reject) => {
      const c = tx.objectStore(STORE).openCursor();
      c.onsuccess = () => {
        const cur = c.result;
        if (!cur || out.length >= limit) return resolve();
        out.push(cur.value as Entry);
        cur.continue();
      };
      c.onerror = () => reject(c.error);
    });
    return out;
  }

  /** Removes the events the server has. */
  async remove(seqs: number[]): Promise<void> {
    if (seqs.length === 0) return;
    const db = await this.db;
    const tx = db.transaction(STORE, "readwrite", { durability: this.durability });
    const s = tx.objectStore(STORE);
    for (const seq of seqs) s.delete(seq);
    await done(tx);
  }

  /** How many events wait. */
  async size(): Promise<number> {
    const db = await this.db;
    return request(db.transaction(STORE, "readonly").objectStore(STORE).count());
  }

  async close(): Promise<void> {
    (await this.db).close();
  }
}
