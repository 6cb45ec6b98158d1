// Fetching and keeping MTA-STS policies (createMtaStsPolicies, RFC 8461 §3.3,
// §5.1) against a DNS server and an HTTPS server of the test on 127.0.0.1,
// with a clock the test moves. Several of these came from a review of the
// first version, which failed them.
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.ts';
import type { QueueStore } from '../../src/queue/queue-store.ts';
import { openSqliteStore } from '../../src/queue/sqlite/sqlite-store.ts';
import { createMtaStsPolicies, type MtaStsSettings } from '../../src/outbound/mta-sts.ts';
import { createResolver, type DnsResolver } from '../../src/outbound/mx-resolver.ts';
import { generateCertificateAuthority, issueServerCertificate, type PemCredentials } from '../../src/tls/dev-certs.ts';
import { captureWarnings } from '../helpers/captured-log.ts';
import { startDnsServer, type DnsServer, type ZoneEntry } from '../helpers/dns-server.ts';

const GOOD = 'version: STSv1\r\nmode: enforce\r\nmx: mx.test\r\nmax_age: 86400\r\n';
const DOMAINS = ['herd.test', 'fail.test', 'slow.test', 'big.test', 'silent.test', 'redir.test', 'exp.test', 'kept.test', 'zero.test', 'shared.test', 'forged.test', 'broken.test', 'trouble.test', 'revoked.test', 'lapsed.test', 'moved.test', 'republished.test'];

let ca: PemCredentials;
let web: Server;
let dns: DnsServer;
let handler: (req: IncomingMessage, res: ServerResponse) => void;
let requests = 0;
const sockets = new Set<Socket>();
const zone: Record<string, ZoneEntry> = {};

/** policies - a fresh store of policies (nothing kept), on the test's DNS and web servers and its own clock. */
function policies(over: Partial<MtaStsSettings> = {}) {
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const settings: MtaStsSettings = {
    resolver: createResolver({ servers: [dns.address], timeoutMs: 2_000, tries: 1 }),
    extraCa: [ca.certPem],
    port: (web.address() as AddressInfo).port,
    allowPrivateTargets: true,
    timeoutMs: 500,
    now: () => new Date(clock),
    logger: silentLogger(),
    ...over,
  };
  return { sts: createMtaStsPolicies(settings), advance: (ms: number) => (clock += ms) };
}

/** forgetsFailing - the store's policies, through a store that fails to forget one (max_age 0) once failForgets is called. */
function forgetsFailing(store: QueueStore) {
  let failing = false;
  const keptIn: MtaStsSettings['keptIn'] = {
    keptStsPolicies: (...args) => store.keptStsPolicies(...args),
    keepStsPolicy: (domain, kept, options) => (failing && kept === undefined ? Promise.reject(new Error('disk I/O error')) : store.keepStsPolicy(domain, kept, options)),
  };
  return { keptIn, failForgets: () => (failing = true) };
}

beforeAll(async () => {
  ca = await generateCertificateAuthority({ commonName: 'MTA-STS test CA' });
  const cert = await issueServerCertificate(ca, { names: DOMAINS.map((d) => `mta-sts.${d}`) });
  web = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    requests++;
    handler(req, res);
  });
  web.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  for (const domain of [...DOMAINS, 'unnamed.test']) {
    zone[`_mta-sts.${domain}`] = { txt: ['v=STSv1; id=one'] };
    zone[`mta-sts.${domain}`] = { a: ['127.0.0.1'] };
  }
  // Node's DNS asks for the root for a name that is not a valid IDN: a resolver that answers it.
  zone[''] = { txt: ['v=STSv1; id=root'] };
  dns = await startDnsServer(zone);
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => web?.close(resolve));
  await dns?.close();
});

describe('MTA-STS policies fetched and kept', () => {
  it('fetches a policy once for many deliveries to one domain at once', async () => {
    requests = 0;
    handler = (_req, res) => setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD), 100);
    const { sts } = policies();
    const got = await Promise.all(Array.from({ length: 20 }, () => sts.policyFor('herd.test')));
    expect(got.every((p) => p?.mode === 'enforce')).toBe(true);
    expect(requests).toBe(1);
  });

  // §3.3: after a failed GET, further attempts SHOULD wait five minutes or more per version id.
  it('does not fetch again for five minutes, for the same id, after a failed fetch', async () => {
    requests = 0;
    handler = (_req, res) => res.writeHead(503).end();
    const { sts, advance } = policies();
    expect(await sts.policyFor('fail.test')).toBeUndefined();
    advance(299_000);
    expect(await sts.policyFor('fail.test')).toBeUndefined();
    expect(requests).toBe(1);
    advance(2_000);
    expect(await sts.policyFor('fail.test')).toBeUndefined();
    expect(requests).toBe(2);
  });

  // One deadline for the whole fetch: an idle timeout never ends one that sends a byte now and then.
  it('gives up on a policy host that sends its body a byte at a time, without end', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const drip = setInterval(() => (res.destroyed ? clearInterval(drip) : res.write('x')), 100);
    };
    expect(await policies().sts.policyFor('slow.test')).toBeUndefined();
  });

  it('takes no policy from a body over 64 KiB, nor from a host that accepts TCP and never answers', async () => {
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD + 'x: ' + 'a'.repeat(100 * 1024) + '\r\n');
    expect(await policies().sts.policyFor('big.test')).toBeUndefined();
    const silent = createTcpServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      expect(await policies({ port: (silent.address() as AddressInfo).port }).sts.policyFor('silent.test')).toBeUndefined();
    } finally {
      silent.close();
    }
  });

  it('takes no policy from a redirect, nor from a host on a private address without allowPrivateTargets', async () => {
    handler = (_req, res) => res.writeHead(301, { location: 'https://mta-sts.herd.test/.well-known/mta-sts.txt' }).end();
    expect(await policies().sts.policyFor('redir.test')).toBeUndefined();
    requests = 0;
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(GOOD);
    expect(await policies({ allowPrivateTargets: false }).sts.policyFor('redir.test')).toBeUndefined();
    expect(requests).toBe(0);
    expect((await policies().sts.policyFor('redir.test'))?.mode).toBe('enforce');
  });

  it('takes no policy from a web server whose certificate does not name mta-sts.DOMAIN', async () => {
    requests = 0;
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD);
    expect(await policies().sts.policyFor('unnamed.test')).toBeUndefined();
    expect(requests).toBe(0);
  });

  // From a review: such a domain went to DNS as the root, and a fetch for it threw in https.request itself,
  // leaving a timer that crashed the process. It has no policy, and nothing is asked.
  it('has no policy for a domain that is not a valid IDN, and asks DNS nothing for it', async () => {
    const asked = dns.queries.length;
    expect(await policies().sts.policyFor('\u0301x.example')).toBeUndefined();
    expect(dns.queries.slice(asked)).toEqual([]);
  });

  it('keeps a valid policy when the TXT record goes, and fetches again after max_age with the same id', async () => {
    requests = 0;
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD.replace('86400', '60'));
    const { sts, advance } = policies();
    expect((await sts.policyFor('exp.test'))?.mode).toBe('enforce');
    zone['_mta-sts.exp.test']!.txt = [];
    advance(30_000);
    expect((await sts.policyFor('exp.test'))?.mode).toBe('enforce');
    zone['_mta-sts.exp.test']!.txt = ['v=STSv1; id=one'];
    advance(31_000);
    expect((await sts.policyFor('exp.test'))?.mode).toBe('enforce');
    expect(requests).toBe(2);
  });
});

// §5.1: a policy is kept for its max_age, and DNS and the policy's web server are what an attacker who wants the
// mail in plaintext would block. A relay that restarts reads back what the queue kept.
describe('MTA-STS policies kept in the queue across a restart', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-mta-sts-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('holds an enforced policy after a restart while the web server fails, not past its max_age, and forgets one of max_age 0', async () => {
    const path = join(dir, 'restart.db');
    handler = (req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(req.headers.host?.startsWith('mta-sts.zero.test') ? GOOD.replace('86400', '0') : GOOD);
    const first = await openSqliteStore({ path });
    const before = policies({ keptIn: first });
    expect((await before.sts.policyFor('kept.test'))?.mode).toBe('enforce');
    expect((await before.sts.policyFor('zero.test'))?.mode).toBe('enforce');
    await first.close();

    requests = 0;
    handler = (_req, res) => res.writeHead(503).end();
    const second = await openSqliteStore({ path });
    const after = policies({ keptIn: second });
    expect(await after.sts.policyFor('kept.test')).toEqual({ mode: 'enforce', mx: ['mx.test'], maxAge: 86400, id: 'one' });
    expect(requests).toBe(0); // the TXT id is the one kept: nothing to fetch
    expect(await after.sts.policyFor('zero.test')).toBeUndefined();
    expect(requests).toBe(1);
    after.advance(86_400_000);
    expect(await after.sts.policyFor('kept.test')).toBeUndefined();
    await second.close();
  });

  // PostgreSQL nodes share the queue; here two processes' policies share one SQLite store, which is the same to them.
  it('uses the policy another process kept since this one started, when its own fetch fails', async () => {
    const store = await openSqliteStore({ path: join(dir, 'shared.db') });
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD);
    const late = policies({ keptIn: store });
    expect(await late.sts.policyFor('none.test')).toBeUndefined(); // started, with nothing kept yet
    const early = policies({ keptIn: store });
    expect((await early.sts.policyFor('shared.test'))?.mode).toBe('enforce');
    requests = 0;
    handler = (_req, res) => res.writeHead(503).end();
    expect(await late.sts.policyFor('shared.test')).toEqual({ mode: 'enforce', mx: ['mx.test'], maxAge: 86400, id: 'one' });
    expect(requests).toBe(1);
    // Kept in memory from then on: the next lookup finds it there, fetching nothing (the id is the one kept).
    expect((await late.sts.policyFor('shared.test'))?.mode).toBe('enforce');
    expect(requests).toBe(1);
    await store.close();
  });

  // §5.1: a valid policy kept stays in force when DNS says there is none, and an attacker forges NXDOMAIN as easily
  // as SERVFAIL. Found by a review: only DNS trouble and failed fetches looked in the queue.
  it('uses the policy another process kept when the TXT answer is NXDOMAIN, and logs what a failed fetch fell back to', async () => {
    const store = await openSqliteStore({ path: join(dir, 'forged.db') });
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD);
    const { logger, lines } = captureWarnings();
    const late = policies({ keptIn: store, logger });
    await late.sts.policyFor('none.test');
    expect((await policies({ keptIn: store }).sts.policyFor('forged.test'))?.mode).toBe('enforce');
    expect((await policies({ keptIn: store }).sts.policyFor('shared.test'))?.mode).toBe('enforce');
    zone['_mta-sts.forged.test']!.nxdomain = true;
    try {
      expect((await late.sts.policyFor('forged.test'))?.mode).toBe('enforce');
    } finally {
      zone['_mta-sts.forged.test']!.nxdomain = false;
    }
    handler = (_req, res) => res.writeHead(503).end();
    expect((await late.sts.policyFor('shared.test'))?.mode).toBe('enforce');
    expect(lines).toEqual([expect.objectContaining({ domain: 'shared.test', msg: 'MTA-STS: policy not fetched; using the policy kept (enforce, id one)' })]);
    await store.close();
  });

  // Stop 30 found it and left it: a max_age 0 the queue failed to record left the row, which the next lookup that
  // found no policy read back.
  it('does not read back a policy its domain withdrew (max_age 0) when the queue failed to forget it, and says so', async () => {
    const store = await openSqliteStore({ path: join(dir, 'revoked.db') });
    const { keptIn, failForgets } = forgetsFailing(store);
    const { logger, lines } = captureWarnings();
    const { sts } = policies({ keptIn, logger });
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD);
    expect((await sts.policyFor('revoked.test'))?.mode).toBe('enforce');
    failForgets();
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD.replace('86400', '0'));
    zone['_mta-sts.revoked.test']!.txt = ['v=STSv1; id=two'];
    try {
      expect((await sts.policyFor('revoked.test'))?.maxAge).toBe(0);
      zone['_mta-sts.revoked.test']!.servfail = true;
      expect(await sts.policyFor('revoked.test')).toBeUndefined();
    } finally {
      zone['_mta-sts.revoked.test']!.servfail = false;
      zone['_mta-sts.revoked.test']!.txt = ['v=STSv1; id=one'];
    }
    expect(lines).toEqual([
      expect.objectContaining({ domain: 'revoked.test', err: 'disk I/O error', msg: 'MTA-STS: max_age 0 not recorded in the queue; the policy kept there is not used here, but a restart reads it back' }),
    ]);
    expect(await store.keptStsPolicies(new Date('2026-01-01T00:00:00Z'), 10, 'revoked.test')).toHaveLength(1);
    await store.close();
  });

  // Found by the review of the test above: a lapsed "nothing in the queue" hid the withdrawal; and what is hidden is
  // the policy withdrawn, not one kept later under another id.
  it('does not read the withdrawn policy back after a lapsed "nothing in the queue", and reads a new one another process keeps', async () => {
    const store = await openSqliteStore({ path: join(dir, 'lapsed.db') });
    const { keptIn, failForgets } = forgetsFailing(store);
    const { sts, advance } = policies({ keptIn });
    const serve = (policy: string) => (handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(policy));
    const txt = zone['_mta-sts.lapsed.test']!;
    try {
      handler = (_req, res) => res.writeHead(503).end();
      expect(await sts.policyFor('lapsed.test')).toBeUndefined(); // nothing in the queue: not asked for 5 minutes
      advance(6 * 60_000);
      serve(GOOD);
      expect((await sts.policyFor('lapsed.test'))?.mode).toBe('enforce');
      failForgets();
      serve(GOOD.replace('86400', '0'));
      txt.txt = ['v=STSv1; id=two'];
      expect((await sts.policyFor('lapsed.test'))?.maxAge).toBe(0);
      txt.servfail = true;
      expect(await sts.policyFor('lapsed.test')).toBeUndefined();

      // The domain publishes a policy again; another process keeps it; this one's lookups fail.
      txt.servfail = false;
      txt.txt = ['v=STSv1; id=three'];
      serve(GOOD);
      const other = policies({ keptIn: store });
      other.advance(7 * 60_000); // a minute after the withdrawal, on a clock close to this one's
      expect((await other.sts.policyFor('lapsed.test'))?.id).toBe('three');
      txt.servfail = true;
      advance(5 * 60_000);
      expect((await sts.policyFor('lapsed.test'))?.id).toBe('three');
    } finally {
      txt.servfail = false;
      txt.txt = ['v=STSv1; id=one'];
    }
    await store.close();
  });

  // Found by the second review: the row a refused forget leaves may be another node's, of an id this process never
  // held; and a process that held no policy at the withdrawal hid every row, new ones too. What counts is when a row
  // was kept: before the withdrawal, or after.
  it('hides every row kept before a refused forget, whoever kept it, and none kept after', async () => {
    const txt = zone['_mta-sts.moved.test']!;
    const serve = (policy: string) => (handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(policy));
    const lookUp = async (process: ReturnType<typeof policies>, id: string, policy: string) => {
      txt.txt = [`v=STSv1; id=${id}`];
      serve(policy);
      return process.sts.policyFor('moved.test');
    };
    const lookUpInTrouble = async (process: ReturnType<typeof policies>) => {
      txt.servfail = true;
      try {
        return await process.sts.policyFor('moved.test');
      } finally {
        txt.servfail = false;
      }
    };
    const WITHDRAWN = GOOD.replace('86400', '0');
    try {
      // Another node's row, of an id this process never held.
      const store = await openSqliteStore({ path: join(dir, 'moved.db') });
      const { keptIn, failForgets } = forgetsFailing(store);
      const here = policies({ keptIn });
      const there = policies({ keptIn: store });
      expect((await lookUp(here, 'one', GOOD))?.id).toBe('one');
      there.advance(60_000);
      expect((await lookUp(there, 'two', GOOD))?.id).toBe('two');
      here.advance(120_000);
      failForgets();
      expect((await lookUp(here, 'three', WITHDRAWN))?.maxAge).toBe(0);
      expect(await lookUpInTrouble(here)).toBeUndefined();
      await store.close();

      // A withdrawal seen with no policy in memory, then a policy published again and kept by another node.
      const fresh = await openSqliteStore({ path: join(dir, 'moved-again.db') });
      const failing = forgetsFailing(fresh);
      const late = policies({ keptIn: failing.keptIn });
      const other = policies({ keptIn: fresh });
      failing.failForgets();
      expect((await lookUp(late, 'three', WITHDRAWN))?.maxAge).toBe(0);
      other.advance(60_000);
      expect((await lookUp(other, 'four', GOOD))?.id).toBe('four');
      late.advance(60_000);
      expect((await lookUpInTrouble(late))?.id).toBe('four');
      await fresh.close();
    } finally {
      txt.txt = ['v=STSv1; id=one'];
    }
  });

  // Found by the third review: a row's kept time was taken from when its lookup began, so a policy published after
  // a withdrawal, fetched by a node whose lookup began before it, was hidden.
  it('reads a policy kept after a refused forget by a node whose lookup began before it', async () => {
    const store = await openSqliteStore({ path: join(dir, 'republished.db') });
    const txt = zone['_mta-sts.republished.test']!;
    const serve = (policy: string) => (handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(policy));
    const real = createResolver({ servers: [dns.address], timeoutMs: 2_000, tries: 1 });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slowTxt: DnsResolver = {
      resolveMx: (name) => real.resolveMx(name),
      resolve4: (name) => real.resolve4(name),
      resolve6: (name) => real.resolve6(name),
      resolveTxt: async (name) => (await held, real.resolveTxt(name)),
    };
    try {
      const { keptIn, failForgets } = forgetsFailing(store);
      const here = policies({ keptIn });
      serve(GOOD);
      expect((await here.sts.policyFor('republished.test'))?.id).toBe('one');
      here.advance(60_000);
      const there = policies({ keptIn: store, resolver: slowTxt });
      there.advance(60_000);
      const slowLookup = there.sts.policyFor('republished.test'); // begins at 00:01:00, its TXT answer held
      here.advance(1_000);
      failForgets();
      txt.txt = ['v=STSv1; id=two'];
      serve(GOOD.replace('86400', '0'));
      expect((await here.sts.policyFor('republished.test'))?.maxAge).toBe(0); // withdrawn at 00:01:01
      txt.txt = ['v=STSv1; id=three'];
      serve(GOOD);
      there.advance(2_000);
      release();
      expect((await slowLookup)?.id).toBe('three'); // fetched, and kept, at 00:01:02
      here.advance(60_000);
      txt.servfail = true;
      expect((await here.sts.policyFor('republished.test'))?.id).toBe('three');
    } finally {
      txt.servfail = false;
      txt.txt = ['v=STSv1; id=one'];
      await store.close();
    }
  });

  // Most domains publish no policy, and many that do cannot serve it: a delivery to them must not cost a query.
  it('asks the queue for a domain at most once every five minutes when it holds nothing for it', async () => {
    const store = await openSqliteStore({ path: join(dir, 'asked.db') });
    let asked = 0;
    const keptIn: MtaStsSettings['keptIn'] = {
      keptStsPolicies: (...args) => (asked++, store.keptStsPolicies(...args)),
      keepStsPolicy: (...args) => store.keepStsPolicy(...args),
    };
    handler = (_req, res) => res.writeHead(503).end();
    const { sts, advance } = policies({ keptIn });
    zone['_mta-sts.trouble.test']!.servfail = true;
    try {
      for (let i = 0; i < 10; i++) {
        for (const domain of ['broken.test', 'trouble.test', 'none.test']) expect(await sts.policyFor(domain)).toBeUndefined();
        advance(1_000);
      }
      expect(asked).toBe(4); // at the start, then once for each domain
      advance(5 * 60_000);
      expect(await sts.policyFor('none.test')).toBeUndefined();
      expect(asked).toBe(5);
    } finally {
      zone['_mta-sts.trouble.test']!.servfail = false;
    }
    await store.close();
  });

  it('fetches again, and says so, where what the queue kept cannot be read; a store that fails is logged, not thrown', async () => {
    const path = join(dir, 'unreadable.db');
    const store = await openSqliteStore({ path });
    const until = { until: new Date(Date.parse('2027-01-01T00:00:00Z')) };
    const options = { now: new Date(Date.parse('2026-01-01T00:00:00Z')), limit: 100 };
    // Each is read as a fetched policy is, and refused for what would refuse that: an enforced policy naming no MX
    // would hold the domain's mail for a year.
    const unreadable = [
      'not JSON',
      JSON.stringify({ mode: 'enforce', mx: ['mx.test'], maxAge: 86400, id: 'one' }), // not the kept form
      JSON.stringify({ file: GOOD }), // no id
      JSON.stringify({ id: 'not an id!', file: GOOD }),
      JSON.stringify({ id: 'one', file: 'version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n' }), // no mx
      JSON.stringify({ id: 'one', file: GOOD.replace('mx: mx.test', 'mx: *') }),
      JSON.stringify({ id: 'one', file: GOOD.replace('86400', '99999999999') }),
      JSON.stringify({ id: 'one', file: GOOD.replace('enforce', 'strict') }),
    ];
    await store.keepStsPolicy('kept.test', { policy: unreadable[0]!, ...until }, options);
    for (const [i, policy] of unreadable.slice(1).entries()) await store.keepStsPolicy(`other${i}.test`, { policy, ...until }, options);
    requests = 0;
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(GOOD);
    const { logger, lines } = captureWarnings();
    const { sts } = policies({ keptIn: store, logger });
    expect((await sts.policyFor('kept.test'))?.id).toBe('one');
    expect(requests).toBe(1);
    expect(lines).toContainEqual(expect.objectContaining({ unreadable: unreadable.length, msg: expect.stringContaining('could not be read') }));
    // What was fetched is kept in the form that reads back.
    const again = policies({ keptIn: store });
    expect(await again.sts.policyFor('kept.test')).toEqual({ mode: 'enforce', mx: ['mx.test'], maxAge: 86400, id: 'one' });
    expect(requests).toBe(1);

    await store.close();
    const closed = policies({ keptIn: store, logger });
    expect((await closed.sts.policyFor('zero.test'))?.mode).toBe('enforce');
    expect(lines.filter((line) => String(line.msg).includes('queue'))).toHaveLength(3);
  });
});
