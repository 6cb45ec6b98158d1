// A multi-line reply carries one code on every line (RFC 5321 §4.2.1), but
// a broken or hostile next hop may send lines that disagree:
// "250-2.1.5 ok\r\n550 5.1.1 no such user\r\n". nodemailer reads a reply by
// its first line, so that RCPT counted as accepted and the recipient was
// recorded delivered; a 250- first line before a 550 ended DATA "delivered".
// Postfix's smtp(8) reads the code of the last line (smtp_chat_resp), and so
// does Postern: readLastLineCode rewrites such a reply, before nodemailer
// reads it, as its last line alone, and logs the whole reply. A line with no
// code inside a multi-line reply (an empty one), or where a reply was due
// (garbage), does not end it, as it ended it for nodemailer: the next reply
// was then paired with the wrong command, and a line "2" read as a success.
// Such a reply is held to MAX_CUT_SHORT_LINES lines and MAX_CUT_SHORT_CHARS,
// then the connection fails as for any reply too large (a hostile next hop
// sending lines without end held the delivery, and the event loop).
// Fails: throws when the connection lacks what it wraps (a nodemailer whose
// layout changed); the session refuses to open, so the attempt is deferred
// with that reason (smtp-session.ts), as sendRecipientDsn does.
//
//   readLastLineCode - from now on, `connection` reads each reply by the code of its last line.
//   lastLineDecides  - a reply as it is to be read: as it came, without its lines that have no code, or its last
//                      line when the lines' codes differ.
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

interface ResponseInternals {
  _responseQueue?: string[];
  _processResponse?: () => unknown;
  _onResponseTooLarge?: () => unknown;
}

/** readLastLineCode - replies of `connection` whose lines disagree on their code are read by the last line; `onMismatch` is told the whole reply. */
export function readLastLineCode(connection: SMTPConnection, onMismatch: (reply: string) => void): void {
  const internals = connection as unknown as ResponseInternals;
  const library = internals._processResponse;
  if (typeof library !== 'function' || typeof internals._onResponseTooLarge !== 'function' || !Array.isArray(internals._responseQueue)) {
    throw new Error('nodemailer changed: SMTPConnection#_processResponse, #_onResponseTooLarge or #_responseQueue not found');
  }
  internals._processResponse = function (this: ResponseInternals) {
    // nodemailer takes one whole reply from the front of the queue each time (partial ones are not queued yet).
    const queue = this._responseQueue;
    // One that a line without a code cut short takes the replies queued after it, up to the one that ends it; while
    // that has not come, it waits (each new reply calls this again).
    if (queue && queue.length > 0 && isCutShort(queue[0]!)) {
      const end = queue.findIndex((entry, i) => i > 0 && !isUnfinished(entry));
      const held = end < 0 ? queue : queue.slice(0, end + 1);
      if (held.length > MAX_CUT_SHORT_LINES || held.reduce((n, entry) => n + entry.length, 0) > MAX_CUT_SHORT_CHARS) return this._onResponseTooLarge!();
      if (end < 0) return;
      queue.splice(0, end + 1, held.join('\n'));
    }
    const next = queue?.[0];
    if (queue && next?.includes('\n')) {
      const read = lastLineDecides(next);
      if (read !== next) {
        queue[0] = read;
        onMismatch(next);
      }
    }
    return library.call(this);
  };
}

/** Queued lines and characters a reply cut short may take, at most (an EHLO reply is some 20 lines and 500 characters). */
const MAX_CUT_SHORT_LINES = 100;
const MAX_CUT_SHORT_CHARS = 16 * 1024;

/**
 * isCutShort - a queued entry that does not end a reply: a multi-line reply (its first line "DDD-") whose last line
 * is neither a continuation nor a final line, or a line with no code where a reply was due (nodemailer read "2" as a
 * reply, and a success; Postfix's smtp_chat_resp reads past such garbage to the reply's final line).
 */
function isCutShort(reply: string): boolean {
  return (/^\d{3}-/.test(reply) || !/^\d{3}(?:[ -]|$)/.test(reply)) && !/^\d{3}(?:[ -]|$)/.test(reply.slice(reply.lastIndexOf('\n') + 1));
}

/** isUnfinished - a queued reply whose last line does not end a reply ("DDD" or "DDD text"). */
function isUnfinished(reply: string): boolean {
  return !/^\d{3}(?: |$)/.test(reply.slice(reply.lastIndexOf('\n') + 1));
}

/**
 * lastLineDecides - a reply (lines joined by "\n", as nodemailer queues it) as Postfix reads it: its last line alone
 * when an earlier line has another code; without its lines that have no code (garbage, an empty line), so that an
 * EHLO reply keeps its extensions.
 */
export function lastLineDecides(reply: string): string {
  const lines = reply.split('\n');
  const last = lines.at(-1)!;
  const code = /^\d{3}/.exec(last)?.[0];
  if (code === undefined || lines.every((line) => line.startsWith(code))) return reply;
  const coded = lines.filter((line) => /^\d{3}(?:[ -]|$)/.test(line));
  return coded.every((line) => line.startsWith(code)) ? coded.join('\n') : last;
}
