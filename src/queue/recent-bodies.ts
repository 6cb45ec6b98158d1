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
// is recorded or the lease given back, for at most half the lease, after
// which another node may claim it). The claim checked that the message
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
  /** The chunks, each holding no more memory than about twice its bytes (see add). */
  readonly #bodies = new Map<string, { chunks: readonly Buffer[]; size: number }>();
  #bytes = 0;
  /** The leases taken here, by delivery id, oldest first: until when each counts, on the monotonic clock. */
  readonly #leases = new Map<string, { messageId: string; until: number }>();
  /** The delivery ids leased here, by message id. */
  readonly #leasedDeliveries = new Map<string, Set<string>>();
  readonly #now: () => number;

  constructor(
    readonly limitBytes: number,
    options: { now?: () => number } = {},
  ) {
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * add - keep a committed message's body (a body larger than the whole limit is not kept). A chunk that is a
   * small view of a larger buffer (a short body cut from Node's shared 8 KB pool, or from a large socket read)
   * is copied, so that the limit bounds the memory held and not only the bytes counted.
   */
  add(id: string, chunks: readonly Buffer[]): void {
    const size = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    if (size > this.limitBytes) return;
    this.delete(id);
    this.#bodies.set(id, { chunks: chunks.map(ownMemory), size });
    this.#bytes += size;
    for (const [oldest] of this.#bodies) {
      if (this.#bytes <= this.limitBytes) break;
      this.delete(oldest);
    }
  }

  /**
   * leased - this process claimed delivery `deliveryId` of message `messageId` for `leaseMs`. It counts for half
   * of that: a margin for the claim's round trip and for the clocks of the nodes that could claim it once it
   * lapses. Leases that lapsed without an end (a delivery that failed before its attempt was recorded) go here.
   */
  leased(deliveryId: string, messageId: string, leaseMs: number): void {
    const now = this.#now();
    for (const [oldest, lease] of this.#leases) {
      if (lease.until > now) break;
      this.leaseEnded(oldest);
    }
    this.leaseEnded(deliveryId);
    this.#leases.set(deliveryId, { messageId, until: now + leaseMs / 2 });
    const deliveries = this.#leasedDeliveries.get(messageId) ?? new Set<string>();
    deliveries.add(deliveryId);
    this.#leasedDeliveries.set(messageId, deliveries);
  }

  /** leaseEnded - the delivery's attempt was recorded (or refused), or its lease given back. */
  leaseEnded(deliveryId: string): void {
    const lease = this.#leases.get(deliveryId);
    if (!lease) return;
    this.#leases.delete(deliveryId);
    const deliveries = this.#leasedDeliveries.get(lease.messageId)!;
    deliveries.delete(deliveryId);
    if (deliveries.size === 0) this.#leasedDeliveries.delete(lease.messageId);
  }

  /** get - the body's chunks, in order, if it is kept and a delivery of it is leased here and its lease still counts. */
  get(id: string): readonly Buffer[] | undefined {
    const deliveries = this.#leasedDeliveries.get(id);
    if (!deliveries) return undefined;
    const now = this.#now();
    for (const deliveryId of deliveries) {
      if (this.#leases.get(deliveryId)!.until > now) return this.#bodies.get(id)?.chunks;
    }
    return undefined;
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

  /** The leases held now (ended, or lapsed and swept, ones are not). */
  get leases(): number {
    return this.#leases.size;
  }
}

/** ownMemory - the chunk, or a copy of it when it keeps alive a buffer more than twice its size. */
function ownMemory(chunk: Buffer): Buffer {
  if (chunk.buffer.byteLength <= 2 * chunk.length) return chunk;
  const copy = Buffer.allocUnsafeSlow(chunk.length);
  chunk.copy(copy);
  return copy;
}
