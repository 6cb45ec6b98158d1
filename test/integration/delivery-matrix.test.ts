// The outbound TLS policy matrix (DESIGN.md's table): every level against
// every next-hop behaviour, one route per cell. Each row submits one
// message, runs the scheduler once and checks three things: what the next
// hop saw (a transaction in plaintext or over TLS, or none), what crossed
// the wire (never a MAIL FROM or a byte of the message in plaintext when the
// level forbids it), and what `queue show` recorded for the attempt.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsLevel } from '../../src/config/config.ts';
import type { Scheduler } from '../../src/queue/scheduler.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { driveByHand, NEXT_HOP_NAME, queueShow, startNextHop, submitMessage, writeTestCa, type NextHop, type NextHopKind } from '../helpers/next-hop.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

type Hop = Extract<NextHopKind, 'plain' | 'starttls-self-signed' | 'starttls-ca-right-name' | 'starttls-ca-wrong-name' | 'handshake-fails'>;
type Outcome = 'plaintext' | 'plaintext after retry' | 'tls verified' | 'tls unverified' | 'deferred';

const HOPS: Hop[] = ['plain', 'starttls-self-signed', 'starttls-ca-right-name', 'starttls-ca-wrong-name', 'handshake-fails'];

// DESIGN.md's table, cell by cell; columns in the order of HOPS.
//                                 plain        self-signed       CA, right name   CA, wrong name    handshake fails
const MATRIX: Record<Exclude<TlsLevel, 'mta-sts'>, Outcome[]> = {
  none: /*                      */ ['plaintext', 'plaintext', /*   */ 'plaintext', /**/ 'plaintext', /*   */ 'plaintext'],
  may: /*                       */ ['plaintext', 'tls unverified', 'tls verified', 'tls unverified', 'plaintext after retry'],
  encrypt: /*                   */ ['deferred', 'tls unverified', /**/ 'tls verified', 'tls unverified', 'deferred'],
  verify: /*                    */ ['deferred', 'deferred', /*    */ 'tls verified', 'deferred', /*    */ 'deferred'],
};

/** Why Node says a certificate did not verify, per next hop (checked for every level that sees the certificate). */
const VERIFY_ERROR: Partial<Record<Hop, string>> = {
  'starttls-self-signed': 'DEPTH_ZERO_SELF_SIGNED_CERT',
  'starttls-ca-wrong-name': 'ERR_TLS_CERT_ALTNAME_INVALID',
};

interface Row {
  level: keyof typeof MATRIX;
  hop: Hop;
  outcome: Outcome;
  domain: string;
}

const ROWS: Row[] = Object.entries(MATRIX).flatMap(([level, outcomes]) =>
  HOPS.map((hop, column) => ({ level: level as Row['level'], hop, outcome: outcomes[column]!, domain: `${hop}.${level}.matrix.test` })),
);

// A domain whose route says `may` but whose tlsPolicies entry says `verify`: the policy map wins.
const POLICY_DOMAIN = 'policy.matrix.test';

let dns: DnsServer;
let relay: TestRelay;
let scheduler: Scheduler;
let removeCa: () => Promise<void>;
const hops = {} as Record<Hop, NextHop>;

beforeAll(async () => {
  const { ca, caFile, remove } = await writeTestCa();
  removeCa = remove;
  for (const kind of HOPS) hops[kind] = await startNextHop(kind, { ca });
  dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] } });
  const routes = Object.fromEntries(ROWS.map((r) => [r.domain, { host: NEXT_HOP_NAME, port: hops[r.hop].port, tls: r.level }]));
  routes[POLICY_DOMAIN] = { host: NEXT_HOP_NAME, port: hops['starttls-self-signed'].port, tls: 'may' };
  relay = await startTestRelay({
    outbound: { enabled: true, routes, tlsPolicies: { [POLICY_DOMAIN]: 'verify' }, dns: { servers: [dns.address] }, tls: { caFile } },
  });
  scheduler = await driveByHand(relay);
});

afterAll(async () => {
  await relay?.stop();
  await Promise.all(Object.values(hops).map((h) => h.close()));
  await dns?.close();
  await removeCa?.();
});

/** deliverOne - submit a message for `domain`, run the scheduler once; what the next hop and the queue saw. */
async function deliverOne(hop: NextHop, domain: string, marker: string) {
  const connectionsBefore = hop.connections.length;
  const transactionsBefore = hop.transactions.length;
  const tlsErrorsBefore = hop.tlsErrors.length;
  const id = await submitMessage(relay, { from: `${marker}@sender.test`, to: [`rcpt@${domain}`], marker });
  expect(await scheduler.runDue()).toBe(1);
  const show = await queueShow(relay, id);
  return {
    show,
    attempt: show.attempts.at(-1)!,
    recipient: show.recipientStates[0]!,
    connections: hop.connections.slice(connectionsBefore).map((c) => c.wire.toString('latin1')),
    wire: hop.wire(connectionsBefore).toString('latin1'),
    transactions: hop.transactions.slice(transactionsBefore),
    tlsErrors: hop.tlsErrors.slice(tlsErrorsBefore),
  };
}

describe('TLS level × next hop (DESIGN.md table)', () => {
  it.each(ROWS)('$level against $hop: $outcome', async ({ level, hop, outcome, domain }) => {
    const marker = `case-${level}-${hop}`;
    const seen = await deliverOne(hops[hop], domain, marker);

    // queue show: where the attempt went, and which policy applied, from where.
    expect(seen.show.attempts).toHaveLength(1);
    expect(seen.attempt).toMatchObject({ domain, host: NEXT_HOP_NAME, ip: '127.0.0.1', port: hops[hop].port, policy: { level, source: `outbound.routes["${domain}"].tls` } });
    // The log's one line per delivery names the same next hop, as Postfix's relay= does, with the session's TLS version.
    const relayField = `${NEXT_HOP_NAME}[127.0.0.1]:${hops[hop].port}${seen.attempt.tls ? ` ${seen.attempt.tls.version}` : ''}`;
    expect(relay.logs.find((l) => l.msg === 'delivery recorded' && l.queueId === seen.show.id)).toMatchObject({ relay: relayField });

    // The invariant: when the level forbids plaintext, nothing of the message crossed the wire readable.
    if (level === 'encrypt' || level === 'verify') {
      expect(seen.wire).not.toContain('MAIL FROM');
      expect(seen.wire).not.toContain('RCPT TO');
      expect(seen.wire).not.toContain(marker);
      expect(seen.transactions.every((t) => t.secure)).toBe(true);
    }
    if (level === 'none') expect(seen.wire).not.toContain('STARTTLS');

    switch (outcome) {
      case 'plaintext': {
        expect(seen.connections).toHaveLength(1);
        expect(seen.transactions).toHaveLength(1);
        expect(seen.transactions[0]).toMatchObject({ secure: false, dataInPlaintext: true, mailFrom: `${marker}@sender.test`, rcptTo: [`rcpt@${domain}`] });
        expect(seen.transactions[0]!.message!.toString()).toContain(`X-Test-Case: ${marker}`);
        expect(seen.attempt.tls).toBeUndefined();
        expect(seen.attempt.outcome).toBe('delivered');
        expect(seen.recipient).toMatchObject({ state: 'delivered', reply: expect.stringMatching(/^250 /) });
        break;
      }
      case 'plaintext after retry': {
        // First connection: STARTTLS, a failed handshake, no MAIL FROM. Second: the same host, in plaintext.
        expect(seen.connections).toHaveLength(2);
        expect(seen.connections[0]).toContain('STARTTLS');
        expect(seen.connections[0]).not.toContain('MAIL FROM');
        expect(seen.connections[1]).not.toContain('STARTTLS');
        expect(seen.connections[1]).toContain(`MAIL FROM:<${marker}@sender.test>`);
        expect(seen.tlsErrors.length).toBeGreaterThan(0);
        expect(seen.transactions).toHaveLength(1);
        expect(seen.transactions[0]).toMatchObject({ secure: false, dataInPlaintext: true });
        expect(seen.attempt.tls).toBeUndefined();
        expect(seen.attempt.outcome).toBe('delivered');
        expect(seen.recipient.state).toBe('delivered');
        expect(relay.logs.some((l) => l.msg === 'TLS handshake failed; retrying in plaintext (tls level may)' && l.queueId === seen.show.id)).toBe(true);
        break;
      }
      case 'tls verified':
      case 'tls unverified': {
        const verified = outcome === 'tls verified';
        expect(seen.connections).toHaveLength(1);
        expect(seen.connections[0]).toContain('STARTTLS');
        expect(seen.wire).not.toContain('MAIL FROM');
        expect(seen.wire).not.toContain(marker);
        expect(seen.transactions).toHaveLength(1);
        const [transaction] = seen.transactions;
        expect(transaction).toMatchObject({ secure: true, dataInPlaintext: false, servername: NEXT_HOP_NAME, tls: { version: 'TLSv1.3' } });
        expect(transaction!.message!.toString()).toContain(`X-Test-Case: ${marker}`);
        expect(seen.attempt.tls).toEqual({
          version: 'TLSv1.3',
          cipher: transaction!.tls!.cipher,
          verified,
          ...(verified ? {} : { verifyError: VERIFY_ERROR[hop] }),
        });
        expect(seen.attempt.outcome).toBe('delivered');
        expect(seen.recipient.state).toBe('delivered');
        break;
      }
      case 'deferred': {
        expect(seen.transactions).toEqual([]);
        expect(seen.attempt.outcome).toBe('deferred');
        expect(seen.attempt.reply).toMatch(/^4\.7\.\d+ |^4\d\d 4\.7\.\d+ /);
        expect(seen.recipient).toMatchObject({ state: 'deferred', reply: expect.stringMatching(/^4\.7\.\d+ |^4\d\d 4\.7\.\d+ /) });
        // The certificate was seen and judged: the record says why it was not good enough.
        const why = VERIFY_ERROR[hop];
        if (why) expect(seen.attempt.tls).toMatchObject({ version: 'TLSv1.3', verified: false, verifyError: why });
        // A next hop that offers no STARTTLS is not sent one (Postfix: "TLS is required, but was not offered").
        if (hop === 'plain') {
          expect(seen.wire).not.toContain('STARTTLS');
          expect(seen.attempt.reply).toBe(`4.7.4 TLS is required, but was not offered by ${NEXT_HOP_NAME}`);
        }
        expect(seen.show.deliveries[0]!.nextAttemptAt!.getTime()).toBeGreaterThan(Date.now());
        break;
      }
    }
  });

  it('takes the level from outbound.tlsPolicies over the route (verify against a self-signed next hop: deferred)', async () => {
    const seen = await deliverOne(hops['starttls-self-signed'], POLICY_DOMAIN, 'case-policy-map');
    expect(seen.attempt.policy).toEqual({ level: 'verify', source: `outbound.tlsPolicies["${POLICY_DOMAIN}"]` });
    expect(seen.attempt.tls).toMatchObject({ verified: false, verifyError: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    expect(seen.transactions).toEqual([]);
    expect(seen.wire).not.toContain('MAIL FROM');
    expect(seen.recipient.state).toBe('deferred');
  });
});
