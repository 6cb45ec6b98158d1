// What both queue backends read back: rows of messages, recipients,
// deliveries and attempts turned into what `queue list`, `queue show`,
// /metrics and a claiming worker get (QueuedMessageSummary, MessageDetails,
// QueueStats, ClaimedDelivery). The inverse of stored-columns.ts.
//
// The row shapes are neutral: a column holds what either driver hands back
// for it, so each backend's query result is such a row as it is. A time is
// a Date (PostgreSQL timestamptz) or milliseconds since the epoch (SQLite
// INTEGER); a flag is a boolean or 0/1; a bigint or row id is a string
// (node-postgres) or a number (SQLite).
//
// Decides what an absent fact looks like to a reader: a NULL column leaves
// its property out (no `reply: null`), a finished delivery has no next
// attempt, an envelope has `dsn` only when the sender gave a DSN parameter,
// and an attempt has `tls` only when TLS was started (tls_verified not NULL).
//
// How it fails: it does not; rows are trusted to be what the schema allows.
//
//   SHOWN_STATE_SQL    - the state a reader sees, as SQL both dialects run (m = messages).
//   summaryOf          - one `queue list` entry from a message row (a done one with its outcome).
//   detailsOf          - `queue show` from a message's rows.
//   statsOf            - QueueStats from the per-state counts.
//   claimedDeliveryOf  - what a worker gets for one leased delivery.
//   decodeRecipientDsn - a recipient's DSN parameters back from its two columns.
import type {
  AttemptRecord,
  ClaimedDelivery,
  MessageDetails,
  MessageOutcome,
  MessageState,
  QueuedMessageSummary,
  QueueStats,
  RecipientDsn,
  RecipientState,
  StoredEnvelope,
  TlsLevel,
} from './queue-store.ts';

/** SHOWN_STATE_SQL - a queued message with a deferred recipient shows as 'deferred'; otherwise its stored state. */
export const SHOWN_STATE_SQL = `CASE WHEN m.state = 'queued' AND EXISTS (
    SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = 'deferred') THEN 'deferred' ELSE m.state END`;

/** A time column: timestamptz (Date) in PostgreSQL, milliseconds since the epoch in SQLite. */
export type StoredTime = Date | number;
/** A flag column: boolean in PostgreSQL, 0 or 1 in SQLite. */
export type StoredFlag = boolean | number;
/** A bigint or row id: a string from node-postgres, a number from SQLite. */
export type StoredInteger = string | number;

export interface MessageRow {
  id: string;
  mail_from: string;
  size: StoredInteger;
  received_at: StoredTime;
  /** The shown state: 'deferred' is derived by the query. */
  state: MessageState;
}

export interface MessageDetailRow extends MessageRow {
  body_type: '7BIT' | '8BITMIME';
  smtp_utf8: StoredFlag;
  client_address: string;
  client_helo: string;
  client_listener: 'relay' | 'submission' | 'submissions';
  auth_user: string | null;
  tls_version: string | null;
  tls_cipher: string | null;
  require_tls: StoredFlag;
  dsn_ret: 'FULL' | 'HDRS' | null;
  dsn_envid: string | null;
}

/** A recipient's DSN columns, as commit wrote them. */
export interface RecipientDsnRow {
  address: string;
  dsn_notify: string | null;
  dsn_orcpt: string | null;
}

export interface RecipientRow extends RecipientDsnRow {
  state: RecipientState;
  reply: string | null;
  updated_at: StoredTime | null;
}

export interface DeliveryRow {
  id: StoredInteger;
  domain: string;
  attempts: number;
  next_attempt_at: StoredTime;
  lease_until: StoredTime | null;
  lease_owner: string | null;
  finished: StoredFlag;
}

/** An attempts row, with its delivery's domain. */
export interface AttemptRow {
  delivery_id: StoredInteger;
  domain: string;
  started_at: StoredTime;
  ended_at: StoredTime;
  host: string | null;
  ip: string | null;
  port: number | null;
  tls_version: string | null;
  tls_cipher: string | null;
  tls_verified: StoredFlag | null;
  tls_verify_error: string | null;
  policy_level: TlsLevel;
  policy_source: string;
  reply: string;
  outcome: AttemptRecord['outcome'];
}

/** One shown state's count of messages not done, and its oldest arrival. */
export interface DepthRow {
  state: Exclude<MessageState, 'done'>;
  n: number;
  oldest: StoredTime;
}

/** A leased delivery with its message's columns and its pending recipients in RCPT order. */
export interface ClaimRow {
  id: StoredInteger;
  message_id: string;
  domain: string;
  attempts: number;
  mail_from: string;
  received_at: StoredTime;
  body_type: '7BIT' | '8BITMIME';
  smtp_utf8: StoredFlag;
  require_tls: StoredFlag;
  dsn_ret: 'FULL' | 'HDRS' | null;
  dsn_envid: string | null;
  size: StoredInteger;
  recipients: RecipientDsnRow[];
}

/** A recipient as `queue list` reads it. */
export interface ListedRecipientRow {
  address: string;
  state: RecipientState;
  reply: string | null;
}

/** Of a message's deliveries not finished: the earliest next attempt and the latest lease end (NULL: none). */
export interface DeliveryTimesRow {
  next_attempt_at: StoredTime | null;
  lease_until: StoredTime | null;
}

/**
 * summaryOf - one `queue list` entry from a message row, its recipients in RCPT order and its unfinished
 * deliveries' times; a done message gets its outcome from its recipients.
 */
export function summaryOf(row: MessageRow, recipients: readonly ListedRecipientRow[], times: DeliveryTimesRow): QueuedMessageSummary {
  return {
    id: row.id,
    mailFrom: row.mail_from,
    recipients: recipients.map((r) => r.address),
    size: Number(row.size),
    receivedAt: toDate(row.received_at),
    state: row.state,
    ...(row.state === 'done' && { outcome: outcomeOf(recipients.map((r) => r.state)) }),
    recipientStates: recipients.map((r) => ({ address: r.address, state: r.state, ...(r.reply !== null && { reply: r.reply }) })),
    ...((row.state === 'queued' || row.state === 'deferred') && times.next_attempt_at !== null && { nextAttemptAt: toDate(times.next_attempt_at) }),
    ...(row.state !== 'done' && times.lease_until !== null && { leasedUntil: toDate(times.lease_until) }),
  };
}

/** outcomeOf - a done message's outcome: 'delivered' when no recipient bounced, 'bounced' when none was delivered, else 'partly bounced'. */
function outcomeOf(recipientStates: readonly RecipientState[]): MessageOutcome {
  const bounced = recipientStates.filter((s) => s === 'bounced').length;
  if (bounced === 0) return 'delivered';
  return bounced === recipientStates.length ? 'bounced' : 'partly bounced';
}

/** detailsOf - everything `queue show` prints, from one message's rows (each list in its display order). */
export function detailsOf(rows: { message: MessageDetailRow; recipients: RecipientRow[]; deliveries: DeliveryRow[]; attempts: AttemptRow[] }): MessageDetails {
  const { message, recipients } = rows;
  return {
    ...summaryOf(message, recipients, deliveryTimes(rows.deliveries.filter((d) => !toFlag(d.finished)))),
    envelope: envelopeOf(message, recipients),
    recipientStates: recipients.map((r) => ({
      address: r.address,
      state: r.state,
      ...(r.reply !== null && { reply: r.reply }),
      ...(r.updated_at !== null && { updatedAt: toDate(r.updated_at) }),
    })),
    deliveries: rows.deliveries.map((d) => ({
      id: String(d.id),
      domain: d.domain,
      attempts: d.attempts,
      // A finished delivery has no next attempt.
      ...(!toFlag(d.finished) && { nextAttemptAt: toDate(d.next_attempt_at) }),
      ...(d.lease_until !== null && { leasedUntil: toDate(d.lease_until) }),
      ...(d.lease_owner !== null && { leasedBy: d.lease_owner }),
    })),
    attempts: rows.attempts.map(attemptOf),
  };
}

/** deliveryTimes - DeliveryTimesRow from the unfinished deliveries' rows, as the listing's query computes it. */
function deliveryTimes(unfinished: DeliveryRow[]): DeliveryTimesRow {
  const next = unfinished.map((d) => toDate(d.next_attempt_at).getTime());
  const leases = unfinished.flatMap((d) => (d.lease_until === null ? [] : [toDate(d.lease_until).getTime()]));
  return { next_attempt_at: next.length === 0 ? null : Math.min(...next), lease_until: leases.length === 0 ? null : Math.max(...leases) };
}

/** statsOf - QueueStats from one row per shown state (every state counted, 0 when it has no row). */
export function statsOf(rows: DepthRow[]): QueueStats {
  const byState: QueueStats['byState'] = { queued: 0, deferred: 0, held: 0 };
  let oldest: number | undefined;
  for (const row of rows) {
    byState[row.state] = row.n;
    const at = toDate(row.oldest).getTime();
    oldest = oldest === undefined ? at : Math.min(oldest, at);
  }
  return oldest === undefined ? { byState } : { byState, oldestReceivedAt: new Date(oldest) };
}

/** claimedDeliveryOf - what the worker leasing as `owner` gets for one claimed delivery. */
export function claimedDeliveryOf(row: ClaimRow, owner: string): ClaimedDelivery {
  const dsn: ClaimedDelivery['dsn'] = {};
  if (row.dsn_ret !== null) dsn.ret = row.dsn_ret;
  if (row.dsn_envid !== null) dsn.envid = row.dsn_envid;
  return {
    deliveryId: String(row.id),
    messageId: row.message_id,
    domain: row.domain,
    mailFrom: row.mail_from,
    recipients: row.recipients.map((r) => {
      const parameters = decodeRecipientDsn(r.dsn_notify, r.dsn_orcpt);
      return parameters ? { address: r.address, dsn: parameters } : { address: r.address };
    }),
    attempts: row.attempts,
    receivedAt: toDate(row.received_at),
    bodyType: row.body_type,
    smtpUtf8: toFlag(row.smtp_utf8),
    requireTls: toFlag(row.require_tls),
    dsn,
    size: Number(row.size),
    leaseOwner: owner,
  };
}

/** decodeRecipientDsn - a recipient's DSN parameters from dsn_notify (comma list) and dsn_orcpt; undefined if neither. */
export function decodeRecipientDsn(notify: string | null, orcpt: string | null): RecipientDsn | undefined {
  if (notify === null && orcpt === null) return undefined;
  const dsn: RecipientDsn = {};
  // '' is an empty list (stored as given), not one empty keyword.
  if (notify !== null) dsn.notify = (notify === '' ? [] : notify.split(',')) as NonNullable<RecipientDsn['notify']>;
  if (orcpt !== null) dsn.orcpt = orcpt;
  return dsn;
}

/** envelopeOf - the StoredEnvelope as committed, from the message and recipient rows. */
function envelopeOf(m: MessageDetailRow, recipients: RecipientRow[]): StoredEnvelope {
  const envelope: StoredEnvelope = {
    mailFrom: m.mail_from,
    recipients: recipients.map((r) => r.address),
    bodyType: m.body_type,
    smtpUtf8: toFlag(m.smtp_utf8),
    client: {
      address: m.client_address,
      helo: m.client_helo,
      listener: m.client_listener,
      ...(m.auth_user !== null && { authUser: m.auth_user }),
      ...(m.tls_version !== null && { tlsVersion: m.tls_version }),
      ...(m.tls_cipher !== null && { tlsCipher: m.tls_cipher }),
    },
    requireTls: toFlag(m.require_tls),
  };
  // dsn only when the sender gave a DSN parameter: an empty object says nothing.
  const dsn: NonNullable<StoredEnvelope['dsn']> = {};
  if (m.dsn_ret !== null) dsn.ret = m.dsn_ret;
  if (m.dsn_envid !== null) dsn.envid = m.dsn_envid;
  // fromEntries defines own properties: an address "__proto__" stays a key.
  const given = recipients.flatMap((r) => {
    const parameters = decodeRecipientDsn(r.dsn_notify, r.dsn_orcpt);
    return parameters ? [[r.address, parameters] as const] : [];
  });
  if (given.length > 0) dsn.recipients = Object.fromEntries(given);
  if (Object.keys(dsn).length > 0) envelope.dsn = dsn;
  return envelope;
}

/** attemptOf - one attempts row (with its delivery's domain) as `queue show` gets it. */
function attemptOf(a: AttemptRow): AttemptRecord & { deliveryId: string; domain: string } {
  return {
    deliveryId: String(a.delivery_id),
    domain: a.domain,
    startedAt: toDate(a.started_at),
    endedAt: toDate(a.ended_at),
    ...(a.host !== null && { host: a.host }),
    ...(a.ip !== null && { ip: a.ip }),
    ...(a.port !== null && { port: a.port }),
    ...(a.tls_verified !== null && {
      tls: {
        version: a.tls_version ?? '',
        cipher: a.tls_cipher ?? '',
        verified: toFlag(a.tls_verified),
        ...(a.tls_verify_error !== null && { verifyError: a.tls_verify_error }),
      },
    }),
    policy: { level: a.policy_level, source: a.policy_source },
    reply: a.reply,
    outcome: a.outcome,
  };
}

/** toDate - a time column as a Date. */
function toDate(value: StoredTime): Date {
  return value instanceof Date ? value : new Date(value);
}

/** toFlag - a flag column as a boolean (SQLite's 1, PostgreSQL's true). */
function toFlag(value: StoredFlag): boolean {
  return value === true || value === 1;
}
