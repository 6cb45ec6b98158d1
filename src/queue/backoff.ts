// Retry timing, as Postfix does it: the first retry after retry.initial,
// then doubling, capped at retry.max; plus up to 10% jitter so messages
// deferred together do not come back together. A message older than
// retry.lifetime is not retried: its deferred recipients bounce, reporting
// the last temporary reason (as Postfix does).
// Pure: the jitter source and the clock are arguments.

export interface RetrySettings {
  /** seconds */
  initial: number;
  max: number;
  lifetime: number;
}

/** retryDelaySeconds - the wait after `attempts` failed attempts (1 = after the first), before jitter. */
export function retryDelaySeconds(attempts: number, retry: RetrySettings): number {
  const exponent = Math.max(0, attempts - 1);
  return Math.min(retry.max, retry.initial * 2 ** Math.min(exponent, 30));
}

/** nextAttemptAt - when to try again, or undefined when the message has outlived retry.lifetime. */
export function nextAttemptAt(facts: { attempts: number; receivedAt: Date; now: Date; retry: RetrySettings; random?: () => number }): Date | undefined {
  const age = (facts.now.getTime() - facts.receivedAt.getTime()) / 1000;
  if (age >= facts.retry.lifetime) return undefined;
  const delay = retryDelaySeconds(facts.attempts, facts.retry);
  const jitter = 1 + 0.1 * (facts.random ?? Math.random)();
  const at = facts.now.getTime() + delay * jitter * 1000;
  // The last try lands at the end of the lifetime rather than beyond it.
  return new Date(Math.min(at, facts.receivedAt.getTime() + facts.retry.lifetime * 1000));
}
