// The bodies of messages this process has just committed, kept in memory
// until they are delivered: with in-flow control a message is usually
// delivered a few milliseconds after its 250, and reading its body back
// (open, read, read, close on the thread pool for a body file; a blob read
// for one in its row) cost more than any other step of a 100 KB delivery.
// A read cache only: the queue's copy on disk is the truth. A store serves
// a body from here only when the message may still be read: the SQLite
// store checks that it is kept (committed, not done: a local read), the
// PostgreSQL store that this node holds a lease on one of its deliveries
// (the claim checked the message in the statement that leased it; another
// check would be the round trip the cache saves).
//
// Bounded by bytes: when a new body would pass the limit, the oldest ones
// go first (a body nobody claims, because another node delivers it or its
// domain is deferred, simply ages out).
//
//   RecentBodies        - bodies by queue id, oldest out first beyond a byte limit.
//   RECENT_BODIES_LIMIT - the byte limit both stores use.

/** The most bytes of recently committed bodies a store holds in memory for their deliveries. */
export const RECENT_BODIES_LIMIT = 8 * 1024 * 1024;

export class RecentBodies {
  /** The chunks as they were received (not copied into one buffer: a copy per message is garbage per message). */
  readonly #bodies = new Map<string, { chunks: readonly Buffer[]; size: number }>();
  #bytes = 0;

  constructor(readonly limitBytes: number) {}

  /** add - keep a committed message's body (a body larger than the whole limit is not kept). */
  add(id: string, chunks: readonly Buffer[]): void {
    const size = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    if (size > this.limitBytes) return;
    this.delete(id);
    this.#bodies.set(id, { chunks, size });
    this.#bytes += size;
    for (const [oldest] of this.#bodies) {
      if (this.#bytes <= this.limitBytes) break;
      this.delete(oldest);
    }
  }

  /** get - the body's chunks, in order. */
  get(id: string): readonly Buffer[] | undefined {
    return this.#bodies.get(id)?.chunks;
  }

  /** delete - forget a body (its message is done or deleted). */
  delete(id: string): void {
    const body = this.#bodies.get(id);
    if (!body) return;
    this.#bodies.delete(id);
    this.#bytes -= body.size;
  }

  /** The bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }
}
