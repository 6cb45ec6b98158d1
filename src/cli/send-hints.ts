// Hints for `postern send`: what a person most likely got wrong, from how
// the exchange failed. Pure: a table of rules, the first that matches wins.
// Never fails; undefined when no rule fits.

export type TlsMode = 'starttls' | 'tls' | 'plain';

/** What went wrong, as much as the hints need of it. */
export interface SendFailure {
  /** nodemailer's code (ECONNECTION, ETIMEDOUT, ETLS, EAUTH, EENVELOPE, ...) or ours (ECERT). */
  code: string;
  message: string;
  /** The system error under it (ECONNREFUSED, ECONNRESET, ...). */
  originalCode?: string;
  /** The server reply that ended the exchange, when there was one. */
  reply?: string;
  /** Which wait a timeout ended (nodemailer's timeoutType: CONNECT_TIMEOUT, GREETING_TIMEOUT, ...). */
  timeoutType?: string;
  /** Whether the server's 220 greeting arrived. */
  greeted: boolean;
}

interface HintRule {
  when: (mode: TlsMode, failure: SendFailure) => boolean;
  hint: string;
}

// OpenSSL's words for a TLS ClientHello answered with a plaintext "220 ..." greeting.
const PLAINTEXT_AS_TLS = /wrong version number|packet length too long|unknown protocol|record layer failure|http request/i;
const CERTIFICATE_PROBLEM = /certificate|self[- ]signed|unable to verify|ERR_TLS_CERT_ALTNAME_INVALID/i;

const RULES: HintRule[] = [
  {
    when: (mode, f) => mode === 'tls' && !f.greeted && PLAINTEXT_AS_TLS.test(f.message),
    hint: 'this port speaks plaintext first: use --starttls',
  },
  {
    // A TLS-from-the-first-byte listener waits for our ClientHello while we wait for its greeting:
    // the greeting times out, or the listener gives up first and closes the connection.
    when: (mode, f) => mode !== 'tls' && !f.greeted && (f.timeoutType === 'GREETING_TIMEOUT' || f.code === 'ECONNECTION' || f.originalCode === 'ECONNRESET'),
    hint: 'this port expects TLS from the first byte: use --tls',
  },
  {
    when: (_mode, f) => f.originalCode === 'ECONNREFUSED',
    hint: 'nothing listens there: is Postern running (postern serve), and is it the right port (relay 2525, submission 2587, submissions 2465)?',
  },
  {
    when: (_mode, f) => f.code === 'ECERT' || (f.code === 'ETLS' && CERTIFICATE_PROBLEM.test(f.message)),
    hint: 'pass --ca FILE (the dev CA is certs/ca.crt) or --insecure',
  },
  {
    when: (mode, f) => mode === 'starttls' && f.code === 'ETLS' && /STARTTLS/i.test(f.message) && f.greeted,
    hint: 'the server does not offer STARTTLS here: use --tls for a port with TLS from the first byte, or --plain',
  },
  {
    when: (_mode, f) => /^530[ -]/.test(f.reply ?? '') && /STARTTLS/i.test(f.reply ?? ''),
    hint: 'use --starttls',
  },
  {
    when: (_mode, f) => /^530[ -]/.test(f.reply ?? ''),
    hint: 'this port wants a login: --auth USER --password-stdin',
  },
  {
    when: (_mode, f) => f.code === 'EAUTH' && /^535[ -]/.test(f.reply ?? ''),
    hint: 'check the user name and password (postern users add NAME sets one)',
  },
  {
    when: (_mode, f) => /^554[ -]5\.7\.1/.test(f.reply ?? ''),
    hint: 'relaying needs a login (--auth on the submission port) or a client in relay.trustedNetworks',
  },
];

/** hintFor - the advice for a failure, or undefined. */
export function hintFor(mode: TlsMode, failure: SendFailure): string | undefined {
  return RULES.find((rule) => rule.when(mode, failure))?.hint;
}
