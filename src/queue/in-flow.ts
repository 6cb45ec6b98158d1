// In-flow control, as Postfix's in_flow_delay: when mail arrives faster
// than this process can deliver it, accepting more takes the event loop
// from delivery, the queue grows and every message in it waits longer. The
// scheduler gives a token for each delivery it takes from the queue; a new
// transaction (MAIL FROM) takes one, and when none is left it waits until
// one comes, at most `delayMs`, then goes on anyway: arrivals are slowed to
// the delivery rate, never refused. At most CAPACITY tokens are kept, so at
// most that many accepted messages wait in the queue for a free delivery
// slot before senders are slowed.
//
// Senders are not slowed while the next hops set the pace: every delivery
// slot busy (or every slot of a destination) with slow deliveries, those in
// flight having run SLOW_DELIVERY_MS on average, or the recent ones having
// taken that long. A delivery through a busy event loop takes tens of
// milliseconds; one to a slow next hop takes seconds, and the queue is
// there to take the burst. Postfix does the same in effect: its queue
// manager gives a token for each message it moves into its active queue,
// which holds up to 20,000 messages whatever the next hops' pace. Without
// this, a next hop that took a second per message held every sender to the
// slots' 20 messages a second (bench/README.md, "Twelfth round"). Slots
// full alone is not the sign: a relay short of CPU fills them too, and
// letting senders in then only grew the queue. Deliveries age while
// nothing else happens, so a sender waiting is let in by a check every
// PACE_CHECK_MS, not only when the scheduler next looks at the queue.
//
//   createInFlowGate - the token count shared by the listeners and the scheduler.
//   nextHopsSetPace  - whether the deliveries in flight show the next hops, not this process, as the limit.

/** Tokens kept (and given at start): the queue's allowance for mail not yet taken for delivery. */
const CAPACITY = 20;

/** How long the deliveries holding the full slots must have run (or the recent ones taken), on average, for the next hops to be the limit. */
export const SLOW_DELIVERY_MS = 250;

/** How often a sender waiting for a token is checked against the next hops' pace. */
const PACE_CHECK_MS = 50;

export interface InFlowGate {
  /** enter - take a token, waiting up to the delay for one; resolves true if it had to wait. */
  enter(): Promise<boolean>;
  /** feed - `count` deliveries were taken from the queue: as many tokens come back. */
  feed(count: number): void;
}

/** A delivery in flight, as nextHopsSetPace weighs it. */
export interface DeliveryInFlight {
  domain: string;
  /** How long it has been running. */
  ageMs: number;
}

/**
 * nextHopsSetPace - whether delivery waits for slots held by slow deliveries: all `concurrency` slots, or all
 * `perDestination` slots of one domain, busy with deliveries that have run SLOW_DELIVERY_MS on average, or
 * while `recentDeliveryMs` (the recent deliveries' average duration, if any finished) is that long.
 */
export function nextHopsSetPace(inFlight: readonly DeliveryInFlight[], limits: { concurrency: number; perDestination: number }, recentDeliveryMs: number | undefined): boolean {
  const recentSlow = recentDeliveryMs !== undefined && recentDeliveryMs >= SLOW_DELIVERY_MS;
  const slow = ({ count, totalAgeMs }: { count: number; totalAgeMs: number }) => recentSlow || totalAgeMs >= SLOW_DELIVERY_MS * count;
  const all = { count: 0, totalAgeMs: 0 };
  const byDomain = new Map<string, { count: number; totalAgeMs: number }>();
  for (const d of inFlight) {
    const domain = byDomain.get(d.domain) ?? { count: 0, totalAgeMs: 0 };
    byDomain.set(d.domain, { count: domain.count + 1, totalAgeMs: domain.totalAgeMs + d.ageMs });
    all.count++;
    all.totalAgeMs += d.ageMs;
  }
  if (all.count >= limits.concurrency) return slow(all);
  for (const domain of byDomain.values()) if (domain.count >= limits.perDestination && slow(domain)) return true;
  return false;
}

/**
 * createInFlowGate - a gate that makes a sender wait at most `delayMs` for a token (0: never waits), and not at
 * all while `nextHopsPace()` (the scheduler's nextHopsSetPace over its deliveries in flight) says the next hops set the pace.
 */
export function createInFlowGate(delayMs: number, nextHopsPace: () => boolean): InFlowGate {
  let tokens = CAPACITY;
  const waiting: (() => void)[] = [];
  /** While anyone waits: the check that lets them in once the next hops set the pace. */
  let paceCheck: NodeJS.Timeout | undefined;
  const releaseIfPaced = () => {
    if (waiting.length > 0 && nextHopsPace()) waiting.splice(0).forEach((go) => go());
    if (waiting.length === 0 && paceCheck !== undefined) {
      clearInterval(paceCheck);
      paceCheck = undefined;
    }
  };
  return {
    enter() {
      if (tokens > 0 || delayMs <= 0 || nextHopsPace()) {
        tokens = Math.max(0, tokens - 1);
        return Promise.resolve(false);
      }
      return new Promise((resolve) => {
        const go = () => {
          clearTimeout(timer);
          resolve(true);
        };
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(go), 1);
          resolve(true);
        }, delayMs);
        waiting.push(go);
        paceCheck ??= setInterval(releaseIfPaced, PACE_CHECK_MS).unref();
      });
    },
    feed(count) {
      let left = count;
      while (left > 0 && waiting.length > 0) {
        waiting.shift()?.();
        left--;
      }
      tokens = Math.min(CAPACITY, tokens + left);
      releaseIfPaced();
    },
  };
}
