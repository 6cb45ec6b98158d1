// Failed-AUTH accounting per client IP: limits.authFailuresPerIp failures
// within limits.authLockout seconds lock the IP out for limits.authLockout
// seconds from the failure that tripped it (Postfix leaves this to
// anvil/fail2ban; a relay on the internet needs it built in). Memory is
// bounded: stale entries are pruned when the table is full. Time comes from
// the caller, so tests need no waiting.

export interface AuthLimiter {
  /** recordFailure - count one failed attempt from an IP. */
  recordFailure(ip: string, nowMs: number): void;
  /** isLockedOut - whether an IP must not try AUTH now. */
  isLockedOut(ip: string, nowMs: number): boolean;
}

interface IpRecord {
  failures: number[];
  lockedUntil: number;
}

const MAX_TRACKED_IPS = 100_000;

/** createAuthLimiter - a limiter with a failure threshold and a window/lockout length. */
export function createAuthLimiter(options: { failuresPerIp: number; lockoutSeconds: number }): AuthLimiter {
  const windowMs = options.lockoutSeconds * 1000;
  const records = new Map<string, IpRecord>();

  function prune(nowMs: number): void {
    for (const [ip, r] of records) {
      if (r.lockedUntil <= nowMs && r.failures.every((t) => nowMs - t >= windowMs)) records.delete(ip);
      if (records.size < MAX_TRACKED_IPS) return;
    }
  }

  return {
    recordFailure(ip, nowMs) {
      if (records.size >= MAX_TRACKED_IPS) prune(nowMs);
      const r = records.get(ip) ?? { failures: [], lockedUntil: 0 };
      r.failures = [...r.failures.filter((t) => nowMs - t < windowMs), nowMs].slice(-options.failuresPerIp);
      if (r.failures.length >= options.failuresPerIp) r.lockedUntil = nowMs + windowMs;
      records.set(ip, r);
    },
    isLockedOut(ip, nowMs) {
      const r = records.get(ip);
      return r !== undefined && r.lockedUntil > nowMs;
    },
  };
}
