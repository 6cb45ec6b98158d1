// Dead destinations, as Postfix's queue manager finds them
// (qmgr_queue_throttle): a destination whose next hops could not be used
// (no address, no connection, no greeting, no TLS) on as many attempts in a
// row as it has delivery slots is dead. Its mail due then is deferred at
// once ("delivery temporarily suspended", the store's suspendDestination),
// rather than each message waiting out its own connection timeout in one
// of the slots while every claim reads past the rest of them. Each
// suspended delivery waits its message's time in the queue, within
// retry.initial and retry.max, as Postfix backs off deferred mail. The
// count then starts again, as Postfix gives a dead destination another
// try: mail that falls due meanwhile is tried, and as many failures again
// suspend what is due then. An attempt that reached a transaction brings
// the destination back to life.
//
// Counted in memory, by each relay process for the attempts it made; the
// suspension is in the queue, for every node. Pure: nothing here fails.
//
//   DeadDestinations - the count of attempts in a row that could not use a destination's next hops.
//   suspendedReply   - what a suspended recipient shows: the reply that found the destination dead.
import { isHostReply } from '../smtp/replies.ts';
import { statusFromReply } from './bounce.ts';
import { keepLatest } from './latest-kept.ts';

// Destinations remembered at most: one failing now and then for years (a mistyped domain) does not grow the map for
// ever; the longest unheard of is forgotten first.
export const REMEMBERED_DESTINATIONS = 10_000;

/** The count, per destination domain, of attempts in a row that could not use its next hops. */
export class DeadDestinations {
  readonly #failures = new Map<string, number>();

  /** `slots`: the deliveries in flight one destination may have (outbound.perDestination): that many failures in a row kill it. */
  constructor(private readonly slots: number) {}

  /**
   * attemptEnded - count the end of an attempt to `domain`; `unusable`: why its next hops could not be used, if they
   * could not. Returns that reason when it made the destination dead (its due mail to be suspended), and counts
   * afresh from then on.
   */
  attemptEnded(domain: string, unusable: string | undefined): string | undefined {
    if (unusable === undefined) {
      this.#failures.delete(domain);
      return undefined;
    }
    const failures = (this.#failures.get(domain) ?? 0) + 1;
    if (failures < this.slots) {
      keepLatest(this.#failures, domain, failures, REMEMBERED_DESTINATIONS);
      return undefined;
    }
    this.#failures.delete(domain);
    return unusable;
  }
}

/**
 * suspendedReply - what a suspended recipient shows (Postfix: "delivery temporarily suspended: connect to …"): the
 * enhanced code of the reply that found the destination dead, and that reply (ours without its code, a host's whole).
 */
export function suspendedReply(reply: string): string {
  const status = statusFromReply(reply, '');
  const why = isHostReply(reply) || status === '' ? reply.trim() : reply.trim().slice(status.length).trimStart();
  return `${status || '4.4.0'} delivery temporarily suspended: ${why}`;
}
