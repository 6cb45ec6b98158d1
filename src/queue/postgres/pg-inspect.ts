// What the PostgreSQL store tells `postern queue list`, `queue show` and
// /metrics: the messages still queued (on every node; with --all the done
// ones too, each with its outcome), everything known about one message,
// done ones included, and the queue depth by state.
//
// Decides the state a reader sees, as the SQLite store does: the stored one
// (queued, held, done), except that a queued message with a recipient
// deferred shows as 'deferred'. Each answer is one snapshot: a single
// statement, or (showMessage) one REPEATABLE READ, READ ONLY transaction;
// the rows become answers in stored-rows.ts, as the SQLite store's do.
// Listing order: received_at, then the commit order (messages.seq).
//
// How it fails: every function rejects on a database error; showMessage
// resolves undefined for an id no message has.
//
//   listMessages - the messages not done (includeDone: every message), oldest first.
//   showMessage  - one message with its recipients, deliveries and attempts.
//   queueStats   - how many messages not done are in each shown state, and the oldest.
//   countDone    - how many done messages are kept.
import type pg from 'pg';
import type { MessageDetails, QueuedMessageSummary, QueueStats } from '../queue-store.ts';
import { detailsOf, SHOWN_STATE_SQL, statsOf, summaryOf, type AttemptRow, type ListedRecipientRow, type DeliveryTimesRow, type DeliveryRow, type DepthRow, type MessageDetailRow, type MessageRow, type RecipientRow } from '../stored-rows.ts';
import { inTransaction } from './pg-connection.ts';

// 'deferred' is derived, never stored (pg-schema.ts).

/**
 * listMessages - the messages not done (includeDone: every message), oldest first, each with its recipients in
 * RCPT order (state and last reply) and its earliest next attempt (one statement).
 */
export async function listMessages(pool: pg.Pool, options: { includeDone?: boolean } = {}): Promise<QueuedMessageSummary[]> {
  const result = await pool.query<MessageRow & DeliveryTimesRow & { recipients: ListedRecipientRow[] }>(`
    SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE_SQL} AS state,
           (SELECT coalesce(json_agg(json_build_object('address', r.address, 'state', r.state, 'reply', r.reply) ORDER BY r.position), '[]'::json)
              FROM recipients r WHERE r.message_id = m.id) AS recipients,
           (SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.message_id = m.id AND NOT d.finished) AS next_attempt_at,
           (SELECT max(d.lease_until) FROM deliveries d WHERE d.message_id = m.id AND NOT d.finished) AS lease_until
      FROM messages m ${options.includeDone ? '' : "WHERE m.state <> 'done'"} ORDER BY m.received_at, m.seq`);
  return result.rows.map((row) => summaryOf(row, row.recipients, row));
}

/** showMessage - everything known about one message, read in one snapshot; undefined if unknown. */
export function showMessage(pool: pg.Pool, id: string): Promise<MessageDetails | undefined> {
  return inTransaction(
    pool,
    async (client) => {
      const message = (
        await client.query<MessageDetailRow>(
          `SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE_SQL} AS state, m.body_type, m.smtp_utf8,
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
        await client.query<DeliveryRow>('SELECT id, domain, attempts, next_attempt_at, lease_until, lease_owner, finished FROM deliveries WHERE message_id = $1 ORDER BY id', [id])
      ).rows;
      const attempts = (
        await client.query<AttemptRow>(
          `SELECT a.*, d.domain FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
            WHERE a.message_id = $1 ORDER BY a.started_at, a.id`,
          [id],
        )
      ).rows;
      return detailsOf({ message, recipients, deliveries, attempts });
    },
    'ISOLATION LEVEL REPEATABLE READ READ ONLY',
  );
}

/** queueStats - how many messages not done are in each shown state, and the oldest one's arrival (one statement). */
export async function queueStats(pool: pg.Pool): Promise<QueueStats> {
  const result = await pool.query<DepthRow>(`
    SELECT ${SHOWN_STATE_SQL} AS state, count(*)::integer AS n, min(m.received_at) AS oldest
      FROM messages m WHERE m.state <> 'done' GROUP BY 1`);
  return statsOf(result.rows);
}

/** countDone - how many done messages are kept (the partial index messages_done holds exactly these rows). */
export async function countDone(pool: pg.Pool): Promise<number> {
  const result = await pool.query<{ n: number }>("SELECT count(*)::integer AS n FROM messages WHERE state = 'done'");
  return result.rows[0]!.n;
}
