// The level mta-sts beside the level's other sources (REQUIRETLS, a route or
// the smarthost), and an enforced policy with a backup MX; through a whole
// relay on loopback only: a DNS server of the test, an HTTPS server for the
// policies, SMTP next hops. From a review of the first version, which failed
// the first and the last.
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueServerCertificate, type PemCredentials } from '../../src/tls/dev-certs.ts';
import { startDnsServer, type DnsServer, type ZoneEntry } from '../helpers/dns-server.ts';
import { driveByHand, queueShow, startNextHop, submitMessage, submitRequireTls, writeTestCa, type NextHop } from '../helpers/next-hop.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

let ca: PemCredentials;
let caFile: string;
let removeCa: () => Promise<void>;
let dns: DnsServer;
let web: Server;
let mx: SMTPServer;
let mxPort: number;
const delivered: { to: string[]; requireTls: boolean }[] = [];
const relays: TestRelay[] = [];
let selfSigned: NextHop;

const policy = (mx: string[]) => ['version: STSv1', 'mode: enforce', ...mx.map((m) => `mx: ${m}`), 'max_age: 86400', ''].join('\r\n');

beforeAll(async () => {
  ({ ca, caFile, remove: removeCa } = await writeTestCa());
  // An MX that offers REQUIRETLS, with a certificate valid for the name the MX record gives (rogue.test).
  const mxCert = await issueServerCertificate(ca, { names: ['rogue.test', 'mx.test'] });
  mx = new SMTPServer({
    logger: false, authOptional: true, disableReverseLookup: true, hideREQUIRETLS: false, key: mxCert.keyPem, cert: mxCert.certPem,
    onData(stream, session, cb) {
      stream.resume();
      stream.on('end', () => {
        delivered.push({ to: session.envelope.rcptTo.map((r) => r.address), requireTls: Boolean((session.envelope as { requireTLS?: boolean }).requireTLS) });
        cb();
      });
    },
  });
  await new Promise<void>((resolve) => mx.listen(0, '127.0.0.1', resolve));
  mxPort = (mx.server.address() as AddressInfo).port;
  const webCert = await issueServerCertificate(ca, { names: ['mta-sts.rt.test', 'mta-sts.two.test', 'mta-sts.many.test'] });
  web = createServer({ cert: webCert.certPem, key: webCert.keyPem }, (req, res) => {
    if (req.url !== '/.well-known/mta-sts.txt') return res.writeHead(404).end();
    // rt.test's policy names mx.test only; its MX record (spoofed, or stale) says rogue.test.
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    res.writeHead(200, { 'content-type': 'text/plain' }).end(host === 'mta-sts.two.test' ? policy(['bad.test', 'mx.test']) : policy(['mx.test']));
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  const zone: Record<string, ZoneEntry> = {
    'rt.test': { mx: [[10, 'rogue.test']] },
    'rogue.test': { a: ['127.0.0.1'] },
    '_mta-sts.rt.test': { txt: ['v=STSv1; id=r1;'] },
    'mta-sts.rt.test': { a: ['127.0.0.1'] },
    // two.test: a primary named by the policy whose certificate does not name it, a backup that verifies.
    'two.test': { mx: [[10, 'bad.test'], [20, 'mx.test'], [30, 'rogue.test']] },
    'bad.test': { a: ['127.0.0.1'] },
    'mx.test': { a: ['127.0.0.1'] },
    '_mta-sts.two.test': { txt: ['v=STSv1; id=t1;'] },
    'mta-sts.two.test': { a: ['127.0.0.1'] },
    // many.test: more preferred MX hosts than the address limit (5), none named by the policy (mx.test only).
    'many.test': { mx: [...[1, 2, 3, 4, 5].map((n): [number, string] => [10, `a${n}.many.test`]), [20, 'mx.test']] },
    ...Object.fromEntries([1, 2, 3, 4, 5].map((n) => [`a${n}.many.test`, { a: ['127.0.0.1'] }])),
    '_mta-sts.many.test': { txt: ['v=STSv1; id=m1;'] },
    'mta-sts.many.test': { a: ['127.0.0.1'] },
  };
  dns = await startDnsServer(zone);
  selfSigned = await startNextHop('starttls-self-signed');
});

afterAll(async () => {
  for (const r of relays) await r.stop();
  await selfSigned?.close();
  await new Promise<void>((resolve) => mx?.close(() => resolve()));
  await new Promise((resolve) => web?.close(resolve));
  await dns?.close();
  await removeCa?.();
});

describe('mta-sts and the other sources of the level', () => {
  // RFC 8689 §4.2.1 (REQUIRETLS): the MX must be DNSSEC-validated or MTA-STS-validated. Here the operator chose
  // mta-sts and the domain enforces a policy that does not name rogue.test: an ordinary message is refused
  // (4.7.5), and a REQUIRETLS message, which asks for more, must not get less.
  it('does not send a REQUIRETLS message to an MX the enforced policy does not name', async () => {
    const relay = await startTestRelay({
      outbound: {
        enabled: true, dns: { servers: [dns.address] }, allowPrivateTargets: true, port: mxPort,
        mtaStsPort: (web.address() as AddressInfo).port, connectTimeout: '2s', tls: { level: 'mta-sts', caFile },
      },
    });
    relays.push(relay);
    const scheduler = await driveByHand(relay);
    const plain = await submitMessage(relay, { from: 's@sender.test', to: ['plain@rt.test'], marker: 'plain' });
    await scheduler.runDue();
    expect((await queueShow(relay, plain)).recipientStates[0]).toMatchObject({ state: 'deferred', reply: expect.stringMatching(/^4\.7\.5 MTA-STS: no MX host of rt\.test/) });
    const strict = await submitRequireTls(relay, { from: 's@sender.test', to: 'strict@rt.test', marker: 'strict' });
    await scheduler.runDue();
    const shown = await queueShow(relay, strict);
    expect({ delivered: delivered.map((d) => d.to).flat(), attempts: shown.attempts.map((a) => [a.host, a.outcome, a.policy.source]) }).toEqual({ delivered: [], attempts: [[undefined, 'deferred', expect.stringContaining('MTA-STS enforce')]] });
  });

  it('enforce: a named MX that fails verification, then the named backup; the unnamed one never tried', async () => {
    const relay = relays[0]!;
    const scheduler = await driveByHand(relay);
    const id = await submitMessage(relay, { from: 's@sender.test', to: ['x@two.test'], marker: 'two' });
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    expect(shown.attempts.map((a) => [a.host, a.outcome, a.policy.level])).toEqual([['bad.test', 'deferred', 'verify'], ['mx.test', 'delivered', 'verify']]);
  });

  // The policy narrows the MX hosts before the address limit takes the first five: else those five, all unnamed, are
  // all there is to narrow, and the mail waits for ever for the host the policy names.
  it('enforce: the named MX behind more unnamed ones than the address limit is tried', async () => {
    const relay = relays[0]!;
    const scheduler = await driveByHand(relay);
    const id = await submitMessage(relay, { from: 's@sender.test', to: ['x@many.test'], marker: 'many' });
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    expect(shown.attempts.map((a) => [a.host, a.outcome])).toEqual([['mx.test', 'delivered']]);
  });

  // relayhost.tls verify: every other domain's mail to the smarthost is verified. Marking one domain mta-sts in
  // outbound.tlsPolicies (asking for more for it) must not send that domain's mail to the smarthost unverified.
  it('does not lower the smarthost from verify to may for a domain whose tlsPolicies entry is mta-sts', async () => {
    const relay = await startTestRelay({
      outbound: {
        enabled: true, dns: { servers: [dns.address] }, connectTimeout: '2s',
        relayhost: { host: '127.0.0.1', port: selfSigned.port, tls: 'verify' },
        tlsPolicies: { 'gmail.test': 'mta-sts' },
      },
    });
    relays.push(relay);
    const scheduler = await driveByHand(relay);
    const other = await submitMessage(relay, { from: 's@sender.test', to: ['a@other.test'], marker: 'other' });
    const sts = await submitMessage(relay, { from: 's@sender.test', to: ['a@gmail.test'], marker: 'sts' });
    await scheduler.runDue();
    const [o, g] = [await queueShow(relay, other), await queueShow(relay, sts)];
    expect(o.recipientStates[0]).toMatchObject({ state: 'deferred', reply: expect.stringMatching(/^4\.7\.5 certificate verification failed/) });
    expect({ state: g.state, attempts: g.attempts.map((a) => [a.outcome, a.tls?.verified, a.policy]) }).toEqual({ state: o.state, attempts: [['deferred', false, { level: 'verify', source: expect.any(String) }]] });
  });
});
