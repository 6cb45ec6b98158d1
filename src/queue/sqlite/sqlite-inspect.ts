// What the SQLite store tells `postern queue list`, `queue show` and
// /metrics: the messages still queued, everything known about one message,
// done ones included, and the queue depth by state.
//
// Decides the state a reader sees: the stored one (queued, held, done),
// except that a queued message with a recipient deferred shows as
// 'deferred'. Each answer is read in one transaction, so it is one snapshot.
//
// How it fails: both functions throw on a database error; showMessage
// returns undefined for an id no message has.
//
//   prepareInspect - the listMessages / showMessage / stats functions over one database.
import type Database from 'better-sqlite3';
import type { AttemptRecord, MessageDetails, MessageState, QueuedMessageSummary, QueueStats, RecipientState, StoredEnvelope, TlsLevel } from '../queue-store.ts';
import { decodeRecipientDsn } from './sqlite-commit.ts';

export interface InspectFunctions {
  listMessages(): QueuedMessageSummary[];
  showMessage(id: string): MessageDetails | undefined;
  stats(): QueueStats;
}

// 'deferred' is derived, never stored (sqlite-schema.ts).
const SHOWN_STATE = `CASE WHEN m.state = 'queued' AND EXISTS (
    SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = 'deferred') THEN 'deferred' ELSE m.state END`;

interface MessageRow {
  id: string;
  mail_from: string;
  size: number;
  received_at: number;
  state: MessageState;
}

interface MessageDetailRow extends MessageRow {
  body_type: '7BIT' | '8BITMIME';
  smtp_utf8: number;
  client_address: string;
  client_helo: string;
  client_listener: 'relay' | 'submission' | 'submissions';
  auth_user: string | null;
  tls_version: string | null;
  tls_cipher: string | null;
  require_tls: number;
  dsn_ret: 'FULL' | 'HDRS' | null;
  dsn_envid: string | null;
}

interface RecipientRow {
  address: string;
  state: RecipientState;
  reply: string | null;
  updated_at: number | null;
  dsn_notify: string | null;
  dsn_orcpt: string | null;
}

interface DeliveryRow {
  id: number;
  domain: string;
  attempts: number;
  next_attempt_at: number;
  lease_until: number | null;
  finished: number;
}

interface AttemptRow {
  delivery_id: number;
  domain: string;
  started_at: number;
  ended_at: number;
  host: string | null;
  ip: string | null;
  port: number | null;
  tls_version: string | null;
  tls_cipher: string | null;
  tls_verified: number | null;
  tls_verify_error: string | null;
  policy_level: TlsLevel;
  policy_source: string;
  reply: string;
  outcome: AttemptRecord['outcome'];
}

/** prepareInspect - the listMessages / showMessage / stats functions over one database. */
export function prepareInspect(db: Database.Database): InspectFunctions {
  const selectQueued = db.prepare<[], MessageRow>(`
    SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE} AS state
      FROM messages m WHERE m.state != 'done' ORDER BY m.received_at, m.rowid`);
  const selectQueuedRecipients = db.prepare<[], { message_id: string; address: string }>(`
    SELECT r.message_id, r.address FROM recipients r JOIN messages m ON m.id = r.message_id
     WHERE m.state != 'done' ORDER BY r.message_id, r.position`);
  const selectMessage = db.prepare<[string], MessageDetailRow>(`
    SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE} AS state, m.body_type, m.smtp_utf8,
           m.client_address, m.client_helo, m.client_listener, m.auth_user, m.tls_version, m.tls_cipher,
           m.require_tls, m.dsn_ret, m.dsn_envid
      FROM messages m WHERE m.id = ?`);
  const selectRecipients = db.prepare<[string], RecipientRow>(
    'SELECT address, state, reply, updated_at, dsn_notify, dsn_orcpt FROM recipients WHERE message_id = ? ORDER BY position',
  );
  const selectDeliveries = db.prepare<[string], DeliveryRow>(
    'SELECT id, domain, attempts, next_attempt_at, lease_until, finished FROM deliveries WHERE message_id = ? ORDER BY id',
  );
  const selectAttempts = db.prepare<[string], AttemptRow>(`
    SELECT a.*, d.domain FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
     WHERE a.message_id = ? ORDER BY a.started_at, a.id`);

  // One pass over the messages not done (the received_at index does not help: every such row counts).
  const selectDepth = db.prepare<[], { state: Exclude<MessageState, 'done'>; n: number; oldest: number }>(`
    SELECT ${SHOWN_STATE} AS state, COUNT(*) AS n, MIN(m.received_at) AS oldest
      FROM messages m WHERE m.state != 'done' GROUP BY 1`);

  const list = db.transaction((): QueuedMessageSummary[] => {
    const rows = selectQueued.all();
    const byMessage = new Map<string, string[]>();
    for (const r of selectQueuedRecipients.all()) {
      const addresses = byMessage.get(r.message_id);
      if (addresses) addresses.push(r.address);
      else byMessage.set(r.message_id, [r.address]);
    }
    return rows.map((row) => summaryOf(row, byMessage.get(row.id) ?? []));
  });

  const show = db.transaction((id: string): MessageDetails | undefined => {
    const message = selectMessage.get(id);
    if (!message) return undefined;
    const recipients = selectRecipients.all(id);
    const addresses = recipients.map((r) => r.address);
    return {
      ...summaryOf(message, addresses),
      envelope: envelopeOf(message, recipients),
      recipientStates: recipients.map((r) => ({
        address: r.address,
        state: r.state,
        ...(r.reply !== null && { reply: r.reply }),
        ...(r.updated_at !== null && { updatedAt: new Date(r.updated_at) }),
      })),
      deliveries: selectDeliveries.all(id).map((d) => ({
        id: String(d.id),
        domain: d.domain,
        attempts: d.attempts,
        // A finished delivery has no next attempt.
        ...(d.finished === 0 && { nextAttemptAt: new Date(d.next_attempt_at) }),
        ...(d.lease_until !== null && { leasedUntil: new Date(d.lease_until) }),
      })),
      attempts: selectAttempts.all(id).map(attemptOf),
    };
  });

  const stats = (): QueueStats => {
    const byState: QueueStats['byState'] = { queued: 0, deferred: 0, held: 0 };
    let oldest: number | undefined;
    for (const row of selectDepth.all()) {
      byState[row.state] = row.n;
      oldest = oldest === undefined ? row.oldest : Math.min(oldest, row.oldest);
    }
    return oldest === undefined ? { byState } : { byState, oldestReceivedAt: new Date(oldest) };
  };

  return { listMessages: () => list(), showMessage: (id) => show(id), stats };
}

/** summaryOf - one `queue list` line from a message row. */
function summaryOf(row: MessageRow, recipients: string[]): QueuedMessageSummary {
  return { id: row.id, mailFrom: row.mail_from, recipients, size: row.size, receivedAt: new Date(row.received_at), state: row.state };
}

/** envelopeOf - the StoredEnvelope as committed, from the message and recipient rows. */
function envelopeOf(m: MessageDetailRow, recipients: RecipientRow[]): StoredEnvelope {
  const envelope: StoredEnvelope = {
    mailFrom: m.mail_from,
    recipients: recipients.map((r) => r.address),
    bodyType: m.body_type,
    smtpUtf8: m.smtp_utf8 === 1,
    client: {
      address: m.client_address,
      helo: m.client_helo,
      listener: m.client_listener,
      ...(m.auth_user !== null && { authUser: m.auth_user }),
      ...(m.tls_version !== null && { tlsVersion: m.tls_version }),
      ...(m.tls_cipher !== null && { tlsCipher: m.tls_cipher }),
    },
    requireTls: m.require_tls === 1,
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
    startedAt: new Date(a.started_at),
    endedAt: new Date(a.ended_at),
    ...(a.host !== null && { host: a.host }),
    ...(a.ip !== null && { ip: a.ip }),
    ...(a.port !== null && { port: a.port }),
    ...(a.tls_verified !== null && {
      tls: {
        version: a.tls_version ?? '',
        cipher: a.tls_cipher ?? '',
        verified: a.tls_verified === 1,
        ...(a.tls_verify_error !== null && { verifyError: a.tls_verify_error }),
      },
    }),
    policy: { level: a.policy_level, source: a.policy_source },
    reply: a.reply,
    outcome: a.outcome,
  };
}
