// What the SQLite store tells `postern queue list`, `queue show` and
// /metrics: the messages still queued (with --all the done ones too, each
// with its outcome), everything known about one message, done ones
// included, and the queue depth by state.
//
// Decides the state a reader sees: the stored one (queued, held, done),
// except that a queued message with a recipient deferred shows as
// 'deferred'. Each answer is read in one transaction, so it is one snapshot;
// the rows become answers in stored-rows.ts, as the PostgreSQL store's do.
//
// How it fails: both functions throw on a database error; showMessage
// returns undefined for an id no message has.
//
//   prepareInspect - the listMessages / showMessage / stats / countDone functions over one database.
import type Database from 'better-sqlite3';
import type { MessageDetails, QueuedMessageSummary, QueueStats } from '../queue-store.ts';
import { detailsOf, SHOWN_STATE_SQL, statsOf, summaryOf, type AttemptRow, type ListedRecipientRow, type DeliveryTimesRow, type DeliveryRow, type DepthRow, type MessageDetailRow, type MessageRow, type RecipientRow } from '../stored-rows.ts';

export interface InspectFunctions {
  listMessages(options?: { includeDone?: boolean }): QueuedMessageSummary[];
  showMessage(id: string): MessageDetails | undefined;
  stats(): QueueStats;
  countDone(): number;
}

// 'deferred' is derived, never stored (sqlite-schema.ts).

/** prepareInspect - the listMessages / showMessage / stats / countDone functions over one database. */
export function prepareInspect(db: Database.Database): InspectFunctions {
  // The listing without done messages, and (includeDone) with them: the same columns and order.
  // +d.finished: each message's deliveries by its own index, not the queue's (sqlite-schema.ts).
  const listing = (where: string) => ({
    messages: db.prepare<[], MessageRow & DeliveryTimesRow>(`
      SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE_SQL} AS state,
             (SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.message_id = m.id AND +d.finished = 0) AS next_attempt_at,
             (SELECT MAX(d.lease_until) FROM deliveries d WHERE d.message_id = m.id AND +d.finished = 0) AS lease_until
        FROM messages m ${where} ORDER BY m.received_at, m.rowid`),
    // Messages first (CROSS JOIN keeps that order), so those not done are found by their own index, and in the
    // order of the messages' listing, which each message's recipients follow by position: nothing left to sort.
    recipients: db.prepare<[], ListedRecipientRow & { message_id: string }>(`
      SELECT r.message_id, r.address, r.state, r.reply FROM messages m CROSS JOIN recipients r ON r.message_id = m.id
        ${where} ORDER BY m.received_at, m.rowid, r.position`),
  });
  const notDone = listing("WHERE m.state != 'done'");
  const everyMessage = listing('');
  const selectMessage = db.prepare<[string], MessageDetailRow>(`
    SELECT m.id, m.mail_from, m.size, m.received_at, ${SHOWN_STATE_SQL} AS state, m.body_type, m.smtp_utf8,
           m.client_address, m.client_helo, m.client_listener, m.auth_user, m.tls_version, m.tls_cipher,
           m.require_tls, m.dsn_ret, m.dsn_envid
      FROM messages m WHERE m.id = ?`);
  const selectRecipients = db.prepare<[string], RecipientRow>(
    'SELECT address, state, reply, updated_at, dsn_notify, dsn_orcpt FROM recipients WHERE message_id = ? ORDER BY position',
  );
  const selectDeliveries = db.prepare<[string], DeliveryRow>(
    'SELECT id, domain, attempts, next_attempt_at, lease_until, lease_owner, finished FROM deliveries WHERE message_id = ? ORDER BY id',
  );
  const selectAttempts = db.prepare<[string], AttemptRow>(`
    SELECT a.*, d.domain FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
     WHERE a.message_id = ? ORDER BY a.started_at, a.id`);

  // One pass over the messages not done, by messages_not_done (the done ones kept for `queue show` are passed over).
  const selectDepth = db.prepare<[], DepthRow>(`
    SELECT ${SHOWN_STATE_SQL} AS state, COUNT(*) AS n, MIN(m.received_at) AS oldest
      FROM messages m WHERE m.state != 'done' GROUP BY 1`);

  const list = db.transaction((includeDone: boolean): QueuedMessageSummary[] => {
    const statements = includeDone ? everyMessage : notDone;
    const rows = statements.messages.all();
    const byMessage = new Map<string, ListedRecipientRow[]>();
    for (const r of statements.recipients.all()) {
      const recipients = byMessage.get(r.message_id);
      if (recipients) recipients.push(r);
      else byMessage.set(r.message_id, [r]);
    }
    return rows.map((row) => summaryOf(row, byMessage.get(row.id) ?? [], row));
  });

  const show = db.transaction((id: string): MessageDetails | undefined => {
    const message = selectMessage.get(id);
    if (!message) return undefined;
    return detailsOf({ message, recipients: selectRecipients.all(id), deliveries: selectDeliveries.all(id), attempts: selectAttempts.all(id) });
  });

  // The partial index messages_done holds exactly these rows.
  const selectDoneCount = db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM messages WHERE state = 'done'");

  return {
    listMessages: (options) => list(options?.includeDone === true),
    showMessage: (id) => show(id),
    stats: () => statsOf(selectDepth.all()),
    countDone: () => selectDoneCount.get()!.n,
  };
}
