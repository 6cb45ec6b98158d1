// DSN parameters per recipient on RCPT TO (RFC 3461 §4.1-4.2). nodemailer
// takes one NOTIFY and one ORCPT per envelope, so recipients whose
// parameters differ had to go in transactions of their own. They usually
// differ: an MTA that relays to us (Postfix among them) gives every
// recipient its own ORCPT. A message to 50 recipients of one domain went
// out 50 times. sendRecipientDsn makes the RCPT TO of one connection carry
// each recipient's own parameters, so one transaction takes them all.
//
// How: nodemailer's _sendRcpt queues the recipient it is about to send
// (_recipientQueue), then asks _getDsnRcptToArgs for the parameters; the
// replacement reads the last one queued and looks its parameters up in the
// transaction's table, set just before each send. Only where the next hop
// offers DSN, as nodemailer does.
// Fails: throws when the connection lacks what it replaces (a nodemailer
// whose layout changed); the session refuses to open, so the attempt is
// deferred with that reason (smtp-session.ts), and the outbound tests fail,
// rather than recipients losing their parameters unseen.
//
//   sendRecipientDsn - from now on, each RCPT TO of `connection` carries the DSN parameters `current()` gives.
//   encodeXtext      - RFC 3461 §4 xtext.
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { RecipientDsn } from '../queue/queue-store.ts';

interface RcptInternals {
  _recipientQueue?: string[];
  _supportedExtensions?: string[];
  _getDsnRcptToArgs?: () => string;
}

/** sendRecipientDsn - each RCPT TO of `connection` carries the NOTIFY and ORCPT `current()` holds for its address. */
export function sendRecipientDsn(connection: SMTPConnection, current: () => ReadonlyMap<string, RecipientDsn | undefined>): void {
  const internals = connection as unknown as RcptInternals;
  if (typeof internals._getDsnRcptToArgs !== 'function' || !Array.isArray(internals._recipientQueue)) {
    throw new Error('nodemailer changed: SMTPConnection#_getDsnRcptToArgs or #_recipientQueue not found');
  }
  internals._getDsnRcptToArgs = function (this: RcptInternals): string {
    if (!this._supportedExtensions?.includes('DSN')) return '';
    const dsn = current().get(this._recipientQueue?.at(-1) ?? '');
    const args: string[] = [];
    if (dsn?.notify?.length) args.push(`NOTIFY=${dsn.notify.join(',')}`);
    if (dsn?.orcpt) args.push(`ORCPT=${encodeXtext(dsn.orcpt)}`);
    return args.length > 0 ? ` ${args.join(' ')}` : '';
  };
}

/** encodeXtext - RFC 3461 §4: '+', '=' and bytes outside 33..126 as "+HH". */
export function encodeXtext(value: string): string {
  return Buffer.from(value, 'utf8').reduce((out, byte) => out + (byte < 33 || byte > 126 || byte === 0x2b || byte === 0x3d ? `+${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte)), '');
}
