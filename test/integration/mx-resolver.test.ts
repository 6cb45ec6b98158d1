// MX and address lookups through node:dns against a DNS server on loopback:
// every verdict of lookupMx and lookupAddresses, and the queries behind it.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createResolver, lookupAddresses, lookupMx, type DnsResolver } from '../../src/outbound/mx-resolver.ts';
import { startDnsServer, type DnsQuery, type DnsServer } from '../helpers/dns-server.ts';

let server: DnsServer;

beforeAll(async () => {
  server = await startDnsServer({
    'example.com': { mx: [[20, 'Backup.Example.COM.'], [10, 'mx1.example.com'], [10, 'MX2.example.com.']] },
    'mx1.example.com': { a: ['192.0.2.10'], aaaa: ['2001:db8::10'] },
    'null.example': { mx: [[0, '.']] },
    'null-among-others.example': { mx: [[10, 'mx1.example.com'], [0, '.']] },
    'implicit.example': { a: ['192.0.2.20'] },
    'v6only.example': { aaaa: ['2001:db8::20'] },
    'empty.example': {},
    'gone.example': { nxdomain: true },
    'servfail.example': { servfail: true },
    'slow.example': { timeout: true },
  });
});

afterAll(async () => {
  await server.close();
});

beforeEach(() => {
  server.queries.length = 0;
});

/** resolver - a fresh resolver (no answers cached from other tests), one try. */
function resolver(timeoutMs = 5_000): DnsResolver {
  return createResolver({ servers: [server.address], timeoutMs, tries: 1 });
}

/** withFailure - the real resolver, except that `method` fails with `code`. */
function withFailure(method: 'resolve4' | 'resolve6', code: string): DnsResolver {
  const real = resolver();
  const fail = () => Promise.reject(Object.assign(new Error(`${method} failed`), { code }));
  return {
    resolveMx: (name) => real.resolveMx(name),
    resolve4: method === 'resolve4' ? fail : (name) => real.resolve4(name),
    resolve6: method === 'resolve6' ? fail : (name) => real.resolve6(name),
    resolveTxt: (name) => real.resolveTxt(name),
  };
}

/** sorted - queries in a stable order, for lookups sent in parallel. */
function sorted(queries: DnsQuery[]): DnsQuery[] {
  return [...queries].sort((a, b) => `${a.name} ${a.type}`.localeCompare(`${b.name} ${b.type}`));
}

describe('lookupMx', () => {
  it('orders MX hosts by priority, shuffling equal ones with the injected random', async () => {
    const backup = { name: 'backup.example.com', priority: 20 };
    expect(await lookupMx('example.com', resolver(), () => 0)).toEqual({
      kind: 'hosts',
      hosts: [{ name: 'mx2.example.com', priority: 10 }, { name: 'mx1.example.com', priority: 10 }, backup],
      implicit: false,
    });
    expect(await lookupMx('Example.COM.', resolver(), () => 0.99)).toEqual({
      kind: 'hosts',
      hosts: [{ name: 'mx1.example.com', priority: 10 }, { name: 'mx2.example.com', priority: 10 }, backup],
      implicit: false,
    });
    expect(server.queries).toEqual([
      { name: 'example.com', type: 'MX' },
      { name: 'example.com', type: 'MX' },
    ]);
  });

  it('reports a null MX (RFC 7505)', async () => {
    expect(await lookupMx('null.example', resolver())).toEqual({ kind: 'null-mx' });
    expect(server.queries).toEqual([{ name: 'null.example', type: 'MX' }]);
  });

  it('treats a null MX among other records as null MX', async () => {
    expect(await lookupMx('null-among-others.example', resolver())).toEqual({ kind: 'null-mx' });
  });

  it('falls back to the domain itself when it has no MX but an A record', async () => {
    expect(await lookupMx('implicit.example', resolver())).toEqual({
      kind: 'hosts',
      hosts: [{ name: 'implicit.example', priority: 0 }],
      implicit: true,
    });
    expect(sorted(server.queries)).toEqual([
      { name: 'implicit.example', type: 'A' },
      { name: 'implicit.example', type: 'AAAA' },
      { name: 'implicit.example', type: 'MX' },
    ]);
    expect(server.queries[0]).toEqual({ name: 'implicit.example', type: 'MX' });
  });

  it('falls back to the domain itself when it has only an AAAA record', async () => {
    expect(await lookupMx('v6only.example', resolver())).toEqual({
      kind: 'hosts',
      hosts: [{ name: 'v6only.example', priority: 0 }],
      implicit: true,
    });
  });

  it('reports no-such-domain when the name has neither MX nor address', async () => {
    expect(await lookupMx('empty.example', resolver())).toEqual({ kind: 'no-such-domain' });
    expect(sorted(server.queries)).toEqual([
      { name: 'empty.example', type: 'A' },
      { name: 'empty.example', type: 'AAAA' },
      { name: 'empty.example', type: 'MX' },
    ]);
  });

  it.each(['missing.example', 'gone.example'])('reports no-such-domain for NXDOMAIN (%s) without asking for addresses', async (domain) => {
    expect(await lookupMx(domain, resolver())).toEqual({ kind: 'no-such-domain' });
    expect(server.queries).toEqual([{ name: domain, type: 'MX' }]);
  });

  it('reports SERVFAIL as temporary', async () => {
    expect(await lookupMx('servfail.example', resolver())).toEqual({ kind: 'temporary', reason: 'ESERVFAIL' });
    expect(server.queries).toEqual([{ name: 'servfail.example', type: 'MX' }]);
  });

  it('reports a timeout as temporary', async () => {
    const quick = createResolver({ servers: [server.address], timeoutMs: 300, tries: 1 });
    expect(await lookupMx('slow.example', quick)).toEqual({ kind: 'temporary', reason: 'ETIMEOUT' });
    expect(server.queries).toEqual([{ name: 'slow.example', type: 'MX' }]);
  });

  it('reports a temporary address failure behind a missing MX as temporary', async () => {
    expect(await lookupMx('empty.example', withFailure('resolve4', 'ESERVFAIL'))).toEqual({ kind: 'temporary', reason: 'ESERVFAIL' });
  });

  it('reports a refused connection as temporary', async () => {
    const closed = await startDnsServer({});
    await closed.close();
    const refused = createResolver({ servers: [closed.address], timeoutMs: 5_000, tries: 1 });
    expect(await lookupMx('example.com', refused)).toEqual({ kind: 'temporary', reason: 'ECONNREFUSED' });
  });
});

describe('lookupAddresses', () => {
  it('returns IPv4 then IPv6 addresses', async () => {
    expect(await lookupAddresses('MX1.example.com.', resolver())).toEqual({ kind: 'addresses', addresses: ['192.0.2.10', '2001:db8::10'] });
    expect(sorted(server.queries)).toEqual([
      { name: 'mx1.example.com', type: 'A' },
      { name: 'mx1.example.com', type: 'AAAA' },
    ]);
  });

  it('returns A-only and AAAA-only addresses', async () => {
    expect(await lookupAddresses('implicit.example', resolver())).toEqual({ kind: 'addresses', addresses: ['192.0.2.20'] });
    expect(await lookupAddresses('v6only.example', resolver())).toEqual({ kind: 'addresses', addresses: ['2001:db8::20'] });
  });

  it.each(['empty.example', 'missing.example'])('returns none for %s', async (host) => {
    expect(await lookupAddresses(host, resolver())).toEqual({ kind: 'none' });
  });

  it.each(['192.0.2.99', '2001:db8::99'])('returns the IP literal %s without a query', async (ip) => {
    expect(await lookupAddresses(ip, resolver())).toEqual({ kind: 'addresses', addresses: [ip] });
    expect(server.queries).toEqual([]);
  });

  it('uses the addresses of one family when the other fails temporarily', async () => {
    expect(await lookupAddresses('mx1.example.com', withFailure('resolve6', 'ETIMEOUT'))).toEqual({ kind: 'addresses', addresses: ['192.0.2.10'] });
    expect(await lookupAddresses('mx1.example.com', withFailure('resolve4', 'ETIMEOUT'))).toEqual({ kind: 'addresses', addresses: ['2001:db8::10'] });
  });

  it('is temporary when both fail, or one fails and the other has none', async () => {
    expect(await lookupAddresses('servfail.example', resolver())).toEqual({ kind: 'temporary', reason: 'ESERVFAIL' });
    expect(await lookupAddresses('empty.example', withFailure('resolve6', 'ETIMEOUT'))).toEqual({ kind: 'temporary', reason: 'ETIMEOUT' });
  });
});
