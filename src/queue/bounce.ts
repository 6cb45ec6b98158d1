// Delivery status notifications: the message Postern sends back to a sender
// when it gives up on a recipient, warns that one is delayed, or confirms a
// delivery the sender asked to hear about.
//  - buildDsn: one multipart/report (RFC 6522) of a human explanation worded
//    as Postfix words it, a message/delivery-status part (RFC 3464) and the
//    returned headers or message; from the null sender (RFC 5321 §4.5.5).
//  - recipientsToNotify: which recipients the sender wants a DSN about
//    (RFC 3461 §4.1 NOTIFY).
//  - statusFromReply: the RFC 3463 enhanced status code of an SMTP reply.
// Pure: values in, bytes out. The clock is the caller's (`now`) and the MIME
// boundary is derived, not random, so the same request gives the same bytes.
// How it fails: buildDsn throws an Error for a null envelope sender (never a
// bounce for a bounce), for an empty recipient list and for a status that is
// not "d.ddd.ddd": all caller bugs, not mail conditions. Nothing a remote
// server says can break the report: diagnostics, host names and addresses are
// made single-line 7-bit ASCII and folded below 998 octets. The other two
// functions do not throw.
import { isHostReply } from '../smtp/replies.ts';
import { formatRfc5322Date } from '../smtp/rfc5322-date.ts';
import type { RecipientDsn } from './queue-store.ts';

/** One recipient the report is about. */
export interface DsnRecipient {
  address: string;
  action: 'failed' | 'delayed' | 'delivered' | 'expanded' | 'relayed';
  /** RFC 3463 code, "5.1.1". */
  status: string;
  /** The remote (or local) reply, "550 5.1.1 No such user". */
  diagnostic?: string;
  /** Host name of the next hop the last attempt went to: it gave the diagnostic when that is an SMTP reply. */
  remoteMta?: string;
  /** ORCPT as received (smtp-server has already decoded its xtext), "rfc822;x@y". */
  orcpt?: string;
  lastAttemptAt?: Date;
  /** Reported for delayed recipients only (RFC 3464 §2.3.9). */
  willRetryUntil?: Date;
}

/** Everything a report says; buildDsn reads nothing else. */
export interface DsnRequest {
  queueId: string;
  /** Our host name. */
  reportingMta: string;
  arrivalDate: Date;
  now: Date;
  /** The original MAIL FROM, which receives the report. */
  envelopeFrom: string;
  /** ENVID, already xtext-decoded as RFC 3461 §6.3 wants it in the report. */
  envid?: string;
  ret?: 'FULL' | 'HDRS';
  recipients: DsnRecipient[];
  /** The original header block, up to and excluding the blank line. */
  originalHeaders: Buffer;
  /** Returned only with RET=FULL; otherwise the report carries text/rfc822-headers. */
  originalBody?: Buffer;
  messageIdDomain: string;
}

/** The report as an envelope and the bytes of the message. */
export interface BuiltDsn {
  mailFrom: '';
  recipients: [string];
  content: Buffer;
  /** 8BITMIME when the returned original carries 8-bit bytes: submit the report with BODY=8BITMIME. */
  bodyType: '7BIT' | '8BITMIME';
}

type ReportKind = 'failure' | 'delay' | 'success';

const CRLF = '\r\n';
// RFC 5322 §2.1.1: lines SHOULD stay within 78 octets and MUST stay within 998.
const SOFT_LINE = 78;
const WORD_CHUNK = 900;
// A multi-line SMTP reply can be long; past this it helps no reader.
const MAX_DIAGNOSTIC = 4096;
// RFC 3464 §2.3.4: status-code = DIGIT "." 1*3DIGIT "." 1*3DIGIT.
const STATUS_CODE = /^[245]\.\d{1,3}\.\d{1,3}$/;
const WORD_PIECES = new RegExp(`.{1,${WORD_CHUNK}}`, 'g');

const SUBJECTS: Record<ReportKind, string> = {
  failure: 'Undelivered Mail Returned to Sender',
  delay: 'Delayed Mail (still being retried)',
  success: 'Successful Mail Delivery Report',
};

const RETURNED_DESCRIPTION: Record<ReportKind, string> = { failure: 'Undelivered Message', delay: 'Delayed Message', success: 'Delivered Message' };

// Postfix's default texts (bounce(5) templates), so users recognise them.
const INTRO: Record<ReportKind, string[]> = {
  failure: [
    "I'm sorry to have to inform you that your message could not",
    "be delivered to one or more recipients. It's attached below.",
    '',
    'For further assistance, please send mail to postmaster.',
    '',
    'If you do so, please include this problem report. You can',
    'delete your own text from the attached returned message.',
  ],
  delay: [
    '####################################################################',
    '# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #',
    '####################################################################',
  ],
  success: [
    'Your message was successfully delivered to the destination(s)',
    'listed below. If the message was delivered to mailbox you will',
    'receive no further notifications. Otherwise you may still receive',
    'notifications of mail delivery errors from other systems.',
  ],
};

// Headings only when one report mixes kinds, so each list says what it is.
const SECTION_HEADING: Record<ReportKind, string> = {
  failure: 'Delivery to the following recipients failed permanently:',
  delay: 'Delivery to the following recipients is still being retried:',
  success: 'Delivery to the following recipients succeeded:',
};

/** kindOf - the report kind an action belongs to. */
function kindOf(action: DsnRecipient['action']): ReportKind {
  if (action === 'failed') return 'failure';
  return action === 'delayed' ? 'delay' : 'success';
}

/** toAscii - one line of printable ASCII: line breaks become spaces, anything else outside 0x20-0x7e becomes '?'. */
function toAscii(value: string): string {
  // Why '?' and not RFC 6533 utf-8 address types: a 7-bit report reaches every mailbox; the original is in part 3.
  return value.replace(/[\r\n\t]+/g, ' ').replace(/[^\x20-\x7e]/gu, '?').replace(/ {2,}/g, ' ').trim();
}

/** foldLine - break a line at spaces near 78 octets, continuing with `indent`; a word longer than 900 is cut into pieces so no line reaches 998. */
function foldLine(line: string, indent: string): string {
  const words = line.split(' ').flatMap((word) => word.match(WORD_PIECES) ?? ['']);
  const lines: string[] = [];
  let current = words[0] ?? '';
  for (const word of words.slice(1)) {
    if (current.length + 1 + word.length <= SOFT_LINE) {
      current += ` ${word}`;
    } else {
      lines.push(current);
      current = indent + word;
    }
  }
  lines.push(current);
  return lines.join(CRLF);
}

/** field - one RFC 3464 field, folded as a header field is (RFC 5322 §2.2.3: unfolding removes only the CRLF). */
function field(name: string, value: string): string {
  return foldLine(`${name}: ${value}`, ' ') + CRLF;
}

/** diagnosticOf - the remote reply made safe for a report, or undefined. */
function diagnosticOf(r: DsnRecipient): string | undefined {
  if (r.diagnostic === undefined) return undefined;
  const text = toAscii(r.diagnostic);
  if (text === '') return undefined;
  return text.length > MAX_DIAGNOSTIC ? `${text.slice(0, MAX_DIAGNOSTIC)}...` : text;
}

/** formatDuration - "35 minutes", "4.0 hours", "5.0 days", as Postfix words delays. */
function formatDuration(ms: number): string {
  const hours = ms / 3_600_000;
  if (hours >= 48) return `${(hours / 24).toFixed(1)} days`;
  if (hours >= 1) return `${hours.toFixed(1)} hours`;
  return `${Math.max(0, Math.round(ms / 60_000))} minutes`;
}

/**
 * recipientLine - "<a@b>: host mx.b said: 550 5.1.1 No such user" (Postfix's wording) when the host answered;
 * "<a@b>: mx.b: 4.4.1 connection refused" for what went wrong here on the way to it; folded.
 */
function recipientLine(r: DsnRecipient): string {
  const diagnostic = diagnosticOf(r) ?? `status ${r.status}`;
  const host = r.remoteMta === undefined ? '' : toAscii(r.remoteMta);
  let detail = diagnostic;
  if (host !== '' && kindOf(r.action) === 'success') detail = `delivery via ${host}: ${diagnostic}`;
  else if (host !== '') detail = isHostReply(diagnostic) ? `host ${host} said: ${diagnostic}` : `${host}: ${diagnostic}`;
  return foldLine(`<${toAscii(r.address)}>: ${detail}`, '    ');
}


/** humanText - part 1: Postfix's explanation, then the recipients grouped by kind. */
function humanText(request: DsnRequest, kind: ReportKind): string {
  const lines = [`This is the mail system at host ${toAscii(request.reportingMta)}.`, '', ...INTRO[kind]];
  const delayed = request.recipients.filter((r) => r.action === 'delayed');
  if (delayed.length > 0) {
    if (kind === 'delay') lines.push('');
    else lines.push('', 'Some recipients are still being retried (listed below).');
    lines.push(`Your message could not be delivered for ${formatDuration(request.now.getTime() - request.arrivalDate.getTime())}.`);
    const until = Math.max(...delayed.map((r) => r.willRetryUntil?.getTime() ?? Number.NaN).filter((t) => !Number.isNaN(t)));
    if (Number.isFinite(until)) lines.push(`It will be retried until it is ${formatDuration(until - request.arrivalDate.getTime())} old.`);
  }
  lines.push('', '                   The mail system');
  const kinds = (['failure', 'delay', 'success'] as const).filter((k) => request.recipients.some((r) => kindOf(r.action) === k));
  for (const k of kinds) {
    lines.push('');
    if (kinds.length > 1) lines.push(SECTION_HEADING[k]);
    for (const r of request.recipients.filter((x) => kindOf(x.action) === k)) lines.push(recipientLine(r));
  }
  return lines.join(CRLF) + CRLF;
}

/** deliveryStatus - part 2: per-message fields, then one group per recipient (RFC 3464 §2.1-2.3). */
function deliveryStatus(request: DsnRequest): string {
  let out = field('Reporting-MTA', `dns; ${toAscii(request.reportingMta)}`);
  // An extension field (RFC 3464 §2.4 "X-"), as Postfix's X-Postfix-Queue-ID: what the operator greps for.
  out += field('X-Postern-Queue-ID', toAscii(request.queueId));
  if (request.envid !== undefined) out += field('Original-Envelope-Id', toAscii(request.envid));
  out += field('Arrival-Date', formatRfc5322Date(request.arrivalDate));
  for (const r of request.recipients) {
    out += CRLF;
    // RFC 3464 §2.3.1: Original-Recipient carries the ORCPT the client gave, address type included.
    if (r.orcpt !== undefined) out += field('Original-Recipient', toAscii(r.orcpt));
    out += field('Final-Recipient', `rfc822; ${toAscii(r.address)}`);
    out += field('Action', r.action);
    out += field('Status', r.status);
    const diagnostic = diagnosticOf(r);
    // RFC 3464 §2.3.5-6: Remote-MTA is the host that reported the status, and diagnostic type "smtp" an SMTP
    // reply; a failure of our own on the way (connection refused, TLS required) is ours (Postfix: X-Postfix).
    const fromHost = diagnostic === undefined || isHostReply(diagnostic);
    if (r.remoteMta !== undefined && fromHost) out += field('Remote-MTA', `dns; ${toAscii(r.remoteMta)}`);
    if (diagnostic !== undefined) out += field('Diagnostic-Code', `${fromHost ? 'smtp' : 'X-Postern'}; ${diagnostic}`);
    if (r.lastAttemptAt !== undefined) out += field('Last-Attempt-Date', formatRfc5322Date(r.lastAttemptAt));
    if (r.action === 'delayed' && r.willRetryUntil !== undefined) out += field('Will-Retry-Until', formatRfc5322Date(r.willRetryUntil));
  }
  return out;
}

/** returnedPart - part 3: the whole message only for RET=FULL with a body given (RFC 3461 §4.3), else the headers (RFC 6522 text/rfc822-headers). */
function returnedPart(request: DsnRequest, kind: ReportKind): { headers: string; content: Buffer; eightBit: boolean } {
  const headerBlock = request.originalHeaders;
  const terminated = headerBlock.length === 0 || headerBlock.at(-1) === 0x0a ? headerBlock : Buffer.concat([headerBlock, Buffer.from(CRLF)]);
  const body = request.ret === 'FULL' ? request.originalBody : undefined;
  const full = body !== undefined;
  let headers = `Content-Description: ${RETURNED_DESCRIPTION[kind]}${full ? '' : ' Headers'}${CRLF}`;
  headers += `Content-Type: ${full ? 'message/rfc822' : 'text/rfc822-headers'}${CRLF}`;
  if (!full) {
    // 8-bit headers (RFC 6532) go quoted-printable, as RFC 6522 §4 allows: the report stays 7-bit, so a next hop
    // without 8BITMIME takes it. Declared 8BITMIME, it was refused there (5.6.3), and a report is not reported.
    if (!terminated.some((b) => b > 0x7f)) return { headers, content: terminated, eightBit: false };
    return { headers: `${headers}Content-Transfer-Encoding: quoted-printable${CRLF}`, content: quotedPrintable(terminated), eightBit: false };
  }
  // The whole original passes through byte for byte. 8-bit bytes make the report 8-bit, declared as such (RFC 2045
  // §6.4; RFC 2046 §5.2.1 allows only 7bit/8bit/binary for message/rfc822).
  const content = Buffer.concat([terminated, Buffer.from(CRLF), body]);
  const eightBit = content.some((b) => b > 0x7f);
  if (eightBit) headers += `Content-Transfer-Encoding: 8bit${CRLF}`;
  return { headers, content, eightBit };
}

/**
 * quotedPrintable - RFC 2045 §6.7: CRLF lines kept; every byte outside printable ASCII, "=", and a space or tab
 * ending a line as =XX; soft line breaks keep encoded lines within 76 characters.
 */
function quotedPrintable(text: Buffer): Buffer {
  const lines = text.toString('latin1').split(CRLF);
  const encoded = lines.map((line) => {
    let out = '';
    let width = 0;
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      const literal = (c >= 33 && c <= 126 && c !== 0x3d) || ((c === 0x20 || c === 0x09) && i < line.length - 1);
      const piece = literal ? line[i]! : `=${c.toString(16).toUpperCase().padStart(2, '0')}`;
      if (width + piece.length > 75) {
        out += `=${CRLF}`;
        width = 0;
      }
      out += piece;
      width += piece.length;
    }
    return out;
  });
  return Buffer.from(encoded.join(CRLF), 'latin1');
}

/** chooseBoundary - Postfix-style "queueid.ms/host", lengthened until no part contains it (RFC 2046 §5.1.1). */
function chooseBoundary(request: DsnRequest, parts: Buffer[]): string {
  const base = `${request.queueId}.${request.now.getTime()}/${request.reportingMta}`.replace(/[^A-Za-z0-9'()+_,./:=?-]/g, '-').slice(0, 60);
  for (let n = 0; ; n++) {
    const boundary = n === 0 ? base : `${base}.${n}`;
    if (!parts.some((p) => p.includes(`--${boundary}`))) return boundary;
  }
}

/** buildDsn - the report for `request.recipients`, addressed from <> to the original sender. */
export function buildDsn(request: DsnRequest): BuiltDsn {
  if (request.envelopeFrom === '') throw new Error('buildDsn: no report to the null sender (RFC 5321 §4.5.5: never a bounce for a bounce)');
  if (request.recipients.length === 0) throw new Error('buildDsn: a report needs at least one recipient (RFC 3464 §2.1)');
  const bad = request.recipients.find((r) => !STATUS_CODE.test(r.status));
  if (bad) throw new Error(`buildDsn: status ${JSON.stringify(bad.status)} of ${bad.address} is not an RFC 3463 code`);

  // Failure wins: a sender must not miss a loss because some other recipient was fine.
  const actions = request.recipients.map((r) => kindOf(r.action));
  const kind: ReportKind = actions.includes('failure') ? 'failure' : actions.includes('delay') ? 'delay' : 'success';
  const human = Buffer.from(humanText(request, kind), 'latin1');
  const status = Buffer.from(deliveryStatus(request), 'latin1');
  const returned = returnedPart(request, kind);
  const boundary = chooseBoundary(request, [human, status, returned.content]);
  const now = request.now;

  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${toAscii(request.reportingMta)}>`,
    `To: <${toAscii(request.envelopeFrom)}>`,
    `Subject: ${SUBJECTS[kind]}`,
    `Date: ${formatRfc5322Date(now)}`,
    `Message-ID: <${toAscii(request.queueId)}.dsn.${now.getTime()}@${toAscii(request.messageIdDomain)}>`,
    // RFC 3834 §5: marks the report as automatic, so responders do not answer it.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    'Content-Type: multipart/report; report-type=delivery-status;',
    `\tboundary="${boundary}"`,
    ...(returned.eightBit ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    'This is a MIME-encapsulated message.',
    '',
  ].join(CRLF);
  const delimiter = `${CRLF}--${boundary}${CRLF}`;
  const content = Buffer.concat([
    Buffer.from(head),
    Buffer.from(`${delimiter}Content-Description: Notification${CRLF}Content-Type: text/plain; charset=us-ascii${CRLF}${CRLF}`),
    human,
    Buffer.from(`${delimiter}Content-Description: Delivery report${CRLF}Content-Type: message/delivery-status${CRLF}${CRLF}`),
    status,
    Buffer.from(`${delimiter}${returned.headers}${CRLF}`),
    returned.content,
    Buffer.from(`${CRLF}--${boundary}--${CRLF}`),
  ]);
  return { mailFrom: '', recipients: [request.envelopeFrom], content, bodyType: returned.eightBit ? '8BITMIME' : '7BIT' };
}

/** recipientsToNotify - the recipients whose sender asked (or by default wants) a report of this action (RFC 3461 §4.1). */
export function recipientsToNotify<T extends { address: string; dsn?: RecipientDsn; action: DsnRecipient['action'] }>(recipients: T[]): T[] {
  return recipients.filter((r) => {
    const notify = r.dsn?.notify;
    // §4.1: without NOTIFY the MTA acts as for FAILURE or FAILURE,DELAY. (No delay is reported yet: delivery sends
    // no warnings, as Postfix with its default delay_warning_time of 0.)
    if (notify === undefined || notify.length === 0) return r.action === 'failed' || r.action === 'delayed';
    if (notify.includes('NEVER')) return false;
    switch (r.action) {
      case 'failed':
        return notify.includes('FAILURE');
      case 'delayed':
        return notify.includes('DELAY');
      // RFC 3464 §2.3.3: "relayed" (to a non-DSN next hop) and "expanded" (to a list) are success kinds too.
      case 'delivered':
      case 'relayed':
      case 'expanded':
        return notify.includes('SUCCESS');
    }
  });
}

/**
 * statusFromReply - the enhanced code of "550 5.1.1 User unknown" ("5.1.1"); else "class.0.0" from the basic code;
 * else the code our own account starts with ("4.4.1 connection refused"); else `fallback`.
 */
export function statusFromReply(reply: string, fallback: string): string {
  const basic = /^\s*([245])\d\d(?:[ -]|$)/.exec(reply);
  if (!basic) return /^\s*([245]\.\d{1,3}\.\d{1,3})(?!\S)/.exec(reply)?.[1] ?? fallback;
  const enhanced = /^\s*\d{3}[ -]([245])\.(\d{1,3})\.(\d{1,3})(?!\S)/.exec(reply);
  // RFC 2034 §4: the enhanced class must agree with the reply code; when it does not, the reply code rules.
  if (enhanced && enhanced[1] === basic[1]) return `${enhanced[1]}.${enhanced[2]}.${enhanced[3]}`;
  return `${basic[1]}.0.0`;
}
