// How long a session to a next hop waits, as Postfix's smtp(8) and RFC 5321
// §4.5.3.2 have it, on nodemailer's SMTPConnection:
//   connect         outbound.connectTimeout (smtp_connect_timeout, 30 s);
//   each reply      outbound.socketTimeout, the greeting included
//                   (smtp_helo_timeout and the command timeouts, 300 s;
//                   RFC: 5 minutes for the greeting);
//   end of data     twice that (smtp_data_done_timeout, 600 s; RFC: 10
//                   minutes): a reply that came after 300 s was a timeout,
//                   and the message went again to a host that had it;
//   RSET            at most 20 s (smtp_rset_timeout) on a cached connection:
//                   one that never answered held the delivery for the whole
//                   reply timeout.
// nodemailer has one budget for connecting and greeting together
// (connectionTimeout), so a slow greeter (a greet pause, a tarpit) was
// deferred every time at 30 s; limitConnectTime gives the connection its own.
// Fails: limitConnectTime throws when the connection lacks what it wraps (a
// nodemailer whose layout changed); the session refuses to open, so the
// attempt is deferred with that reason (smtp-session.ts).
//
//   sessionTimeouts  - the timeouts of a session, from the two settings (pure).
//   limitConnectTime - the TCP connection (and an implicit TLS handshake) of `connection` must be made within `ms`.
//   setReplyTimeout  - from now on, `connection` waits `ms` for a reply.
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

export interface SessionTimeouts {
  connectMs: number;
  replyMs: number;
  dataDoneMs: number;
  rsetMs: number;
}

/** Postfix's smtp_rset_timeout. */
const RSET_TIMEOUT_MS = 20_000;

/** sessionTimeouts - a session's timeouts from outbound.connectTimeout and outbound.socketTimeout (ms). */
export function sessionTimeouts(connectTimeoutMs: number, socketTimeoutMs: number): SessionTimeouts {
  return { connectMs: connectTimeoutMs, replyMs: socketTimeoutMs, dataDoneMs: 2 * socketTimeoutMs, rsetMs: Math.min(RSET_TIMEOUT_MS, socketTimeoutMs) };
}

interface ConnectionInternals {
  _socket?: { setTimeout(ms: number): unknown } | false | null;
  _setupConnectionHandlers?: () => void;
  _startPhase?: (timeout: number, err: Error) => void;
}

/**
 * limitConnectTime - the connection must be made (for implicit TLS, its handshake done) within `ms`; the rest of
 * nodemailer's connectionTimeout is the greeting's and STARTTLS's.
 */
export function limitConnectTime(connection: SMTPConnection, ms: number): void {
  const internals = connection as unknown as ConnectionInternals;
  const library = internals._setupConnectionHandlers;
  if (typeof library !== 'function' || typeof internals._startPhase !== 'function') {
    throw new Error('nodemailer changed: SMTPConnection#_setupConnectionHandlers or #_startPhase not found');
  }
  internals._setupConnectionHandlers = function (this: ConnectionInternals) {
    library.call(this);
    // The same phase timer the library armed (it ends at the connection, where the greeting's begins), shorter.
    this._startPhase!(ms, Object.assign(new Error('Connection timeout'), { code: 'ETIMEDOUT' }));
  };
}

/** setReplyTimeout - the time `connection` waits for its next reply, from now on (nodemailer's idle timeout on its socket). */
export function setReplyTimeout(connection: SMTPConnection, ms: number): void {
  const socket = (connection as unknown as ConnectionInternals)._socket;
  if (socket) socket.setTimeout(ms);
}
