// MTA-STS (RFC 8461) end to end, on loopback only: a DNS server of the test
// answers the MX and `_mta-sts` TXT records, an HTTPS server of the test
// serves each domain's policy file under a certificate from the test CA,
// and every MX is one test SMTP server whose certificate names mx.test: an
// MX named other-mx.test (the same address) fails verification. The relay's
// level is mta-sts.
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueServerCertificate, type PemCredentials } from '../../src/tls/dev-certs.ts';
import { startDnsServer, type DnsServer, type ZoneEntry } from '../helpers/dns-server.ts';
import { driveByHand, NEXT_HOP_NAME, queueShow, startNextHop, submitMessage, writeTestCa, type NextHop } from '../helpers/next-hop.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

/** A policy file, as the domain's web server gives it. */
function policy(mode: string, mx: string[], maxAge = 86400): string {
  return ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`, ''].join('\r\n');
}

let ca: PemCredentials;
let removeCa: () => Promise<void>;
let dns: DnsServer;
let web: Server;
const policies: Record<string, { status?: number; type?: string; body: string }> = {};
const fetched: string[] = [];
let hop: NextHop;
const zone: Record<string, ZoneEntry> = {};
let relay: TestRelay;
let scheduler: Awaited<ReturnType<typeof driveByHand>>;
let outbound: Record<string, unknown>;
let queueDir: string;

beforeAll(async () => {
  let caFile: string;
  ({ ca, caFile, remove: removeCa } = await writeTestCa());
  hop = await startNextHop('starttls-ca-right-name', { ca });
  // One HTTPS server for every policy host, its certificate naming them all.
  const domains = ['enforced.test', 'wrongcert.test', 'testing.test', 'unlisted.test', 'broken.test', 'none.test', 'gone.test', 'herd.test'];
  const cert = await issueServerCertificate(ca, { names: domains.map((d) => `mta-sts.${d}`) });
  web = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    fetched.push(`${host}${req.url}`);
    const served = req.url === '/.well-known/mta-sts.txt' ? policies[host] : undefined;
    if (!served) return res.writeHead(404).end();
    res.writeHead(served.status ?? 200, { 'content-type': served.type ?? 'text/plain' }).end(served.body);
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  const sts = (id: string) => ({ txt: [`v=STSv1; id=${id};`] });
  Object.assign(zone, {
    [NEXT_HOP_NAME]: { a: ['127.0.0.1'] },
    'other-mx.test': { a: ['127.0.0.1'] },
    'enforced.test': { mx: [[10, NEXT_HOP_NAME]] },
    '_mta-sts.enforced.test': sts('e1'),
    'wrongcert.test': { mx: [[10, 'other-mx.test']] },
    '_mta-sts.wrongcert.test': sts('w1'),
    'unlisted.test': { mx: [[10, 'other-mx.test']] },
    '_mta-sts.unlisted.test': sts('u1'),
    'testing.test': { mx: [[10, 'other-mx.test']] },
    '_mta-sts.testing.test': sts('t1'),
    'broken.test': { mx: [[10, NEXT_HOP_NAME]] },
    '_mta-sts.broken.test': sts('b1'),
    'none.test': { mx: [[10, NEXT_HOP_NAME]] },
    'gone.test': { mx: [[10, NEXT_HOP_NAME]] },
    '_mta-sts.gone.test': sts('g1'),
    'herd.test': { mx: [[10, NEXT_HOP_NAME]] },
    '_mta-sts.herd.test': sts('h1'),
    ...Object.fromEntries(domains.map((d) => [`mta-sts.${d}`, { a: ['127.0.0.1'] }])),
  } satisfies Record<string, ZoneEntry>);
  dns = await startDnsServer(zone);
  policies['mta-sts.enforced.test'] = { body: policy('enforce', [NEXT_HOP_NAME]) };
  policies['mta-sts.wrongcert.test'] = { body: policy('enforce', ['other-mx.test']) };
  policies['mta-sts.unlisted.test'] = { body: policy('enforce', [NEXT_HOP_NAME]) };
  policies['mta-sts.testing.test'] = { body: policy('testing', ['*.elsewhere.test']) };
  policies['mta-sts.broken.test'] = { body: 'this is not a policy', type: 'text/html' };
  policies['mta-sts.gone.test'] = { body: policy('enforce', [NEXT_HOP_NAME]) };
  policies['mta-sts.herd.test'] = { body: policy('enforce', [NEXT_HOP_NAME]) };
  outbound = {
    enabled: true,
    dns: { servers: [dns.address] },
    allowPrivateTargets: true,
    port: hop.port,
    mtaStsPort: (web.address() as AddressInfo).port,
    connectTimeout: '2s',
    tls: { level: 'mta-sts', caFile },
  };
  // The queue outside the relay's own folder, which its stop removes: a second relay restarts on it.
  queueDir = await mkdtemp(join(tmpdir(), 'postern-mta-sts-queue-'));
  relay = await startTestRelay({ outbound, queue: { path: join(queueDir, 'queue.db') } });
  scheduler = await driveByHand(relay);
});

afterAll(async () => {
  await relay?.stop();
  await hop?.close();
  await dns?.close();
  await new Promise((resolve) => web?.close(resolve));
  await removeCa?.();
  await rm(queueDir, { recursive: true, force: true });
});

/** send - one message to `to`, then one run of the scheduler; the message as `queue show` has it. */
async function send(to: string) {
  const id = await submitMessage(relay, { from: 'sender@sender.test', to: [to], marker: to });
  await scheduler.runDue();
  return queueShow(relay, id);
}

describe('outbound.tls.level mta-sts', () => {
  it('delivers under verify to an MX the enforced policy names, fetching the policy once for its id', async () => {
    const shown = await send('a@enforced.test');
    expect(shown.state).toBe('done');
    expect(shown.attempts).toEqual([expect.objectContaining({ host: NEXT_HOP_NAME, outcome: 'delivered', tls: expect.objectContaining({ verified: true }), policy: { level: 'verify', source: 'outbound.tls.level: MTA-STS enforce (id e1)' } })]);
    await send('b@enforced.test');
    expect(fetched.filter((f) => f.startsWith('mta-sts.enforced.test'))).toEqual(['mta-sts.enforced.test/.well-known/mta-sts.txt']);
  });

  it('defers, sending nothing, when the enforced MX presents a certificate for another name', async () => {
    const before = hop.messages.length;
    const shown = await send('c@wrongcert.test');
    expect(shown.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/^4\.7\.5 certificate verification failed for other-mx\.test/) })]);
    expect(hop.messages).toHaveLength(before);
  });

  it('defers without connecting when no MX is one the enforced policy names', async () => {
    const shown = await send('d@unlisted.test');
    expect(shown.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: '4.7.5 MTA-STS: no MX host of unlisted.test is one its policy names (mx.test)' })]);
    expect(shown.attempts).toEqual([expect.objectContaining({ policy: { level: 'verify', source: 'outbound.tls.level: MTA-STS enforce (id u1)' } })]);
    expect(shown.attempts[0]!.host).toBeUndefined();
  });

  it('delivers as may under a testing policy, to an MX it does not name with a certificate for another name, and logs it', async () => {
    const shown = await send('e@testing.test');
    expect(shown.state).toBe('done');
    expect(shown.attempts).toEqual([expect.objectContaining({ outcome: 'delivered', tls: expect.objectContaining({ verified: false }), policy: { level: 'may', source: 'outbound.tls.level: MTA-STS testing (id t1)' } })]);
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'MTA-STS testing: MX hosts the policy does not name; delivering anyway', hosts: ['other-mx.test'] }));
  });

  it('delivers as may where the domain has no policy, or one that cannot be read', async () => {
    for (const to of ['f@none.test', 'g@broken.test']) {
      const shown = await send(to);
      expect(shown.state, to).toBe('done');
      expect(shown.attempts).toEqual([expect.objectContaining({ outcome: 'delivered', policy: { level: 'may', source: 'outbound.tls.level: mta-sts, no policy' } })]);
    }
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'MTA-STS: policy not fetched; none is used', host: 'mta-sts.broken.test', err: 'content type text/html, not text/plain' }));
  });

  it('fetches a policy once for deliveries to its domain that start together', async () => {
    const ids = await Promise.all(['j', 'k', 'l'].map((local) => submitMessage(relay, { from: 'sender@sender.test', to: [`${local}@herd.test`], marker: local })));
    expect(await scheduler.runDue()).toBe(3);
    for (const id of ids) expect((await queueShow(relay, id)).state).toBe('done');
    expect(fetched.filter((f) => f.startsWith('mta-sts.herd.test'))).toHaveLength(1);
  });

  // RFC 8461 §5.1: a policy not expired stays in force while a newer one cannot be fetched.
  it('keeps the policy it has when a new id is announced and the new policy cannot be fetched', async () => {
    expect((await send('h@gone.test')).attempts[0]!.policy.source).toBe('outbound.tls.level: MTA-STS enforce (id g1)');
    delete policies['mta-sts.gone.test'];
    zone['_mta-sts.gone.test']!.txt = ['v=STSv1; id=g2;'];
    const shown = await send('i@gone.test');
    expect(shown.attempts).toEqual([expect.objectContaining({ outcome: 'delivered', policy: { level: 'verify', source: 'outbound.tls.level: MTA-STS enforce (id g1)' } })]);
    expect(fetched.filter((f) => f.startsWith('mta-sts.gone.test'))).toHaveLength(2);
  });

  // §5.1, and what an attacker who wants the mail in plaintext would do: block the policy's web server and point the
  // MX elsewhere. A relay that restarted reads the policy back from its queue. Last: it replaces the relay.
  it('enforces the policy it kept after a restart on the same queue, while the web server fails', async () => {
    expect((await send('m@enforced.test')).state).toBe('done');
    await relay.stop();
    delete policies['mta-sts.enforced.test'];
    zone['enforced.test']!.mx = [[10, 'other-mx.test']];
    const before = fetched.length;
    relay = await startTestRelay({ outbound, queue: { path: join(queueDir, 'queue.db') } });
    scheduler = await driveByHand(relay);
    const shown = await send('n@enforced.test');
    expect(shown.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: '4.7.5 MTA-STS: no MX host of enforced.test is one its policy names (mx.test)' })]);
    expect(shown.attempts).toEqual([expect.objectContaining({ policy: { level: 'verify', source: 'outbound.tls.level: MTA-STS enforce (id e1)' } })]);
    expect(fetched).toHaveLength(before);
  });
});
