// Failed-AUTH accounting per client IP: limits.authFailuresPerIp failures
// within limits.authLockout seconds lock the IP out for limits.authLockout
// seconds from the failure that tripped it (Postfix leaves this to
// anvil/fail2ban; a relay on the internet needs it built in). A password
// check takes a while (scrypt): attempts sent at once on many connections
// were each checked in full before the first failure counted, nearly three
// times the limit's guesses. So an IP's attempts under way count with its
// failures, and one that would take them past the limit waits until one
// ends: a guesser's then fail and lock it out, and it is refused; a client
// logging in on many connections at once has each checked in turn.
// An IPv6 client is counted by its prefix (limit-key.ts). Memory is
// bounded, and so is the work of keeping it so: the table is kept in the
// order of each IP's last failure, an IP with nothing to remember is
// dropped, and a new IP in a full table takes the place of the oldest
// without an attempt under way or waiting. One IPv6 /64 holds 2^20
// prefixes, enough to fill the table with fresh failures: a search for a
// stale entry then walked all 100,000 for each new one. Time comes from
// the caller, so tests need no waiting.
import { limitKey } from './limit-key.ts';

export interface AuthLimiter {
  /**
   * admit - resolves true when an IP's attempt may be checked now (it counts as a failure until attemptEnded), false
   * when the IP is locked out; while its recent failures and attempts under way reach the limit, it waits for one.
   * `gone` aborted while it waits (its connection closed: reset or lost; a client that only half-closes still
   * gets its reply, so it waits its turn): it stops waiting, false, and is never checked.
   */
  admit(ip: string, now: () => number, gone?: AbortSignal): Promise<boolean>;
  /** attemptEnded - an admitted attempt ended: a failed one counts as a failure at `nowMs`, any other no longer counts. */
  attemptEnded(ip: string, failed: boolean, nowMs: number): void;
  /** isLockedOut - whether an IP is locked out now. */
  isLockedOut(ip: string, nowMs: number): boolean;
}

interface IpRecord {
  ip: string;
  failures: number[];
  lockedUntil: number;
  /** Attempts admitted and not yet ended. */
  underWay: number;
  /** Attempts waiting for one under way to end: each call settles it (true) or leaves it waiting (false). */
  waiting: (() => boolean)[];
  /** Its neighbours in the order of last failures (a list, not the Map's order: V8 leaves a hole at the front of a Map for each entry deleted, and a walk from the front steps over them all). */
  older?: IpRecord;
  newer?: IpRecord;
}

const MAX_TRACKED_IPS = 100_000;

/** createAuthLimiter - a limiter with a failure threshold and a window/lockout length; `trackedIps` at most (100,000). */
export function createAuthLimiter(options: { failuresPerIp: number; lockoutSeconds: number; trackedIps?: number }): AuthLimiter {
  const windowMs = options.lockoutSeconds * 1000;
  const trackedIps = options.trackedIps ?? MAX_TRACKED_IPS;
  const records = new Map<string, IpRecord>();
  /** The ends of the order of each IP's last failure (or first attempt, before any). */
  let oldest: IpRecord | undefined;
  let newest: IpRecord | undefined;

  function append(r: IpRecord): void {
    r.older = newest;
    r.newer = undefined;
    if (newest) newest.newer = r;
    else oldest = r;
    newest = r;
  }

  function unlink(r: IpRecord): void {
    if (r.older) r.older.newer = r.newer;
    else oldest = r.newer;
    if (r.newer) r.newer.older = r.older;
    else newest = r.older;
  }

  function forget(r: IpRecord): void {
    unlink(r);
    records.delete(r.ip);
  }

  /** makeRoom - the oldest IP with no attempt under way or waiting is forgotten; those that have one are few (one per connection). */
  function makeRoom(): void {
    for (let r = oldest; r; r = r.newer) {
      if (r.underWay === 0 && r.waiting.length === 0) return forget(r);
    }
  }

  function record(ip: string): IpRecord {
    let r = records.get(ip);
    if (!r) {
      if (records.size >= trackedIps) makeRoom();
      r = { ip, failures: [], lockedUntil: 0, underWay: 0, waiting: [] };
      records.set(ip, r);
      append(r);
    }
    return r;
  }

  function isLockedOut(ip: string, nowMs: number): boolean {
    const r = records.get(ip);
    return r !== undefined && r.lockedUntil > nowMs;
  }

  return {
    isLockedOut: (ip, nowMs) => isLockedOut(limitKey(ip), nowMs),
    admit(address, now, gone) {
      const ip = limitKey(address);
      return new Promise((resolve) => {
        const settle = (): boolean => {
          const nowMs = now();
          if (isLockedOut(ip, nowMs)) return (leave(), resolve(false), true);
          const r = record(ip);
          if (r.failures.filter((t) => nowMs - t < windowMs).length + r.underWay >= options.failuresPerIp) return false;
          r.underWay++;
          return (leave(), resolve(true), true);
        };
        const giveUp = () => {
          const r = records.get(ip);
          if (r) r.waiting = r.waiting.filter((waiting) => waiting !== settle);
          resolve(false);
        };
        const leave = () => gone?.removeEventListener('abort', giveUp);
        if (gone?.aborted) return resolve(false);
        if (settle()) return;
        record(ip).waiting.push(settle);
        gone?.addEventListener('abort', giveUp, { once: true });
      });
    },
    attemptEnded(address, failed, nowMs) {
      const ip = limitKey(address);
      const r = record(ip);
      r.underWay = Math.max(0, r.underWay - 1);
      if (failed) {
        r.failures = [...r.failures.filter((t) => nowMs - t < windowMs), nowMs].slice(-options.failuresPerIp);
        if (r.failures.length >= options.failuresPerIp) r.lockedUntil = nowMs + windowMs;
        // To the end of the order: its failures are now the newest.
        unlink(r);
        append(r);
      }
      // In the order they came: each is admitted, refused (locked out) or left waiting.
      r.waiting = r.waiting.filter((settle) => !settle());
      // Nothing left to remember: it would hold a place a locked-out IP may need.
      const idle = r.underWay === 0 && r.waiting.length === 0;
      if (idle && r.lockedUntil <= nowMs && r.failures.every((t) => nowMs - t >= windowMs)) forget(r);
    },
  };
}
