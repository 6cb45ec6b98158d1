// The scheduler's side of the PostgreSQL store: claim due deliveries under a
// lease, record what an attempt did, give a lease back, say when the next
// delivery is due. Several nodes do this at once against one database.
//
// Decides who may act on a delivery, as the SQLite store does
// (sqlite-deliveries.ts): a claim takes due, unfinished, unleased (or
// lapsed) deliveries of queued messages, oldest due first, passing over a
// domain at its per-destination limit (each due delivery's place within its
// domain, by a window function); only the lease's
// owner may record, and once a lapsed lease was claimed by another worker
// the first one's record is refused (at least once, never zero). A claim is
// one statement: SELECT … FOR UPDATE SKIP LOCKED picks the rows no other
// claimer is taking at that moment, and the UPDATE sets the lease in the
// same transaction, so two nodes never lease the same delivery while its
// lease runs, and never wait for each other.
//
// Lock order, so that nothing deadlocks: a transaction that changes a
// message and its deliveries locks the message row first (recordAttempt,
// the operator's verbs, DELETE's cascade); a claim locks only delivery
// rows, and skips rather than waits. recordAttempt's lock on the message
// also makes "all deliveries finished → done" exact when two nodes finish
// the last two deliveries of one message at once.
//
// All times come from the arguments, never the database's clock.
//
// How it fails: every function rejects on a database error, with its
// transaction rolled back; claimDue rejects a limit, lease or owner that
// makes no sense (delivery-rules.ts, as the SQLite store does).
// recordAttempt resolves false, changing nothing, for a delivery that is
// unknown (deleted), finished, or leased by someone else.
//
//   claimDue      - lease up to `limit` due deliveries and describe each.
//   recordAttempt - store attempts and outcomes, end the lease, finish the delivery and message.
//   releaseLease  - give a lease back untouched.
//   nextDueAt     - when the earliest pending, unheld delivery is due (a lease counts until it lapses).
import type pg from 'pg';
import { CLAIM_LOOK_AHEAD, checkClaimOptions, fullDestinations, outcomeTime, type AttemptResult, type ClaimOptions, type LeaseClaim, type RecordVerdict } from '../delivery-rules.ts';
import type { ClaimedDelivery, RecipientOutcome } from '../queue-store.ts';
import { attemptColumns, type AttemptColumns } from '../stored-columns.ts';
import { claimedDeliveryOf, type ClaimRow } from '../stored-rows.ts';
import { inTransaction } from './pg-connection.ts';

// Lock and lease in one statement; the outer SELECT describes what was leased.
// $5 is the per-destination limit (NULL: none), $6 the deliveries in flight by domain (JSON),
// $7 the domains with no slot left (skipped outright), $8 how far past the limit to look
// for other domains (CLAIM_LOOK_AHEAD, as the SQLite store does).
// The recipients subquery sees the rows as they were when the statement began:
// nobody else can change them, since recording needs the lease we now hold.
const CLAIM = `
  WITH due AS (
    SELECT d.id, d.domain, d.next_attempt_at FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE NOT d.finished AND d.next_attempt_at <= $1
       AND (d.lease_until IS NULL OR d.lease_until <= $1)
       AND m.state = 'queued'
       AND NOT (d.domain = ANY($7::text[]))
     ORDER BY d.next_attempt_at, d.id
     LIMIT $2::int + $8::int
  ), ranked AS (
    SELECT id, next_attempt_at, domain,
           row_number() OVER (PARTITION BY domain ORDER BY next_attempt_at, id) AS place
      FROM due
  ), chosen AS (
    SELECT d.id FROM deliveries d JOIN ranked r ON r.id = d.id
     WHERE ($5::int IS NULL OR r.place <= $5::int - coalesce(($6::jsonb ->> r.domain)::int, 0))
       -- Again on the row itself: FOR UPDATE re-checks these against a version another claim just committed.
       AND NOT d.finished AND d.next_attempt_at <= $1 AND (d.lease_until IS NULL OR d.lease_until <= $1)
     ORDER BY r.next_attempt_at, r.id
     LIMIT $2
       FOR UPDATE OF d SKIP LOCKED
  ), leased AS (
    UPDATE deliveries d SET lease_owner = $3, lease_until = $4 FROM chosen WHERE d.id = chosen.id
    RETURNING d.id, d.message_id, d.domain, d.attempts, d.next_attempt_at
  )
  SELECT l.id, l.message_id, l.domain, l.attempts, m.mail_from, m.received_at, m.body_type, m.smtp_utf8,
         m.require_tls, m.dsn_ret, m.dsn_envid,
         (SELECT coalesce(json_agg(json_build_object('address', r.address, 'dsn_notify', r.dsn_notify, 'dsn_orcpt', r.dsn_orcpt) ORDER BY r.position), '[]')
            FROM recipients r WHERE r.delivery_id = l.id AND r.state IN ('queued', 'deferred')) AS recipients
    FROM leased l JOIN messages m ON m.id = l.message_id
   ORDER BY l.next_attempt_at, l.id`;

/** claimDue - lease up to `limit` due deliveries (one statement, SKIP LOCKED), within the per-destination limit, and describe each with its pending recipients. */
export async function claimDue(pool: pg.Pool, options: ClaimOptions): Promise<ClaimedDelivery[]> {
  checkClaimOptions(options);
  if (options.limit === 0) return [];
  const { now, limit, leaseMs, owner, perDestination } = options;
  const full = fullDestinations(options);
  const result = await pool.query<ClaimRow>(CLAIM, [
    now, limit, owner, new Date(now.getTime() + leaseMs), perDestination?.limit ?? null, JSON.stringify(perDestination?.busy ?? {}), full, CLAIM_LOOK_AHEAD,
  ]);
  return result.rows.map((row) => claimedDeliveryOf(row, owner));
}

/**
 * recordAttempt - the recordAttempt transaction, in three statements between BEGIN and COMMIT (each a round trip,
 * which is what a record costs: 10 round trips before, 5 now); see the module header for when it refuses.
 */
export async function recordAttempt(pool: pg.Pool, { deliveryId, owner }: LeaseClaim, result: AttemptResult): Promise<RecordVerdict> {
  if (!isDeliveryId(deliveryId)) return { recorded: false };
  return inTransaction(pool, async (client) => {
    const locked = await client.query<{ message_id: string; finished: boolean; lease_owner: string | null }>(LOCK_FOR_RECORD, [deliveryId]);
    const row = locked.rows[0];
    if (!row || row.finished || row.lease_owner !== owner) return { recorded: false };
    const messageId = row.message_id;

    const updatedAt = outcomeTime(result.attempts);
    const outcomes = effectiveOutcomes(result.recipients);
    const attempts = result.attempts.map(attemptColumns);
    await client.query(RECORD_OUTCOMES, [
      deliveryId,
      messageId,
      outcomes.map((o) => o.address),
      outcomes.map((o) => o.result),
      outcomes.map((o) => o.reply),
      updatedAt,
      ...ATTEMPT_FIELDS.map((field) => attempts.map((a) => a[field])),
    ]);
    const finished = await client.query<{ finished: boolean; done: boolean }>(FINISH_ATTEMPT, [deliveryId, result.nextAttemptAt, updatedAt]);
    return finished.rows[0]?.done === true ? { recorded: true, doneMessageId: messageId } : { recorded: true };
  });
}

// The message row first, then the delivery row (the lock order above): the outer FOR UPDATE locks the
// delivery only once the join has its row, and the join needs the message row, which the materialized CTE
// has locked by then. FOR UPDATE hands back the delivery as it is now (READ COMMITTED re-reads a row it
// waited for). No row: the delivery or its message is gone.
const LOCK_FOR_RECORD = `
  WITH message AS MATERIALIZED (
    SELECT id FROM messages WHERE id = (SELECT message_id FROM deliveries WHERE id = $1) FOR UPDATE
  )
  SELECT message.id AS message_id, d.finished, d.lease_owner
    FROM message JOIN deliveries d ON d.id = $1
     FOR UPDATE OF d`;

/** The attempts columns after delivery_id and message_id, in INSERT order, as AttemptColumns names them. */
const ATTEMPT_FIELDS = [
  'startedAt', 'endedAt', 'host', 'ip', 'port', 'tlsVersion', 'tlsCipher', 'tlsVerified', 'tlsVerifyError', 'policyLevel', 'policySource', 'reply', 'outcome',
] as const satisfies readonly (keyof AttemptColumns)[];

// The attempts, in their order, and the recipients' outcomes: one statement, two tables.
// Only a pending recipient changes: one already delivered or bounced stays so.
const RECORD_OUTCOMES = `
  WITH attempt AS (
    INSERT INTO attempts (delivery_id, message_id, started_at, ended_at, host, ip, port, tls_version, tls_cipher,
                          tls_verified, tls_verify_error, policy_level, policy_source, reply, outcome)
    SELECT $1, $2, a.started_at, a.ended_at, a.host, a.ip, a.port, a.tls_version, a.tls_cipher,
           a.tls_verified, a.tls_verify_error, a.policy_level, a.policy_source, a.reply, a.outcome
      FROM unnest($7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::int[], $12::text[], $13::text[],
                  $14::boolean[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[])
           WITH ORDINALITY AS a(started_at, ended_at, host, ip, port, tls_version, tls_cipher,
                                tls_verified, tls_verify_error, policy_level, policy_source, reply, outcome, n)
     ORDER BY a.n
  )
  UPDATE recipients r SET state = o.state, reply = o.reply, updated_at = $6
    FROM unnest($3::text[], $4::text[], $5::text[]) AS o(address, state, reply)
   WHERE r.delivery_id = $1 AND r.address = o.address AND r.state IN ('queued', 'deferred')`;

// This statement sees the recipients RECORD_OUTCOMES changed. The delivery is finished when none of its
// recipients is pending; the message is done when it was the last delivery not finished (the lock on the
// message row keeps another node's record of a sibling delivery out until COMMIT), and its body goes with
// the COMMIT that makes it done.
const FINISH_ATTEMPT = `
  WITH delivery AS (
    UPDATE deliveries SET attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, next_attempt_at = $2,
           finished = NOT EXISTS (SELECT 1 FROM recipients WHERE delivery_id = $1 AND state IN ('queued', 'deferred'))
     WHERE id = $1
    RETURNING message_id, finished
  ), done AS (
    UPDATE messages m SET state = 'done', done_at = $3
      FROM delivery
     WHERE delivery.finished AND m.id = delivery.message_id
       AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.message_id = m.id AND o.id <> $1 AND NOT o.finished)
    RETURNING m.id
  ), body AS (
    DELETE FROM message_chunks WHERE message_id IN (SELECT id FROM done)
  )
  SELECT delivery.finished, EXISTS (SELECT 1 FROM done) AS done FROM delivery`;

/** releaseLease - give a claimed delivery back untouched, if `owner` still holds it. */
export async function releaseLease(pool: pg.Pool, { deliveryId, owner }: LeaseClaim): Promise<void> {
  if (!isDeliveryId(deliveryId)) return;
  await pool.query('UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2', [deliveryId, owner]);
}

/** nextDueAt - the earliest due time of a pending delivery of a queued message; a leased one is due when its lease lapses, if later. */
export async function nextDueAt(pool: pg.Pool): Promise<Date | undefined> {
  // GREATEST ignores NULL: an unleased delivery is due at next_attempt_at.
  const result = await pool.query<{ due: Date | null }>(`
    SELECT min(greatest(d.next_attempt_at, d.lease_until)) AS due
      FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE NOT d.finished AND m.state = 'queued'`);
  return result.rows[0]?.due ?? undefined;
}

/**
 * effectiveOutcomes - one outcome per address, the one the SQLite store ends with when it applies them in order:
 * the first final (delivered, bounced) one, else the last deferral.
 */
function effectiveOutcomes(outcomes: RecipientOutcome[]): RecipientOutcome[] {
  const byAddress = new Map<string, RecipientOutcome>();
  for (const outcome of outcomes) {
    const earlier = byAddress.get(outcome.address);
    if (earlier === undefined || earlier.result === 'deferred') byAddress.set(outcome.address, outcome);
  }
  return [...byAddress.values()];
}

/** isDeliveryId - whether a string can name a deliveries row (a bigint identity). */
function isDeliveryId(deliveryId: string): boolean {
  return /^[1-9][0-9]{0,17}$/.test(deliveryId);
}
