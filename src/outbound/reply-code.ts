// A multi-line reply carries one code on every line (RFC 5321 §4.2.1), but
// a broken or hostile next hop may send lines that disagree:
// "250-2.1.5 ok\r\n550 5.1.1 no such user\r\n". nodemailer reads a reply by
// its first line, so that RCPT counted as accepted and the recipient was
// recorded delivered; a 250- first line before a 550 ended DATA "delivered".
// Postfix's smtp(8) reads the code of the last line (smtp_chat_resp), and so
// does Postern: readLastLineCode rewrites such a reply, before nodemailer
// reads it, as its last line alone, and logs the whole reply. A line with no
// code inside a multi-line reply (an empty one) does not end it, as it ended
// it for nodemailer: the next reply was then paired with the wrong command.
// And every reply that came before the connection closed is read before the
// close is: nodemailer reads one queued reply per turn of the event loop and
// failed a pipelined send at the close with the rest unread, so a next hop's
// "421 4.7.0 too busy" written with its other replies just before it closed
// became "4.4.1 Connection closed unexpectedly", our words for its own.
// Fails: throws when the connection lacks what it wraps (a nodemailer whose
// layout changed); the session refuses to open, so the attempt is deferred
// with that reason (smtp-session.ts), as sendRecipientDsn does.
//
//   readLastLineCode - from now on, `connection` reads each reply by the code of its last line, and every reply
//                      before a close.
//   lastLineDecides  - a reply as it is to be read: as it came, or its last line when the lines' codes differ.
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

interface ResponseInternals {
  _responseQueue?: string[];
  _processResponse?: () => unknown;
  _onClose?: () => unknown;
  _destroyed?: boolean;
}

/** readLastLineCode - replies of `connection` whose lines disagree on their code are read by the last line; `onMismatch` is told the whole reply. */
export function readLastLineCode(connection: SMTPConnection, onMismatch: (reply: string) => void): void {
  const internals = connection as unknown as ResponseInternals;
  const library = internals._processResponse;
  const onClose = internals._onClose;
  if (typeof library !== 'function' || typeof onClose !== 'function' || !Array.isArray(internals._responseQueue)) {
    throw new Error('nodemailer changed: SMTPConnection#_processResponse, #_onClose or #_responseQueue not found');
  }
  internals._onClose = function (this: ResponseInternals) {
    // Each call reads one whole reply (and schedules a call for the next, which then finds none). One left
    // unfinished (its last line a continuation) is put back: it stops here, and the close fails what waits on it.
    for (let before = this._responseQueue?.length ?? 0; before > 0 && !this._destroyed; before = this._responseQueue?.length ?? 0) {
      this._processResponse!();
      if ((this._responseQueue?.length ?? 0) >= before) break;
    }
    return onClose.call(this);
  };
  internals._processResponse = function (this: ResponseInternals) {
    // nodemailer takes one whole reply from the front of the queue each time (partial ones are not queued yet).
    const queue = this._responseQueue;
    // One that a line without a code cut short takes the replies queued after it until one ends it; while none has
    // come yet, it waits (each new reply calls this again).
    while (queue && queue.length > 0 && isCutShort(queue[0]!)) {
      if (queue.length === 1 || queue[0]!.length > MAX_REPLY) return;
      queue.splice(0, 2, `${queue[0]!}\n${queue[1]!}`);
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

/** Characters of a reply kept waiting for its end, at most (nodemailer's own limit on a reply). */
const MAX_REPLY = 1024 * 1024;

/** isCutShort - a multi-line reply (its first line "DDD-") whose last line is neither a continuation nor a final line. */
function isCutShort(reply: string): boolean {
  if (!/^\d{3}-/.test(reply)) return false;
  return !/^\d{3}(?:[ -]|$)/.test(reply.slice(reply.lastIndexOf('\n') + 1));
}

/** lastLineDecides - a reply (lines joined by "\n", as nodemailer queues it) as Postfix reads it: its last line alone when an earlier line has another code. */
export function lastLineDecides(reply: string): string {
  const lines = reply.split('\n');
  const last = lines.at(-1)!;
  const code = /^\d{3}/.exec(last)?.[0];
  if (code === undefined) return reply;
  return lines.every((line) => line.startsWith(code)) ? reply : last;
}
