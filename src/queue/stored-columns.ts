// What both queue backends write: an envelope, its recipients and one
// delivery attempt as column values, in backend-neutral types (Date for a
// time, boolean for a flag, null for an absent fact). Each backend binds
// them in its own way: PostgreSQL takes them as they are, SQLite through
// sqlite-values.ts (milliseconds, 0/1). stored-rows.ts reads them back.
//
// Decides how a recipient is stored: the lowercased domain of its address
// (which delivery it joins; a bare <postmaster> has domain ''), and its DSN
// parameters (RFC 3461 §4) as two columns, NOTIFY as a comma list ('' is an
// empty list, kept as given) and ORCPT as given.
//
// How it fails: it does not; every function is total over a StoredEnvelope
// or an AttemptRecord.
//
//   messageColumns   - the message row's envelope columns.
//   recipientColumns - one row per RCPT, in order: address, domain, DSN columns.
//   attemptColumns   - one AttemptRecord as the attempts row's columns.
import type { AttemptRecord, RecipientDsn, StoredEnvelope } from './queue-store.ts';
import { domainOf } from '../smtp/address.ts';

/** The envelope columns of a messages row (the backend adds id, size, received_at and its own). */
export interface MessageColumns {
  mailFrom: string;
  bodyType: StoredEnvelope['bodyType'];
  smtpUtf8: boolean;
  clientAddress: string;
  clientHelo: string;
  clientListener: StoredEnvelope['client']['listener'];
  authUser: string | null;
  tlsVersion: string | null;
  tlsCipher: string | null;
  requireTls: boolean;
  dsnRet: 'FULL' | 'HDRS' | null;
  dsnEnvid: string | null;
}

/** One recipients row, as RCPT gave it (the position is its index). */
export interface RecipientColumns {
  address: string;
  domain: string;
  dsnNotify: string | null;
  dsnOrcpt: string | null;
}

/** An attempts row, but for its delivery and message ids. */
export interface AttemptColumns {
  startedAt: Date;
  endedAt: Date;
  host: string | null;
  ip: string | null;
  port: number | null;
  tlsVersion: string | null;
  tlsCipher: string | null;
  tlsVerified: boolean | null;
  tlsVerifyError: string | null;
  policyLevel: AttemptRecord['policy']['level'];
  policySource: string;
  reply: string;
  outcome: AttemptRecord['outcome'];
}

/** messageColumns - the envelope's facts as the message row's columns. */
export function messageColumns(envelope: StoredEnvelope): MessageColumns {
  return {
    mailFrom: envelope.mailFrom,
    bodyType: envelope.bodyType,
    smtpUtf8: envelope.smtpUtf8,
    clientAddress: envelope.client.address,
    clientHelo: envelope.client.helo,
    clientListener: envelope.client.listener,
    authUser: envelope.client.authUser ?? null,
    tlsVersion: envelope.client.tlsVersion ?? null,
    tlsCipher: envelope.client.tlsCipher ?? null,
    requireTls: envelope.requireTls === true,
    dsnRet: envelope.dsn?.ret ?? null,
    dsnEnvid: envelope.dsn?.envid ?? null,
  };
}

/** recipientColumns - one row per recipient, in RCPT order, with its domain and DSN columns. */
export function recipientColumns(envelope: StoredEnvelope): RecipientColumns[] {
  return envelope.recipients.map((address) => {
    const dsn = recipientDsn(envelope, address);
    return {
      address,
      domain: domainOf(address),
      // Read back by decodeRecipientDsn (stored-rows.ts).
      dsnNotify: dsn?.notify ? dsn.notify.join(',') : null,
      dsnOrcpt: dsn?.orcpt ?? null,
    };
  });
}

/** attemptColumns - one AttemptRecord as the attempts row's columns. */
export function attemptColumns(attempt: AttemptRecord): AttemptColumns {
  return {
    startedAt: attempt.startedAt,
    endedAt: attempt.endedAt,
    host: attempt.host ?? null,
    ip: attempt.ip ?? null,
    port: attempt.port ?? null,
    tlsVersion: attempt.tls?.version ?? null,
    tlsCipher: attempt.tls?.cipher ?? null,
    // NULL, not false: "plaintext" and "TLS, not verified" are different facts.
    tlsVerified: attempt.tls ? attempt.tls.verified : null,
    tlsVerifyError: attempt.tls?.verifyError ?? null,
    policyLevel: attempt.policy.level,
    policySource: attempt.policy.source,
    reply: attempt.reply,
    outcome: attempt.outcome,
  };
}

/** recipientDsn - the DSN parameters the envelope gives this address, if any. */
function recipientDsn(envelope: StoredEnvelope, address: string): RecipientDsn | undefined {
  const byAddress = envelope.dsn?.recipients;
  // hasOwn: an address is client input, and "__proto__" must not find Object.prototype.
  return byAddress && Object.hasOwn(byAddress, address) ? byAddress[address] : undefined;
}
