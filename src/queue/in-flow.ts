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
// Senders are not slowed while the delivery slots are what holds delivery
// back (every slot, or every slot of a destination, busy for SLOTS_FULL_MS
// on end): the next hops set the pace then, not this process, and the queue
// is there to take the burst. Postfix does the same in effect: its queue
// manager gives a token for each message it moves into its active queue,
// which holds up to 20,000 messages whatever the next hops' pace. Without
// this, a next hop that takes a second per message held every sender to
// the slots' 20 messages a second (bench/README.md, "Twelfth round").
//
//   createInFlowGate - the token count shared by the listeners and the scheduler.
//   mustWait         - whether a new transaction waits for a token (the policy, without the clock).

/** Tokens kept (and given at start): the queue's allowance for mail not yet taken for delivery. */
const CAPACITY = 20;

/** How long the delivery slots must have been full, without a break, before senders stop waiting for tokens. */
export const SLOTS_FULL_MS = 200;

export interface InFlowGate {
  /** enter - take a token, waiting up to the delay for one; resolves true if it had to wait. */
  enter(): Promise<boolean>;
  /**
   * feed - a look at the queue took `count` deliveries: as many tokens come back. `slotsFull`: after it,
   * delivery waits for slots (all of them busy, or all of one destination's).
   */
  feed(count: number, slotsFull: boolean): void;
}

/** mustWait - a transaction waits for a token when none is left, waiting is on, and the slots have not been full for SLOTS_FULL_MS. */
export function mustWait(state: { tokens: number; delayMs: number; slotsFullForMs: number | undefined }): boolean {
  if (state.tokens > 0 || state.delayMs <= 0) return false;
  return state.slotsFullForMs === undefined || state.slotsFullForMs < SLOTS_FULL_MS;
}

/** createInFlowGate - a gate that makes a sender wait at most `delayMs` for a token (0: never waits). */
export function createInFlowGate(delayMs: number): InFlowGate {
  let tokens = CAPACITY;
  /** Since when (Date.now()) every look found the slots full; undefined after a look that did not. */
  let slotsFullSince: number | undefined;
  const waiting: (() => void)[] = [];
  const waitNow = () => mustWait({ tokens, delayMs, slotsFullForMs: slotsFullSince === undefined ? undefined : Date.now() - slotsFullSince });
  return {
    enter() {
      if (!waitNow()) {
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
      });
    },
    feed(count, slotsFull) {
      if (!slotsFull) slotsFullSince = undefined;
      else slotsFullSince ??= Date.now();
      let left = count;
      while (left > 0 && waiting.length > 0) {
        waiting.shift()?.();
        left--;
      }
      tokens = Math.min(CAPACITY, tokens + left);
      // The slots have been full long enough: nobody waits any more.
      if (!waitNow()) waiting.splice(0).forEach((go) => go());
    },
  };
}
