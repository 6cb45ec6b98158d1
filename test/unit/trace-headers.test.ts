import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { buildReceivedHeader, HeaderPrepender, messageIdOf, missingSubmissionHeaders, receivedCount } from '../../src/inbound/trace-headers.ts';
import { formatRfc5322Date } from '../../src/smtp/rfc5322-date.ts';
import { HEADER_BLOCK_LIMIT } from '../../src/smtp/header-block.ts';

const date = new Date(Date.UTC(2026, 10, 29, 1, 17, 33));

describe('Received header', () => {
  it('is worded as Postfix writes it, with TLS facts and one recipient', () => {
    expect(
      buildReceivedHeader({
        helo: 'client.example', clientHostname: 'localhost', clientAddress: '127.0.0.1', hostname: 'relay.example.test',
        protocol: 'ESMTPSA', tlsVersion: 'TLSv1.3', tlsCipher: 'TLS_AES_256_GCM_SHA384', queueId: 'ABC', recipients: ['b@example.org'], date, smtpUtf8: false,
      }),
    ).toBe(
      'Received: from client.example (localhost [127.0.0.1])\r\n' +
        '\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n' +
        '\tby relay.example.test (Postern) with ESMTPSA id ABC\r\n' +
        '\tfor <b@example.org>; Sun, 29 Nov 2026 01:17:33 +0000\r\n',
    );
  });
  it('omits TLS and "for" when plaintext with several recipients, and cleans a hostile HELO', () => {
    expect(
      buildReceivedHeader({ helo: 'x)\r\nBcc: y', clientHostname: 'h', clientAddress: '10.0.0.1', hostname: 'r', protocol: 'ESMTP', queueId: 'Q', recipients: ['a@x', 'b@x'], date, smtpUtf8: false }),
    ).toBe('Received: from x???Bcc:?y (h [10.0.0.1])\r\n\tby r (Postern) with ESMTP id Q; Sun, 29 Nov 2026 01:17:33 +0000\r\n');
  });
  // RFC 6531 §4.3: the protocol says SMTPUTF8, and the header, in a message that may carry UTF-8 (RFC 6532), keeps the names as sent.
  it.each([
    [true, 'ESMTPSA', 'Received: from bücher.example (h [10.0.0.1])\r\n\tby r (Postern) with UTF8SMTPSA id Q\r\n\tfor <bøb@exämple.org>; '],
    [true, 'ESMTP', 'Received: from bücher.example (h [10.0.0.1])\r\n\tby r (Postern) with UTF8SMTP id Q\r\n\tfor <bøb@exämple.org>; '],
    [false, 'ESMTPS', 'Received: from b?cher.example (h [10.0.0.1])\r\n\tby r (Postern) with ESMTPS id Q\r\n\tfor <b?b@ex?mple.org>; '],
  ])('with SMTPUTF8 %s and %s', (smtpUtf8, protocol, start) => {
    const header = buildReceivedHeader({ helo: 'bücher.example', clientHostname: 'h', clientAddress: '10.0.0.1', hostname: 'r', protocol, queueId: 'Q', recipients: ['bøb@exämple.org'], date, smtpUtf8 });
    expect(header.startsWith(start)).toBe(true);
  });
  it('still cleans controls, C1 controls, spaces and comment delimiters in an SMTPUTF8 message', () => {
    const header = buildReceivedHeader({ helo: 'x)\r\nBcc:\u0085 y', clientHostname: 'h', clientAddress: '10.0.0.1', hostname: 'r', protocol: 'ESMTP', queueId: 'Q', recipients: [], date, smtpUtf8: true });
    expect(header).toMatch(/^Received: from x\?\?\?Bcc:\?\?y \(h/);
  });
  it('formats RFC 5322 dates', () => {
    expect(formatRfc5322Date(new Date(Date.UTC(2026, 0, 5, 9, 3, 0)))).toBe('Mon, 05 Jan 2026 09:03:00 +0000');
  });
});

describe('hop count', () => {
  it('counts Received headers in any case, once each however folded, and no other header', () => {
    const block = 'Received: from a\r\n\tby b; date\r\nRECEIVED : from c\r\nX-Received: from d\r\nSubject: Received: no\r\nreceived:from e\r\n\r\n';
    expect(receivedCount(block)).toBe(3);
    expect(receivedCount('Subject: none\r\n\r\n')).toBe(0);
  });
});

describe('submission headers', () => {
  it('adds From, Message-ID and Date only when missing (RFC 6409; From as Postfix, the envelope sender)', () => {
    const facts = { queueId: 'Q1', hostname: 'relay.test', date, mailFrom: 'alice@example.test' };
    expect(missingSubmissionHeaders('Subject: x\r\n', facts)).toBe(
      `From: alice@example.test\r\nMessage-ID: <Q1.${date.getTime()}@relay.test>\r\nDate: Sun, 29 Nov 2026 01:17:33 +0000\r\n`,
    );
    expect(missingSubmissionHeaders('message-id: <a@b>\r\nDATE: x\r\nFROM : Bob <b@x>\r\n', facts)).toBe('');
    // A folded continuation line mentioning Date: is not a Date header.
    expect(missingSubmissionHeaders('From: a@x\r\nSubject: a\r\n Date: no\r\nMessage-ID: <a@b>\r\n', facts)).toContain('Date: Sun');
    // The null sender names no author.
    expect(missingSubmissionHeaders('Subject: x\r\n', { ...facts, mailFrom: '' })).not.toContain('From:');
  });
});

describe('messageIdOf (the queued log line)', () => {
  it.each([
    ['Subject: x\r\nMessage-ID: <a.1@example.org>\r\n', '<a.1@example.org>'],
    ['message-id :  <lower@example.org>  \r\n', '<lower@example.org>'],
    ['Message-ID:\r\n <folded@example.org>\r\nSubject: x\r\n', '<folded@example.org>'],
    ['Message-ID: <a\x1b[2J@example.org>\r\n', '<a?[2J@example.org>'],
    ['X-Message-ID: <not-this@example.org>\r\n', undefined],
    ['Message-ID:   \r\n', undefined],
    ['Subject: none\r\n', undefined],
  ])('reads %j as %j', (block, id) => {
    expect(messageIdOf(block)).toBe(id);
  });

  it('keeps at most 998 characters', () => {
    expect(messageIdOf(`Message-ID: <${'x'.repeat(2000)}@example.org>\r\n`)).toHaveLength(998);
  });
});

describe('HeaderPrepender', () => {
  async function through(chunks: string[], prefix: (h: string) => string): Promise<string> {
    const parts: Buffer[] = [];
    for await (const c of Readable.from(chunks.map((s) => Buffer.from(s))).pipe(new HeaderPrepender(prefix))) parts.push(c as Buffer);
    return Buffer.concat(parts).toString();
  }
  it('sees the whole header block across chunks and leaves the message unchanged', async () => {
    const seen: string[] = [];
    const out = await through(['Subject: a\r\nFr', 'om: b\r\n\r\nbody\r\n'], (h) => (seen.push(h), 'X-Pre: 1\r\n'));
    expect(seen).toEqual(['Subject: a\r\nFrom: b\r\n']);
    expect(out).toBe('X-Pre: 1\r\nSubject: a\r\nFrom: b\r\n\r\nbody\r\n');
  });
  it('handles a message with no header block and one with no body', async () => {
    expect(await through(['\r\nbody'], (h) => `[${h}]`)).toBe('[]\r\nbody');
    expect(await through(['Subject: a'], (h) => `[${h}]`)).toBe('[Subject: a]Subject: a');
  });
  // Fed a few bytes at a time (as an attacker or a slow link may send it), the same header block and the same output:
  // the end of the block across every seam, a message that starts with its body, one past HEADER_BLOCK_LIMIT.
  it.each([
    ['fields and a body', `Subject: a\r\nFrom: b\r\n\r\nbody\r\n\r\nmore\r\n`],
    ['a body alone', '\r\nbody\r\n'],
    ['a body alone that starts with an empty line', '\r\n\r\nbody\r\n'],
    ['no body', 'Subject: a\r\n'],
    ['fields, then text without the empty line', 'Subject: x\r\nthis is body text\r\n\r\n'],
    ['a header block past the limit', `${'X-H: aaaaaaaaaaaaaaaa\r\n'.repeat(HEADER_BLOCK_LIMIT / 20)}\r\nbody\r\n`],
  ])('answers alike however the message is cut, as soon as the block ends: %s', async (_name, message) => {
    const seenWhole: string[] = [];
    const whole = await through([message], (h) => (seenWhole.push(h), `[${h.length}]`));
    // Where the block is known to have ended: after its empty line, at the limit, or at the end of the message.
    const blankAt = message.indexOf('\r\n\r\n');
    const knownAt = message.startsWith('\r\n') ? 2 : Math.min(blankAt === -1 ? message.length : blankAt + 4, HEADER_BLOCK_LIMIT);
    for (const size of [1, 2, 3, 4, 5, 7, 1000]) {
      const seen: string[] = [];
      let written = 0;
      let writtenWhenSeen = -1;
      const prepender = new HeaderPrepender((h) => (seen.push(h), (writtenWhenSeen = written), `[${h.length}]`));
      const out: Buffer[] = [];
      prepender.on('data', (c: Buffer) => out.push(c));
      for (let at = 0; at < message.length; at += size) {
        written = Math.min(at + size, message.length);
        prepender.write(Buffer.from(message.slice(at, at + size), 'latin1'));
      }
      await new Promise((resolve) => prepender.end(resolve));
      expect(Buffer.concat(out).toString('latin1')).toBe(whole);
      expect(seen).toEqual(seenWhole);
      expect(writtenWhenSeen).toBe(Math.min(Math.ceil(knownAt / size) * size, message.length));
    }
  });
  // Postfix's cleanup ends the header fields at the first line that is none, with an empty line.
  it.each([
    ['a body alone', ['hello world\r\nsecond line\r\n'], '[]\r\nhello world\r\nsecond line\r\n'],
    ['a body alone, with a paragraph', ['hello\r\n\r\nworld\r\n'], '[]\r\nhello\r\n\r\nworld\r\n'],
    ['fields, then text without the empty line', ['Subject: x\r\nthis is', ' body text\r\n'], '[Subject: x\r\n]Subject: x\r\n\r\nthis is body text\r\n'],
    ['a folded field, then text', ['Subject: x\r\n y\r\ntext: no, a line\r\nmore\r\n\r\nbody'], '[Subject: x\r\n y\r\ntext: no, a line\r\n]Subject: x\r\n y\r\ntext: no, a line\r\n\r\nmore\r\n\r\nbody'],
    ['a first line that is a continuation', [' indented\r\nSubject: x\r\n\r\nbody'], '[]\r\n indented\r\nSubject: x\r\n\r\nbody'],
  ])('puts the empty line where the fields end: %s', async (_name, chunks, expected) => {
    expect(await through(chunks, (h) => `[${h}]`)).toBe(expected);
  });
});
