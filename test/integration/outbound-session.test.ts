// What an outbound session sends as DATA: the queued body's bytes, with a
// dot added before every dot that starts a line, and nothing else changed
// (outbound/dot-stuffing.ts). A body with bare LFs, which intake never
// queues, shows which rules ran: nodemailer's own would have made them
// CRLF, and after a last bare LF it ends the data with .CRLF, which the
// next hop would not take for the end.
// A real session over TCP to a next hop on 127.0.0.1 behind a wire tap.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.ts';
import { openSession } from '../../src/outbound/smtp-session.ts';
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
