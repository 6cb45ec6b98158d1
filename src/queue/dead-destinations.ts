// Dead destinations, as Postfix's queue manager finds them
// (qmgr_queue_throttle): a destination whose next hops could not be used
// (no address, no connection, no greeting, no TLS) on as many attempts in a
// row as it has delivery slots is dead. Its mail due then is deferred at
// once ("delivery temporarily suspended", the store's suspendDestination),
// rather than each message waiting out its own connection timeout in one
// of the slots while every claim reads past the rest of them. An attempt
// that reached a transaction brings the destination back to life; Postfix
// gives a dead one another try after minimal_backoff_time, and the
// scheduler suspends for retry.initial, its counterpart.
//
// Counted in memory, by each relay process for the attempts it made; the
// suspension is in the queue, for every node.
//
//   DeadDestinations - the count of attempts in a row that could not use a destination's next hops.
//   suspendedReply   - what a suspended recipient shows: the reply that found the destination dead, and why.

// Destinations remembered at most: one failing now and then for years (a typo'd domain) does not grow the map for
// ever; the longest unheard of is forgotten first.
export const REMEMBERED_DESTINATIONS = 10_000;

/** The count, per destination domain, of attempts in a row that could not use its next hops. */
export class DeadDestinations {
  readonly #failures = new Map<string, number>();

  /** `slots`: the deliveries in flight one destination may have (outbound.perDestination): that many failures in a row kill it. */
  constructor(private readonly slots: number) {}

  /**
   * attemptEnded - count the end of an attempt to `domain`; `unusable`: why its next hops could not be used, if they
   * could not. Returns that reason when it made the destination dead (its due mail to be suspended).
   */
  attemptEnded(domain: string, unusable: string | undefined): string | undefined {
    const failures = unusable === undefined ? 0 : (this.#failures.get(domain) ?? 0) + 1;
    // Deleted and set again: the map's order is then the order in which destinations were last heard of.
    this.#failures.delete(domain);
    if (failures === 0) return undefined;
    this.#failures.set(domain, failures);
    if (this.#failures.size > REMEMBERED_DESTINATIONS) this.#failures.delete(this.#failures.keys().next().value as string);
    return failures >= this.slots ? unusable : undefined;
  }
}

/**
 * suspendedReply - what a suspended recipient shows (Postfix: "delivery temporarily suspended: connect to …"): the
 * enhanced code of the reply that found the destination dead, and that reply (ours without its code, a host's whole).
 */
export function suspendedReply(reply: string): string {
  const ours = /^(4\.\d{1,3}\.\d{1,3}) (.*)$/s.exec(reply);
  if (ours) return `${ours[1]} delivery temporarily suspended: ${ours[2]}`;
  const hosts = /^4\d\d[ -](4\.\d{1,3}\.\d{1,3})\b/.exec(reply);
  return `${hosts?.[1] ?? '4.4.0'} delivery temporarily suspended: ${reply}`;
}
