// MTA-STS (RFC 8461): a domain says, in DNS and in a file on an HTTPS host
// of its own, that its MX hosts offer verified TLS, and which names they
// have. For the TLS level `mta-sts` (DESIGN.md's table), a delivery by MX
// asks this module for the recipient domain's policy:
//  - `_mta-sts.DOMAIN` TXT "v=STSv1; id=…" says there is one;
//  - https://mta-sts.DOMAIN/.well-known/mta-sts.txt (a certificate valid for
//    that name, no redirect, at most 64 KiB) gives it: mode (enforce,
//    testing, none), the MX names (a "*." entry is one label), max_age;
//  - it is kept for max_age and fetched again when the TXT id changes; while
//    DNS or the HTTPS host fail, a policy still valid is used (§5.1), and
//    with none, the domain has no policy (the delivery goes as under `may`);
//    a fetch that failed is not tried again for its id for five minutes
//    (§3.3), and each has one deadline for all of it.
// deliver.ts applies it: in enforce mode only the MX hosts the policy names,
// each under `verify`; in testing mode as `may`, a host the policy would
// refuse logged.
// Policies are kept in memory and, where a queue store is given, in the
// queue too (queue-store.ts keepStsPolicy), so that a relay that restarts
// still holds an enforced policy while DNS or the HTTPS host fail (§5.1:
// those are what an attacker would block). The queue is read when the
// process starts, and for a domain when DNS and the fetch give no policy
// and memory has none (at most every five minutes a domain): on
// PostgreSQL, what any node kept. A max_age of 0 forgets the domain in
// both; where the queue fails to, this process reads back no row kept
// before then (by the row's end less its max_age: clocks are assumed close).
//
// Fails: never throws; a policy that cannot be read is no policy, logged.
//
//   parseStsRecord  - the id of the one "v=STSv1" TXT record; undefined when there is not exactly one.
//   parseStsPolicy  - the policy file read, or why it is not one.
//   mxInPolicy      - whether an MX name is one the policy lists.
//   decideStsLevel  - the level `mta-sts` settles to, for a next hop and the domain's policy.
//   remember        - keep a map of domains within a size, the lapsed and then the oldest dropped.
//   createMtaStsPolicies - the domain's policy, looked up, fetched and kept.
import type { ClientRequest } from 'node:http';
import { request, type RequestOptions } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { createSecureContext, rootCertificates, type ConnectionOptions } from 'node:tls';
import { isAsciiText } from '../smtp/address.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { keepLatest } from '../queue/latest-kept.ts';
import type { KeptStsPolicy, QueueStore } from '../queue/queue-store.ts';
import { isPublicAddress, lookupAddresses, type DnsResolver } from './mx-resolver.ts';
import type { TlsDecision } from './route.ts';

export interface StsPolicy {
  mode: 'enforce' | 'testing' | 'none';
  /** MX name patterns as listed: "mx.example.com", "*.example.net". */
  mx: string[];
  /** Seconds the policy may be kept. */
  maxAge: number;
  /** The TXT record's id when it was fetched. */
  id: string;
}

/** The most bytes of a policy file read (RFC 8461 §3.3 suggests 64 KiB). */
const POLICY_LIMIT = 64 * 1024;
/** The longest max_age a policy may ask (RFC 8461 §3.2: 31557600, a year). */
const MAX_AGE_LIMIT = 31_557_600;
/** A policy's mx value (§3.2: ["*."] Domain), in lower case: two labels at least. */
const MX_PATTERN = /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** A TXT record's id (§3.1: 1 to 32 letters and digits). */
const STS_ID = /^[A-Za-z0-9]{1,32}$/;
/** How long a policy that could not be fetched is not asked for again, for its id (§3.3: five minutes or more). */
const FETCH_RETRY_MS = 5 * 60_000;

/** parseStsRecord - the id of the one TXT record that starts "v=STSv1"; undefined when there is none, or several (§3.1). */
export function parseStsRecord(records: readonly (readonly string[])[]): string | undefined {
  // A record's strings are one text (RFC 7208 §3.3 has the same rule for SPF).
  // §3.1: a record that does not begin with "v=STSv1;" is not one (a bare "v=STSv1" is discarded, not counted).
  const sts = records.map((parts) => parts.join('')).filter((text) => /^v=STSv1\s*;/.test(text));
  if (sts.length !== 1) return undefined;
  const fields = new Map(sts[0]!.split(';').map((f) => f.trim()).filter(Boolean).map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)] as const));
  const id = fields.get('id');
  return id !== undefined && STS_ID.test(id) ? id : undefined;
}

/** parseStsPolicy - the policy file's fields (§3.2), or why it is not a policy. */
export function parseStsPolicy(text: string, id: string): { ok: true; policy: StsPolicy } | { ok: false; reason: string } {
  const fields: [string, string][] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) return { ok: false, reason: `not a "key: value" line: ${JSON.stringify(line.slice(0, 80))}` };
    fields.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  const first = (key: string) => fields.find(([k]) => k === key)?.[1];
  if (first('version') !== 'STSv1') return { ok: false, reason: 'version is not STSv1' };
  const mode = first('mode');
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') return { ok: false, reason: `mode ${JSON.stringify(mode ?? '')} is not enforce, testing or none` };
  const maxAge = Number(first('max_age'));
  if (!/^\d{1,10}$/.test(first('max_age') ?? '') || maxAge > MAX_AGE_LIMIT) return { ok: false, reason: 'max_age is not a number of seconds up to 31557600' };
  const mx = fields.filter(([k]) => k === 'mx').map(([, v]) => v.toLowerCase().replace(/\.$/, ''));
  if (mode !== 'none' && mx.length === 0) return { ok: false, reason: 'no mx line' };
  const bad = mx.find((m) => !MX_PATTERN.test(m));
  if (bad !== undefined) return { ok: false, reason: `mx ${JSON.stringify(bad)} is not a host name or "*." and one` };
  return { ok: true, policy: { mode, mx, maxAge, id } };
}

/** mxInPolicy - whether an MX name matches one of the policy's: exactly, or "*.example.com" for one label more (§4.1). */
export function mxInPolicy(host: string, patterns: readonly string[]): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  return patterns.some((pattern) => {
    if (!pattern.startsWith('*.')) return name === pattern;
    const suffix = pattern.slice(1);
    return name.endsWith(suffix) && name.length > suffix.length && !name.slice(0, -suffix.length).includes('.');
  });
}

/**
 * decideStsLevel - what a level `mta-sts` (from `source`) is for this delivery: `verify` where the domain's policy
 * says enforce; `may` where it says testing or none, where there is no policy, and for a next hop that is not the
 * domain's MX (a route, a smarthost, an address literal: the policy names MX hosts).
 */
export function decideStsLevel(source: string, viaMx: boolean, policy: StsPolicy | undefined): TlsDecision {
  if (!viaMx) return { level: 'may', source: `${source}: mta-sts, not an MX delivery` };
  if (policy === undefined) return { level: 'may', source: `${source}: mta-sts, no policy` };
  const of = `${source}: MTA-STS ${policy.mode} (id ${policy.id})`;
  return { level: policy.mode === 'enforce' ? 'verify' : 'may', source: of };
}

export interface MtaStsSettings {
  resolver: DnsResolver;
  /** Trusted in addition to the system CAs (outbound.tls.caFile). */
  extraCa: readonly string[];
  /** The policy host's port: 443 (outbound.mtaStsPort, for tests and private setups). */
  port: number;
  /** Whether a policy host may have a loopback or private address (outbound.allowPrivateTargets). */
  allowPrivateTargets: boolean;
  timeoutMs: number;
  now: () => Date;
  logger: Logger;
  /** Where policies are kept between restarts (the queue store); without it, in this process's memory only. */
  keptIn?: Pick<QueueStore, 'keptStsPolicies' | 'keepStsPolicy'>;
}

export interface MtaStsPolicies {
  /** policyFor - the domain's policy now; undefined when it has none (or none could be read and none is kept). */
  policyFor(domain: string): Promise<StsPolicy | undefined>;
}

/** createMtaStsPolicies - look up, fetch and keep domains' policies. */
export function createMtaStsPolicies(settings: MtaStsSettings): MtaStsPolicies {
  const kept = new Map<string, { policy: StsPolicy; until: number }>();
  /** Fetches that failed, by "domain id": not tried again before the time kept (§3.3). */
  const failed = new Map<string, number>();
  /** Domains the queue held no policy for (keptInQueue): not asked again before the time kept. */
  const notInQueue = new Map<string, number>();
  /**
   * Domains whose max_age 0 the queue did not take, and when: a row kept at or before then (by any node) is not read
   * back from the queue, for as long as such a row could last; one kept later is a policy published since.
   */
  const staleInQueue = new Map<string, { at: number; until: number }>();
  // Built once: a context per fetch cost about 18 ms of the event loop (parsing every root certificate).
  const secureContext = createSecureContext({ ca: [...rootCertificates, ...settings.extraCa], minVersion: 'TLSv1.2' });

  /** Lookups in flight, by domain: deliveries to one domain at once share one (one TXT query, one fetch). */
  const pending = new Map<string, Promise<StsPolicy | undefined>>();
  /** The policies kept before this process started, read once before the first lookup. */
  const loaded = loadKept();

  return {
    policyFor(domain) {
      // A domain that is not a valid IDN stays in Unicode (asciiDomain): DNS and HTTPS cannot name it.
      if (!isAsciiText(domain)) return Promise.resolve(undefined);
      let lookup = pending.get(domain);
      if (lookup === undefined) {
        lookup = currentPolicy(domain).finally(() => pending.delete(domain));
        pending.set(domain, lookup);
      }
      return lookup;
    },
  };

  async function currentPolicy(domain: string): Promise<StsPolicy | undefined> {
    await loaded;
    const now = settings.now().getTime();
    const cached = kept.get(domain);
    const valid = cached !== undefined && cached.until > now ? cached.policy : undefined;
    if (cached !== undefined && valid === undefined) kept.delete(domain);
    const log = settings.logger.child({ domain });
    let id: string | undefined;
    try {
      id = parseStsRecord(await settings.resolver.resolveTxt(`_mta-sts.${domain}`));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // No such name or no TXT: no policy announced. Anything else: DNS trouble. Either way a policy kept and still
      // valid stays in force (§5.1: an attacker can forge both answers).
      if (code !== 'ENOTFOUND' && code !== 'ENODATA') log.info({ err: code ?? String(err) }, 'MTA-STS: TXT lookup failed; using the policy kept, if any');
      return valid ?? (await keptInQueue(domain, now));
    }
    // §5.1: a policy still valid stays in force when the TXT record is gone, and is not fetched again for its id.
    if (id === undefined || id === valid?.id) return valid ?? (await keptInQueue(domain, now));
    const retryAt = failed.get(`${domain} ${id}`);
    if (retryAt !== undefined && retryAt > now) return valid ?? (await keptInQueue(domain, now));
    failed.delete(`${domain} ${id}`);
    const fetched = await fetchPolicy(domain, id);
    if ('failure' in fetched) {
      remember(failed, `${domain} ${id}`, now + FETCH_RETRY_MS, now);
      const fallback = valid ?? (await keptInQueue(domain, now));
      const using = fallback === undefined ? 'none is used' : `using the policy kept (${fallback.mode}, id ${fallback.id})`;
      log.warn(fetched.fields, `MTA-STS: ${fetched.failure}; ${using}`);
      return fallback;
    }
    const { policy } = fetched;
    // From when the fetch ended, not when the lookup began: a row's end less its max_age is when it was kept, which
    // a withdrawal elsewhere is compared with (keptAt).
    const fetchedAt = settings.now().getTime();
    const until = fetchedAt + policy.maxAge * 1000;
    if (policy.maxAge === 0) kept.delete(domain);
    else remember(kept, domain, { policy, until }, fetchedAt);
    log.info({ mode: policy.mode, mx: policy.mx, maxAge: policy.maxAge, id }, 'MTA-STS policy fetched');
    await keepForRestart(domain, policy.maxAge === 0 ? undefined : { policy: keptForm(policy), until: new Date(until) }, log);
    return policy;
  }

  /** loadKept - the policies the queue kept, into memory; those it cannot read are left out, and said so. */
  async function loadKept(): Promise<void> {
    if (settings.keptIn === undefined) return;
    const now = settings.now();
    try {
      const rows = await settings.keptIn.keptStsPolicies(now, KEPT_LIMIT);
      let unreadable = 0;
      // The soonest to lapse first: remember() drops the first-kept when the map is full.
      for (const row of rows.reverse()) {
        if (takeKept(row, now.getTime()) === undefined) unreadable++;
      }
      if (unreadable > 0) settings.logger.warn({ unreadable }, 'MTA-STS: policies kept in the queue could not be read; they are fetched again');
    } catch (err) {
      settings.logger.warn({ err: errorMessage(err) }, 'MTA-STS: the policies kept in the queue could not be read; they are fetched again');
    }
  }

  /**
   * keptInQueue - where DNS and the fetch give no policy and memory holds none, the one the queue holds: another node
   * may have kept it since this process started. Kept in memory once found; a domain with none is asked again only
   * after FETCH_RETRY_MS (most domains publish no policy, and a delivery must not cost a query of the queue).
   */
  async function keptInQueue(domain: string, now: number): Promise<StsPolicy | undefined> {
    const askedUntil = notInQueue.get(domain);
    if (settings.keptIn === undefined || (askedUntil !== undefined && askedUntil > now)) return undefined;
    let row: KeptStsPolicy | undefined;
    try {
      [row] = await settings.keptIn.keptStsPolicies(new Date(now), 1, domain);
    } catch (err) {
      settings.logger.warn({ domain, err: errorMessage(err) }, 'MTA-STS: the policy kept in the queue could not be read');
    }
    const withdrawn = staleInQueue.get(domain);
    const stale = row !== undefined && withdrawn !== undefined && withdrawn.until > now && keptAt(row) <= withdrawn.at;
    const policy = row === undefined || stale ? undefined : takeKept(row, now);
    if (policy === undefined) remember(notInQueue, domain, now + FETCH_RETRY_MS, now);
    return policy;
  }

  /** takeKept - a policy the queue kept, read and held in memory until it lapses; undefined when it is not one. */
  function takeKept(row: KeptStsPolicy, now: number): StsPolicy | undefined {
    const policy = storedPolicy(row.policy);
    if (policy !== undefined) remember(kept, row.domain, { policy, until: row.until.getTime() }, now);
    return policy;
  }

  /**
   * keepForRestart - keep (or forget) a domain's policy in the queue; a failure leaves the one in memory, logged. A
   * forget that fails leaves a row of a policy withdrawn: this process does not read it back (a restart would, until
   * it fetches the policy again).
   */
  async function keepForRestart(domain: string, entry: { policy: string; until: Date } | undefined, log: Logger): Promise<void> {
    if (settings.keptIn === undefined) return;
    const now = settings.now();
    try {
      await settings.keptIn.keepStsPolicy(domain, entry, { now, limit: KEPT_LIMIT });
      staleInQueue.delete(domain);
    } catch (err) {
      if (entry !== undefined) return log.warn({ err: errorMessage(err) }, 'MTA-STS: policy not kept in the queue; a restart fetches it again');
      // A row kept until now, by any node, lasts at most MAX_AGE_LIMIT.
      remember(staleInQueue, domain, { at: now.getTime(), until: now.getTime() + MAX_AGE_LIMIT * 1000 }, now.getTime());
      log.warn({ err: errorMessage(err) }, 'MTA-STS: max_age 0 not recorded in the queue; the policy kept there is not used here, but a restart reads it back');
    }
  }

  /** fetchPolicy - the domain's policy file, read; or what went wrong, for the caller's log line. */
  async function fetchPolicy(domain: string, id: string): Promise<{ policy: StsPolicy } | { failure: string; fields: object }> {
    const host = `mta-sts.${domain}`;
    try {
      const parsed = parseStsPolicy(await getPolicyFile(host), id);
      return parsed.ok ? { policy: parsed.policy } : { failure: 'the policy file is not a policy', fields: { host, reason: parsed.reason } };
    } catch (err) {
      return { failure: 'policy not fetched', fields: { host, err: errorMessage(err) } };
    }
  }

  /** getPolicyFile - GET the well-known file over verified TLS, through our own resolver; no redirect, 64 KiB at most. */
  function getPolicyFile(host: string): Promise<string> {
    return new Promise((resolveFile, rejectFile) => {
      let req: ClientRequest | undefined;
      // One deadline for all of it (lookup, handshake, a body sent a byte at a time), not an idle timeout.
      const deadline = setTimeout(() => req?.destroy(new Error(`no policy within ${settings.timeoutMs / 1000} s`)), settings.timeoutMs);
      deadline.unref();
      const resolve = (text: string) => (clearTimeout(deadline), resolveFile(text));
      const reject = (err: Error) => (clearTimeout(deadline), rejectFile(err));
      // agent: false: a connection of its own, looked up (and its address judged) each time; fetches are rare.
      // secureContext goes on to tls.connect, with the name checked against `servername` as ever.
      const options: RequestOptions & Pick<ConnectionOptions, 'secureContext'> = {
        host, port: settings.port, path: '/.well-known/mta-sts.txt', servername: host, secureContext, lookup: lookupThrough(settings), agent: false, headers: { 'user-agent': 'Postern' },
      };
      try {
        req = request(
          options,
          (res) => {
            if (res.statusCode !== 200) {
              res.resume();
              return reject(new Error(`HTTP ${res.statusCode}`));
            }
            if (!/^text\/plain\b/i.test(res.headers['content-type'] ?? '')) {
              res.resume();
              return reject(new Error(`content type ${res.headers['content-type'] ?? 'missing'}, not text/plain`));
            }
            const chunks: Buffer[] = [];
            let bytes = 0;
            res.on('data', (chunk: Buffer) => {
              bytes += chunk.length;
              if (bytes > POLICY_LIMIT) return req?.destroy(new Error(`larger than ${POLICY_LIMIT} bytes`));
              chunks.push(chunk);
            });
            res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
            res.on('error', reject);
          },
        );
      } catch (err) {
        // A name node's HTTP client will not put in a Host header throws here, not as an 'error' event.
        return reject(err instanceof Error ? err : new Error(String(err)));
      }
      req.on('error', reject);
      req.end();
    });
  }
}

/** keptForm - how a policy is kept in the queue: its TXT id and the policy file, written out again. */
function keptForm(policy: StsPolicy): string {
  const file = ['version: STSv1', `mode: ${policy.mode}`, ...policy.mx.map((mx) => `mx: ${mx}`), `max_age: ${policy.maxAge}`, ''].join('\r\n');
  return JSON.stringify({ id: policy.id, file });
}

/** storedPolicy - a policy kept in the queue (keptForm), read as a fetched one is read; undefined when it is not one. */
function storedPolicy(text: string): StsPolicy | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const { id, file } = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (typeof id !== 'string' || !STS_ID.test(id) || typeof file !== 'string') return undefined;
  const parsed = parseStsPolicy(file, id);
  return parsed.ok ? parsed.policy : undefined;
}

/** keptAt - when a row was kept: its end less its policy's max_age (a row that is no policy: never). */
function keptAt(row: KeptStsPolicy): number {
  const policy = storedPolicy(row.policy);
  return policy === undefined ? -Infinity : row.until.getTime() - policy.maxAge * 1000;
}

/** The most domains (and failed fetches) kept: past it, the expired go, then the oldest. */
const KEPT_LIMIT = 10_000;

/**
 * remember - set an entry (a time, or a value with one: when it lapses), keeping the map within `limit` (domains an
 * attacker can make up must not grow it): the lapsed go first, then the oldest.
 */
export function remember<V extends number | { until: number }>(map: Map<string, V>, key: string, value: V, now: number, limit = KEPT_LIMIT): void {
  map.delete(key);
  if (map.size >= limit) for (const [k, v] of map) if ((typeof v === 'number' ? v : v.until) <= now) map.delete(k);
  keepLatest(map, key, value, limit);
}

/** lookupThrough - node's `lookup` over our resolver, refusing private addresses unless allowed (as for MX hosts). */
function lookupThrough(settings: Pick<MtaStsSettings, 'resolver' | 'allowPrivateTargets'>): LookupFunction {
  return (hostname, options, callback) => {
    void lookupAddresses(hostname, settings.resolver).then((found) => {
      const addresses = found.kind === 'addresses' ? found.addresses.filter((ip) => settings.allowPrivateTargets || isPublicAddress(ip)) : [];
      if (addresses.length === 0) return callback(Object.assign(new Error(`no usable address for ${hostname}`), { code: 'ENOTFOUND' }), '', 4);
      if (options.all) return (callback as unknown as (err: null, all: { address: string; family: number }[]) => void)(null, addresses.map((address) => ({ address, family: isIP(address) })));
      callback(null, addresses[0]!, isIP(addresses[0]!));
    });
  };
}
