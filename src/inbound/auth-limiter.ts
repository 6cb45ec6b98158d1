// Failed-AUTH accounting per client IP: limits.authFailuresPerIp failures
// within limits.authLockout seconds lock the IP out for limits.authLockout
// seconds from the failure that tripped it (Postfix leaves this to
// anvil/fail2ban; a relay on the internet needs it built in). An attempt
// counts as a failure from the moment it starts until it ends: a password
// check takes a while (scrypt), and attempts started together on many
// connections were each checked in full before the first failure was
// counted, nearly three times the limit's guesses. Memory is bounded: stale
// entries are pruned when the table is full. Time comes from the caller, so
// tests need no waiting.

export interface AuthLimiter {
  /** isLockedOut - whether an IP must not try AUTH now: locked out, or its recent failures and attempts under way reach the limit. */
  isLockedOut(ip: string, nowMs: number): boolean;
  /** attemptStarted - an IP's attempt is being checked: it counts as a failure until it ends. */
  attemptStarted(ip: string, nowMs: number): void;
  /** attemptEnded - the attempt ended: a failed one is counted as a failure at `nowMs`, any other no longer counts. */
  attemptEnded(ip: string, failed: boolean, nowMs: number): void;
}

interface IpRecord {
  failures: number[];
  lockedUntil: number;
  /** Attempts started and not yet ended. */
  underWay: number;
}

const MAX_TRACKED_IPS = 100_000;

/** createAuthLimiter - a limiter with a failure threshold and a window/lockout length. */
export function createAuthLimiter(options: { failuresPerIp: number; lockoutSeconds: number }): AuthLimiter {
  const windowMs = options.lockoutSeconds * 1000;
  const records = new Map<string, IpRecord>();

  function prune(nowMs: number): void {
    for (const [ip, r] of records) {
      if (r.underWay === 0 && r.lockedUntil <= nowMs && r.failures.every((t) => nowMs - t >= windowMs)) records.delete(ip);
      if (records.size < MAX_TRACKED_IPS) return;
    }
  }

  function record(ip: string, nowMs: number): IpRecord {
    let r = records.get(ip);
    if (!r) {
      if (records.size >= MAX_TRACKED_IPS) prune(nowMs);
      r = { failures: [], lockedUntil: 0, underWay: 0 };
      records.set(ip, r);
    }
    return r;
  }

  return {
    isLockedOut(ip, nowMs) {
      const r = records.get(ip);
      if (r === undefined) return false;
      return r.lockedUntil > nowMs || r.failures.filter((t) => nowMs - t < windowMs).length + r.underWay >= options.failuresPerIp;
    },
    attemptStarted(ip, nowMs) {
      record(ip, nowMs).underWay++;
    },
    attemptEnded(ip, failed, nowMs) {
      const r = record(ip, nowMs);
      r.underWay = Math.max(0, r.underWay - 1);
      if (!failed) return;
      r.failures = [...r.failures.filter((t) => nowMs - t < windowMs), nowMs].slice(-options.failuresPerIp);
      if (r.failures.length >= options.failuresPerIp) r.lockedUntil = nowMs + windowMs;
    },
  };
}
