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
import { Readable, Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, silentLogger, type Logger } from '../../src/observability/logger.ts';
import { openSession, type SessionSettings, type TransactionRequest } from '../../src/outbound/smtp-session.ts';
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
      { level: 'none', heloName: 'postern.test', extraCa: [], connectTimeoutMs: 5000, socketTimeoutMs: 5000, logger: silentLogger() },
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
    expect(result.recipients.map((r) => r.code)).toEqual([250]);
    const wire = hop.wire().toString('latin1');
    const start = wire.indexOf('DATA\r\n') + 'DATA\r\n'.length;
    const data = wire.slice(start, wire.indexOf('\r\n.\r\n', start) + '\r\n.\r\n'.length);
    expect(data).toBe('Subject: dots\r\n\r\n..one\r\n..two\r\nbare\nline\r\n...three\n\r\n.\r\n');
  });
});

/**
 * rawNextHop - a plaintext next hop on 127.0.0.1 that writes `greeting`, then answers each command line by its verb
 * in `replies`: the bytes given, or for a list the next of them in turn; null: no answer. DATA's lines are read to
 * the dot, which "." answers. Any other command gets 250 (QUIT 221).
 */
async function rawNextHop(greeting: string, replies: Record<string, string | string[] | null>): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write(greeting);
    let pending = '';
    let inData = false;
    socket.on('data', (data) => {
      pending += data.toString('latin1');
      for (let end = pending.indexOf('\r\n'); end >= 0; end = pending.indexOf('\r\n')) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 2);
        if (inData && line !== '.') continue;
        const verb = inData ? '.' : line.slice(0, 4).toUpperCase();
        inData = verb === 'DATA';
        const given = replies[verb];
        const reply = Array.isArray(given) ? given.shift() : given === undefined ? (verb === 'QUIT' ? '221 2.0.0 Bye\r\n' : '250 2.0.0 Ok\r\n') : given;
        if (typeof reply === 'string') socket.write(reply);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), server.close(() => resolve()))),
  };
}

/** capturingLogger - a logger whose lines, parsed, land in `lines`. */
function capturingLogger(lines: Record<string, unknown>[]): Logger {
  return createLogger({ destination: new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) }) });
}

/** transaction - a one-line message from a@sender.test to `to`. */
function transaction(to: string[]): TransactionRequest {
  const body = Buffer.from('Subject: x\r\n\r\nx\r\n');
  return { mailFrom: 'a@sender.test', recipients: to.map((address) => ({ address })), body: Readable.from([body]), bodyType: '7BIT', smtpUtf8: false, requireTls: false, dsn: {}, size: body.length };
}

/** settings - a session's settings with these timeouts (ms) and logger. */
function settings(logger: Logger, socketTimeoutMs = 5000): SessionSettings {
  return { level: 'none', heloName: 'postern.test', extraCa: [], connectTimeoutMs: 5000, socketTimeoutMs, logger };
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
    const logs: Record<string, unknown>[] = [];
    const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, settings(capturingLogger(logs)));
    if (!opened.ok) throw new Error(opened.reply);
    const result = await opened.session.send(transaction(['a@example.test', 'b@example.test', 'c@example.test']));
    opened.session.close();
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

  it('reads a greeting whose lines disagree by its last line', async () => {
    const hop = await rawNextHop('220-mx.test first\r\n554 5.7.1 go away\r\n', {});
    closers.push(hop.close);
    const opened = await openSession({ host: 'mx.test', ip: '127.0.0.1', port: hop.port, secure: false }, settings(silentLogger()));
    expect(opened).toMatchObject({ ok: false, reached: true });
    expect((opened as { reply: string }).reply).toMatch(/^554 5\.7\.1 go away/);
  });
});
