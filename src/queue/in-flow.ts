// In-flow control, as Postfix's in_flow_delay: when mail arrives faster
// than it is delivered, the queue grows and every message in it waits
// longer. The scheduler gives a token for each delivery it takes from the
// queue; a new transaction (MAIL FROM) takes one, and when none is left it
// waits until one comes, at most `delayMs`, then goes on anyway: arrivals
// are slowed to the delivery rate, never refused. At most CAPACITY tokens
// are kept, so at most that many accepted messages wait in the queue for a
// free delivery slot before senders are slowed.
//
//   createInFlowGate - the token count shared by the listeners and the scheduler.

/** Tokens kept (and given at start): the queue's allowance for mail not yet taken for delivery. */
const CAPACITY = 20;

export interface InFlowGate {
  /** enter - take a token, waiting up to the delay for one; resolves true if it had to wait. */
  enter(): Promise<boolean>;
  /** feed - `count` deliveries were taken from the queue: as many tokens come back. */
  feed(count: number): void;
}

/** createInFlowGate - a gate that makes a sender wait at most `delayMs` for a token (0: never waits). */
export function createInFlowGate(delayMs: number): InFlowGate {
  let tokens = CAPACITY;
  const waiting: (() => void)[] = [];
  return {
    enter() {
      if (tokens > 0 || delayMs <= 0) {
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
    feed(count) {
      let left = count;
      while (left > 0 && waiting.length > 0) {
        waiting.shift()?.();
        left--;
      }
      tokens = Math.min(CAPACITY, tokens + left);
    },
  };
}
