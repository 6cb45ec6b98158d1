// Delivery details beyond the TLS matrix: connection reuse, REQUIRETLS
// (RFC 8689), 8-bit bodies to a next hop without 8BITMIME (RFC 6152),
// UTF-8 addresses and SMTPUTF8 (RFC 6531), NOTIFY=NEVER (RFC 3461), and the
// queue verbs of the CLI.
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { queueCli } from '../helpers/child-relay.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { driveByHand, NEXT_HOP_NAME, queueShow, startNextHop, submitMessage, submitRequireTls, testMessage, writeTestCa, type NextHop } from '../helpers/next-hop.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { rawNextHop } from '../helpers/raw-next-hop.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((c) => c()));
});

// relayRoutingTo - a relay sending example.test to a next hop (named mx.test, which a loopback DNS server resolves),
// and the senders' domain sender.test to `reports` when given.
async function relayRoutingTo(port: number, options: { caFile?: string; reports?: number; outbound?: Record<string, unknown> } = {}): Promise<TestRelay> {
  const dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] } });
  cleanups.push(() => dns.close());
  const routes: Record<string, unknown> = { 'example.test': { host: NEXT_HOP_NAME, port, tls: 'may' } };
  if (options.reports) routes['sender.test'] = { host: '127.0.0.1', port: options.reports, tls: 'none' };
  const relay = await startTestRelay({
    outbound: { enabled: true, perDestination: 1, routes, dns: { servers: [dns.address] }, ...(options.caFile ? { tls: { caFile: options.caFile } } : {}), ...options.outbound },
  });
  cleanups.push(() => relay.stop());
  return relay;
}

async function nextHop(kind: Parameters<typeof startNextHop>[0], options: Parameters<typeof startNextHop>[1] = {}): Promise<NextHop> {
  const hop = await startNextHop(kind, options);
  cleanups.push(() => hop.close());
  return hop;
}

/** relayWithReportSink - a relay sending example.test to a next hop of `kind` and its reports to a plaintext sink, delivery driven by hand. */
async function relayWithReportSink(kind: Parameters<typeof startNextHop>[0]) {
  const hop = await nextHop(kind);
  const reportSink = await nextHop('plain');
  const relay = await relayRoutingTo(hop.port, { reports: reportSink.port });
  return { hop, reportSink, relay, scheduler: await driveByHand(relay) };
}

/** plainNextHop - an smtp-server next hop in plaintext with these options (what it offers, what it records); its port. */
async function plainNextHop(options: SMTPServerOptions): Promise<number> {
  const server = new SMTPServer({ disabledCommands: ['STARTTLS', 'AUTH'], logger: false, ...options });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.server.address() as { port: number }).port;
}

/** clientSession - a raw session with the relay's relay port, after its greeting and EHLO. */
async function clientSession(relay: TestRelay): Promise<RawSmtp> {
  const c = await RawSmtp.connect(relay.ports.relay);
  await c.reply();
  await c.command('EHLO client.test');
  return c;
}

// relayToVerifiedNextHop - a next hop with a certificate from a test CA the relay trusts; delivery driven by hand.
async function relayToVerifiedNextHop() {
  const ca = await writeTestCa();
  cleanups.push(ca.remove);
  const hop = await nextHop('starttls-ca-right-name', { ca: ca.ca });
  const relay = await relayRoutingTo(hop.port, { caFile: ca.caFile });
  return { hop, relay, scheduler: await driveByHand(relay) };
}

describe('connection reuse', () => {
  // nodemailer calls back no RSET whose connection fails meanwhile: the delivery waited for ever, its lease renewed.
  it.each(['close', 'silent'] as const)('opens a new connection when a cached one fails at RSET (%s)', async (onRset) => {
    // A next hop that takes every message, and answers RSET as `onRset` says: 'close' ends the connection, 'silent' never answers.
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { EHLO: '250-mx.test\r\n250 PIPELINING\r\n', DATA: '354 go ahead\r\n', RSET: onRset === 'close' ? { text: '', close: true } : null });
    cleanups.push(hop.close);
    const relay = await relayRoutingTo(hop.port, { outbound: { socketTimeout: 1, connectionCacheTime: 60 } });
    const scheduler = await driveByHand(relay);
    const first = await submitMessage(relay, { from: 'a@sender.test', to: ['rcpt@example.test'], marker: 'first' });
    await scheduler.runDue();
    const second = await submitMessage(relay, { from: 'a@sender.test', to: ['rcpt@example.test'], marker: 'second' });
    await scheduler.runDue();
    for (const id of [first, second]) expect((await queueShow(relay, id)).recipientStates[0]).toMatchObject({ state: 'delivered' });
    expect(hop).toMatchObject({ connections: 2, messages: 2 });
  });

  it('sends RSET before each later batch of recipients, so a batch refused whole does not bounce the next', async () => {
    const hop = await nextHop('plain');
    hop.recipientReply = (address) => (address.startsWith('grey') ? { code: 450, text: '4.2.0 Greylisted, try again later' } : undefined);
    const relay = await relayRoutingTo(hop.port, { outbound: { recipientsPerTransaction: 2 } });
    const scheduler = await driveByHand(relay);
    const id = await submitMessage(relay, { from: 'a@sender.test', to: ['grey1@example.test', 'grey2@example.test', 'ok@example.test'], marker: 'batches' });
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    expect(shown.recipientStates.map((r) => [r.address, r.state])).toEqual([
      ['grey1@example.test', 'deferred'],
      ['grey2@example.test', 'deferred'],
      ['ok@example.test', 'delivered'],
    ]);
    expect(hop.wire().toString('latin1')).toMatch(/RCPT TO:<grey2@example\.test>\r\n(?:.*\r\n)*RSET\r\nMAIL FROM:/);
  });

  // A recipient the next hop took is not sent the message again because a later batch could not be read. The batch
  // that could not is dropped with its connection (QUIT there would be message text); nothing of it is delivered.
  it('defers only the batches after a body the queue could not read, and drops that connection', async () => {
    const received: string[][] = [];
    let open = 0;
    let spoil: (() => Promise<void>) | undefined;
    const port = await plainNextHop({
      onConnect: (_s, cb) => (open++, cb()),
      onClose: () => open--,
      onData: (stream, session, cb) => {
        stream.resume();
        stream.on('end', () => {
          received.push(session.envelope.rcptTo.map((r) => r.address));
          const next = spoil;
          spoil = undefined;
          void (next ? next() : Promise.resolve()).then(() => cb());
        });
      },
    });
    const relay = await relayRoutingTo(port, { outbound: { recipientsPerTransaction: 2 } });
    const scheduler = await driveByHand(relay);
    // Past the bodies kept in memory for delivery (RECENT_BODIES_LIMIT), so each batch reads it from its file.
    const raw = `Subject: big\r\n\r\n${'ascii only, 64 bytes a line to fill nine megabytes of body text\r\n'.repeat(150_000)}`;
    const to = ['r1@example.test', 'r2@example.test', 'r3@example.test', 'r4@example.test'];
    const id = await submitMessage(relay, { from: 'a@sender.test', to, raw });
    spoil = async () => {
      const file = join(relay.dir, 'data', 'messages', id);
      await rm(file);
      await mkdir(file);
    };
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    expect(received).toEqual([['r1@example.test', 'r2@example.test']]);
    expect(shown.recipientStates.map((r) => [r.address, r.state, r.reply])).toEqual([
      ['r1@example.test', 'delivered', expect.stringMatching(/^250 /)],
      ['r2@example.test', 'delivered', expect.stringMatching(/^250 /)],
      ['r3@example.test', 'deferred', expect.stringMatching(/^4\.3\.0 queue file read error: EISDIR/)],
      ['r4@example.test', 'deferred', expect.stringMatching(/^4\.3\.0 queue file read error: EISDIR/)],
    ]);
    expect(shown.attempts).toEqual([expect.objectContaining({ outcome: 'partial' })]);
    await vi.waitFor(() => expect(open).toBe(0), { timeout: 3000 });
  });

  it('sends several messages to one next hop over one connection, STARTTLS once, RSET between', async () => {
    const { hop, relay, scheduler } = await relayToVerifiedNextHop();
    for (const marker of ['one', 'two', 'three']) await submitMessage(relay, { from: 'a@sender.test', to: ['rcpt@example.test'], marker });
    await scheduler.runDue();
    await hop.waitForMessages(3);
    expect(hop.messages.every((m) => m.secure)).toBe(true);
    expect(hop.connections).toHaveLength(1);
    const wire = hop.wire().toString('latin1');
    expect(wire.match(/STARTTLS/g)).toHaveLength(1);
  });
});

describe('REQUIRETLS (RFC 8689)', () => {
  it('bounces with 5.7.30 when the next hop does not offer REQUIRETLS, and sends it nothing', async () => {
    const { hop, relay, scheduler } = await relayToVerifiedNextHop();
    const id = await submitRequireTls(relay, { from: 'a@sender.test', to: 'rcpt@example.test', marker: 'requiretls' });
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    expect(shown.envelope.requireTls).toBe(true);
    expect(shown.recipientStates[0]).toMatchObject({ state: 'bounced' });
    expect(shown.recipientStates[0]!.reply).toMatch(/^5\.7\.30 REQUIRETLS support required/);
    expect(shown.attempts.at(-1)!.policy).toEqual({ level: 'verify', source: 'REQUIRETLS' });
    expect(hop.transactions).toHaveLength(0);
  });

  it('bounces with 5.7.30 at once when the next hop offers no STARTTLS, and sends it nothing', async () => {
    const hop = await nextHop('plain');
    const relay = await relayRoutingTo(hop.port);
    const scheduler = await driveByHand(relay);
    const id = await submitRequireTls(relay, { from: 'a@sender.test', to: 'rcpt@example.test', marker: 'requiretls' });
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    expect(shown.recipientStates[0]).toMatchObject({
      state: 'bounced',
      reply: `5.7.30 REQUIRETLS: no next hop offered verified TLS (4.7.4 TLS is required, but was not offered by ${NEXT_HOP_NAME})`,
    });
    expect(hop.wire().toString('latin1')).not.toMatch(/STARTTLS|MAIL FROM/);
  });
});

describe('reports of REQUIRETLS messages (RFC 8689 §5)', () => {
  it('returns the headers only though RET=FULL, in a report marked REQUIRETLS that a next hop without it still gets', async () => {
    const { reportSink, relay, scheduler } = await relayWithReportSink('plain');
    const id = await submitRequireTls(relay, { from: 'a@sender.test', to: 'rcpt@example.test', marker: 'requiretls-full', ret: 'FULL' });
    await scheduler.runDue();
    expect((await queueShow(relay, id)).recipientStates[0]).toMatchObject({ state: 'bounced', reply: expect.stringMatching(/^5\.7\.30 /) });
    const reportId = relay.logs.find((l) => l.msg === 'delivery status notification queued' && l.queueId === id)?.report;
    expect((await queueShow(relay, String(reportId))).envelope.requireTls).toBe(true);
    // The report's way back has neither TLS nor REQUIRETLS: a bounce is not lost for want of them.
    await scheduler.runDue();
    const [report] = await reportSink.waitForMessages(1);
    expect(report!.mailFrom).toBe('');
    expect(reportSink.wire().toString('latin1')).toMatch(/^MAIL FROM:<>(?: BODY=\w+)?\r$/m);
    const text = report!.message!.toString('latin1');
    expect(text).toContain('Content-Type: text/rfc822-headers');
    expect(text).toContain('X-Test-Case: requiretls-full');
    expect(text).not.toContain('Body of requiretls-full.');
  });
});

describe('an error after DATA', () => {
  // nodemailer's DATA error carries no RCPT refusals: every recipient got the DATA reply, a 452 became a bounce.
  it.each([
    [554, '5.7.1 Message refused', 'bounced'],
    [451, '4.3.0 Try again later', 'deferred'],
  ])('leaves recipients refused at RCPT with their own replies (DATA answered %i)', async (code, text, dataOutcome) => {
    const hop = await nextHop('rcpt-4xx-5xx', { dataReply: { code, text } });
    const relay = await relayRoutingTo(hop.port);
    const scheduler = await driveByHand(relay);
    const id = await submitMessage(relay, { from: 'a@sender.test', to: ['temp@example.test', 'ok@example.test', 'bad@example.test'], marker: `data-${code}` });
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    // Each reply says which command it answered, as Postfix's do.
    expect(shown.recipientStates.map((r) => [r.address, r.state, r.reply])).toEqual([
      ['temp@example.test', 'deferred', '451 4.2.0 Mailbox busy, try again later (in reply to RCPT TO command)'],
      ['ok@example.test', dataOutcome, `${code} ${text} (in reply to end of DATA command)`],
      ['bad@example.test', 'bounced', '550 5.1.1 No such user here (in reply to RCPT TO command)'],
    ]);
  });
});

describe('a next hop that answers DATA with 250', () => {
  // Postfix's smtp(8): a reply to DATA that is not 3xx fails the message, "Protocol error" (5.5.0): it bounces. Before,
  // the body went to a host reading commands, and the reply to its last line recorded the message delivered.
  it('bounces the message as a protocol error, having sent none of it', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { EHLO: '250-mx.test\r\n250 PIPELINING\r\n', DATA: '250 2.0.0 Ok\r\n' });
    cleanups.push(hop.close);
    const relay = await relayRoutingTo(hop.port);
    const scheduler = await driveByHand(relay);
    const id = await submitMessage(relay, { from: 'a@sender.test', to: ['rcpt@example.test'], marker: 'data-250' });
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    expect(shown.recipientStates.map((r) => [r.state, r.reply])).toEqual([['bounced', '5.5.0 Protocol error: host said: 250 2.0.0 Ok (in reply to DATA command)']]);
    expect(hop).toMatchObject({ connections: 1, messages: 0 });
  });
});

describe('a message declared BODY=8BITMIME to a next hop without 8BITMIME', () => {
  /**
   * sendDeclared8Bit - a relay routing to a next hop that hides 8BITMIME; one message declared 8BITMIME sent to it,
   * then delivered (after `beforeDelivery`); with the next hop's connections still open at the end.
   */
  async function sendDeclared8Bit(message: string, options: { beforeDelivery?: (relay: TestRelay, id: string) => Promise<void>; outbound?: Record<string, unknown>; reports?: number } = {}) {
    const seen: { from: string; body?: string }[] = [];
    let open = 0;
    const port = await plainNextHop({
      hide8BITMIME: true,
      onConnect: (_s, cb) => (open++, cb()),
      onClose: () => open--,
      onMailFrom: (a, _s, cb) => (seen.push({ from: a.address, body: (a.args as Record<string, string> | false || {}).BODY }), cb()),
    });
    const relay = await relayRoutingTo(port, { outbound: options.outbound, reports: options.reports });
    const scheduler = await driveByHand(relay);
    const c = await clientSession(relay);
    await c.command('MAIL FROM:<a@sender.test> BODY=8BITMIME');
    await c.command('RCPT TO:<rcpt@example.test>');
    await c.command('DATA');
    const id = /queued as (\w+)/.exec((await c.command(`${message}.`)).text)![1]!;
    c.close();
    await options.beforeDelivery?.(relay, id);
    const attempts = await scheduler.runDue();
    return { seen, shown: await queueShow(relay, id), attempts, open: () => open };
  }

  it('bounces one with 8-bit bytes with 5.6.3 (Postern does not convert) and sends nothing', async () => {
    const { seen, shown } = await sendDeclared8Bit('Subject: caf\xe9\r\n\r\nna\xefve\r\n');
    expect(shown.recipientStates[0]!.reply).toBe('5.6.3 Next hop does not offer 8BITMIME; Postern does not convert 8-bit messages');
    expect(seen).toEqual([]);
  });

  // The body is read before the transaction to see whether it is 7-bit: a queue file that cannot be read throws there.
  // The attempt still counts (backoff, expiry); a lapsed lease would have it tried again at once, for ever.
  // Past the bodies kept in memory for delivery (RECENT_BODIES_LIMIT), so it is read from its file, made unreadable.
  const big = `Subject: big\r\n\r\n${'ascii only, 64 bytes a line to fill nine megabytes of body text\r\n'.repeat(150_000)}`;
  async function makeUnreadable(relay: TestRelay, id: string): Promise<void> {
    const file = join(relay.dir, 'data', 'messages', id);
    await rm(file);
    await mkdir(file);
  }

  it('records a deferral when the queue cannot give the body, and closes the session', async () => {
    const { seen, shown, attempts, open } = await sendDeclared8Bit(big, { beforeDelivery: makeUnreadable });
    expect(attempts).toBe(1);
    expect(shown.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/^4\.3\.0 queue file read error: EISDIR/) })]);
    expect(shown.deliveries[0]).toMatchObject({ attempts: 1 });
    expect(seen).toEqual([]);
    await vi.waitFor(() => expect(open()).toBe(0));
  });

  // Its report cannot return what the queue cannot give: it goes without it, or the attempt would not be recorded.
  it('bounces it once expired, with a report that returns nothing of the message', async () => {
    const reportSink = await nextHop('plain');
    const { shown, attempts } = await sendDeclared8Bit(big, {
      outbound: { retry: { lifetime: '1s' } },
      reports: reportSink.port,
      beforeDelivery: async (relay, id) => {
        await makeUnreadable(relay, id);
        await new Promise((resolve) => setTimeout(resolve, 1100)); // past its lifetime
      },
    });
    expect(attempts).toBe(2); // the message, then its report
    expect(shown.state).toBe('done');
    expect(shown.recipientStates).toEqual([expect.objectContaining({ state: 'bounced', reply: expect.stringMatching(/^4\.3\.0 queue file read error: EISDIR.*gave up: message expired/) })]);
    const [report] = await reportSink.waitForMessages(1);
    expect(report).toMatchObject({ mailFrom: '', rcptTo: ['a@sender.test'] });
    expect(report!.message!.toString('latin1')).toMatch(/Action: failed\r\n[\s\S]*Content-Type: text\/rfc822-headers\r\n\r\n\r\n--/);
  });

  // Many clients declare 8BITMIME for every message; Postfix sends a 7-bit one as it is.
  it('sends one that holds no 8-bit byte, without BODY=8BITMIME', async () => {
    const { seen, shown } = await sendDeclared8Bit(`Subject: plain\r\n\r\n${'ascii only\r\n'.repeat(2000)}`);
    expect(shown.recipientStates[0]!.state).toBe('delivered');
    expect(seen).toEqual([{ from: 'a@sender.test', body: undefined }]);
  });
});

describe('UTF-8 addresses and a next hop with or without SMTPUTF8 (RFC 6531 §3.2)', () => {
  /** sendUtf8 - a relay routing to a next hop (SMTPUTF8 hidden or offered); one message sent to it as given, raw. */
  async function sendUtf8(options: { hideSMTPUTF8: boolean; mail: string; rcpts: string[] }) {
    const seen: { from: string; smtpUtf8: boolean; to: string[] }[] = [];
    const port = await plainNextHop({
      hideSMTPUTF8: options.hideSMTPUTF8,
      onMailFrom: (a, _s, cb) => (seen.push({ from: a.address, smtpUtf8: Boolean((a.args as Record<string, unknown> | false || {}).SMTPUTF8), to: [] }), cb()),
      onRcptTo: (a, _s, cb) => (seen.at(-1)!.to.push(a.address), cb()),
    });
    const relay = await relayRoutingTo(port);
    const scheduler = await driveByHand(relay);
    const c = await clientSession(relay);
    for (const command of [options.mail, ...options.rcpts, 'DATA']) expect((await c.command(command)).code).toBeLessThan(400);
    const id = /queued as (\w+)/.exec((await c.command('Subject: utf-8\r\n\r\nhi\r\n.')).text)![1]!;
    c.close();
    await scheduler.runDue();
    const shown = await queueShow(relay, id);
    return { seen, states: shown.recipientStates.map((r) => [r.address, r.state, r.reply]) };
  }
  const NOT_OFFERED = `5.6.7 SMTPUTF8 is required, but was not offered by host ${NEXT_HOP_NAME}`;

  // nodemailer sent "RCPT TO:<bøb@…>" as it is, without SMTPUTF8, to a next hop that did not offer it.
  it('bounces a UTF-8 recipient with 5.6.7 where the next hop offers no SMTPUTF8, and sends the others', async () => {
    const { seen, states } = await sendUtf8({ hideSMTPUTF8: true, mail: 'MAIL FROM:<a@sender.test>', rcpts: ['RCPT TO:<b\xC3\xB8b@example.test>', 'RCPT TO:<rcpt@example.test>'] });
    expect(states).toEqual([
      ['bøb@example.test', 'bounced', NOT_OFFERED],
      ['rcpt@example.test', 'delivered', expect.stringMatching(/^250 /)],
    ]);
    expect(seen).toEqual([{ from: 'a@sender.test', smtpUtf8: false, to: ['rcpt@example.test'] }]);
  });

  it('bounces every recipient of a UTF-8 sender there, declared SMTPUTF8 or not, and sends nothing', async () => {
    for (const mail of ['MAIL FROM:<\xC3\xA5lice@sender.test>', 'MAIL FROM:<\xC3\xA5lice@sender.test> SMTPUTF8']) {
      const { seen, states } = await sendUtf8({ hideSMTPUTF8: true, mail, rcpts: ['RCPT TO:<rcpt@example.test>'] });
      expect(states).toEqual([['rcpt@example.test', 'bounced', NOT_OFFERED]]);
      expect(seen).toEqual([]);
    }
  });

  // What nodemailer did already: SMTPUTF8 on MAIL FROM for a UTF-8 address, whether the client declared it or not.
  it('declares SMTPUTF8 to a next hop that offers it, for a UTF-8 local part sent without it', async () => {
    const { seen, states } = await sendUtf8({ hideSMTPUTF8: false, mail: 'MAIL FROM:<a@sender.test>', rcpts: ['RCPT TO:<b\xC3\xB8b@example.test>'] });
    expect(states).toEqual([['bøb@example.test', 'delivered', expect.stringMatching(/^250 /)]]);
    expect(seen).toEqual([{ from: 'a@sender.test', smtpUtf8: true, to: ['bøb@example.test'] }]);
  });
});

describe('a next hop with a SIZE limit (RFC 1870)', () => {
  it('declares SIZE= on MAIL FROM, and bounces a message over the limit with 5.3.4 without sending it', async () => {
    const seen: { from: string; size?: string }[] = [];
    const port = await plainNextHop({
      size: 3000,
      onMailFrom: (a, _s, cb) => (seen.push({ from: a.address, size: (a.args as Record<string, string> | false || {}).SIZE }), cb()),
    });
    const relay = await relayRoutingTo(port);
    const scheduler = await driveByHand(relay);
    const small = await submitMessage(relay, { from: 'small@sender.test', to: ['rcpt@example.test'], marker: 'small' });
    const large = await submitMessage(relay, { from: 'large@sender.test', to: ['rcpt@example.test'], marker: `large ${'x'.repeat(4000)}` });
    await scheduler.runDue();

    const smallShown = await queueShow(relay, small);
    expect(smallShown.recipientStates[0]!.state).toBe('delivered');
    expect(seen).toEqual([{ from: 'small@sender.test', size: String(smallShown.size) }]);
    const largeShown = await queueShow(relay, large);
    expect(largeShown.recipientStates[0]).toMatchObject({
      state: 'bounced',
      reply: `5.3.4 message size ${largeShown.size} exceeds size limit 3000 of server ${NEXT_HOP_NAME}`,
    });
  });
});

describe('DSN parameters passed on (RFC 3461)', () => {
  // An MTA relaying to us gives each recipient its own ORCPT: they went out in one transaction each.
  it('sends recipients with different NOTIFY and ORCPT in one transaction, each with its own, and RET and ENVID on MAIL FROM', async () => {
    const mails: Record<string, unknown>[] = [];
    const rcpts: { address: string; args: Record<string, unknown> }[] = [];
    const port = await plainNextHop({
      hideDSN: false,
      onMailFrom: (a, _s, cb) => (mails.push(a.args || {}), cb()),
      onRcptTo: (a, _s, cb) => (rcpts.push({ address: a.address, args: a.args || {} }), cb()),
    });
    const relay = await relayRoutingTo(port);
    const scheduler = await driveByHand(relay);
    const c = await clientSession(relay);
    expect((await c.command('MAIL FROM:<a@sender.test> RET=HDRS ENVID=env+2B1')).code).toBe(250);
    expect((await c.command('RCPT TO:<one@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;one@example.test')).code).toBe(250);
    expect((await c.command('RCPT TO:<two@example.test> NOTIFY=NEVER ORCPT=rfc822;two+2Bx@example.test')).code).toBe(250);
    expect((await c.command('RCPT TO:<three@example.test>')).code).toBe(250);
    await c.command('DATA');
    await c.command(`${testMessage('dsn')}.`);
    c.close();
    await scheduler.runDue();
    expect(mails).toEqual([expect.objectContaining({ RET: 'HDRS', ENVID: 'env+1' })]);
    expect(rcpts).toEqual([
      { address: 'one@example.test', args: { NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;one@example.test' } },
      { address: 'two@example.test', args: { NOTIFY: 'NEVER', ORCPT: 'rfc822;two+x@example.test' } },
      { address: 'three@example.test', args: {} },
    ]);
  });
});

describe('NOTIFY=NEVER (RFC 3461)', () => {
  it('sends no report for a bounced recipient that asked for none, and one for the recipient that did not', async () => {
    const { relay, reportSink, scheduler } = await relayWithReportSink('rcpt-4xx-5xx');
    const c = await clientSession(relay);
    await c.command('MAIL FROM:<a@sender.test>');
    expect((await c.command('RCPT TO:<bad-quiet@example.test> NOTIFY=NEVER')).code).toBe(250);
    await c.command('DATA');
    await c.command(`${testMessage('never')}.`);
    await c.command('MAIL FROM:<a@sender.test>');
    await c.command('RCPT TO:<bad-loud@example.test>');
    await c.command('DATA');
    await c.command(`${testMessage('default')}.`);
    c.close();
    await scheduler.runDue();
    const reports = await reportSink.waitForMessages(1);
    expect(reportSink.messages).toHaveLength(1);
    expect(reports[0]!.mailFrom).toBe('');
    const report = reports[0]!.message!.toString();
    expect(report).toContain('Final-Recipient: rfc822; bad-loud@example.test');
    expect(report).not.toContain('bad-quiet@example.test');
  });
});

describe('queue verbs from the command line', () => {
  let relay: TestRelay;
  afterAll(async () => relay?.stop());


  it('show, hold, release, retry, delete and flush, each with --json', async () => {
    relay = await startTestRelay();
    const a = await submitMessage(relay, { from: 'a@sender.test', to: ['x@example.test'], marker: 'a' });
    const b = await submitMessage(relay, { from: 'a@sender.test', to: ['y@example.test'], marker: 'b' });
    const shown = JSON.parse((await queueCli(relay, 'show', a, '--json')).out) as { id: string; recipientStates: { address: string; state: string }[] };
    expect(shown).toMatchObject({ id: a, recipientStates: [{ address: 'x@example.test', state: 'queued' }] });
    expect(JSON.parse((await queueCli(relay, 'hold', a, '--json')).out)).toEqual({ verb: 'hold', changed: [a], unchanged: [] });
    expect((await relay.queued()).find((m) => m.id === a)?.state).toBe('held');
    // Already held: unchanged, and no failure (postsuper); the JSON says which.
    const again = await queueCli(relay, 'hold', a, '--json');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.out)).toEqual({ verb: 'hold', changed: [], unchanged: [a] });
    expect(JSON.parse((await queueCli(relay, 'release', a, '--json')).out)).toEqual({ verb: 'release', changed: [a], unchanged: [] });
    expect((JSON.parse((await queueCli(relay, 'retry', '--all', '--json')).out) as { changed: string[] }).changed.sort()).toEqual([a, b].sort());
    expect(JSON.parse((await queueCli(relay, 'flush', '--json')).out).verb).toBe('retry');
    expect(JSON.parse((await queueCli(relay, 'delete', b, '--json')).out)).toEqual({ verb: 'delete', changed: [b], unchanged: [] });
    expect((await relay.queued()).map((m) => m.id)).toEqual([a]);
    expect(await queueCli(relay, 'show', b)).toMatchObject({ code: 1 });
    expect((await queueCli(relay, 'show', a)).out).toMatch(new RegExp(`^Message ${a} \\(queued\\)`));
  });
});
