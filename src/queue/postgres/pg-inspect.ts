// What the PostgreSQL store tells `postern queue list`, `queue show` and
// /metrics: the messages still queued (on every node), everything known
// about one message, done ones included, and the queue depth by state.
//
// Decides the state a reader sees, as the SQLite store does: the stored one
// (queued, held, done), except that a queued message with a recipient
// deferred shows as 'deferred'. Each answer is one snapshot: a single
// statement, or (showMessage) one REPEATABLE READ, READ ONLY transaction.
// Listing order: received_at, then the commit order (messages.seq).
//
// How it fails: every function rejects on a database error; showMessage
// resolves undefined for an id no message has.
//
//   listMessages - the messages not done, oldest first.
//   showMessage  - one message with its recipients, deliveries and attempts.
//   queueStats   - how many messages not done are in each shown state, and the oldest.
import type pg from 'pg';
import type { AttemptRecord, MessageDetails, MessageState, QueuedMessageSummary, QueueStats, RecipientState, StoredEnvelope, TlsLevel } from '../queue-store.ts';
import { decodeRecipientDsn } from '../sqlite/sqlite-commit.ts';
import { inTransaction } from './pg-connection.ts';

// 'deferred' is derived, never stored (pg-schema.ts).
const SHOWN_STATE = `CASE WHEN m.state = 'queued' AND EXISTS (
    SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = 'deferred') THEN 'deferred' ELSE m.state END`;

interface MessageRow {
  id: string;
  mail_from: string;
  /** bigint: node-postgres gives it as a string. */
  size: string;
  received_at: Date;
  state: MessageState;
}

interface MessageDetailRow extends MessageRow {
  body_type: '7BIT' | '8BITMIME';
  smtp_utf8: boolean;
  client_address: string;
  client_helo: string;
  client_listener: 'relay' | 'submission' | 'submissions';
  auth_user: string | null;
  tls_version: string | null;
  tls_cipher: string | null;
  require_tls: boolean;
  dsn_ret: 'FULL' | 'HDRS' | null;
  dsn_envid: string | null;
}

interface RecipientRow {
  address: string;
  state: RecipientState;
  reply: string | null;
  updated_at: Date | null;
  dsn_notify: string | null;
  dsn_orcpt: string | null;
}

interface DeliveryRow {
  id: string;
  domain: string;
  attempts: number;
  next_attempt_at: Date;
  lease_until: Date | null;
  finished: boolean;
}

interface AttemptRow {
  delivery_id: string;
  domain: string;
  started_at: Date;
  ended_at: Date;
  host: string | null;
  ip: string | null;
  port: number | null;
  tls_version: string | null;
  tls_cipher: string | null;
  tls_verified: boolean | null;
  tls_verify_error: string | null;
  policy_level: TlsLevel;
  policy_source: string;
  reply: string;
  outcome: AttemptRecord['outcome'];
}

/** listMessages - the messages not done, oldest first, each with its recipients in RCPT order (one statement). */
export async function listMessages(pool: pg.Pool): Promise<QueuedMessageSummary[]> {
  const result = await pool.query<MessageRow & { recipients: string[] }>(`
    SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE} AS state,
           ARRAY(SELECT r.address FROM recipients r WHERE r.message_id = m.id ORDER BY r.position) AS recipients
      FROM messages m WHERE m.state <> 'done' ORDER BY m.received_at, m.seq`);
  return result.rows.map((row) => summaryOf(row, row.recipients));
}

/** showMessage - everything known about one message, read in one snapshot; undefined if unknown. */
export function showMessage(pool: pg.Pool, id: string): Promise<MessageDetails | undefined> {
  return inTransaction(
    pool,
    async (client) => {
      const message = (
        await client.query<MessageDetailRow>(
          `SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE} AS state, m.body_type, m.smtp_utf8,
                  m.client_address, m.client_helo, m.client_listener, m.auth_user, m.tls_version, m.tls_cipher,
                  m.require_tls, m.dsn_ret, m.dsn_envid
             FROM messages m WHERE m.id = $1`,
          [id],
        )
      ).rows[0];
      if (!message) return undefined;
      const recipients = (
        await client.query<RecipientRow>('SELECT address, state, reply, updated_at, dsn_notify, dsn_orcpt FROM recipients WHERE message_id = $1 ORDER BY position', [id])
      ).rows;
      const deliveries = (
        await client.query<DeliveryRow>('SELECT id, domain, attempts, next_attempt_at, lease_until, finished FROM deliveries WHERE message_id = $1 ORDER BY id', [id])
      ).rows;
      const attempts = (
        await client.query<AttemptRow>(
          `SELECT a.*, d.domain FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
            WHERE a.message_id = $1 ORDER BY a.started_at, a.id`,
          [id],
        )
      ).rows;
      return {
        ...summaryOf(message, recipients.map((r) => r.address)),
        envelope: envelopeOf(message, recipients),
        recipientStates: recipients.map((r) => ({
          address: r.address,
          state: r.state,
          ...(r.reply !== null && { reply: r.reply }),
          ...(r.updated_at !== null && { updatedAt: r.updated_at }),
        })),
        deliveries: deliveries.map((d) => ({
          id: d.id,
          domain: d.domain,
          attempts: d.attempts,
          // A finished delivery has no next attempt.
          ...(!d.finished && { nextAttemptAt: d.next_attempt_at }),
          ...(d.lease_until !== null && { leasedUntil: d.lease_until }),
        })),
        attempts: attempts.map(attemptOf),
      };
    },
    'ISOLATION LEVEL REPEATABLE READ READ ONLY',
  );
}

/** queueStats - how many messages not done are in each shown state, and the oldest one's arrival (one statement). */
export async function queueStats(pool: pg.Pool): Promise<QueueStats> {
  const result = await pool.query<{ state: Exclude<MessageState, 'done'>; n: number; oldest: Date }>(`
    SELECT ${SHOWN_STATE} AS state, count(*)::integer AS n, min(m.received_at) AS oldest
      FROM messages m WHERE m.state <> 'done' GROUP BY 1`);
  const byState: QueueStats['byState'] = { queued: 0, deferred: 0, held: 0 };
  let oldest: Date | undefined;
  for (const row of result.rows) {
    byState[row.state] = row.n;
    if (oldest === undefined || row.oldest < oldest) oldest = row.oldest;
  }
  return oldest === undefined ? { byState } : { byState, oldestReceivedAt: oldest };
}

/** summaryOf - one `queue list` line from a message row. */
function summaryOf(row: MessageRow, recipients: string[]): QueuedMessageSummary {
  return { id: row.id, mailFrom: row.mail_from, recipients, size: Number(row.size), receivedAt: row.received_at, state: row.state };
}

/** envelopeOf - the StoredEnvelope as committed, from the message and recipient rows. */
function envelopeOf(m: MessageDetailRow, recipients: RecipientRow[]): StoredEnvelope {
  const envelope: StoredEnvelope = {
    mailFrom: m.mail_from,
    recipients: recipients.map((r) => r.address),
    bodyType: m.body_type,
    smtpUtf8: m.smtp_utf8,
    client: {
      address: m.client_address,
      helo: m.client_helo,
      listener: m.client_listener,
      ...(m.auth_user !== null && { authUser: m.auth_user }),
      ...(m.tls_version !== null && { tlsVersion: m.tls_version }),
      ...(m.tls_cipher !== null && { tlsCipher: m.tls_cipher }),
    },
    requireTls: m.require_tls,
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
    deliveryId: a.delivery_id,
    domain: a.domain,
    startedAt: a.started_at,
    endedAt: a.ended_at,
    ...(a.host !== null && { host: a.host }),
    ...(a.ip !== null && { ip: a.ip }),
    ...(a.port !== null && { port: a.port }),
    ...(a.tls_verified !== null && {
      tls: {
        version: a.tls_version ?? '',
        cipher: a.tls_cipher ?? '',
        verified: a.tls_verified,
        ...(a.tls_verify_error !== null && { verifyError: a.tls_verify_error }),
      },
    }),
    policy: { level: a.policy_level, source: a.policy_source },
    reply: a.reply,
    outcome: a.outcome,
  };
}
