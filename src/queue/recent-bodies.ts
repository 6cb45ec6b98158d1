// The bodies of messages this process has just committed, kept in memory
// until they are delivered: with in-flow control a message is usually
// delivered a few milliseconds after its 250, and reading its body back
// (open, read, read, close on the thread pool for a body file; a blob read
// for one in its row; a round trip to PostgreSQL) cost more than any other
// step of a delivery.
//
// Decides when memory may answer for the queue: a read cache only, the
// queue's copy is the truth, and a body is served from here only to a
// delivery this process holds a lease on (from its claim until its attempt
// is recorded or the lease given back). The claim checked that the message
// was queued in the statement that leased it, and no one can make it done
// while the lease is held; a check at each read would be the very query
// the cache saves. A message deleted by the operator while its delivery is
// under way may still go out, as with Postfix's postsuper -d on a message
// in the active queue. Any other read goes to the store, which sees deletes
// made by another process or node.
//
// Bounded by bytes: when a new body would pass the limit, the oldest ones
// go first (a body nobody claims, because another node delivers it or its
// domain is deferred, simply ages out).
//
//   RecentBodies        - bodies by queue id, oldest out first beyond a byte limit, served to leased deliveries.
//   RECENT_BODIES_LIMIT - the byte limit both stores use.

/** The most bytes of recently committed bodies a store holds in memory for their deliveries. */
export const RECENT_BODIES_LIMIT = 8 * 1024 * 1024;

export class RecentBodies {
  /** The chunks as they were received (not copied into one buffer: a copy per message is garbage per message). */
  readonly #bodies = new Map<string, { chunks: readonly Buffer[]; size: number }>();
  #bytes = 0;
  /** The message of each delivery leased here, and how many leased deliveries each message has. */
  readonly #messageOfLease = new Map<string, string>();
  readonly #leasesOfMessage = new Map<string, number>();

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

  /** leased - this process claimed delivery `deliveryId` of message `messageId`. */
  leased(deliveryId: string, messageId: string): void {
    if (this.#messageOfLease.has(deliveryId)) return;
    this.#messageOfLease.set(deliveryId, messageId);
    this.#leasesOfMessage.set(messageId, (this.#leasesOfMessage.get(messageId) ?? 0) + 1);
  }

  /** leaseEnded - the delivery's attempt was recorded (or refused), or its lease given back. */
  leaseEnded(deliveryId: string): void {
    const messageId = this.#messageOfLease.get(deliveryId);
    if (messageId === undefined) return;
    this.#messageOfLease.delete(deliveryId);
    const left = this.#leasesOfMessage.get(messageId)! - 1;
    if (left === 0) this.#leasesOfMessage.delete(messageId);
    else this.#leasesOfMessage.set(messageId, left);
  }

  /** get - the body's chunks, in order, if it is kept and a delivery of it is leased here. */
  get(id: string): readonly Buffer[] | undefined {
    return this.#leasesOfMessage.has(id) ? this.#bodies.get(id)?.chunks : undefined;
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
