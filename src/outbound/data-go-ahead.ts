// DATA is answered 354 before the message may follow (RFC 5321 §4.1.1.4).
// nodemailer also takes a 2xx as the go-ahead (its comment: some servers
// are said to answer 250), and sends the message. A next hop that answered
// 250 is not reading message text: each line of the body reaches it as a
// command, the recipients of a "RCPT TO:" line in the body among them.
// Postfix's smtp(8) takes any reply to DATA but a 3xx as a failure; a reply
// that is not 4xx or 5xx is a "Protocol error" with status 5.5.0
// (smtp_trouble.c), so the message bounces. requireDataGoAhead does the
// same: such a reply fails the transaction before any of the message is
// sent (smtp-session.ts words it as Postfix does), and the connection is
// dropped (its state is unknown; a QUIT might be read as message text).
// Fails: throws when the connection lacks what it wraps (a nodemailer whose
// layout changed); the session refuses to open, so the attempt is deferred
// with that reason (smtp-session.ts), as sendRecipientDsn does.
//
//   requireDataGoAhead - from now on, `connection` sends a message only after a 3xx reply to DATA.
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

type DataCallback = (err: Error | null, info?: unknown) => void;

interface DataInternals {
  _actionDATA?: (str: string, callback: DataCallback) => void;
}

/** requireDataGoAhead - a reply to DATA other than 3xx fails the send and closes `connection`; nodemailer's own failures pass as they are. */
export function requireDataGoAhead(connection: SMTPConnection): void {
  const internals = connection as unknown as DataInternals;
  const library = internals._actionDATA;
  if (typeof library !== 'function') throw new Error('nodemailer changed: SMTPConnection#_actionDATA not found');
  internals._actionDATA = function (this: DataInternals, str, callback) {
    library.call(this, str, (err, info) => {
      if (err || str.startsWith('3')) return callback(err, info);
      connection.close();
      callback(Object.assign(new Error('Protocol error: no go-ahead for the message'), { code: 'EPROTOCOL', response: str, command: 'DATA' }));
    });
  };
}
