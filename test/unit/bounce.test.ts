import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';
import { buildDsn, type DsnRecipient, type DsnRequest, recipientsToNotify, statusFromReply } from '../../src/queue/bounce.ts';
import type { RecipientDsn } from '../../src/queue/queue-store.ts';

const arrival = new Date(Date.UTC(2026, 10, 29, 1, 0, 0));
const now = new Date(Date.UTC(2026, 10, 29, 1, 17, 33));
const originalHeaders = Buffer.from('From: alice@example.com\r\nTo: bob@example.org, carol@example.org\r\nSubject: hi\r\nMessage-ID: <m1@example.com>\r\n');

function request(recipients: DsnRecipient[], extra: Partial<DsnRequest> = {}): DsnRequest {
  return {
    queueId: '4Xk2ABC', reportingMta: 'relay.example.net', arrivalDate: arrival, now, envelopeFrom: 'alice@example.com',
    recipients, originalHeaders, messageIdDomain: 'relay.example.net', ...extra,
  };
}

const bob: DsnRecipient = {
  address: 'bob@example.org', action: 'failed', status: '5.1.1', diagnostic: '550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown',
  remoteMta: 'mx.example.org', orcpt: 'rfc822;bob@example.org', lastAttemptAt: new Date(Date.UTC(2026, 10, 29, 1, 17, 30)),
};
const carol: DsnRecipient = { address: 'carol@example.org', action: 'failed', status: '5.4.4', diagnostic: 'Host or domain name not found' };

/** splitReport - the header block and the parts of a report, split at its boundary (latin1, so bytes survive). */
function splitReport(content: Buffer): { head: string; parts: { headers: string; body: string }[] } {
  const text = content.toString('latin1');
  const boundary = /boundary="([^"]+)"/.exec(text)![1]!;
  const [head, ...rest] = text.split(`\r\n--${boundary}`);
  expect(rest.pop()).toBe('--\r\n');
  const parts = rest.map((chunk) => {
    const end = chunk.indexOf('\r\n\r\n');
    return { headers: chunk.slice(2, end + 2), body: chunk.slice(end + 4) };
  });
  return { head: head!.slice(0, head!.indexOf('\r\n\r\n') + 2), parts };
}

describe('buildDsn: a failure report', () => {
  const dsn = buildDsn(request([bob, carol], { envid: 'ENV-77' }));
  const { head, parts } = splitReport(dsn.content);

  it('goes from the null sender to the original sender', () => {
    expect(dsn.mailFrom).toBe('');
    expect(dsn.recipients).toEqual(['alice@example.com']);
    expect(dsn.bodyType).toBe('7BIT');
  });
  it('has the exact header lines', () => {
    expect(head).toBe(
      'From: Mail Delivery System <MAILER-DAEMON@relay.example.net>\r\n' +
        'To: <alice@example.com>\r\n' +
        'Subject: Undelivered Mail Returned to Sender\r\n' +
        'Date: Sun, 29 Nov 2026 01:17:33 +0000\r\n' +
        `Message-ID: <4Xk2ABC.dsn.${now.getTime()}@relay.example.net>\r\n` +
        'Auto-Submitted: auto-replied\r\n' +
        'MIME-Version: 1.0\r\n' +
        'Content-Type: multipart/report; report-type=delivery-status;\r\n' +
        `\tboundary="4Xk2ABC.${now.getTime()}/relay.example.net"\r\n`,
    );
  });
  it('has the exact delivery-status part (RFC 3464)', () => {
    expect(parts[1]!.headers).toBe('Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n');
    expect(parts[1]!.body).toBe(
      'Reporting-MTA: dns; relay.example.net\r\n' +
        'X-Postern-Queue-ID: 4Xk2ABC\r\n' +
        'Original-Envelope-Id: ENV-77\r\n' +
        'Arrival-Date: Sun, 29 Nov 2026 01:00:00 +0000\r\n' +
        '\r\n' +
        'Original-Recipient: rfc822;bob@example.org\r\n' +
        'Final-Recipient: rfc822; bob@example.org\r\n' +
        'Action: failed\r\n' +
        'Status: 5.1.1\r\n' +
        'Remote-MTA: dns; mx.example.org\r\n' +
        'Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address\r\n' +
        ' rejected: User unknown\r\n' +
        'Last-Attempt-Date: Sun, 29 Nov 2026 01:17:30 +0000\r\n' +
        '\r\n' +
        'Final-Recipient: rfc822; carol@example.org\r\n' +
        'Action: failed\r\n' +
        'Status: 5.4.4\r\n' +
        'Diagnostic-Code: X-Postern; Host or domain name not found\r\n',
    );
  });
  it('explains in Postfix words, one line per recipient', () => {
    expect(parts[0]!.headers).toBe('Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n');
    expect(parts[0]!.body).toContain("This is the mail system at host relay.example.net.\r\n\r\nI'm sorry to have to inform you that your message could not\r\n");
    expect(parts[0]!.body).toContain(
      '<bob@example.org>: host mx.example.org said: 550 5.1.1 <bob@example.org>:\r\n    Recipient address rejected: User unknown\r\n' +
        '<carol@example.org>: Host or domain name not found\r\n',
    );
    expect(parts[0]!.body).not.toContain('retried');
  });
  it('returns the original headers as text/rfc822-headers, unchanged', () => {
    expect(parts[2]!.headers).toBe('Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n');
    expect(parts[2]!.body).toBe(originalHeaders.toString('latin1'));
  });
  it('is a multipart/report of three parts to mailparser (RFC 6522)', async () => {
    const mail = await simpleParser(dsn.content, { keepDeliveryStatus: true });
    expect(mail.headers.get('content-type')).toEqual({ value: 'multipart/report', params: { 'report-type': 'delivery-status', boundary: `4Xk2ABC.${now.getTime()}/relay.example.net` } });
    expect(mail.subject).toBe('Undelivered Mail Returned to Sender');
    expect(mail.from?.value).toEqual([{ name: 'Mail Delivery System', address: 'MAILER-DAEMON@relay.example.net' }]);
    expect(mail.messageId).toBe(`<4Xk2ABC.dsn.${now.getTime()}@relay.example.net>`);
    expect(mail.headers.get('auto-submitted')).toBe('auto-replied');
    expect(mail.text).toContain('The mail system');
    expect(mail.attachments.map((a) => a.contentType)).toEqual(['message/delivery-status', 'text/rfc822-headers']);
    expect(mail.attachments[0]!.content.toString()).toContain('Final-Recipient: rfc822; carol@example.org');
  });
  it('names the host as Remote-MTA only when it answered: a failure on the way to it is ours (X-Postern)', () => {
    const refused: DsnRecipient = { address: 'dan@example.org', action: 'failed', status: '4.4.1', diagnostic: '4.4.1 ECONNECTION: connect ECONNREFUSED 192.0.2.1:25', remoteMta: 'mx.example.org' };
    const { parts } = splitReport(buildDsn(request([refused])).content);
    expect(parts[1]!.body).toContain('\r\nAction: failed\r\nStatus: 4.4.1\r\nDiagnostic-Code: X-Postern; 4.4.1 ECONNECTION: connect ECONNREFUSED\r\n 192.0.2.1:25\r\n');
    expect(parts[1]!.body).not.toContain('Remote-MTA');
    expect(parts[0]!.body).toContain('<dan@example.org>: mx.example.org: 4.4.1 ECONNECTION: connect ECONNREFUSED\r\n    192.0.2.1:25\r\n');
    expect(parts[0]!.body).not.toContain('said');
  });
  it('is deterministic: same request, same bytes', () => {
    expect(buildDsn(request([bob, carol], { envid: 'ENV-77' })).content.equals(dsn.content)).toBe(true);
  });
});

describe('buildDsn: delay and success reports', () => {
  const delayed: DsnRecipient = { address: 'bob@example.org', action: 'delayed', status: '4.4.1', diagnostic: 'connect to mx.example.org: Connection timed out', willRetryUntil: new Date(Date.UTC(2026, 11, 4, 1, 0, 0)) };

  it('a delay report warns, with Will-Retry-Until and the delay subject', () => {
    const later = new Date(arrival.getTime() + 4 * 3_600_000);
    const { head, parts } = splitReport(buildDsn(request([delayed], { now: later })).content);
    expect(head).toContain('\r\nSubject: Delayed Mail (still being retried)\r\n');
    expect(parts[0]!.body).toContain('# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #');
    expect(parts[0]!.body).toContain('Your message could not be delivered for 4.0 hours.\r\nIt will be retried until it is 5.0 days old.\r\n');
    expect(parts[1]!.body).toContain('Action: delayed\r\nStatus: 4.4.1\r\nDiagnostic-Code: X-Postern; connect to mx.example.org: Connection timed out\r\nWill-Retry-Until: Fri, 04 Dec 2026 01:00:00 +0000\r\n');
    expect(parts[2]!.headers).toContain('Content-Description: Delayed Message Headers\r\n');
  });
  it('failure wins the subject when a report mixes failed and delayed, and each list has a heading', () => {
    const { head, parts } = splitReport(buildDsn(request([delayed, carol])).content);
    expect(head).toContain('\r\nSubject: Undelivered Mail Returned to Sender\r\n');
    expect(parts[0]!.body).toContain('Delivery to the following recipients failed permanently:\r\n<carol@example.org>');
    expect(parts[0]!.body).toContain('Delivery to the following recipients is still being retried:\r\n<bob@example.org>');
  });
  it('Will-Retry-Until is written for delayed recipients only (RFC 3464 §2.3.9)', () => {
    const { parts } = splitReport(buildDsn(request([{ ...carol, willRetryUntil: now }])).content);
    expect(parts[1]!.body).not.toContain('Will-Retry-Until');
  });
  it('a success report', async () => {
    const ok: DsnRecipient = { address: 'bob@example.org', action: 'delivered', status: '2.0.0', diagnostic: '250 2.0.0 Ok: queued as 9F2', remoteMta: 'mx.example.org' };
    const dsn = buildDsn(request([ok]));
    const { head, parts } = splitReport(dsn.content);
    expect(head).toContain('\r\nSubject: Successful Mail Delivery Report\r\n');
    expect(parts[0]!.body).toContain('Your message was successfully delivered to the destination(s)\r\n');
    expect(parts[0]!.body).toContain('<bob@example.org>: delivery via mx.example.org: 250 2.0.0 Ok: queued as 9F2\r\n');
    expect(parts[1]!.body).toContain('\r\n\r\nFinal-Recipient: rfc822; bob@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\nRemote-MTA: dns; mx.example.org\r\n');
    expect(parts[2]!.headers).toContain('Content-Description: Delivered Message Headers\r\n');
    expect((await simpleParser(dsn.content, { keepDeliveryStatus: true })).attachments).toHaveLength(2);
  });
});

describe('buildDsn: what is returned (RFC 3461 §4.3 RET)', () => {
  const body = Buffer.from('Hello Bob\r\n');
  it('returns the whole message as message/rfc822 for RET=FULL with a body', async () => {
    const dsn = buildDsn(request([carol], { ret: 'FULL', originalBody: body }));
    const { parts } = splitReport(dsn.content);
    expect(parts[2]!.headers).toBe('Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n');
    expect(parts[2]!.body).toBe(`${originalHeaders.toString('latin1')}\r\nHello Bob\r\n`);
    const mail = await simpleParser(dsn.content, { keepDeliveryStatus: true });
    expect(mail.attachments.map((a) => a.contentType)).toEqual(['message/delivery-status', 'message/rfc822']);
  });
  it('returns headers only for RET=HDRS, or when no body was passed', () => {
    for (const extra of [{ ret: 'HDRS' as const, originalBody: body }, { ret: 'FULL' as const }, { originalBody: body }]) {
      expect(splitReport(buildDsn(request([carol], extra)).content).parts[2]!.headers).toContain('Content-Type: text/rfc822-headers\r\n');
    }
  });
  it('passes a whole 8-bit original through byte for byte and declares it (RFC 2045 §6.4)', () => {
    const headers = Buffer.from('Subject: caf\u00e9 \u{1f600}\r\n', 'utf8');
    const dsn = buildDsn(request([carol], { originalHeaders: headers, ret: 'FULL', originalBody: body }));
    expect(dsn.bodyType).toBe('8BITMIME');
    const { head, parts } = splitReport(dsn.content);
    expect(head).toContain('\r\nContent-Transfer-Encoding: 8bit\r\n');
    expect(parts[2]!.headers).toContain('Content-Transfer-Encoding: 8bit\r\n');
    expect(dsn.content.includes(headers)).toBe(true);
  });
  // A report declared 8BITMIME was refused by a sender's next hop without it (5.6.3), and a report is not reported:
  // the sender never learnt of the failure. RFC 6522 §4 lets text/rfc822-headers be quoted-printable.
  it('returns 8-bit headers quoted-printable, so that the report is 7-bit, and they decode to the same bytes', async () => {
    const long = `X-Long: ${'\u00e9'.repeat(60)} =end \r\n`;
    const headers = Buffer.from(`Subject: caf\u00e9 \u{1f600}\r\n${long}`, 'utf8');
    const dsn = buildDsn(request([carol], { originalHeaders: headers }));
    expect(dsn.bodyType).toBe('7BIT');
    expect(dsn.content.some((b) => b > 0x7f)).toBe(false);
    const { head, parts } = splitReport(dsn.content);
    expect(head).not.toContain('Content-Transfer-Encoding');
    expect(parts[2]!.headers).toBe('Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: quoted-printable\r\n');
    expect(parts[2]!.body.split('\r\n').every((line) => line.length <= 76)).toBe(true);
    const mail = await simpleParser(dsn.content, { keepDeliveryStatus: true });
    expect(mail.attachments[1]!.content.equals(headers)).toBe(true);
  });
  it('terminates a header block that lacks its final CRLF', () => {
    const { parts } = splitReport(buildDsn(request([carol], { originalHeaders: Buffer.from('Subject: x') })).content);
    expect(parts[2]!.body).toBe('Subject: x\r\n');
  });
  it('picks another boundary when the original already contains it (RFC 2046 §5.1.1)', async () => {
    const hostile = Buffer.from(`X-Trap: --4Xk2ABC.${now.getTime()}/relay.example.net\r\n`);
    const dsn = buildDsn(request([carol], { originalHeaders: hostile }));
    expect(dsn.content.toString()).toContain(`boundary="4Xk2ABC.${now.getTime()}/relay.example.net.1"`);
    expect((await simpleParser(dsn.content, { keepDeliveryStatus: true })).attachments).toHaveLength(2);
  });
});

describe('buildDsn: remote text can not break the report', () => {
  it('a non-ASCII diagnostic and address give 7-bit parts 1 and 2', () => {
    const r: DsnRecipient = { address: 'j\u00fcrgen@example.de', action: 'failed', status: '5.1.1', diagnostic: '550 5.1.1 Empf\u00e4nger unbekannt \u{1f4ee}', remoteMta: 'mx.b\u00fccher.de', orcpt: 'utf-8;j\u00fcrgen@example.de' };
    const dsn = buildDsn(request([r]));
    const { parts } = splitReport(dsn.content);
    const reportParts = Buffer.from(parts[0]!.body + parts[1]!.body, 'latin1');
    expect(reportParts.every((b) => b < 0x80)).toBe(true);
    expect(parts[1]!.body).toContain('Final-Recipient: rfc822; j?rgen@example.de\r\n');
    expect(parts[1]!.body).toContain('Diagnostic-Code: smtp; 550 5.1.1 Empf?nger unbekannt ?\r\n');
    expect(dsn.recipients).toEqual(['alice@example.com']);
    expect(dsn.bodyType).toBe('7BIT');
  });
  it('a 2000-character diagnostic gives no line over 998 octets, with or without spaces', () => {
    const spaced = `550 ${Array.from({ length: 400 }, (_, i) => `w${i % 10}xyz`).join(' ')}`.slice(0, 2000);
    for (const diagnostic of [spaced, `550 ${'x'.repeat(1996)}`]) {
      const dsn = buildDsn(request([{ ...carol, diagnostic }]));
      const lines = dsn.content.toString('latin1').split('\r\n');
      expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(998);
      // Folding only inserts CRLF before an existing space: unfolding gives the diagnostic back.
      if (diagnostic === spaced) expect(splitReport(dsn.content).parts[1]!.body.replace(/\r\n /g, ' ')).toContain(`Diagnostic-Code: smtp; ${diagnostic}\r\n`);
    }
  });
  it('a multi-line reply with CRLF can not inject a field', () => {
    const dsn = buildDsn(request([{ ...carol, diagnostic: '550-5.1.1 first\r\nBcc: evil@example.net\r\n550 5.1.1 last' }]));
    const { parts } = splitReport(dsn.content);
    expect(parts[1]!.body).toContain('Diagnostic-Code: smtp; 550-5.1.1 first Bcc: evil@example.net 550 5.1.1 last\r\n');
    expect(parts[1]!.body).not.toMatch(/^Bcc:/m);
  });
});

describe('buildDsn: caller errors throw', () => {
  it('never a bounce for a bounce (RFC 5321 §4.5.5)', () => {
    expect(() => buildDsn(request([carol], { envelopeFrom: '' }))).toThrow(/null sender/);
  });
  it('no recipients, or a status that is not an RFC 3463 code', () => {
    expect(() => buildDsn(request([]))).toThrow(/at least one recipient/);
    expect(() => buildDsn(request([{ ...carol, status: '550' }]))).toThrow(/not an RFC 3463 code/);
  });
});

describe('recipientsToNotify (RFC 3461 §4.1)', () => {
  type Action = DsnRecipient['action'];
  const rows: [string, RecipientDsn | undefined, Action, boolean][] = [
    ['no DSN parameters: failures are reported', undefined, 'failed', true],
    ['no DSN parameters: delays are reported', undefined, 'delayed', true],
    ['no DSN parameters: success is not', undefined, 'delivered', false],
    ['ORCPT alone leaves the default', { orcpt: 'rfc822;a@x' }, 'failed', true],
    ['NEVER: not even a failure', { notify: ['NEVER'] }, 'failed', false],
    ['NEVER: no delay warning', { notify: ['NEVER'] }, 'delayed', false],
    ['FAILURE: failures', { notify: ['FAILURE'] }, 'failed', true],
    ['FAILURE: no delay warning', { notify: ['FAILURE'] }, 'delayed', false],
    ['FAILURE: no success', { notify: ['FAILURE'] }, 'delivered', false],
    ['DELAY: delays', { notify: ['DELAY'] }, 'delayed', true],
    ['DELAY: not failures', { notify: ['DELAY'] }, 'failed', false],
    ['SUCCESS: delivered', { notify: ['SUCCESS'] }, 'delivered', true],
    ['SUCCESS: relayed to a non-DSN next hop', { notify: ['SUCCESS'] }, 'relayed', true],
    ['SUCCESS: expanded to a list', { notify: ['SUCCESS'] }, 'expanded', true],
    ['SUCCESS: not failures', { notify: ['SUCCESS'] }, 'failed', false],
    ['SUCCESS,FAILURE,DELAY: all', { notify: ['SUCCESS', 'FAILURE', 'DELAY'] }, 'delayed', true],
  ];
  it.each(rows)('%s', (_name, dsn, action, included) => {
    const recipient = { address: 'a@x', action, ...(dsn ? { dsn } : {}) };
    expect(recipientsToNotify([recipient])).toEqual(included ? [recipient] : []);
  });
  it('keeps order and the caller’s own fields', () => {
    const list = [
      { address: 'a@x', action: 'failed' as const, reply: '550 a' },
      { address: 'b@x', action: 'delivered' as const, reply: '250 b' },
      { address: 'c@x', action: 'failed' as const, dsn: { notify: ['SUCCESS' as const] }, reply: '550 c' },
      { address: 'd@x', action: 'delayed' as const, reply: '451 d' },
    ];
    expect(recipientsToNotify(list).map((r) => r.reply)).toEqual(['550 a', '451 d']);
  });
});

describe('statusFromReply', () => {
  const rows: [string, string, string][] = [
    ['550 5.1.1 User unknown', '5.0.0', '5.1.1'],
    ['  452 4.2.2 Mailbox full', '4.0.0', '4.2.2'],
    ['550-5.7.1 Policy\r\n550 5.7.1 rejected', '5.0.0', '5.7.1'],
    ['250 2.0.0 Ok: queued as X', '2.0.0', '2.0.0'],
    ['554 5.7.26 Unauthenticated email is not accepted', '5.0.0', '5.7.26'],
    ['550 No such user', '5.1.0', '5.0.0'],
    ['421 Service not available', '4.4.2', '4.0.0'],
    ['550 4.1.1 class disagrees with the reply code', '5.0.0', '5.0.0'],
    ['550 5.1.1234 too many digits', '5.0.0', '5.0.0'],
    ['550', '5.1.0', '5.0.0'],
    ['connect to mx.example.org[192.0.2.1]:25: Connection refused', '4.4.1', '4.4.1'],
    ['4.4.1 ECONNECTION: connect ECONNREFUSED 192.0.2.1:25', '5.0.0', '4.4.1'],
    ['4.7.4 TLS is required, but was not offered by mx.example.org', '5.0.0', '4.7.4'],
    ['4.4.1x not a code', '5.0.0', '5.0.0'],
    ['354 Go ahead', '4.0.0', '4.0.0'],
    ['5501 5.1.1 not a reply code', '4.0.0', '4.0.0'],
    ['', '5.4.7', '5.4.7'],
  ];
  it.each(rows)('%j (fallback %s) -> %s', (reply, fallback, status) => {
    expect(statusFromReply(reply, fallback)).toBe(status);
  });
});
