// One SMTP exchange for `postern send`, on nodemailer's SMTPConnection:
// connect in the chosen mode (STARTTLS required, TLS from the first byte,
// or plaintext), check the certificate, AUTH if asked, send one message,
// QUIT. Every command and reply goes to the transcript.
//
// The certificate is checked by us after the handshake and before AUTH or
// MAIL FROM (rejectUnauthorized stays false in the TLS layer), so a failed
// check still reports the TLS version, cipher and why it did not verify,
// and nothing but EHLO ever reaches an unverified server.
//
// Fails: sendMessage never throws. Its outcome is accepted, rejected (the
// server answered 4xx/5xx to AUTH, MAIL, RCPT or DATA: exit 1) or failed
// (no connection, TLS, certificate, timeout, a reply before we were in:
// exit 2), with the hint for a person when one fits.
import { rootCertificates, type TLSSocket } from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { hintFor, type SendFailure, type TlsMode } from './send-hints.ts';
import { secretsOf, Transcript } from './send-transcript.ts';

export interface SendTarget {
  host: string;
  port: number;
  mode: TlsMode;
  /** Extra trusted CA certificates (PEM), on top of the system's. */
  ca: string[];
  /** Where `ca` came from, for the transcript. */
  caSource?: string;
  insecure: boolean;
  timeoutMs: number;
}

export interface SendRequest {
  target: SendTarget;
  auth?: { user: string; pass: string };
  from: string;
  to: string[];
  message: Buffer;
  /** Each transcript line as it happens (the live view for people). */
  echo?: (line: string) => void;
}

export interface TlsFacts {
  version: string;
  cipher: string;
  verified: boolean;
  verifyError?: string;
}

export interface SendOutcome {
  status: 'accepted' | 'rejected' | 'failed';
  queueId?: string;
  /** The server's final reply to the message. */
  reply?: string;
  /** Recipients refused at RCPT while others were accepted. */
  rejectedRecipients: { address: string; reply: string }[];
  tls?: TlsFacts;
  transcript: string[];
  error?: { code: string; message: string; reply?: string };
  hint?: string;
}

type SmtpError = SMTPConnection.SMTPError & { timeoutType?: string };
type Phase = 'connect' | 'auth' | 'send';

/** sendMessage - the whole exchange; never throws. */
export function sendMessage(request: SendRequest): Promise<SendOutcome> {
  const { target } = request;
  const transcript = new Transcript(request.auth ? secretsOf(request.auth.user, request.auth.pass) : [], request.echo);
  let tls: TlsFacts | undefined;
  let phase: Phase = 'connect';
  const connection = createConnection(target, transcript, (facts) => (tls = facts));

  return new Promise((resolve) => {
    let settled = false;
    const outcome = (fields: Partial<SendOutcome> & Pick<SendOutcome, 'status'>): SendOutcome => ({ rejectedRecipients: [], tls, transcript: transcript.lines, ...fields });
    // settle - the result, after QUIT when the server is still talking to us (it refused something), else closing.
    const settle = (result: SendOutcome, quit: boolean) => {
      if (settled) return;
      settled = true;
      if (quit && !connection.destroyed) {
        connection.once('end', () => resolve(result));
        return connection.quit();
      }
      connection.close();
      resolve(result);
    };
    const fail = (err: SmtpError) => {
      if (settled) return;
      const failure = failureOf(err, transcript.heardServer);
      const rejected = phase !== 'connect' && (err.responseCode ?? 0) >= 400;
      const error = { code: failure.code, message: failure.message, ...(failure.reply ? { reply: failure.reply } : {}) };
      settle(outcome({ status: rejected ? 'rejected' : 'failed', error, hint: hintFor(target.mode, failure) }), rejected);
    };
    connection.on('error', fail);
    connection.on('end', () => fail(Object.assign(new Error('Connection closed'), { code: 'ECONNECTION' })));

    connection.connect((err) => {
      if (err) return fail(err);
      tls = tls ?? tlsFactsOf(connection);
      if (tls && !tls.verified && !target.insecure) {
        return fail(Object.assign(new Error(`certificate not verified: ${tls.verifyError ?? 'unknown reason'}`), { code: 'ECERT' }));
      }
      const send = () => {
        phase = 'send';
        connection.send({ from: request.from, to: request.to }, request.message, (sendErr, info) => {
          if (sendErr || !info) return fail(sendErr ?? Object.assign(new Error('no reply to the message'), { code: 'EMESSAGE' }));
          const rejectedRecipients = (info.rejectedErrors ?? []).map((e) => ({ address: e.recipient ?? '', reply: e.response ?? e.message }));
          const status = rejectedRecipients.length ? 'rejected' : 'accepted';
          settle(outcome({ status, queueId: queueIdOf(info.response), reply: info.response, rejectedRecipients }), true);
        });
      };
      if (!request.auth) return send();
      phase = 'auth';
      connection.login({ user: request.auth.user, pass: request.auth.pass }, (authErr) => (authErr ? fail(authErr) : send()));
    });
  });
}

/** createConnection - SMTPConnection in the target's mode, its transaction log and TLS facts going to the transcript. */
function createConnection(target: SendTarget, transcript: Transcript, onTls: (tls: TlsFacts) => void): SMTPConnection {
  const connection: SMTPConnection = new SMTPConnection({
    host: target.host,
    port: target.port,
    secure: target.mode === 'tls',
    requireTLS: target.mode === 'starttls',
    ignoreTLS: target.mode === 'plain',
    connectionTimeout: target.timeoutMs,
    greetingTimeout: target.timeoutMs,
    // Longer than the greeting timer, so a silent implicit-TLS port is reported as
    // "Greeting never received" (which the hints recognise), not a bare idle "Timeout".
    socketTimeout: target.timeoutMs * 2,
    allowInternalNetworkInterfaces: true,
    transactionLog: true,
    logger: transcript.logger((message) => {
      if (/established to|upgraded with STARTTLS/.test(message)) transcript.note(message);
      const tls = /^Secure connection established|upgraded with STARTTLS/.test(message) ? tlsFactsOf(connection) : undefined;
      if (!tls) return;
      transcript.note(`TLS: ${describeTls(tls, target.caSource)}`);
      onTls(tls);
    }),
    // Checked by sendMessage after the handshake (see the header), so the facts are known either way.
    tls: { rejectUnauthorized: false, ca: [...rootCertificates, ...target.ca] },
  });
  return connection;
}

/** queueIdOf - the id in "250 2.0.0 Ok: queued as ID" (Postfix and Postern say it this way). */
export function queueIdOf(reply: string | undefined): string | undefined {
  return /\bqueued as ([A-Za-z0-9._-]+)/i.exec(reply ?? '')?.[1];
}

// OpenSSL's verify codes (Node's authorizationError) that people meet most, in words.
const VERIFY_ERRORS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'signed by a CA we do not trust',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'signed by a CA we do not trust',
  SELF_SIGNED_CERT_IN_CHAIN: 'the chain ends in a CA we do not trust',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'a self-signed certificate',
  CERT_HAS_EXPIRED: 'the certificate has expired',
  CERT_NOT_YET_VALID: 'the certificate is not valid yet',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the certificate does not name this host',
};

/** describeTls - version, cipher, whether the certificate verified (and trusting what, when known). */
export function describeTls(tls: TlsFacts, caSource?: string): string {
  const why = tls.verifyError ?? 'unknown reason';
  const trust = tls.verified ? `certificate verified${caSource ? ` (trusting ${caSource})` : ''}` : `certificate NOT verified: ${why}${VERIFY_ERRORS[why] ? ` (${VERIFY_ERRORS[why]})` : ''}`;
  return `${tls.version}, ${tls.cipher}, ${trust}`;
}

function tlsFactsOf(connection: SMTPConnection): TlsFacts | undefined {
  const socket = connection._socket as TLSSocket | false | null;
  if (!connection.secure || !socket || typeof socket.getProtocol !== 'function') return undefined;
  const cipher = socket.getCipher();
  const error = socket.authorizationError as Error | string | null | undefined;
  return {
    version: socket.getProtocol() ?? 'unknown',
    cipher: cipher.standardName || cipher.name,
    verified: socket.authorized,
    ...(socket.authorized ? {} : { verifyError: error instanceof Error ? error.message : String(error ?? 'not verified') }),
  };
}

function failureOf(err: SmtpError, greeted: boolean): SendFailure {
  const reply = err.response && /^\d{3}/.test(err.response) ? err.response.replace(/\r?\n/g, ' ') : undefined;
  // OpenSSL's "80AC...:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:file:line:" says it in its reason field.
  const message = err.message.replace(/[0-9A-F]+:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):[^\s]*:\d+:\s*/g, '$1').trim();
  return { code: err.code ?? 'ERROR', message, originalCode: err.originalCode, reply, timeoutType: err.timeoutType, greeted };
}
