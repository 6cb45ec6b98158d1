// Headers Postern adds to a message on the way in, by prepending bytes:
// the message itself is never parsed into a tree or re-serialised, which
// keeps DKIM signatures intact (LIBRARIES.md, mailparser note).
//  - Received (RFC 5321 §4.4), worded as Postfix writes it, with ESMTPS /
//    ESMTPSA and the TLS version and cipher; for an SMTPUTF8 message
//    UTF8SMTPS / UTF8SMTPSA (RFC 6531 §4.3) and its UTF-8 names as sent;
//  - Message-ID and Date when a submission client left them out (RFC 6409
//    §8.2-8.3), and From (the envelope sender, as Postfix's cleanup adds it
//    for its own clients); never on the relay port, where mail is in transit.
//  - the empty line that ends the header fields, where a line that is no
//    header field comes before it (a script that sent its text without
//    headers, or without the empty line): Postfix's cleanup inserts it, so
//    that our fields stay fields and the text stays the body.
// HeaderPrepender buffers only the header block (bounded), then streams.
// The Received headers also count the message's hops: a message that has
// passed HOP_LIMIT relays is in a loop (a route that points back here, two
// relays that forward to each other) and is refused, as Postfix's
// hopcount_limit does; otherwise each pass would queue it once more.
import { Transform, type TransformCallback } from 'node:stream';
import { fieldLinesLength, headerBlockLength, headerBlockSettles } from '../smtp/header-block.ts';
import { formatRfc5322Date } from '../smtp/rfc5322-date.ts';

export interface ReceivedFacts {
  helo: string;
  clientHostname: string;
  clientAddress: string;
  hostname: string;
  /** ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848). */
  protocol: string;
  tlsVersion?: string;
  tlsCipher?: string;
  queueId: string;
  /** Named in "for <...>" only when there is exactly one recipient (as Postfix). */
  recipients: string[];
  date: Date;
  /** The message came with SMTPUTF8: its header may hold UTF-8 (RFC 6532), ours too. */
  smtpUtf8: boolean;
}


// Printable ASCII without the comment delimiters, so a HELO can not break the header's structure;
// in an SMTPUTF8 message, UTF-8 beyond ASCII too (not the C1 controls).
const NOT_PRINTABLE = { ascii: /[^\x21-\x7e]|[()]/g, utf8: /[\x00-\x20\x7f-\x9f()]/g };

/** buildReceivedHeader - the Received header line(s), folded, ending in CRLF. */
export function buildReceivedHeader(f: ReceivedFacts): string {
  const notPrintable = f.smtpUtf8 ? NOT_PRINTABLE.utf8 : NOT_PRINTABLE.ascii;
  const clean = (value: string) => value.replace(notPrintable, '?').slice(0, 255) || 'unknown';
  const protocol = f.smtpUtf8 ? f.protocol.replace(/^ESMTP/, 'UTF8SMTP') : f.protocol;
  const lines = [`Received: from ${clean(f.helo)} (${clean(f.clientHostname)} [${clean(f.clientAddress)}])`];
  if (f.tlsVersion) lines.push(`\t(using ${clean(f.tlsVersion)} with cipher ${clean(f.tlsCipher ?? 'unknown')})`);
  let by = `\tby ${f.hostname} (Postern) with ${protocol} id ${f.queueId}`;
  if (f.recipients.length === 1) {
    lines.push(by);
    by = `\tfor <${clean(f.recipients[0]!)}>; ${formatRfc5322Date(f.date)}`;
  } else {
    by += `; ${formatRfc5322Date(f.date)}`;
  }
  lines.push(by);
  return lines.join('\r\n') + '\r\n';
}

const CRLF = Buffer.from('\r\n');

/** The most Received headers a message may carry, ours included (Postfix hopcount_limit). */
export const HOP_LIMIT = 50;

/** receivedCount - how many Received headers a header block holds. */
export function receivedCount(headerBlock: string): number {
  return headerBlock.match(/^received[ \t]*:/gim)?.length ?? 0;
}

/**
 * messageIdOf - the Message-ID field's value, unfolded, for the `queued` log line (Postfix's cleanup logs
 * message-id=), so that "my <abc@example.org> never arrived" can be traced; control characters as `?`, at
 * most 998 characters. Undefined when the block has none.
 */
export function messageIdOf(headerBlock: string): string | undefined {
  const found = /^message-id[ \t]*:(.*(?:\r\n[ \t].*)*)/im.exec(headerBlock);
  const value = found?.[1]!.replace(/\r\n/g, '').replace(/[\x00-\x1f\x7f]/g, '?').trim().slice(0, 998);
  return value || undefined;
}

/** missingSubmissionHeaders - Message-ID, Date and From lines to add when the header block lacks them. */
export function missingSubmissionHeaders(headerBlock: string, facts: { queueId: string; hostname: string; date: Date; mailFrom: string }): string {
  let out = '';
  if (facts.mailFrom !== '' && !/^from[ \t]*:/im.test(headerBlock)) out += `From: ${facts.mailFrom}\r\n`;
  if (!/^message-id[ \t]*:/im.test(headerBlock)) out += `Message-ID: <${facts.queueId}.${facts.date.getTime()}@${facts.hostname}>\r\n`;
  if (!/^date[ \t]*:/im.test(headerBlock)) out += `Date: ${formatRfc5322Date(facts.date)}\r\n`;
  return out;
}

/** HeaderPrepender - emits `prefix(header fields)` then the message, unchanged but for an empty line where its fields end early. */
export class HeaderPrepender extends Transform {
  private buffered: Buffer[] = [];
  private bufferedLength = 0;
  /** The last (up to 3) bytes buffered: an end of the header block may begin in them. */
  private tail: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(private readonly prefix: (headerBlock: string) => string) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.done) return callback(null, chunk);
    const settles = headerBlockSettles(this.bufferedLength, this.tail, chunk);
    this.buffered.push(chunk);
    this.bufferedLength += chunk.length;
    this.tail = chunk.length >= 3 ? chunk.subarray(-3) : Buffer.concat([this.tail, chunk]).subarray(-3);
    if (settles) {
      // Most header blocks end in the first chunk: no copy then.
      const joined = this.buffered.length === 1 ? chunk : Buffer.concat(this.buffered);
      this.buffered = [joined];
      const headerEnd = headerBlockLength(joined, false);
      if (headerEnd !== undefined) this.release(joined, headerEnd);
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (!this.done) {
      const joined = Buffer.concat(this.buffered);
      this.release(joined, headerBlockLength(joined, true) ?? joined.length);
    }
    callback();
  }

  private release(data: Buffer, headerEnd: number): void {
    this.done = true;
    this.buffered = [];
    const headerBlock = data.subarray(0, headerEnd).toString('latin1');
    const fieldsEnd = fieldLinesLength(headerBlock);
    // The prefix is ours: ASCII, or UTF-8 names in an SMTPUTF8 message's Received header.
    this.push(Buffer.from(this.prefix(headerBlock.slice(0, fieldsEnd)), 'utf8'));
    if (fieldsEnd === headerEnd) return void this.push(data);
    this.push(data.subarray(0, fieldsEnd));
    this.push(CRLF);
    this.push(data.subarray(fieldsEnd));
  }
}
