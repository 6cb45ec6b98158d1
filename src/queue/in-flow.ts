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
// Senders are not slowed while the next hops set the pace: every slot of a
// destination busy with slow deliveries (those in flight having run
// SLOW_DELIVERY_MS on average, or that destination's recent ones having
// taken that long), or every delivery slot busy, half of them or more with
// slow deliveries. Each destination by its own deliveries, because a relay
// always has a slow or dead one somewhere: its 30-second timeouts must not
// read as the pace of one whose slots are full because this process is
// short of CPU. A 4 KB message to a next hop on the same network takes
// tens of milliseconds even through a busy event loop; a slow next hop,
// seconds. Then the queue takes the burst, up to PACED_LIMIT messages let
// in without a token, as Postfix's queue manager gives a token for each
// message it moves into its active queue, which holds up to 20,000
// whatever the next hops' pace. Without this, a next hop that took a second
// per message held every sender to the slots' 20 messages a second
// (bench/ROUNDS.md, "Twelfth round"). Slots full alone is not the sign: a
// relay short of CPU fills them too, and letting senders in then only grew
// the queue. The rule cannot tell a slow next hop from large messages that
// take this process long to send; PACED_LIMIT bounds what that lets in.
// Deliveries age while nothing else happens, so a sender waiting is let in
// by a check every PACE_CHECK_MS, not only when the scheduler next looks.
//
//   createInFlowGate    - the token count shared by the listeners and the scheduler.
//   nextHopsSetPace     - whether the deliveries (in flight, and recent) show the next hops, not this process, as the limit.
//   RecentDeliveryTimes - each destination's recent deliveries' average duration.

import { keepLatest } from './latest-kept.ts';

/** Tokens kept (and given at start): the queue's allowance for mail not yet taken for delivery. */
const CAPACITY = 20;

/** How long deliveries must have run, or their destination's recent ones taken, on average, to count as slow: the next hops' pace, not this process's. */
export const SLOW_DELIVERY_MS = 250;

/** How often a sender waiting for a token is checked against the next hops' pace. */
const PACE_CHECK_MS = 50;

/** The most messages let in without a token, by the next hops' pace, before senders wait again (Postfix qmgr_message_active_limit). */
export const PACED_LIMIT = 20_000;

export interface InFlowGate {
  /** enter - take a token, waiting up to the delay for one; resolves true if it had to wait. */
  enter(): Promise<boolean>;
  /** feed - `count` deliveries were taken from the queue: as many tokens come back (after what the pace let in is paid back). */
  feed(count: number): void;
  /** paceFrom - where the gate asks whether the next hops set the pace (the scheduler's nextHopsSetPace); until then, never. */
  paceFrom(nextHopsSetPace: () => boolean): void;
}

/** A delivery in flight, as nextHopsSetPace weighs it. */
export interface DeliveryInFlight {
  domain: string;
  /** How long it has been running. */
  ageMs: number;
}

/** How long each destination's recent deliveries took (the scheduler's monotonic clock, a moving average over about its last eight). */
export interface RecentTimes {
  readonly byDomain: ReadonlyMap<string, number>;
}

/** Destinations whose recent times are kept: those that finished a delivery last (a relay may send to a great many). */
export const RECENT_DOMAINS_KEPT = 1000;

/** RecentDeliveryTimes - the scheduler's RecentTimes: record(domain, ms) for each delivery that ends. */
export class RecentDeliveryTimes implements RecentTimes {
  readonly byDomain = new Map<string, number>();

  record(domain: string, ms: number): void {
    const previous = this.byDomain.get(domain);
    keepLatest(this.byDomain, domain, previous === undefined ? ms : previous + (ms - previous) / 8, RECENT_DOMAINS_KEPT);
  }
}

/**
 * nextHopsSetPace - whether delivery waits for slots held by slow deliveries: all `perDestination` slots of one
 * domain busy with deliveries that have run SLOW_DELIVERY_MS on average, or while that domain's recent deliveries
 * took that long; or all `concurrency` slots busy, at least half of them with slow deliveries (run that long, or
 * to a domain whose recent deliveries took that long). Half, not an average over all: one dead next hop's
 * 30-second timeouts would outweigh many slots held by quick deliveries.
 */
export function nextHopsSetPace(inFlight: readonly DeliveryInFlight[], limits: { concurrency: number; perDestination: number }, recent: RecentTimes): boolean {
  const recentSlow = (domain: string) => (recent.byDomain.get(domain) ?? 0) >= SLOW_DELIVERY_MS;
  const byDomain = new Map<string, { count: number; totalAgeMs: number }>();
  let slowOnes = 0;
  for (const d of inFlight) {
    const domain = byDomain.get(d.domain) ?? { count: 0, totalAgeMs: 0 };
    byDomain.set(d.domain, { count: domain.count + 1, totalAgeMs: domain.totalAgeMs + d.ageMs });
    if (d.ageMs >= SLOW_DELIVERY_MS || recentSlow(d.domain)) slowOnes++;
  }
  if (inFlight.length >= limits.concurrency && 2 * slowOnes >= inFlight.length) return true;
  for (const [name, { count, totalAgeMs }] of byDomain) {
    if (count >= limits.perDestination && (recentSlow(name) || totalAgeMs >= SLOW_DELIVERY_MS * count)) return true;
  }
  return false;
}

/** createInFlowGate - a gate that makes a sender wait at most `delayMs` for a token (0: never waits), and not at all while the next hops set the pace. */
export function createInFlowGate(delayMs: number): InFlowGate {
  let tokens = CAPACITY;
  /** Messages let in without a token while the next hops set the pace, not yet taken for delivery. */
  let pacedIn = 0;
  let nextHopsPace = () => false;
  const waiting: (() => void)[] = [];
  /** While anyone waits: the check that lets them in once the next hops set the pace. */
  let paceCheck: NodeJS.Timeout | undefined;
  const paced = () => pacedIn < PACED_LIMIT && nextHopsPace();
  const releaseIfPaced = () => {
    if (waiting.length > 0 && paced()) {
      const released = waiting.splice(0, PACED_LIMIT - pacedIn);
      pacedIn += released.length;
      released.forEach((go) => go());
    }
    if (waiting.length === 0 && paceCheck !== undefined) {
      clearInterval(paceCheck);
      paceCheck = undefined;
    }
  };
  return {
    enter() {
      if (tokens > 0 || delayMs <= 0) {
        tokens = Math.max(0, tokens - 1);
        return Promise.resolve(false);
      }
      if (paced()) {
        pacedIn++;
        return Promise.resolve(false);
      }
      return new Promise((resolve) => {
        const go = () => {
          clearTimeout(timer);
          resolve(true);
        };
        const timer = setTimeout(() => {
          const index = waiting.indexOf(go);
          if (index >= 0) waiting.splice(index, 1);
          resolve(true);
        }, delayMs);
        waiting.push(go);
        paceCheck ??= setInterval(releaseIfPaced, PACE_CHECK_MS).unref();
      });
    },
    feed(count) {
      // What the pace let in leaves the queue first: tokens come back only once the queue is back within CAPACITY.
      const paidBack = Math.min(pacedIn, count);
      pacedIn -= paidBack;
      let left = count - paidBack;
      while (left > 0 && waiting.length > 0) {
        waiting.shift()?.();
        left--;
      }
      tokens = Math.min(CAPACITY, tokens + left);
      releaseIfPaced();
    },
    paceFrom(nextHopsSetPace) {
      nextHopsPace = nextHopsSetPace;
    },
  };
}
