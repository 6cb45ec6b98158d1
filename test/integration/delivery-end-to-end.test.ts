// Delivery end to end: a client hands mail to Postern over STARTTLS, Postern
// delivers it to test next hops (routes and MX through a DNS server on
// loopback) and records every attempt. Covers the happy path over STARTTLS
// both ways, per-recipient 4xx/5xx with an RFC 3464 report to the sender's
// route, the null sender, MX / null MX / SERVFAIL, a next hop that is down
// then up, a 421 greeting and a greeting slower than the reply timeout.
import { execFile } from 'node:child_process';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyVerb } from '../../src/cli/queue.ts';
import { openQueueStore } from '../../src/queue/open-store.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import type { Scheduler } from '../../src/queue/scheduler.ts';
import type { PemCredentials } from '../../src/tls/dev-certs.ts';
import { POSTERN_BIN } from '../helpers/child-relay.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { driveByHand, NEXT_HOP_NAME, queueShow, startNextHop, submitMessage, submitRequireTls, testMessage, writeTestCa, type NextHop, type SeenTransaction } from '../helpers/next-hop.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { issueServerCertificate } from '../../src/tls/dev-certs.ts';
import { SMTPServer } from 'smtp-server';
import { testClock } from '../helpers/test-clock.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

/** deliveryStatus - the message/delivery-status part of a report: the per-message group, then one per recipient. */
function deliveryStatus(report: Buffer): Record<string, string>[] {
  const text = report.toString('latin1');
  const boundary = /boundary="([^"]+)"/.exec(text)?.[1];
  if (!boundary) throw new Error(`not a multipart report:\n${text}`);
  const part = text.split(`--${boundary}`).find((p) => /^\r\nContent-Description: Delivery report\r\nContent-Type: message\/delivery-status\r\n/.test(p));
  if (!part) throw new Error(`no message/delivery-status part:\n${text}`);
  const body = part.slice(part.indexOf('\r\n\r\n') + 4).replace(/\r\n[ \t]+/g, ' ');
  return body
    .split(/\r\n\r\n/)
    .filter((group) => group.trim())
    .map((group) => Object.fromEntries(group.split('\r\n').filter(Boolean).map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()])));
}

/** reportsTo - the reports (from <>) a sink holds for `sender`. */
function reportsTo(sink: NextHop, sender: string): SeenTransaction[] {
  return sink.messages.filter((t) => t.mailFrom === '' && t.rcptTo.includes(sender));
}

/** transactionsOf - what a next hop saw from one sender. */
function transactionsOf(hop: NextHop, sender: string): SeenTransaction[] {
  return hop.transactions.filter((t) => t.mailFrom === sender);
}

/** postern - the CLI as operators run it, to completion. */
function postern(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [POSTERN_BIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }));
  });
}

let ca: PemCredentials;
let caFile: string;
let removeCa: () => Promise<void>;

beforeAll(async () => {
  ({ ca, caFile, remove: removeCa } = await writeTestCa());
});
afterAll(async () => removeCa?.());

// The whole path with the relay's own delivery loop: nobody calls runDue to make it happen.
describe('client → Postern → next hop, STARTTLS both ways', () => {
  let dns: DnsServer;
  let sink: NextHop;
  let relay: TestRelay;

  beforeAll(async () => {
    sink = await startNextHop('starttls-ca-right-name', { ca });
    dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] } });
    relay = await startTestRelay({
      outbound: { enabled: true, routes: { 'dest.test': { host: NEXT_HOP_NAME, port: sink.port, tls: 'verify' } }, dns: { servers: [dns.address] }, tls: { caFile } },
    });
    await relay.addUser('alice', 'correct horse');
  });
  afterAll(async () => {
    await relay?.stop();
    await sink?.close();
    await dns?.close();
  });

  it('delivers what an authenticated user submitted, Received header first, then the original bytes', async () => {
    const original = testMessage('end-to-end', 'alice@sender.test');
    const id = await submitMessage(relay, { from: 'alice@sender.test', to: ['rcpt@dest.test'], raw: original, auth: { user: 'alice', pass: 'correct horse' } });

    const [delivered] = await sink.waitForMessages(1);
    expect(delivered).toMatchObject({ secure: true, dataInPlaintext: false, servername: NEXT_HOP_NAME, mailFrom: 'alice@sender.test', rcptTo: ['rcpt@dest.test'] });
    expect(sink.wire().toString('latin1')).not.toContain('MAIL FROM');
    const bytes = delivered!.message!.toString('latin1');
    expect(bytes.endsWith(original)).toBe(true);
    const added = bytes.slice(0, bytes.length - original.length);
    // One header field, folded: "Received:" then continuation lines only.
    expect(added).toMatch(/^Received: from [^\r\n]+(\r\n\t[^\r\n]+)*\r\n$/);
    expect(added).toMatch(new RegExp(`by relay\\.test \\(Postern\\) with ESMTPSA id ${id}`));
    expect(added).toMatch(/using TLSv1\.3 with cipher/);

    // runDue waits for the loop's delivery in flight, so the attempt is recorded when it returns.
    await relay.scheduler!.runDue();
    const shown = await postern(['queue', 'show', id, '--json', '--config', join(relay.dir, 'postern.yaml')]);
    expect(shown.code, shown.stderr).toBe(0);
    const details = JSON.parse(shown.stdout) as { state: string; recipientStates: unknown[]; attempts: Record<string, unknown>[] };
    expect(details.state).toBe('done');
    expect(details.recipientStates).toEqual([expect.objectContaining({ address: 'rcpt@dest.test', state: 'delivered', reply: expect.stringMatching(/^250 /) })]);
    expect(details.attempts).toEqual([
      expect.objectContaining({
        domain: 'dest.test',
        host: NEXT_HOP_NAME,
        ip: '127.0.0.1',
        port: sink.port,
        tls: { version: 'TLSv1.3', cipher: delivered!.tls!.cipher, verified: true },
        policy: { level: 'verify', source: 'outbound.routes["dest.test"].tls' },
        outcome: 'delivered',
      }),
    ]);
  });
});

// Results, reports and retries, one relay whose scheduler the tests drive (runDue), so every attempt is the test's.
describe('results per recipient, reports, DNS and unreachable next hops', () => {
  let dns: DnsServer;
  let relay: TestRelay;
  let scheduler: Scheduler;
  const hops = {} as Record<'reports' | 'picky' | 'mx' | 'busy' | 'slow' | 'later', NextHop>;

  beforeAll(async () => {
    hops.reports = await startNextHop('starttls-ca-right-name', { ca });
    hops.picky = await startNextHop('rcpt-4xx-5xx', { ca });
    hops.mx = await startNextHop('starttls-ca-right-name', { ca });
    hops.busy = await startNextHop('greeting-421', { ca });
    hops.slow = await startNextHop('slow-greeting', { ca, greetingDelayMs: 5_000 });
    hops.later = await startNextHop('down');
    dns = await startDnsServer({
      [NEXT_HOP_NAME]: { a: ['127.0.0.1'] },
      'mx-domain.test': { mx: [[10, 'mx1.mx-domain.test']] },
      'mx1.mx-domain.test': { a: ['127.0.0.1'] },
      'xn--bcher-kva.test': { mx: [[10, 'mx1.mx-domain.test']] },
      'null-mx.test': { mx: [[0, '.']] },
      'servfail.test': { servfail: true },
    });
    const route = (hop: NextHop, tls = 'verify') => ({ host: NEXT_HOP_NAME, port: hop.port, tls });
    relay = await startTestRelay({
      outbound: {
        enabled: true,
        routes: {
          'sender.test': route(hops.reports),
          'rcpt.test': route(hops.picky),
          'busy.test': route(hops.busy),
          'slow.test': route(hops.slow),
          'later.test': route(hops.later, 'encrypt'),
          // résumé.test, as an operator writes an internationalised domain in a config: its A-label.
          'xn--rsum-bpad.test': route(hops.reports),
        },
        dns: { servers: [dns.address] },
        // MX answers point at 127.0.0.1, and MX deliveries go to the MX sink's port.
        allowPrivateTargets: true,
        port: hops.mx.port,
        connectTimeout: '1s',
        // The greeting's wait (Postfix smtp_helo_timeout); every other next hop here answers at once.
        socketTimeout: '2s',
        tls: { caFile },
      },
    });
    scheduler = await driveByHand(relay);
  });
  afterAll(async () => {
    await relay?.stop();
    await Promise.all(Object.values(hops).map((h) => h.close()));
    await dns?.close();
  });

  /** retry - `postern queue retry ID` (the same store call), then run what is due. */
  async function retry(id: string): Promise<number> {
    const store = await openQueueStore(relay.config);
    try {
      expect(await applyVerb(store, 'retry', { ids: [id] }, { now: new Date(), hostname: relay.config.hostname, owner: 'cli/1/retry', leaseMs: 60_000, log: silentLogger() })).toEqual([id]);
    } finally {
      await store.close();
    }
    return scheduler.runDue();
  }

  it('bounces the 5xx recipient with an RFC 3464 report to the sender, defers and retries the 4xx one', async () => {
    const id = await submitMessage(relay, { from: 'carol@sender.test', to: ['ok@rcpt.test', 'temp@rcpt.test', 'bad@rcpt.test'], marker: 'per-recipient' });
    // The message's delivery, then the report it produced (queued and delivered like any message).
    expect(await scheduler.runDue()).toBe(2);

    expect(transactionsOf(hops.picky, 'carol@sender.test')).toEqual([
      expect.objectContaining({ secure: true, rcptTo: ['ok@rcpt.test'], refused: [{ address: 'temp@rcpt.test', code: 451 }, { address: 'bad@rcpt.test', code: 550 }] }),
    ]);
    const show = await queueShow(relay, id);
    expect(show.recipientStates.map((r) => [r.address, r.state, r.reply])).toEqual([
      ['ok@rcpt.test', 'delivered', expect.stringMatching(/^250 /)],
      ['temp@rcpt.test', 'deferred', expect.stringMatching(/^451 4\.2\.0 /)],
      ['bad@rcpt.test', 'bounced', expect.stringMatching(/^550 5\.1\.1 /)],
    ]);
    expect(show.attempts).toEqual([expect.objectContaining({ outcome: 'partial', host: NEXT_HOP_NAME, port: hops.picky.port })]);
    expect(show.state).toBe('deferred');

    const [report] = reportsTo(hops.reports, 'carol@sender.test');
    expect(report).toMatchObject({ mailFrom: '', rcptTo: ['carol@sender.test'], secure: true });
    const text = report!.message!.toString('latin1');
    expect(text).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status;/m);
    expect(text).toContain('X-Test-Case: per-recipient'); // the original headers come back
    const [perMessage, ...perRecipient] = deliveryStatus(report!.message!);
    expect(perMessage).toMatchObject({ 'Reporting-MTA': 'dns; relay.test', 'X-Postern-Queue-ID': id });
    expect(perRecipient).toEqual([
      expect.objectContaining({ 'Final-Recipient': 'rfc822; bad@rcpt.test', Action: 'failed', Status: '5.1.1', 'Remote-MTA': `dns; ${NEXT_HOP_NAME}`, 'Diagnostic-Code': expect.stringMatching(/^smtp; 550 5\.1\.1 /) }),
    ]);

    // The mailbox is back: a retry sends only the deferred recipient, and the message is done.
    const rule = hops.picky.recipientReply;
    hops.picky.recipientReply = () => undefined;
    try {
      expect(await retry(id)).toBe(1);
    } finally {
      hops.picky.recipientReply = rule;
    }
    expect(transactionsOf(hops.picky, 'carol@sender.test').map((t) => t.rcptTo)).toEqual([['ok@rcpt.test'], ['temp@rcpt.test']]);
    const after = await queueShow(relay, id);
    expect(after.state).toBe('done');
    expect(after.recipientStates.find((r) => r.address === 'temp@rcpt.test')?.state).toBe('delivered');
    expect(after.attempts.map((a) => a.outcome)).toEqual(['partial', 'delivered']);
    expect(reportsTo(hops.reports, 'carol@sender.test')).toHaveLength(1);
  });

  // Postfix's postsuper -e: the operator gives up on a message now, not at outbound.retry.lifetime.
  it('returns a deferred message to its sender on `postern queue bounce`, the last reply in the report; a delivered recipient stays so', async () => {
    const id = await submitMessage(relay, { from: 'dave@sender.test', to: ['ok@rcpt.test', 'temp@rcpt.test'], marker: 'operator-bounce' });
    expect(await scheduler.runDue()).toBe(1);
    expect((await queueShow(relay, id)).state).toBe('deferred');

    const configFile = join(relay.dir, 'postern.yaml');
    expect(await postern(['queue', 'bounce', id, '--config', configFile])).toEqual({ code: 0, stdout: `bounce: 1 message (${id})\n`, stderr: '' });
    const show = await queueShow(relay, id);
    expect(show).toMatchObject({ state: 'done', outcome: 'partly bounced' });
    expect(show.recipientStates.map((r) => [r.address, r.state, r.reply])).toEqual([
      ['ok@rcpt.test', 'delivered', expect.stringMatching(/^250 /)],
      ['temp@rcpt.test', 'bounced', expect.stringMatching(/^5\.0\.0 returned to the sender by the relay's operator; last reply: 451 4\.2\.0 Mailbox busy/)],
    ]);
    // No attempt was made: the history has the one before.
    expect(show.attempts.map((a) => a.outcome)).toEqual(['partial']);

    // The report is queued like any message and goes out with the next run.
    expect(await scheduler.runDue()).toBe(1);
    const [report] = reportsTo(hops.reports, 'dave@sender.test');
    expect(report!.message!.toString('latin1')).toContain('X-Test-Case: operator-bounce');
    const [perMessage, ...perRecipient] = deliveryStatus(report!.message!);
    expect(perMessage).toMatchObject({ 'X-Postern-Queue-ID': id });
    expect(perRecipient).toEqual([
      expect.objectContaining({ 'Final-Recipient': 'rfc822; temp@rcpt.test', Action: 'failed', Status: '5.0.0', 'Diagnostic-Code': expect.stringMatching(/^X-Postern; 5\.0\.0 returned to the sender by the relay's operator; last reply: 451 4\.2\.0 /) }),
    ]);
    expect(perRecipient[0]).not.toHaveProperty('Remote-MTA');

    // Done now: a second bounce changes nothing and says why.
    expect(await postern(['queue', 'bounce', id, '--config', configFile])).toEqual({ code: 1, stdout: 'bounce: 0 messages\n', stderr: `postern: ${id} not changed: done: it was delivered or returned\n` });
  });

  // RFC 3461 §4.3: RET=FULL asks for the message back; Postfix returns it whole up to bounce_size_limit (50,000 bytes).
  it.each([
    { size: 'small', padding: 1_000, returned: 'message/rfc822' },
    { size: 'over 50,000 bytes', padding: 60_000, returned: 'text/rfc822-headers' },
  ])('returns a $size message with RET=FULL as $returned', async ({ padding, returned }) => {
    const sender = `ret-${padding}@sender.test`;
    const c = await RawSmtp.connect(relay.ports.relay);
    await c.reply();
    await c.command('EHLO client.test');
    expect((await c.command(`MAIL FROM:<${sender}> RET=FULL`)).code).toBe(250);
    expect((await c.command('RCPT TO:<bad@rcpt.test>')).code).toBe(250);
    await c.command('DATA');
    const body = `the body of ${sender}\r\n${'x'.repeat(76)}\r\n`.repeat(Math.ceil(padding / 80));
    expect((await c.command(`Subject: returned\r\n\r\n${body}.`)).code).toBe(250);
    c.close();
    expect(await scheduler.runDue()).toBe(2);
    const [report] = reportsTo(hops.reports, sender);
    const text = report!.message!.toString('latin1');
    expect(text).toContain(`Content-Type: ${returned}\r\n`);
    expect(text.includes(`the body of ${sender}`)).toBe(returned === 'message/rfc822');
    expect(text).toContain('Subject: returned\r\n');
  });

  it('sends no report for a message from the null sender', async () => {
    const reportsBefore = hops.reports.messages.length;
    const id = await submitMessage(relay, { from: '', to: ['bad@rcpt.test'], marker: 'null-sender' });
    expect(await scheduler.runDue()).toBe(1);
    const show = await queueShow(relay, id);
    expect(show.mailFrom).toBe('');
    expect(show.recipientStates).toEqual([expect.objectContaining({ address: 'bad@rcpt.test', state: 'bounced' })]);
    expect(show.state).toBe('done');
    expect(hops.reports.messages).toHaveLength(reportsBefore);
    expect(await relay.queued()).not.toContainEqual(expect.objectContaining({ mailFrom: '' }));
  });

  it('delivers through the MX, three recipients of one domain in one transaction', async () => {
    const id = await submitMessage(relay, { from: 'dave@sender.test', to: ['a@mx-domain.test', 'b@mx-domain.test', 'c@mx-domain.test'], marker: 'mx-path' });
    expect(await scheduler.runDue()).toBe(1);
    expect(transactionsOf(hops.mx, 'dave@sender.test')).toEqual([expect.objectContaining({ rcptTo: ['a@mx-domain.test', 'b@mx-domain.test', 'c@mx-domain.test'] })]);
    expect(hops.mx.wire().toString('latin1').match(/MAIL FROM/g) ?? []).toEqual([]); // it went over TLS (may, STARTTLS offered)
    const show = await queueShow(relay, id);
    expect(show.state).toBe('done');
    expect(show.attempts).toEqual([
      expect.objectContaining({ host: 'mx1.mx-domain.test', ip: '127.0.0.1', port: hops.mx.port, policy: { level: 'may', source: 'outbound.tls.level' }, outcome: 'delivered' }),
    ]);
    expect(dns.queries).toContainEqual({ name: 'mx-domain.test', type: 'MX' });
  });

  // RFC 5890: DNS and the config know an internationalised domain by its A-label; the address keeps its UTF-8.
  it('routes a UTF-8 domain by its A-label, and looks up its MX by it; the address goes as it came, with SMTPUTF8', async () => {
    const routed = await submitMessage(relay, { from: 'erin@sender.test', to: ['zoë@résumé.test'], marker: 'idn-route' });
    const looked = await submitMessage(relay, { from: 'dave@sender.test', to: ['jürgen@bücher.test'], marker: 'idn' });
    expect(await scheduler.runDue()).toBe(2);
    expect(transactionsOf(hops.reports, 'erin@sender.test')).toEqual([expect.objectContaining({ rcptTo: ['zoë@résumé.test'] })]);
    expect(dns.queries).toContainEqual({ name: 'xn--bcher-kva.test', type: 'MX' });
    expect(transactionsOf(hops.mx, 'dave@sender.test').at(-1)).toMatchObject({ rcptTo: ['jürgen@bücher.test'] });
    for (const id of [routed, looked]) expect((await queueShow(relay, id)).state).toBe('done');
  });

  it("goes to an address literal's own address, with no DNS lookup", async () => {
    const queriesBefore = dns.queries.length;
    const id = await submitMessage(relay, { from: 'dora@sender.test', to: ['x@[127.0.0.1]', 'y@[IPv6:::1]'], marker: 'literal' });
    expect(await scheduler.runDue()).toBe(2);
    const show = await queueShow(relay, id);
    // The next hop listens on 127.0.0.1 only: the IPv6 literal is tried at ::1 and deferred.
    expect(show.recipientStates.map((r) => [r.address, r.state])).toEqual([['x@[127.0.0.1]', 'delivered'], ['y@[IPv6:::1]', 'deferred']]);
    expect(show.attempts.map((a) => [a.host, a.ip, a.port, a.outcome]).sort()).toEqual([
      ['127.0.0.1', '127.0.0.1', hops.mx.port, 'delivered'],
      ['::1', '::1', hops.mx.port, 'deferred'],
    ]);
    expect(transactionsOf(hops.mx, 'dora@sender.test').map((t) => t.rcptTo)).toEqual([['x@[127.0.0.1]']]);
    expect(dns.queries.slice(queriesBefore).filter((q) => q.name.includes('['))).toEqual([]);
  });

  it('bounces mail for a null-MX domain with 5.1.10 and reports it to the sender', async () => {
    const id = await submitMessage(relay, { from: 'erin@sender.test', to: ['x@null-mx.test'], marker: 'null-mx' });
    expect(await scheduler.runDue()).toBe(2);
    const show = await queueShow(relay, id);
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'bounced', reply: expect.stringMatching(/^5\.1\.10 Recipient domain accepts no mail/) })]);
    // No host was reached: the attempt names none.
    expect(show.attempts).toEqual([expect.objectContaining({ outcome: 'bounced', reply: expect.stringMatching(/null MX/) })]);
    expect(show.attempts[0]!.host).toBeUndefined();
    const [report] = reportsTo(hops.reports, 'erin@sender.test');
    expect(deliveryStatus(report!.message!).slice(1)).toEqual([expect.objectContaining({ 'Final-Recipient': 'rfc822; x@null-mx.test', Action: 'failed', Status: '5.1.10' })]);
  });

  it('defers on SERVFAIL, with the DNS failure recorded', async () => {
    const id = await submitMessage(relay, { from: 'frank@sender.test', to: ['x@servfail.test'], marker: 'servfail' });
    expect(await scheduler.runDue()).toBe(1);
    const show = await queueShow(relay, id);
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/^4\.4\.3 DNS lookup for servfail\.test failed: ESERVFAIL/) })]);
    expect(show.deliveries[0]!.nextAttemptAt!.getTime()).toBeGreaterThan(Date.now());
    expect(reportsTo(hops.reports, 'frank@sender.test')).toEqual([]);
  });

  it('defers while the next hop is down and delivers on retry once it is up', async () => {
    const id = await submitMessage(relay, { from: 'grace@sender.test', to: ['x@later.test'], marker: 'down-then-up' });
    expect(await scheduler.runDue()).toBe(1);
    const first = await queueShow(relay, id);
    expect(first.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/ECONNREFUSED/) })]);
    expect(first.attempts).toEqual([expect.objectContaining({ host: NEXT_HOP_NAME, ip: '127.0.0.1', port: hops.later.port, outcome: 'deferred', policy: { level: 'encrypt', source: 'outbound.routes["later.test"].tls' } })]);
    // No host answered: the log names none (Postfix: relay=none).
    const recorded = relay.logs.find((l) => l.msg === 'delivery recorded' && l.queueId === id)!;
    expect(recorded).toBeDefined();
    expect(recorded).not.toHaveProperty('relay');

    // The next hop comes up on the port the route names.
    const up = await startNextHop('starttls-ca-right-name', { ca, port: hops.later.port });
    try {
      expect(await retry(id)).toBe(1);
      const [delivered] = await up.waitForMessages(1);
      expect(delivered).toMatchObject({ secure: true, mailFrom: 'grace@sender.test', rcptTo: ['x@later.test'] });
      const after = await queueShow(relay, id);
      expect(after.state).toBe('done');
      expect(after.attempts.map((a) => a.outcome)).toEqual(['deferred', 'delivered']);
    } finally {
      await up.close();
    }
  });

  it('defers on a 421 greeting, with the reply recorded', async () => {
    const id = await submitMessage(relay, { from: 'heidi@sender.test', to: ['x@busy.test'], marker: 'greeting-421' });
    expect(await scheduler.runDue()).toBe(1);
    const show = await queueShow(relay, id);
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/^421 4\.3\.2 mx\.test is busy/) })]);
    expect(show.attempts).toEqual([expect.objectContaining({ host: NEXT_HOP_NAME, port: hops.busy.port, outcome: 'deferred', reply: expect.stringMatching(/^421 /) })]);
    expect(transactionsOf(hops.busy, 'heidi@sender.test')).toEqual([]);
    // The host answered, at its greeting: the log names it.
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'delivery recorded', queueId: id, relay: `${NEXT_HOP_NAME}[127.0.0.1]:${hops.busy.port}` }));
    // queue list says why it waits and until when, under its line, as postqueue -p does.
    const listed = await postern(['queue', 'list', '--config', join(relay.dir, 'postern.yaml')]);
    const lines = listed.stdout.split('\n');
    const at = lines.findIndex((l) => l.startsWith(`${id}  deferred `));
    expect(lines.slice(at + 1, at + 3)).toEqual([expect.stringMatching(/^ {4}x@busy\.test: 421 4\.3\.2 mx\.test is busy/), expect.stringMatching(/^ {4}next attempt in [45]m$/)]);
  });

  it('defers when the greeting is slower than outbound.socketTimeout, with the timeout recorded', async () => {
    const id = await submitMessage(relay, { from: 'ivan@sender.test', to: ['x@slow.test'], marker: 'slow-greeting' });
    expect(await scheduler.runDue()).toBe(1);
    const show = await queueShow(relay, id);
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/^4\.4\.\d ETIMEDOUT/) })]);
    const [attempt] = show.attempts;
    expect(attempt).toMatchObject({ host: NEXT_HOP_NAME, port: hops.slow.port, outcome: 'deferred' });
    // Gave up after about the configured 2 s (not the connect timeout's 1 s), well before the 5 s greeting.
    const waited = attempt!.endedAt.getTime() - attempt!.startedAt.getTime();
    expect(waited).toBeGreaterThanOrEqual(1_900);
    expect(waited).toBeLessThan(4_500);
    expect(transactionsOf(hops.slow, 'ivan@sender.test')).toEqual([]);
  });
});

// Postfix's smtp tries the next MX when one puts off the whole transaction; a next hop that refuses it for good is final.
describe('a primary MX that puts off the whole transaction', () => {
  let dns: DnsServer;
  let relay: TestRelay;
  let scheduler: Scheduler;
  const hops: NextHop[] = [];

  beforeAll(async () => {
    const backup = await startNextHop('plain');
    hops.push(backup);
    dns = await startDnsServer({
      'busy-primary.test': { mx: [[10, 'mx1.busy-primary.test'], [20, 'mx2.busy-primary.test']] },
      'mx1.busy-primary.test': { a: ['127.0.0.2'] },
      'mx2.busy-primary.test': { a: ['127.0.0.1'] },
      // A backup with verified TLS that does not offer REQUIRETLS.
      'tls-backup.test': { mx: [[10, 'mx1.busy-primary.test'], [20, 'mx3.tls-backup.test']] },
      'mx3.tls-backup.test': { a: ['127.0.0.3'] },
      // A backup where nothing listens, and a sender domain whose reports reach the plaintext backup.
      'down-backup.test': { mx: [[10, 'mx1.busy-primary.test'], [20, 'mx4.down-backup.test']] },
      'mx4.down-backup.test': { a: ['127.0.0.4'] },
      'report.test': { mx: [[10, 'mx2.busy-primary.test']] },
      // An only MX that closes every connection before its greeting.
      'drops.test': { mx: [[10, 'mx5.drops.test']] },
      'mx5.drops.test': { a: ['127.0.0.5'] },
    });
    relay = await startTestRelay({ outbound: { enabled: true, dns: { servers: [dns.address] }, allowPrivateTargets: true, port: backup.port, tls: { caFile } } });
    scheduler = await driveByHand(relay);
  });
  afterAll(async () => {
    await relay?.stop();
    await Promise.all(hops.map((h) => h.close()));
    await dns?.close();
  });

  it.each([
    { at: 'MAIL FROM', options: { mailReply: { code: 451, text: '4.3.2 Busy, try later' } }, outcome: 'delivered' },
    { at: 'end of DATA', options: { dataReply: { code: 452, text: '4.3.1 Out of space' } }, outcome: 'delivered' },
    { at: 'end of DATA, for good', options: { dataReply: { code: 554, text: '5.7.1 Refused' } }, outcome: 'bounced' },
  ])('$at: the message goes to the backup MX only while the primary defers ($outcome)', async ({ options, outcome }) => {
    const primary = await startNextHop('plain', { host: '127.0.0.2', port: hops[0]!.port, ...options });
    try {
      const id = await submitMessage(relay, { from: 'ivy@sender.test', to: ['x@busy-primary.test'], marker: `backup-${outcome}` });
      await scheduler.runDue();
      const show = await queueShow(relay, id);
      expect(show.recipientStates[0]!.state).toBe(outcome);
      const hosts = show.attempts.map((a) => [a.host, a.outcome]);
      expect(hosts).toEqual(outcome === 'delivered' ? [['mx1.busy-primary.test', 'deferred'], ['mx2.busy-primary.test', 'delivered']] : [['mx1.busy-primary.test', 'bounced']]);
      expect(primary.transactions).toHaveLength(1);
    } finally {
      await primary.close();
    }
  });

  // The history keeps every host tried: the primary's "later" as well as the backup's attempt that could not go on.
  // The body is past the bodies kept in memory (RECENT_BODIES_LIMIT), so it is read from its file, made unreadable.
  it('records the primary and the backup when the queue cannot give the body to the backup', async () => {
    const primary = await startNextHop('plain', { host: '127.0.0.2', port: hops[0]!.port, mailReply: { code: 451, text: '4.3.2 Busy, try later' } });
    try {
      const raw = `From: <kit@sender.test>\r\nSubject: big\r\n\r\n${'ascii only, 64 bytes a line to fill nine megabytes of body text\r\n'.repeat(150_000)}`;
      const id = await submitMessage(relay, { from: 'kit@sender.test', to: ['x@busy-primary.test'], raw });
      const file = join(relay.dir, 'data', 'messages', id);
      await rm(file);
      await mkdir(file);
      await scheduler.runDue();
      const show = await queueShow(relay, id);
      expect(show.attempts.map((a) => [a.host, a.outcome, a.reply])).toEqual([
        ['mx1.busy-primary.test', 'deferred', '451 4.3.2 Busy, try later (in reply to MAIL FROM command)'],
        ['mx2.busy-primary.test', 'deferred', expect.stringMatching(/^4\.3\.0 queue file read error: EISDIR/)],
      ]);
      expect(show.recipientStates[0]).toMatchObject({ state: 'deferred', reply: expect.stringMatching(/^4\.3\.0 queue file read error: EISDIR/) });
      // The backup saw the transaction begin, never its end of data.
      expect(transactionsOf(hops[0]!, 'kit@sender.test').map((t) => t.message)).toEqual([undefined]);
    } finally {
      await primary.close();
    }
  });

  // A host that drops the connection before the end of data cannot have the message: the backup may take it.
  it('goes to the backup MX when the primary drops the connection at MAIL FROM', async () => {
    const primary = createNetServer((socket) => {
      socket.write('220 mx1 ESMTP\r\n');
      socket.on('data', (chunk: Buffer) => {
        if (/^MAIL FROM/im.test(chunk.toString())) return void socket.destroy();
        socket.write('250 mx1\r\n');
      });
    });
    await new Promise<void>((resolve) => primary.listen(hops[0]!.port, '127.0.0.2', resolve));
    try {
      const id = await submitMessage(relay, { from: 'lou@sender.test', to: ['x@busy-primary.test'], marker: 'drop-at-mail' });
      await scheduler.runDue();
      const show = await queueShow(relay, id);
      expect(show.attempts.map((a) => [a.host, a.outcome])).toEqual([['mx1.busy-primary.test', 'deferred'], ['mx2.busy-primary.test', 'delivered']]);
    } finally {
      await new Promise<void>((resolve) => primary.close(() => resolve()));
    }
  });

  // The backup's own shortcoming (no REQUIRETLS) must not turn the primary's "later" into a 5.7.30 bounce.
  it('defers a REQUIRETLS message the primary put off, though the backup offers verified TLS but no REQUIRETLS', async () => {
    const primaryCert = await issueServerCertificate(ca, { names: ['mx1.busy-primary.test'] });
    const backupCert = await issueServerCertificate(ca, { names: ['mx3.tls-backup.test'] });
    const primary = new SMTPServer({
      logger: false, authOptional: true, disableReverseLookup: true, hideREQUIRETLS: false, key: primaryCert.keyPem, cert: primaryCert.certPem,
      onMailFrom: (_a, _s, cb) => cb(Object.assign(new Error('4.7.1 Greylisted, try again later'), { responseCode: 451 })),
    });
    const backup = new SMTPServer({ logger: false, authOptional: true, disableReverseLookup: true, key: backupCert.keyPem, cert: backupCert.certPem });
    await new Promise<void>((resolve) => primary.listen(hops[0]!.port, '127.0.0.2', resolve));
    await new Promise<void>((resolve) => backup.listen(hops[0]!.port, '127.0.0.3', resolve));
    try {
      const id = await submitRequireTls(relay, { from: 'mo@sender.test', to: 'x@tls-backup.test', marker: 'requiretls-tls-backup' });
      await scheduler.runDue();
      const show = await queueShow(relay, id);
      expect(show.recipientStates[0]).toMatchObject({ state: 'deferred', reply: '451 4.7.1 Greylisted, try again later (in reply to MAIL FROM command)' });
    } finally {
      await Promise.all([primary, backup].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    }
  });

  // The primary met REQUIRETLS (verified TLS, REQUIRETLS offered) and only said "later"; the plaintext backup's
  // failure must not turn that into a 5.7.30 bounce.
  it('defers a REQUIRETLS message the primary put off, though the backup offers no TLS', async () => {
    const cert = await issueServerCertificate(ca, { names: ['mx1.busy-primary.test'] });
    const primary = new SMTPServer({
      logger: false, authOptional: true, disableReverseLookup: true, hideREQUIRETLS: false, key: cert.keyPem, cert: cert.certPem,
      onMailFrom: (_a, _s, cb) => cb(Object.assign(new Error('4.7.1 Greylisted, try again later'), { responseCode: 451 })),
    });
    await new Promise<void>((resolve) => primary.listen(hops[0]!.port, '127.0.0.2', resolve));
    try {
      const id = await submitRequireTls(relay, { from: 'jo@sender.test', to: 'x@busy-primary.test', marker: 'requiretls-backup' });
      await scheduler.runDue();
      const show = await queueShow(relay, id);
      expect(show.attempts.map((a) => [a.host, a.outcome])).toEqual([['mx1.busy-primary.test', 'deferred'], ['mx2.busy-primary.test', 'deferred']]);
      expect(show.recipientStates[0]).toMatchObject({ state: 'deferred', reply: '451 4.7.1 Greylisted, try again later (in reply to MAIL FROM command)' });
    } finally {
      await new Promise<void>((resolve) => primary.close(() => resolve()));
    }
  });

  // nodemailer hands a close before the greeting to connect()'s callback: taken for an open session, it was
  // logged as the host's answer, and a REQUIRETLS message bounced 5.7.30 ("TLS not offered") for a network drop.
  it('defers, naming no host, when the only MX closes the connection before its greeting; a REQUIRETLS message too', async () => {
    const dropper = createNetServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => dropper.listen(hops[0]!.port, '127.0.0.5', resolve));
    try {
      const plain = await submitMessage(relay, { from: 'di@sender.test', to: ['x@drops.test'], marker: 'drop-plain' });
      const strict = await submitRequireTls(relay, { from: 'do@sender.test', to: 'x@drops.test', marker: 'drop-requiretls' });
      await scheduler.runDue();
      for (const id of [plain, strict]) {
        expect((await queueShow(relay, id)).recipientStates[0]).toMatchObject({ state: 'deferred', reply: expect.stringMatching(/^4\.4\.1 ECONNECTION/) });
        const recorded = relay.logs.find((l) => l.msg === 'delivery recorded' && l.queueId === id);
        expect(recorded).toBeDefined();
        expect(recorded).not.toHaveProperty('relay');
      }
    } finally {
      await new Promise<void>((resolve) => dropper.close(() => resolve()));
    }
  });

  // RFC 3464 §2.3.5: Remote-MTA is the host whose reply the report gives, the primary that said "later", not the
  // backup tried after it that could not be reached.
  it('names the primary that put the message off as Remote-MTA when the message expires, not the backup that was down', async () => {
    const primary = await startNextHop('plain', { host: '127.0.0.2', port: hops[0]!.port, mailReply: { code: 451, text: '4.3.2 Busy, try later' } });
    const clock = testClock();
    const expiring = await startTestRelay({ outbound: { enabled: true, dns: { servers: [dns.address] }, allowPrivateTargets: true, port: hops[0]!.port, retry: { lifetime: '1h' } } }, { now: clock.now });
    try {
      const expiringScheduler = await driveByHand(expiring);
      const id = await submitMessage(expiring, { from: 'ada@report.test', to: ['x@down-backup.test'], marker: 'remote-mta' });
      expect(await expiringScheduler.runDue()).toBe(1);
      // The last attempt at the end of the lifetime, then the report it queued.
      clock.advance(3600_000);
      expect(await expiringScheduler.runDue()).toBe(2);
      const show = await queueShow(expiring, id);
      expect(show.attempts.map((a) => [a.host, a.outcome])).toEqual([1, 2].flatMap(() => [['mx1.busy-primary.test', 'deferred'], ['mx4.down-backup.test', 'deferred']]));
      expect(show.recipientStates[0]).toMatchObject({ state: 'bounced', reply: expect.stringMatching(/^451 4\.3\.2 Busy, try later \(in reply to MAIL FROM command\) \(gave up/) });
      const [report] = reportsTo(hops[0]!, 'ada@report.test');
      expect(deliveryStatus(report!.message!)[1]).toMatchObject({ 'Final-Recipient': 'rfc822; x@down-backup.test', 'Remote-MTA': 'dns; mx1.busy-primary.test', 'Diagnostic-Code': expect.stringMatching(/^smtp; 451 4\.3\.2 Busy/) });
      expect(expiring.logs).toContainEqual(expect.objectContaining({ msg: 'delivery recorded', queueId: id, relay: `mx1.busy-primary.test[127.0.0.2]:${hops[0]!.port}` }));
    } finally {
      await expiring.stop();
      await primary.close();
    }
  });
});

// The default: an MX, or an address literal, in our own networks is not followed (SSRF); only a route may name one.
describe('next hops in our own networks (outbound.allowPrivateTargets false)', () => {
  let dns: DnsServer;
  let relay: TestRelay;
  let scheduler: Scheduler;
  let hop: NextHop;

  beforeAll(async () => {
    hop = await startNextHop('plain');
    dns = await startDnsServer({ 'private-mx.test': { mx: [[10, 'mx1.private-mx.test']] }, 'mx1.private-mx.test': { a: ['127.0.0.1'] } });
    relay = await startTestRelay({ outbound: { enabled: true, dns: { servers: [dns.address] }, port: hop.port } });
    scheduler = await driveByHand(relay);
  });
  afterAll(async () => {
    await relay?.stop();
    await hop?.close();
    await dns?.close();
  });

  it('defers mail whose MX has a loopback address: DNS may change', async () => {
    const id = await submitMessage(relay, { from: 'a@sender.test', to: ['x@private-mx.test'], marker: 'private-mx' });
    expect(await scheduler.runDue()).toBe(1);
    const show = await queueShow(relay, id);
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/^4\.4\.4 every MX of private-mx\.test has a loopback or private address/) })]);
    expect(hop.connections).toEqual([]);
  });

  it('bounces mail to a loopback address literal at once, naming the setting: a literal does not change', async () => {
    const id = await submitMessage(relay, { from: 'b@sender.test', to: ['x@[127.0.0.1]'], marker: 'private-literal' });
    // The message, then its report to b@sender.test (deferred: sender.test has no MX here).
    expect(await scheduler.runDue()).toBe(2);
    const show = await queueShow(relay, id);
    expect(show.state).toBe('done');
    expect(show.recipientStates).toEqual([
      expect.objectContaining({ state: 'bounced', reply: '5.4.4 address literal [127.0.0.1] is a loopback or private address; refused (set outbound.allowPrivateTargets)' }),
    ]);
    expect(hop.connections).toEqual([]);
  });
});

// MX answers that lead nowhere: to this relay itself (a loop, Postfix's "loops back to myself"), to hosts that do
// not exist (bounced, as Postfix does: smtp_defer_if_no_mx_address_found = no), or to IP addresses instead of names.
describe('MX hosts that are no next hop', () => {
  let dns: DnsServer;
  let relay: TestRelay;
  let scheduler: Scheduler;
  let port: number;

  beforeAll(async () => {
    // The relay listens where its MX deliveries go: an MX with 127.0.0.1 is this relay.
    const probe = createNetServer().listen(0, '127.0.0.1');
    await new Promise((resolve) => probe.once('listening', resolve));
    port = (probe.address() as { port: number }).port;
    await new Promise((resolve) => probe.close(resolve));
    dns = await startDnsServer({
      'loop-by-name.test': { mx: [[10, 'Relay.Test.']] },
      'loop-by-address.test': { mx: [[10, 'mx.loop-by-address.test']] },
      'mx.loop-by-address.test': { a: ['127.0.0.1'] },
      // We are the backup: only the primary, preferred to us, is tried (nothing listens there).
      'backup-is-us.test': { mx: [[10, 'mx1.backup-is-us.test'], [20, 'mx.loop-by-address.test'], [30, 'mx3.backup-is-us.test']] },
      'mx1.backup-is-us.test': { a: ['127.0.0.2'] },
      'mx3.backup-is-us.test': { a: ['127.0.0.3'] },
      'dangling.test': { mx: [[10, 'gone.dangling.test'], [20, 'gone-too.dangling.test']] },
      'numeric.test': { mx: [[10, '127.0.0.1']] },
    });
    relay = await startTestRelay({ listeners: { relay: { host: '127.0.0.1', port } }, outbound: { enabled: true, dns: { servers: [dns.address] }, allowPrivateTargets: true, port } });
    scheduler = await driveByHand(relay);
  });
  afterAll(async () => {
    await relay?.stop();
    await dns?.close();
  });

  it.each([
    ['loop-by-name.test', '5.4.6 mail for loop-by-name.test loops back to myself (MX relay.test)'],
    ['loop-by-address.test', '5.4.6 mail for loop-by-address.test loops back to myself (MX mx.loop-by-address.test)'],
    ['dangling.test', '5.4.4 Host or domain name not found: no MX host of dangling.test has an address (gone.dangling.test, gone-too.dangling.test)'],
    // Postfix: DNS_INVAL, returned as undeliverable.
    ['numeric.test', '5.4.4 MX lookup for numeric.test: every MX record names an IP address, not a host (127.0.0.1)'],
  ])('bounces mail for %s without connecting anywhere', async (domain, reply) => {
    const id = await submitMessage(relay, { from: 'a@sender.test', to: [`x@${domain}`], marker: domain });
    // The message, then its report to a@sender.test (deferred: sender.test has no MX here).
    expect(await scheduler.runDue()).toBe(2);
    const show = await queueShow(relay, id);
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'bounced', reply })]);
    expect(show.attempts.map((a) => a.host)).toEqual([undefined]);
  });

  it('tries only the MX hosts preferred to this relay when it is a backup MX', async () => {
    const id = await submitMessage(relay, { from: 'a@sender.test', to: ['x@backup-is-us.test'], marker: 'backup-is-us' });
    expect(await scheduler.runDue()).toBe(1);
    const show = await queueShow(relay, id);
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'deferred' })]);
    expect(show.attempts.map((a) => [a.host, a.ip])).toEqual([['mx1.backup-is-us.test', '127.0.0.2']]);
  });
});
