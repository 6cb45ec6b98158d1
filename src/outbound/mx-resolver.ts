// MX resolution for a destination domain (RFC 5321 §5.1, RFC 7505), on
// node:dns (nodemailer does no MX lookup). It decides which hosts to try and
// in what order, and which targets are public enough to connect to. It never
// throws for a DNS answer; every outcome is a verdict:
//   lookupMx        - hosts in priority order (or the domain itself as the
//                     implicit MX), null-mx, no-such-domain, invalid (MX
//                     records naming addresses; all three permanent), or
//                     temporary (SERVFAIL, timeout, refused, anything else).
//   lookupAddresses - A then AAAA addresses, none, or temporary.
//   orderMx         - pure: priority ascending, equal priorities shuffled.
//   isPublicAddress - pure: false for loopback, private, link-local and
//                     other non-routable targets (SSRF guard for MX names).
// createResolver throws only on a malformed server address.
import { promises as dns } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { errorMessage } from '../observability/logger.ts';

/** DnsResolver - the lookups delivery makes (TXT: MTA-STS, mta-sts.ts); node:dns/promises Resolver satisfies it. */
export interface DnsResolver {
  resolveMx(name: string): Promise<{ exchange: string; priority: number }[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  resolveTxt(name: string): Promise<string[][]>;
}

export type MxHost = { name: string; priority: number };

export type MxLookup =
  | { kind: 'hosts'; hosts: MxHost[]; implicit: boolean }
  | { kind: 'null-mx' }
  | { kind: 'no-such-domain' }
  /** An answer no MX client may follow (Postfix: DNS_INVAL, a bounce). */
  | { kind: 'invalid'; reason: string }
  | { kind: 'temporary'; reason: string };

export type AddressLookup =
  | { kind: 'addresses'; addresses: string[] }
  | { kind: 'none' }
  | { kind: 'temporary'; reason: string };

/** createResolver - a node:dns Resolver with its own servers ("ip" or "ip:port"), timeout and tries. */
export function createResolver(options: { servers: string[]; timeoutMs?: number; tries?: number }): DnsResolver {
  const resolver = new dns.Resolver({ timeout: options.timeoutMs ?? -1, tries: options.tries ?? 4 });
  if (options.servers.length > 0) resolver.setServers(options.servers);
  return resolver;
}

/** lookupMx - the hosts to try for `domain`, or why there are none. */
export async function lookupMx(domain: string, resolver: DnsResolver, random: () => number = Math.random): Promise<MxLookup> {
  const name = normalizeName(domain);
  let records: { exchange: string; priority: number }[];
  try {
    records = await resolver.resolveMx(name);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENODATA') return lookupImplicitMx(name, resolver);
    if (code === 'ENOTFOUND') return { kind: 'no-such-domain' };
    return { kind: 'temporary', reason: code };
  }
  if (records.length === 0) return lookupImplicitMx(name, resolver);
  // RFC 7505 §3: a null MX must be the only record; if it appears beside
  // others the domain still said it takes no mail, so honour that.
  if (records.some((record) => isNullExchange(record.exchange))) return { kind: 'null-mx' };
  // RFC 5321 §5.1: an MX names a host, never an address; Postfix does not follow one that does either.
  const named = records.filter((record) => isIP(record.exchange) === 0);
  if (named.length === 0) return { kind: 'invalid', reason: `every MX record names an IP address, not a host (${records.map((r) => r.exchange).join(', ')})` };
  return { kind: 'hosts', hosts: orderMx(named, random), implicit: false };
}

/** orderMx - MX records by priority ascending, equal priorities shuffled with `random`. */
export function orderMx(records: readonly { exchange: string; priority: number }[], random: () => number): MxHost[] {
  // RFC 5321 §5.1: "If there are multiple destinations with the same
  // preference ... the SMTP client SHOULD randomize them to spread the load."
  const sorted = [...records].sort((a, b) => a.priority - b.priority);
  const ordered: MxHost[] = [];
  let start = 0;
  while (start < sorted.length) {
    let end = start;
    while (end < sorted.length && sorted[end]!.priority === sorted[start]!.priority) end += 1;
    const group = sorted.slice(start, end).map((record) => ({ name: normalizeName(record.exchange), priority: record.priority }));
    ordered.push(...shuffle(group, random));
    start = end;
  }
  // A host named twice is tried once, at its best priority.
  return ordered.filter((host, i) => ordered.findIndex((other) => other.name === host.name) === i);
}

/** lookupAddresses - A and AAAA for `host` (IPv4 first); an IP literal is returned as is. */
export async function lookupAddresses(host: string, resolver: DnsResolver): Promise<AddressLookup> {
  if (isIP(host) !== 0) return { kind: 'addresses', addresses: [host] };
  const name = normalizeName(host);
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
  const answers = [v4, v6].map(classifyAnswer);
  const addresses = answers.flatMap((answer) => answer.addresses);
  if (addresses.length > 0) return { kind: 'addresses', addresses };
  // No address at all: if either lookup failed for a temporary reason we
  // cannot say the host has none, so the caller retries later.
  const failure = answers.find((answer) => answer.reason !== undefined);
  return failure ? { kind: 'temporary', reason: failure.reason! } : { kind: 'none' };
}

// Not globally routable, so never an MX target unless a route names it.
// Documentation ranges are left public on purpose: they route nowhere and
// guard nothing internal.
const NON_PUBLIC_V4: [string, number][] = [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // RFC 1918
  ['100.64.0.0', 10], // CGNAT, RFC 6598
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local
  ['172.16.0.0', 12], // RFC 1918
  ['192.0.0.0', 24], // IETF protocol assignments, RFC 6890
  ['192.168.0.0', 16], // RFC 1918
  ['198.18.0.0', 15], // benchmarking, RFC 2544
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast included
];
const NON_PUBLIC_V6: [string, number][] = [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['64:ff9b:1::', 48], // NAT64 local use, RFC 8215
  ['fc00::', 7], // unique local, RFC 4193
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local, deprecated by RFC 3879 but still routed inside sites
  ['ff00::', 8], // multicast
];
const nonPublic = new BlockList();
for (const [network, prefix] of NON_PUBLIC_V4) {
  nonPublic.addSubnet(network, prefix, 'ipv4');
  // IPv6 forms that carry an IPv4 address reach that host: IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d
  // (RFC 4291 §2.5.5), NAT64 64:ff9b::a.b.c.d (RFC 6052), 6to4 2002:aabb:ccdd:: (RFC 3056).
  for (const embedding of ['::ffff:', '::', '64:ff9b::']) nonPublic.addSubnet(`${embedding}${network}`, 96 + prefix, 'ipv6');
  const [a, b, c, d] = network.split('.').map(Number) as [number, number, number, number];
  nonPublic.addSubnet(`2002:${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}::`, 16 + prefix, 'ipv6');
}
for (const [network, prefix] of NON_PUBLIC_V6) nonPublic.addSubnet(network, prefix, 'ipv6');

/** isPublicAddress - true only for a globally routable IP address; false for non-IPs too. */
export function isPublicAddress(ip: string): boolean {
  const family = isIP(ip);
  if (family === 0) return false;
  return !nonPublic.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

/** lookupImplicitMx - no MX records: the domain itself, if it has an address (RFC 5321 §5.1). */
async function lookupImplicitMx(name: string, resolver: DnsResolver): Promise<MxLookup> {
  const addresses = await lookupAddresses(name, resolver);
  switch (addresses.kind) {
    case 'addresses':
      return { kind: 'hosts', hosts: [{ name, priority: 0 }], implicit: true };
    case 'none':
      return { kind: 'no-such-domain' }; // neither MX nor address: permanent
    case 'temporary':
      return addresses;
  }
}

/** classifyAnswer - one settled A or AAAA lookup: addresses, absent, or a temporary reason. */
function classifyAnswer(result: PromiseSettledResult<string[]>): { addresses: string[]; reason?: string } {
  if (result.status === 'fulfilled') return { addresses: result.value };
  const code = errorCode(result.reason);
  if (code === 'ENODATA' || code === 'ENOTFOUND') return { addresses: [] };
  return { addresses: [], reason: code };
}

/** shuffle - Fisher-Yates in place. */
function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i -= 1) {
    const j = Math.min(i, Math.floor(random() * (i + 1)));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/** isNullExchange - the root name: node:dns reports it as '', others as '.'. */
function isNullExchange(exchange: string): boolean {
  return exchange === '' || exchange === '.';
}

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** errorCode - the node:dns error code (ENODATA, ESERVFAIL, ETIMEOUT, ...), or the message. */
function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') return error.code;
  return errorMessage(error);
}
