// What an outbound session sends as DATA: the queued body's bytes, with a
// dot added before every dot that starts a line, and nothing else changed
// (outbound/dot-stuffing.ts). A body with bare LFs, which intake never
// queues, shows which rules ran: nodemailer's own would have made them
// CRLF, and after a last bare LF it ends the data with .CRLF, which the
// next hop would not take for the end.
// And how it reads a next hop's replies that break the rules (raw next hops
// that write exactly the bytes given).
// A real session over TCP to a next hop on 127.0.0.1 behind a wire tap.
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { rawNextHop, type RawNextHop } from '../helpers/raw-next-hop.ts';
import { Readable } from 'node:stream';
import { createSecureContext, TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger, type Logger } from '../../src/observability/logger.ts';
import { captureWarnings } from '../helpers/captured-log.ts';
import { sessionTimeouts, type SessionTimeouts } from '../../src/outbound/session-timeouts.ts';
import { openSession, type OutboundSession, type SessionSettings, type TransactionRequest } from '../../src/outbound/smtp-session.ts';
import { selfSignedCertificate } from '../../src/tls/dev-certs.ts';
import { startNextHop, type NextHop } from '../helpers/next-hop.ts';

describe('outbound session DATA', () => {
  let hop: NextHop;
  beforeAll(async () => {
    hop = await startNextHop('plain');
  });
  afterAll(() => hop.close());

  it('sends the queued body as stored, with its line-leading dots stuffed, and ends the data on a line of its own', async () => {
    const opened = await openSession(
      { host: '127.0.0.1', ip: '127.0.0.1', port: hop.port, secure: false },
      { level: 'none', heloName: 'postern.test', extraCa: [], timeouts: sessionTimeouts(5000, 5000), logger: silentLogger() },
    );
    if (!opened.ok) throw new Error(opened.reply);
    const chunks = ['Subject: dots\r\n\r\n.one\r\n', '.', 'two\r\nbare\nline\r', '\n..three\n'].map((text) => Buffer.from(text));
    const result = await opened.session.send({
      mailFrom: 'a@sender.test',
      recipients: [{ address: 'b@example.test' }],
      body: Readable.from(chunks),
      bodyType: '7BIT',
      smtpUtf8: false,
      requireTls: false,
      dsn: {},
      size: chunks.reduce((n, c) => n + c.length, 0),
    });
    opened.session.close();
    expect(result.recipients.map((r) => r.reply.slice(0, 4))).toEqual(['250 ']);
    const wire = hop.wire().toString('latin1');
    const start = wire.indexOf('DATA\r\n') + 'DATA\r\n'.length;
    const data = wire.slice(start, wire.indexOf('\r\n.\r\n', start) + '\r\n.\r\n'.length);
    expect(data).toBe('Subject: dots\r\n\r\n..one\r\n..two\r\nbare\nline\r\n...three\n\r\n.\r\n');
  });
});

/** transaction - a one-line message from a@sender.test to `to`. */
function transaction(to: string[]): TransactionRequest {
  const body = Buffer.from('Subject: x\r\n\r\nx\r\n');
  return { mailFrom: 'a@sender.test', recipients: to.map((address) => ({ address })), body: Readable.from([body]), bodyType: '7BIT', smtpUtf8: false, requireTls: false, dsn: {}, size: body.length };
}

/** sessionTo - an open session to a raw next hop named mx.test (by default with silentLogger and the default timeouts). */
async function sessionTo(hop: RawNextHop, options: SessionSettings = settings(silentLogger())): Promise<OutboundSession> {
  const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, options);
  if (!opened.ok) throw new Error(opened.reply);
  return opened.session;
}

/** settings - a session's settings with this logger and these timeouts. */
function settings(logger: Logger, timeouts: Partial<SessionTimeouts> = {}): SessionSettings {
  return { level: 'none', heloName: 'postern.test', extraCa: [], timeouts: { ...sessionTimeouts(5000, 5000), ...timeouts }, logger };
}

describe('outbound session replies', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((close) => close()));
  });

  // RFC 5321 §4.2.1: one code on every line. Postfix's smtp_chat_resp takes the last line's; nodemailer took the first.
  it('reads a multi-line reply whose lines disagree by its last line, as Postfix does, and logs the whole reply', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', {
      RCPT: ['250-2.1.5 ok\r\n550 5.1.1 no such user\r\n', '550-5.1.1 no\r\n250 2.1.5 ok after all\r\n', '250-2.1.5 ok\r\n250 2.1.5 ok too\r\n'],
      DATA: '354 go ahead\r\n',
      '.': '250-2.0.0 first\r\n451 4.3.0 mixed\r\n',
    });
    closers.push(hop.close);
    const { logger, lines: logs } = captureWarnings();
    const session = await sessionTo(hop, settings(logger));
    const result = await session.send(transaction(['a@example.test', 'b@example.test', 'c@example.test']));
    session.close();
    expect(result.recipients.map((r) => [r.address, r.reply])).toEqual([
      ['a@example.test', '550 5.1.1 no such user (in reply to RCPT TO command)'],
      ['b@example.test', '451 4.3.0 mixed (in reply to end of DATA command)'],
      ['c@example.test', '451 4.3.0 mixed (in reply to end of DATA command)'],
    ]);
    expect(logs.filter((l) => l.msg === 'next hop reply lines disagree on their code; the last line decides').map((l) => l.reply)).toEqual([
      '250-2.1.5 ok 550 5.1.1 no such user',
      '550-5.1.1 no 250 2.1.5 ok after all',
      '250-2.0.0 first 451 4.3.0 mixed',
    ]);
  });

  // Postfix: smtp_connect_timeout 30 s for the connection, smtp_helo_timeout 300 s for the greeting; nodemailer gave
  // both together the connect timeout, so a host with a greet pause longer than that was deferred every time.
  it('waits for a greeting past the connect timeout, up to the reply timeout', async () => {
    const hop = await rawNextHop({ text: '220 mx.test ESMTP slow\r\n', afterMs: 600 }, {});
    closers.push(hop.close);
    const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, settings(silentLogger(), { connectMs: 200, replyMs: 3000 }));
    expect(opened.ok).toBe(true);
    if (opened.ok) opened.session.close();
  });

  // nodemailer's connectionTimeout is one budget for the greeting, EHLO and the STARTTLS handshake together; each
  // step has replyMs, so a slow greeter left the handshake no time, and level may fell back to plaintext.
  it('gives STARTTLS its own time after a slow greeting and EHLO', async () => {
    const credentials = await selfSignedCertificate({ names: ['mx.test'] });
    const hop = await rawNextHop({ text: '220 mx.test ESMTP\r\n', afterMs: 800 }, { EHLO: { text: '250-mx.test\r\n250 STARTTLS\r\n', afterMs: 800 } }, (socket, line) => {
      if (line.toUpperCase() !== 'STARTTLS') return false;
      socket.write('220 2.0.0 Ready to start TLS\r\n');
      const tls = new TLSSocket(socket, { isServer: true, secureContext: createSecureContext({ cert: credentials.certPem, key: credentials.keyPem }) });
      tls.on('error', () => undefined);
      tls.on('data', (data: Buffer) => {
        for (const command of data.toString('latin1').split('\r\n').filter(Boolean)) tls.write(/^EHLO/i.test(command) ? '250 mx.test\r\n' : /^QUIT/i.test(command) ? '221 2.0.0 Bye\r\n' : '250 2.0.0 Ok\r\n');
      });
      return true;
    });
    closers.push(hop.close);
    const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, { ...settings(silentLogger(), { connectMs: 200, replyMs: 1000 }), level: 'encrypt' });
    expect(opened.ok && opened.session.tls?.version).toMatch(/^TLSv1\.[23]$/);
    if (opened.ok) opened.session.close();
  });

  // The connection has connectMs of its own (for implicit TLS, the handshake with it), not the greeting's too.
  it('gives up on a connection not made within connectMs, even with a long reply timeout', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => (sockets.add(socket), socket.on('error', () => undefined)));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), silent.close(() => resolve()))));
    const port = (silent.address() as AddressInfo).port;
    const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port, secure: true }, settings(silentLogger(), { connectMs: 300, replyMs: 30_000 }));
    expect(opened).toMatchObject({ ok: false, reply: '4.4.1 ETIMEDOUT: Connection timeout', reached: false });
  });

  // RFC 5321 §4.5.3.2.6 and Postfix's smtp_data_done_timeout: the end of data's reply waits twice as long as another.
  it('waits for the reply to the end of data for dataDoneMs, not replyMs', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { DATA: '354 go ahead\r\n', '.': { text: '250 2.0.0 taken, slowly\r\n', afterMs: 700 } });
    closers.push(hop.close);
    const results: string[] = [];
    for (const dataDoneMs of [2000, 300]) {
      const session = await sessionTo(hop, settings(silentLogger(), { replyMs: 300, dataDoneMs }));
      results.push((await session.send(transaction(['a@example.test']))).recipients[0]!.reply);
      session.close();
    }
    expect(results[0]).toBe('250 2.0.0 taken, slowly');
    expect(results[1]).toMatch(/^4\.4\.1 ETIMEDOUT: Timeout \(after the end of data/);
  });

  // Postfix's smtp_rset_timeout: a cached connection whose next hop never answers RSET held the delivery for the
  // whole reply timeout (here 30 s, past this test's own limit).
  it('gives up on a reused connection whose RSET is not answered within rsetMs', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { RSET: null });
    closers.push(hop.close);
    const session = await sessionTo(hop, settings(silentLogger(), { replyMs: 30_000, rsetMs: 300 }));
    expect(await session.reset()).toBe(false);
    expect(session.usable).toBe(false);
    session.close();
  });

  it('fails a send whose reply the next hop left unfinished when it closed', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', {
      EHLO: '250-mx.test\r\n250 PIPELINING\r\n',
      MAIL: null,
      RCPT: null,
      DATA: { text: '250 2.1.0 ok\r\n250 2.1.5 ok\r\n354-go on\r\n', close: true },
    });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    const result = await session.send(transaction(['a@example.test']));
    session.close();
    expect(result.recipients[0]!.reply).toMatch(/^4\.4\.1 ECONNECTION/);
  });

  // nodemailer ended a reply at a line without a code: the rest became the next command's reply.
  it('reads past an empty line inside a multi-line reply, so that each reply answers its own command', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { RCPT: ['250-2.1.5 ok\r\n\r\n550 5.1.1 no such user\r\n', '250 2.1.5 ok\r\n'], DATA: '354 go ahead\r\n' });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    const result = await session.send(transaction(['a@example.test', 'b@example.test']));
    session.close();
    expect(result.recipients.map((r) => [r.address, r.reply])).toEqual([
      ['a@example.test', '550 5.1.1 no such user (in reply to RCPT TO command)'],
      ['b@example.test', '250 2.0.0 Ok'],
    ]);
  });

  // Lines without a code do not end a reply, but they do not go on for ever: past 100 lines or 16 KB the
  // connection fails as for any reply too large (a flood held the delivery, and the event loop, for minutes).
  it('fails the connection when a reply cut short by a line without a code goes on past the limit', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { MAIL: `250-2.1.0 ok\r\n${'x\r\n'.repeat(20_000)}` });
    closers.push(hop.close);
    const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, settings(silentLogger(), { replyMs: 30_000 }));
    if (!opened.ok) throw new Error(opened.reply);
    const result = await opened.session.send(transaction(['a@example.test']));
    opened.session.close();
    expect(result.recipients[0]!.reply).toBe('4.4.1 EPROTOCOL: Server response exceeds maximum allowed size');
  });

  // RFC 5321 §4.1.1.4: the message follows a 354. nodemailer took a 250 as the go-ahead too and sent the body to a
  // host reading commands; the send was then recorded by the reply to the body's last line (here 250: delivered).
  for (const pipelining of [false, true]) {
    it(`fails the transaction, sending none of the message, when DATA is answered 250${pipelining ? ' (pipelined)' : ''}`, async () => {
      const hop = await rawNextHop('220 mx.test ESMTP\r\n', { EHLO: pipelining ? '250-mx.test\r\n250 PIPELINING\r\n' : '250 mx.test\r\n', DATA: '250 2.0.0 Ok\r\n' });
      closers.push(hop.close);
      const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, settings(silentLogger()));
      if (!opened.ok) throw new Error(opened.reply);
      const result = await opened.session.send(transaction(['a@example.test']));
      expect(result).toEqual({ lostAfterData: false, recipients: [{ address: 'a@example.test', reply: '5.5.0 Protocol error: host said: 250 2.0.0 Ok (in reply to DATA command)' }] });
      expect(opened.session.usable).toBe(false);
      opened.session.close();
      expect(hop.messages).toBe(0);
    });
  }

  // Postfix's vsmtp_fill_dsn: a reply that is neither 4xx nor 5xx where a failure was due is a protocol error (5.5.0).
  it('records a 3xx reply to MAIL FROM as a protocol error, not as the host deferring, and drops the connection', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { MAIL: '354 2.1.0 go on\r\n' });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    const result = await session.send(transaction(['a@example.test']));
    expect(result.recipients[0]!.reply).toBe('5.5.0 Protocol error: host said: 354 2.1.0 go on (in reply to MAIL FROM command)');
    expect(session.usable).toBe(false);
    session.close();
  });

  // Once the whole message went out, the host may have it: such a failure is not sent to the next host (deliver.ts).
  it('reports a protocol error after the end of data as the message possibly taken', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { '.': '354 2.0.0 again\r\n' });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    const result = await session.send(transaction(['a@example.test']));
    session.close();
    expect(result).toMatchObject({ lostAfterData: true, recipients: [{ reply: '5.5.0 Protocol error: host said: 354 2.0.0 again (in reply to end of DATA command)' }] });
  });

  // Postfix's smtp_chat_resp reads past a line with no code to the reply's final line; nodemailer read "2" as a reply,
  // and a success.
  it.each([
    ['2\r\n451 4.3.0 try later\r\n', '451 4.3.0 try later (in reply to end of DATA command)'],
    ['junk\r\n250 2.0.0 queued\r\n', '250 2.0.0 queued'],
  ])('reads past a line without a code to the reply to the end of data (%j)', async (reply, recorded) => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { '.': reply });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    const result = await session.send(transaction(['a@example.test']));
    session.close();
    expect(result.recipients[0]!.reply).toBe(recorded);
  });

  it('keeps the extensions of an EHLO reply that a line without a code comes before', async () => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { EHLO: 'hello there\r\n250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n' });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    expect(session.extensions).toEqual(expect.arrayContaining(['PIPELINING', 'SIZE']));
    expect(session.maxSize).toBe(1000);
    session.close();
  });

  // Postfix writes the whole message before it reads a reply. nodemailer reads the reply to the end of data as soon as
  // the message starts: one that comes early leaves the data unended, and a reused connection's RSET went into it. A 250
  // before the host had the message cannot be about it, and the host does not have it: it is not recorded delivered.
  // With a one-chunk body, the reply that came with the 354 is read once all of it was sent.
  it.each([
    ['552 5.3.4 too big', 1024, '552 5.3.4 too big (in reply to end of DATA command)'],
    ['250 2.0.0 queued early', 1024, '4.5.0 Protocol error: host said: 250 2.0.0 queued early (before the end of data)'],
    ['452 4.3.1 later', 1, '452 4.3.1 later (in reply to end of DATA command)'],
  ])('does not reuse a connection whose end of data was answered %j with the go-ahead (%i chunks of body)', async (early, chunkCount, recorded) => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { DATA: `354 go ahead\r\n${early}\r\n` });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    const chunks = Array.from({ length: chunkCount }, () => Buffer.alloc(4096, 'x'));
    const result = await session.send({ ...transaction(['a@example.test']), body: Readable.from(chunks), size: 4096 * chunkCount });
    expect(result.recipients[0]!.reply).toBe(recorded);
    expect(session.usable).toBe(false);
    session.close();
  });

  // RFC 5321 §4.2: a 421 may answer any command, the connection closing after it. With pipelining the commands after
  // it were sent too: the 421 is recorded, with the command it answered, not the connection lost.
  it.each(['MAIL FROM', 'RCPT TO', 'DATA'])('records a 421 to a pipelined %s, the host closing after it', async (command) => {
    const hop = await rawNextHop('220 mx.test ESMTP\r\n', { EHLO: '250-mx.test\r\n250 PIPELINING\r\n' }, (socket, line) => {
      if (!line.toUpperCase().startsWith(command)) return false;
      socket.end('421 4.3.2 shutting down\r\n');
      return true;
    });
    closers.push(hop.close);
    const session = await sessionTo(hop);
    const result = await session.send(transaction(['a@example.test']));
    expect(result).toEqual({ lostAfterData: false, recipients: [{ address: 'a@example.test', reply: `421 4.3.2 shutting down (in reply to ${command} command)` }] });
    expect(session.usable).toBe(false);
    session.close();
  });

  it('reads a greeting whose lines disagree by its last line', async () => {
    const hop = await rawNextHop('220-mx.test first\r\n554 5.7.1 go away\r\n', {});
    closers.push(hop.close);
    const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, settings(silentLogger()));
    expect(opened).toMatchObject({ ok: false, reached: true });
    expect((opened as { reply: string }).reply).toMatch(/^554 5\.7\.1 go away/);
  });
});
