// One SMTP client session to one address of a next hop, under a TLS level,
// on nodemailer's SMTPConnection (LIBRARIES.md: per-recipient results, TLS
// facts from the socket). What each level does (DESIGN.md's table):
//   none    - never STARTTLS;
//   may     - STARTTLS when offered, certificate not checked; a failed
//             handshake makes us reconnect once in plaintext (logged);
//   encrypt - STARTTLS must be offered and succeed, else we fail (4.7.x),
//             never plaintext;
//   verify  - as encrypt, and the chain must verify and the name match the
//             next hop's host name; checked after the handshake and before
//             MAIL FROM, so nothing of the message reaches an unverified host.
// Fails: openSession never throws; it returns why it could not open.
import { isIP } from 'node:net';
import { createSecureContext, rootCertificates, type SecureContext, type TLSSocket } from 'node:tls';
import type { Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { TlsLevel } from '../config/config.ts';
import type { Logger } from '../observability/logger.ts';
import type { AttemptRecord, RecipientDsn } from '../queue/queue-store.ts';
import { cleanReply } from '../smtp/replies.ts';
import { requireDataGoAhead } from './data-go-ahead.ts';
import { stuffQueuedBodies } from './dot-stuffing.ts';
import { watchEarlyReplies } from './early-reply.ts';
import { sendRecipientDsn } from './recipient-dsn.ts';
import { readLastLineCode } from './reply-code.ts';
import { limitConnectTime, setReplyTimeout, type SessionTimeouts } from './session-timeouts.ts';

export type TlsFacts = NonNullable<AttemptRecord['tls']>;

export interface SessionTarget {
  /** Name of the next hop: SNI, certificate name check, records. */
  host: string;
  ip: string;
  port: number;
  /** Implicit TLS (port 465). */
  secure: boolean;
}

export interface SessionSettings {
  level: TlsLevel;
  heloName: string;
  /** Extra CA certificates (PEM) trusted for verify, on top of the system's. */
  extraCa: string[];
  timeouts: SessionTimeouts;
  auth?: SMTPConnection.AuthenticationType;
  logger: Logger;
}

export type OpenResult =
  | { ok: true; session: OutboundSession }
  /** reached: the host answered (its greeting at least), as against a connection that failed (Postfix: relay=none). */
  | { ok: false; reply: string; reached: boolean; tls?: TlsFacts };

export interface TransactionRequest {
  mailFrom: string;
  recipients: { address: string; dsn?: RecipientDsn }[];
  body: Readable;
  bodyType: '7BIT' | '8BITMIME';
  smtpUtf8: boolean;
  requireTls: boolean;
  dsn: { ret?: 'FULL' | 'HDRS'; envid?: string };
  /** Bytes of the message, declared as SIZE= where the next hop offers SIZE (RFC 1870). */
  size: number;
}

export interface TransactionResult {
  /** The connection was lost, or broke protocol, once the whole stored message had gone into it: the next hop may have it. */
  lostAfterData: boolean;
  /** Per recipient: the reply to RCPT (refused) or to DATA (accepted ones). */
  recipients: { address: string; reply: string }[];
}

export interface OutboundSession {
  readonly tls?: TlsFacts;
  readonly extensions: readonly string[];
  /** The largest message the next hop takes, from its SIZE (RFC 1870); undefined when it named none. */
  readonly maxSize?: number;
  /** False once the connection failed or closed: it must not be reused. */
  readonly usable: boolean;
  /** send - one transaction; rejects with the body's own error when the body cannot be read (nothing was delivered). */
  send(request: TransactionRequest): Promise<TransactionResult>;
  /** reset - RSET before the next transaction on a reused session; false if the session is gone. */
  reset(): Promise<boolean>;
  close(): void;
}

// One client context per trust list: building one loads ~140 system roots
// (about 55 ms of CPU), too much to repeat for every connection. The lists
// are made once at start (serve.ts), so their identity is the cache key.
const trustContexts = new WeakMap<readonly string[], SecureContext>();

/** trustContext - TLS 1.2+ client context trusting the system CAs plus `extraCa`. */
function trustContext(extraCa: readonly string[]): SecureContext {
  let context = trustContexts.get(extraCa);
  if (!context) {
    context = createSecureContext({ ca: [...rootCertificates, ...extraCa], minVersion: 'TLSv1.2' });
    trustContexts.set(extraCa, context);
  }
  return context;
}

type ConnectionInternals = { _socket?: TLSSocket | null; _supportedExtensions?: string[]; _maxAllowedSize?: number; _envelope?: { rejectedErrors?: SmtpError[]; mailError?: SmtpError } };
type SmtpError = Error & { code?: string; response?: string; responseCode?: number; command?: string; rejectedErrors?: SmtpError[]; recipient?: string };

/** openSession - connect, EHLO, STARTTLS per the level, AUTH if configured; never throws. */
export async function openSession(target: SessionTarget, settings: SessionSettings): Promise<OpenResult> {
  const first = await connect(target, settings, settings.level === 'none');
  if (first.ok || settings.level !== 'may' || !first.handshakeFailed) return finish(first, target, settings);
  // Opportunistic TLS: the same host again, in plaintext (Postfix does the same, and logs it).
  settings.logger.warn({ host: target.host, ip: target.ip, reason: first.reply }, 'TLS handshake failed; retrying in plaintext (tls level may)');
  return finish(await connect(target, settings, true), target, settings);
}

type EarlyReplies = ReturnType<typeof watchEarlyReplies>;

/** Each recipient's DSN parameters for the transaction under way on a connection (recipient-dsn.ts). */
type TransactionDsn = Map<string, RecipientDsn | undefined>;

type Connected =
  | { ok: true; connection: SMTPConnection; tls?: TlsFacts; recipientDsn: TransactionDsn; early: EarlyReplies }
  | { ok: false; reply: string; handshakeFailed: boolean; tlsFailed: boolean; reached: boolean };

function connect(target: SessionTarget, settings: SessionSettings, plaintext: boolean): Promise<Connected> {
  const connection = new SMTPConnection({
    host: target.ip,
    port: target.port,
    secure: target.secure,
    // SNI carries host names only (RFC 6066 §3); an IP next hop is still checked against its IP SAN.
    servername: isIP(target.host) ? undefined : target.host,
    name: settings.heloName,
    ignoreTLS: plaintext,
    // Not requireTLS: nodemailer then sends STARTTLS even to a server that did not offer it. Without it, a
    // server that offers none leaves the session in plaintext, which finish() refuses for encrypt and verify
    // before any MAIL FROM (Postfix: "TLS is required, but was not offered by host").
    opportunisticTLS: settings.level === 'may',
    // nodemailer's one budget from connecting to the end of STARTTLS. It must never bind: the connection has
    // connectMs (limitConnectTime), and the greeting, EHLO, STARTTLS's reply and the handshake replyMs each.
    connectionTimeout: settings.timeouts.connectMs + 4 * settings.timeouts.replyMs,
    greetingTimeout: settings.timeouts.replyMs,
    socketTimeout: settings.timeouts.replyMs,
    allowInternalNetworkInterfaces: true,
    logger: false,
    // Verification is decided by us after the handshake, so every level records the same facts.
    tls: { rejectUnauthorized: false, ...(isIP(target.host) ? {} : { servername: target.host }), secureContext: trustContext(settings.extraCa) },
  });
  stuffQueuedBodies(connection);
  const recipientDsn: TransactionDsn = new Map();
  let early: EarlyReplies;
  try {
    sendRecipientDsn(connection, () => recipientDsn);
    requireDataGoAhead(connection);
    early = watchEarlyReplies(connection);
    limitConnectTime(connection, settings.timeouts.connectMs);
    readLastLineCode(connection, (reply) => settings.logger.warn({ host: target.host, ip: target.ip, reply: cleanReply(reply) }, 'next hop reply lines disagree on their code; the last line decides'));
  } catch (err) {
    // A nodemailer whose layout changed: every attempt is deferred, and says why, until it is mended.
    return Promise.resolve({ ok: false, reply: `4.3.0 ${(err as Error).message}`, handshakeFailed: false, tlsFailed: false, reached: false });
  }
  return new Promise((resolve) => {
    let settled = false;
    const fail = (err: SmtpError) => {
      if (settled) return;
      settled = true;
      // nodemailer reports a failed handshake as the TLS socket's own error (ESOCKET), a close during it as
      // ETLS, a stalled one as ETIMEDOUT: what they share is that the upgrade had begun and not finished.
      const handshakeFailed = connection.upgrading === true || (err.code === 'ETLS' && err.command !== 'STARTTLS');
      // STARTTLS refused or not understood (a server that does not offer it) is a TLS failure too.
      const tlsFailed = handshakeFailed || err.command === 'STARTTLS';
      // Whether the host said anything (nodemailer keeps the last reply it read): its greeting at least.
      const reached = Boolean((connection as unknown as { lastServerResponse?: string | false }).lastServerResponse);
      connection.close();
      resolve({ ok: false, reply: describeError(err), handshakeFailed, tlsFailed, reached });
    };
    connection.once('error', fail);
    // nodemailer hands a silent close before the greeting to this callback, not to 'error'.
    connection.connect((err?: Error) => {
      if (err) return fail(err);
      if (settled) return;
      const socket = (connection as unknown as ConnectionInternals)._socket;
      const tls = connection.secure && socket && typeof socket.getProtocol === 'function' ? tlsFacts(socket) : undefined;
      if (!settings.auth) {
        settled = true;
        return resolve({ ok: true, connection, tls, recipientDsn, early });
      }
      if (!tls) return fail(Object.assign(new Error('refusing to send credentials without TLS'), { code: 'ETLS' }));
      connection.login(settings.auth, (err) => {
        if (err) return fail(err);
        settled = true;
        resolve({ ok: true, connection, tls, recipientDsn, early });
      });
    });
  });
}

function finish(connected: Connected, target: SessionTarget, settings: SessionSettings): OpenResult {
  if (!connected.ok) {
    const tlsProblem = connected.tlsFailed && (settings.level === 'encrypt' || settings.level === 'verify');
    // RFC 3463 4.7.x: a security policy we could not meet here; another host or a later try may do better.
    return { ok: false, reply: tlsProblem ? `4.7.5 TLS required but not established: ${connected.reply}` : connected.reply, reached: connected.reached };
  }
  const { connection, tls } = connected;
  if ((settings.level === 'encrypt' || settings.level === 'verify') && !tls) {
    connection.close();
    return { ok: false, reply: `4.7.4 TLS is required, but was not offered by ${target.host}`, reached: true };
  }
  if (settings.level === 'verify' && tls && !tls.verified) {
    connection.close();
    return { ok: false, reply: `4.7.5 certificate verification failed for ${target.host}: ${tls.verifyError ?? 'unknown reason'}`, reached: true, tls };
  }
  return { ok: true, session: wrap(connection, tls, connected.recipientDsn, connected.early, settings.timeouts) };
}

function tlsFacts(socket: TLSSocket): TlsFacts {
  const cipher = socket.getCipher();
  const error = socket.authorizationError;
  return {
    version: socket.getProtocol() ?? 'unknown',
    cipher: cipher.standardName || cipher.name,
    verified: socket.authorized,
    ...(socket.authorized ? {} : { verifyError: error instanceof Error ? error.message : String(error ?? 'not verified') }),
  };
}

function wrap(connection: SMTPConnection, tls: TlsFacts | undefined, recipientDsn: TransactionDsn, early: EarlyReplies, timeouts: SessionTimeouts): OutboundSession {
  const internals = connection as unknown as ConnectionInternals;
  const extensions = [...(internals._supportedExtensions ?? [])];
  const maxSize = internals._maxAllowedSize || undefined;
  let usable = true;
  const lost = () => {
    usable = false;
  };
  connection.on('error', lost);
  connection.on('end', lost);
  return {
    tls,
    extensions,
    maxSize,
    get usable() {
      return usable;
    },
    reset() {
      if (!usable) return Promise.resolve(false);
      // nodemailer drops RSET's callback when the connection fails or times out while RSET waits for its reply
      // (it calls back only a pending send): the connection's own error or end settles it then.
      return new Promise((resolve) => {
        const settle = (ok: boolean) => {
          connection.off('error', gone);
          connection.off('end', gone);
          setReplyTimeout(connection, timeouts.replyMs);
          resolve(ok);
        };
        const gone = () => settle(false);
        connection.once('error', gone);
        connection.once('end', gone);
        setReplyTimeout(connection, timeouts.rsetMs);
        connection.reset((err) => settle(!err && usable));
      });
    },
    send(request) {
      return new Promise((resolve, reject) => {
        recipientDsn.clear();
        for (const r of request.recipients) recipientDsn.set(r.address, r.dsn);
        const envelope: SMTPConnection.Envelope = {
          from: request.mailFrom,
          to: request.recipients.map((r) => r.address),
          use8BitMime: request.bodyType === '8BITMIME',
          requireTLSExtensionEnabled: request.requireTls,
          size: request.size,
          // RET and ENVID on MAIL FROM; NOTIFY and ORCPT per recipient come from recipientDsn.
          ...(request.dsn.ret || request.dsn.envid ? { dsn: { ret: request.dsn.ret, envid: request.dsn.envid } } : {}),
        };
        // Whether the whole stored message went into the connection (the final dot may still have been on its
        // way): a connection lost after that may have left it delivered, so it is not sent elsewhere at once.
        let bodySent = false;
        request.body.once('end', () => {
          bodySent = true;
          setReplyTimeout(connection, timeouts.dataDoneMs);
        });
        // A body the queue cannot read is our failure, not the next hop's (nodemailer reports it as ESTREAM, as if
        // the connection had failed). The connection is dropped: it is inside DATA, where QUIT would be message
        // text, and without the final dot the next hop discards what it got.
        let bodyError: Error | undefined;
        request.body.once('error', (err) => (bodyError = err));
        connection.send(envelope, request.body, (err, info) => {
          setReplyTimeout(connection, timeouts.replyMs);
          if (bodyError) {
            usable = false;
            connection.close();
            return reject(bodyError);
          }
          const byAddress = new Map<string, string>();
          // A failure after DATA carries no RCPT refusals of its own: those recipients keep their RCPT replies
          // (a 452 stays a deferral, a 550 its own bounce), from the envelope nodemailer kept. Not when MAIL FROM
          // failed: the RCPTs pipelined behind it were answered "503 need MAIL", which says nothing of them.
          const envelope = (connection as unknown as ConnectionInternals)._envelope;
          const kept = err?.command === 'MAIL FROM' || envelope?.mailError ? [] : envelope?.rejectedErrors;
          const rejected = err?.rejectedErrors ?? info?.rejectedErrors ?? kept ?? [];
          for (const r of rejected) if (r.recipient) byAddress.set(r.recipient, describeError(r));
          // A failure with no SMTP reply is the connection's, and one out of protocol leaves it in a state unknown:
          // never reuse it. Once the whole message went into it, the next hop may have the message.
          const lost = Boolean(err && !(err as SmtpError).responseCode);
          const stateUnknown = lost || Boolean(err && isProtocolError(err));
          // The end of data answered before the final dot went out (early-reply.ts): never reused, and a 2xx so given
          // is not taken for the message's.
          const answeredEarly = early.answeredEarly();
          if (stateUnknown || answeredEarly) usable = false;
          const lostAfterData = stateUnknown && bodySent;
          const suffix = lost && bodySent ? ' (after the end of data: the message may be sent more than once)' : '';
          const dataReply = err
            ? describeError(err) + suffix
            : answeredEarly
              ? cleanReply(`4.5.0 Protocol error: host said: ${info?.response ?? ''} (before the end of data)`)
              : cleanReply(info?.response ?? '250 ok');
          resolve({ lostAfterData, recipients: request.recipients.map((r) => ({ address: r.address, reply: byAddress.get(r.address) ?? dataReply })) });
        });
      });
    },
    close() {
      // QUIT only where a command may follow; a connection that failed or was dropped is closed as it is.
      if (usable) connection.quit();
      else connection.close();
      usable = false;
    },
  };
}

/** describeError - the remote reply when there is one, else what failed locally. */
function describeError(err: SmtpError): string {
  if (isProtocolError(err)) return cleanReply(`5.5.0 Protocol error: host said: ${err.response}${inReplyTo(err)}`);
  if (err.response && /^\d{3}/.test(err.response)) return cleanReply(`${err.response}${inReplyTo(err)}`);
  const detail = err.code ? `${err.code}: ${err.message}` : err.message;
  return cleanReply(`4.4.1 ${detail}`);
}

/**
 * isProtocolError - a failure whose reply is not one (2xx or 3xx: to DATA, data-go-ahead.ts; or out of turn). Postfix's
 * vsmtp_fill_dsn makes it "Protocol error", status 5.5.0; read as it came, a 250 would count as delivered.
 */
function isProtocolError(err: SmtpError): err is SmtpError & { response: string } {
  return typeof err.response === 'string' && /^[123]\d\d/.test(err.response);
}

/** inReplyTo - " (in reply to RCPT TO command)": which command a refusal answered, in Postfix's words. */
function inReplyTo(err: SmtpError): string {
  const command = err.command === 'DATA' && err.code === 'EMESSAGE' ? 'end of DATA' : err.command;
  return command === 'MAIL FROM' || command === 'RCPT TO' || command === 'DATA' || command === 'end of DATA' ? ` (in reply to ${command} command)` : '';
}
