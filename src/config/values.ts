// Value kinds a config key can hold: how each is read from an environment
// variable and checked. Each check returns the parsed value or the words
// "what is allowed" that go into the error message.
import { isIP } from 'node:net';

export type Check<T> = (value: unknown) => { ok: true; value: T } | { ok: false; allowed: string };

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** parseDurationSeconds - "300s", "5m", "2h", "5d" or a bare number of seconds. */
export function parseDurationSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*([smhd]?)$/.exec(value.trim());
  if (!match) return undefined;
  return Number(match[1]) * (DURATION_UNITS[match[2] || 's'] ?? 1);
}

/** durationMs - a duration as the configuration holds it (seconds, with a fraction perhaps: "4.1m" is 245.99999999999997) in whole milliseconds, as a lease takes it. */
export function durationMs(seconds: number): number {
  return Math.round(seconds * 1000);
}

const HOST_NAME = /^(?=.{1,254}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

export const check = {
  string(allowed = 'a non-empty string'): Check<string> {
    return (v) => (typeof v === 'string' && v.length > 0 ? { ok: true, value: v } : { ok: false, allowed });
  },
  optionalString(allowed = 'a string (empty for none)'): Check<string> {
    return (v) => (typeof v === 'string' ? { ok: true, value: v } : v == null ? { ok: true, value: '' } : { ok: false, allowed });
  },
  integer(min: number, max: number): Check<number> {
    return (v) =>
      typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
        ? { ok: true, value: v }
        : { ok: false, allowed: `an integer from ${min} to ${max}` };
  },
  boolean(): Check<boolean> {
    return (v) => (typeof v === 'boolean' ? { ok: true, value: v } : { ok: false, allowed: 'true or false' });
  },
  oneOf<T extends string>(choices: readonly T[]): Check<T> {
    return (v) =>
      typeof v === 'string' && (choices as readonly string[]).includes(v)
        ? { ok: true, value: v as T }
        : { ok: false, allowed: `one of ${choices.join(', ')}` };
  },
  duration(maxSeconds: number, { zero = false } = {}): Check<number> {
    return (v) => {
      const seconds = parseDurationSeconds(v);
      return seconds !== undefined && (seconds > 0 || (zero && seconds === 0)) && seconds <= maxSeconds
        ? { ok: true, value: seconds }
        : { ok: false, allowed: `a duration such as ${zero ? '0s, ' : ''}300s, 5m, 2h or 5d (at most ${maxSeconds}s)` };
    };
  },
  list<T>(item: Check<T>, itemAllowed: string): Check<T[]> {
    return (v) => {
      if (!Array.isArray(v)) return { ok: false, allowed: `a list of ${itemAllowed}` };
      const out: T[] = [];
      for (const element of v) {
        const r = item(element);
        if (!r.ok) return { ok: false, allowed: `a list of ${itemAllowed} (bad entry: ${JSON.stringify(element)})` };
        out.push(r.value);
      }
      return { ok: true, value: out };
    };
  },
  /** hostName - a domain name as one host is named: no "*." wildcard; lower case. */
  hostName(allowed = 'a host name such as mail.example.com'): Check<string> {
    // "_" as Docker's service names have it, and a final dot (a fully qualified name), as DNS resolves them.
    return (v) => (typeof v === 'string' && HOST_NAME.test(v) ? { ok: true, value: v.toLowerCase() } : { ok: false, allowed });
  },
  /** hostOrIp - a host name or an IP address to connect to, without brackets or a port (Postfix writes "[host]:port"). */
  hostOrIp(allowed: string): Check<string> {
    return (v) => (typeof v === 'string' && (isIP(v) !== 0 || check.hostName()(v).ok) ? { ok: true, value: v } : { ok: false, allowed });
  },
  /** optional - a check that also takes the empty string (none). */
  optional<T>(inner: Check<T>): Check<T | ''> {
    return (v) => (v === '' ? { ok: true, value: '' } : inner(v));
  },
  hostAddress(): Check<string> {
    return (v) =>
      typeof v === 'string' && (isIP(v) !== 0 || v === 'localhost')
        ? { ok: true, value: v }
        : { ok: false, allowed: 'an IP address to listen on (127.0.0.1, ::1, 0.0.0.0, ::)' };
  },
  ipAddress(): Check<string> {
    return (v) => (typeof v === 'string' && isIP(v) !== 0 ? { ok: true, value: v } : { ok: false, allowed: 'an IP address such as 192.0.2.25 or 2001:db8::25' });
  },
  resolverAddress(): Check<string> {
    return (v) =>
      typeof v === 'string' && isResolverAddress(v)
        ? { ok: true, value: v }
        : { ok: false, allowed: 'a DNS server IP address with an optional port (192.0.2.53, 127.0.0.1:5353, [::1]:5353)' };
  },
  network(): Check<string> {
    return (v) => (typeof v === 'string' && isNetwork(v) ? { ok: true, value: v } : { ok: false, allowed: 'a network in CIDR form such as 10.0.0.0/8 or ::1/128' });
  },
  domain(): Check<string> {
    return (v) =>
      typeof v === 'string' && /^(?:\*\.)?(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(v)
        ? { ok: true, value: v.toLowerCase() }
        : { ok: false, allowed: 'a domain name such as example.com' };
  },
};

/** isResolverAddress - what node:dns setServers takes: an IP address, IPv4:port or [IPv6]:port. */
export function isResolverAddress(value: string): boolean {
  if (isIP(value) !== 0) return true;
  const withPort = /^(?:(\d+\.\d+\.\d+\.\d+)|\[([^\]]+)\]):(\d{1,5})$/.exec(value);
  if (!withPort) return false;
  const [, v4, v6, portText] = withPort;
  const portNumber = Number(portText);
  return portNumber >= 1 && portNumber <= 65535 && (v4 !== undefined ? isIP(v4) === 4 : isIP(v6!) === 6);
}

/** isNetwork - an address or address/prefix that BlockList can hold. */
export function isNetwork(value: string): boolean {
  const [address, prefix, extra] = value.split('/');
  if (extra !== undefined || !address) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}
