// nodemailer reads the reply to the end of data as soon as the message
// starts to go out; Postfix's smtp(8) writes the whole message, then reads.
// A next hop that answers before it has the whole message (a 552 as soon
// as it is too big, a broken or hostile one at once) leaves the connection
// in a state nobody knows: the final dot went out after that reply, or, as
// the body is dropped once the send is over, never. Its reply to the dot
// would then be read as the next command's. Such a connection is not to be
// reused, and a 2xx given so early cannot be about the message: the send
// says so (smtp-session.ts), and the message is not recorded delivered.
// A reply is early when it is read while nodemailer's data stream is still
// under way, or was already waiting when that stream ended (the dot handed
// to the socket): the next hop's reply to the dot cannot come before that.
// Fails: throws when the connection lacks what it wraps (a nodemailer whose
// layout changed); the session refuses to open, so the attempt is deferred
// with that reason (smtp-session.ts), as sendRecipientDsn does.
//
//   watchEarlyReplies - from now on, whether the last send's end of data was answered early.
import type { Readable } from 'node:stream';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

type StreamCallback = (err: Error | null, str?: string) => void;

interface StreamInternals {
  _createSendStream?: (this: StreamInternals, callback: StreamCallback) => Readable;
  _currentDataStream?: Readable | false;
  _responseQueue?: string[];
}

/** watchEarlyReplies - answeredEarly() tells whether the reply to the last send's end of data came before its dot went out. */
export function watchEarlyReplies(connection: SMTPConnection): { answeredEarly(): boolean } {
  const internals = connection as unknown as StreamInternals;
  const library = internals._createSendStream;
  if (typeof library !== 'function' || !Array.isArray(internals._responseQueue)) {
    throw new Error('nodemailer changed: SMTPConnection#_createSendStream or #_responseQueue not found');
  }
  let early = false;
  internals._createSendStream = function (this: StreamInternals, callback: StreamCallback): Readable {
    early = false;
    let answered = false;
    const stream: Readable = library.call(this, (err, str) => {
      answered = true;
      if (this._currentDataStream === stream) early = true;
      callback(err, str);
    });
    stream.once('end', () => {
      if (answered || (this._responseQueue?.length ?? 0) > 0) early = true;
    });
    return stream;
  };
  return { answeredEarly: () => early };
}
