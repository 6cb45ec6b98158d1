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
// message and its deliveries locks the message row first (record_attempt,
// the operator's verbs, claimMessages, DELETE's cascade); claimDue locks only
// delivery rows, and skips rather than waits. record_attempt's lock on the message
// also makes "all deliveries finished → done" exact when two nodes finish
// the last two deliveries of one message at once. A suspension (SUSPEND)
// locks deliveries and their messages but skips rather than waits, as a
// claim does. record_attempt is a
// function in the database (pg-schema.ts, migration 4) so that a record is
// one round trip.
//
// All times come from the arguments, never the database's clock.
//
// How it fails: every function rejects on a database error, with its
// transaction rolled back (recordAttempts answers that record with the
// error instead); claimDue rejects a limit, lease or owner that makes no
// sense (delivery-rules.ts, as the SQLite store does). A record is refused
// (recorded: false), changing nothing, for a delivery that is unknown
// (deleted), finished, or leased by someone else.
//
//   claimDue      - lease up to `limit` due deliveries and describe each.
//   claimMessages - lease every unfinished, unleased delivery of some messages, due or not (the operator's bounce);
//                   locks the messages first, as the operator's verbs do, and waits for their deliveries.
//   recordAttempts - for each attempt of a batch: store it and its outcomes, end the lease, finish the delivery and message.
//   releaseLease  - give a lease back untouched.
//   renewLease    - move a lease in flight on.
//   leaseHolders, releaseLeasesOf - who holds leases; give back all of some owners' (processes that are gone).
//   nextDueAt     - when the earliest pending, unheld delivery is due (a lease counts until it lapses).
//   suspendDestination - a dead destination's due deliveries moved on, their pending recipients deferred.
import pg from 'pg';
import type { Logger } from '../../observability/logger.ts';
import { CLAIM_LOOK_AHEAD, checkClaimOptions, checkLeaseOptions, checkSuspendOptions, fullDestinations, outcomeTime, type AttemptResult, type ClaimOptions, type LeaseClaim, type MessageClaimOptions, type RecordVerdict, type SuspendOptions } from '../delivery-rules.ts';
import type { ClaimedDelivery, RecipientOutcome } from '../queue-store.ts';
import { attemptColumns, type AttemptColumns } from '../stored-columns.ts';
import { inTransaction } from './pg-connection.ts';
import { claimedDeliveryOf, type ClaimRow } from '../stored-rows.ts';

// A delivery a claim may take at $1 (d, joined to its message m): pending, due, no lease running, its message queued.
// A suspension moves on the same ones, so that what it leaves is what a claim would find.
const CLAIMABLE = `NOT d.finished AND d.next_attempt_at <= $1 AND (d.lease_until IS NULL OR d.lease_until <= $1) AND m.state = 'queued'`;

// Lock and lease in one statement; the outer SELECT describes what was leased.
// $5 is the per-destination limit (NULL: none), $6 the deliveries in flight by domain (JSON),
// $7 the domains with no slot left (skipped outright), $8 how far past the limit to look
// for other domains (CLAIM_LOOK_AHEAD, as the SQLite store does).
// The recipients subquery sees the rows as they were when the statement began:
// nobody else can change them, since recording needs the lease we now hold.
const CLAIM = `
  WITH due AS (
    SELECT d.id, d.domain, d.next_attempt_at FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE ${CLAIMABLE}
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
         m.require_tls, m.dsn_ret, m.dsn_envid, m.size,
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

// The operator's claim of named messages (claimMessages): every unfinished delivery no lease holds, due or not,
// held or not. The messages are locked first (LOCK_MESSAGES, in the operator verbs' order), then their deliveries
// waited for, not skipped: a retry or a record in progress ends first, and its result is what the claim sees.
const LOCK_MESSAGES = "SELECT id FROM messages WHERE id = ANY($1::text[]) AND state <> 'done' ORDER BY received_at, seq FOR UPDATE";
const CLAIM_MESSAGES = `
  WITH chosen AS (
    SELECT d.id FROM deliveries d
     WHERE d.message_id = ANY($1::text[]) AND NOT d.finished
       AND (d.lease_until IS NULL OR d.lease_until <= $2)
       FOR UPDATE
  ), leased AS (
    UPDATE deliveries d SET lease_owner = $3, lease_until = $4 FROM chosen WHERE d.id = chosen.id
    RETURNING d.id, d.message_id, d.domain, d.attempts
  )
  SELECT l.id, l.message_id, l.domain, l.attempts, m.mail_from, m.received_at, m.body_type, m.smtp_utf8,
         m.require_tls, m.dsn_ret, m.dsn_envid, m.size,
         (SELECT coalesce(json_agg(json_build_object('address', r.address, 'dsn_notify', r.dsn_notify, 'dsn_orcpt', r.dsn_orcpt) ORDER BY r.position), '[]')
            FROM recipients r WHERE r.delivery_id = l.id AND r.state IN ('queued', 'deferred')) AS recipients
    FROM leased l JOIN messages m ON m.id = l.message_id
   ORDER BY l.id`;

/** claimMessages - lease every unfinished, unleased delivery of these messages (the operator's bounce) and describe each. */
export async function claimMessages(pool: pg.Pool, ids: readonly string[], options: MessageClaimOptions): Promise<ClaimedDelivery[]> {
  checkLeaseOptions(options, 'claimMessages');
  const { now, leaseMs, owner } = options;
  return inTransaction(pool, async (client) => {
    const locked = (await client.query<{ id: string }>(LOCK_MESSAGES, [ids])).rows.map((row) => row.id);
    if (locked.length === 0) return [];
    const result = await client.query<ClaimRow>(CLAIM_MESSAGES, [locked, now, owner, new Date(now.getTime() + leaseMs)]);
    return result.rows.map((row) => claimedDeliveryOf(row, owner));
  });
}

// A dead destination's due deliveries moved on (SuspendOptions), at most $7 of them. SKIP LOCKED on the delivery and
// its message: one being claimed, recorded or changed by the operator is left as it is, and this statement never
// waits for a lock. With the message locked, nobody else changes its recipients (the lock order above), so the
// recipients' UPDATE waits for no one either. updated_at stays: it is when the last attempt's outcome was known.
const SUSPEND = `
  WITH chosen AS (
    SELECT d.id, least(m.received_at + $5::bigint * interval '1 millisecond',
                       $1::timestamptz + greatest($3::bigint * interval '1 millisecond', least($4::bigint * interval '1 millisecond', $1::timestamptz - m.received_at))) AS due_at
      FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE ${CLAIMABLE} AND d.domain = $2 AND m.received_at + $5::bigint * interval '1 millisecond' > $1::timestamptz
     LIMIT $7
       FOR NO KEY UPDATE OF d, m SKIP LOCKED
  ), moved AS (
    UPDATE deliveries d SET next_attempt_at = c.due_at FROM chosen c WHERE d.id = c.id RETURNING d.id
  ), deferred AS (
    UPDATE recipients r SET state = 'deferred', reply = $6
      FROM moved WHERE r.delivery_id = moved.id AND r.state IN ('queued', 'deferred')
  )
  SELECT count(*)::int AS moved FROM moved`;

/** suspendDestination - move up to `limit` of a dead destination's due deliveries on (see QueueStore); returns how many. */
export async function suspendDestination(pool: pg.Pool, domain: string, options: SuspendOptions, limit: number): Promise<number> {
  checkSuspendOptions(options);
  const { now, minWaitMs, maxWaitMs, lifetimeMs, reply } = options;
  const result = await pool.query<{ moved: number }>(SUSPEND, [now, domain, minWaitMs, maxWaitMs, lifetimeMs, reply, limit]);
  return result.rows[0]!.moved;
}

/** One delivery's attempt to record: whose lease, and what the attempt did. */
export interface RecordItem {
  claim: LeaseClaim;
  result: AttemptResult;
}

/**
 * recordAttempts - record a batch of attempts in one statement (record_attempts, pg-schema.ts, migration 5:
 * record_attempt for each, in order, the messages locked first); answers each with its verdict (see the module
 * header for when it refuses) or its Error. When the database refuses the statement (an ERROR: a record that
 * breaks a constraint, a batch that waited too long for a lock), nothing of it was applied, and the batch is
 * recorded one by one (logged; each answered as it is recorded), so only that record fails. Any other
 * failure (the connection lost: the statement may have committed) fails every record of the batch, as it
 * would fail a single one: recording again could apply an attempt twice.
 */
export async function recordAttempts(pool: pg.Pool, items: RecordItem[], logger: Logger): Promise<(RecordVerdict | Error | Promise<RecordVerdict | Error>)[]> {
  const records = items.map(({ claim, result }) => (isDeliveryId(claim.deliveryId) ? recordArguments(claim, result) : undefined));
  const sent = records.filter((record) => record !== undefined);
  if (sent.length === 0) return items.map(() => ({ recorded: false }));
  let rows: { recorded: boolean; done_message: string | null }[];
  try {
    ({ rows } = await pool.query<{ recorded: boolean; done_message: string | null }>(RECORD_ATTEMPTS, [JSON.stringify(sent)]));
  } catch (error) {
    const failed = error instanceof Error ? error : new Error(String(error));
    if (items.length === 1 || !(error instanceof pg.DatabaseError && error.severity === 'ERROR')) return items.map(() => failed);
    logger.warn({ err: error, attempts: items.length }, 'recording a batch of attempts failed; recording them one by one');
    // Each answers as soon as it is recorded: one still waiting for a lock holds up no other.
    return items.map(async (item) => (await recordAttempts(pool, [item], logger))[0]!);
  }
  let next = 0;
  return records.map((record): RecordVerdict => {
    if (record === undefined) return { recorded: false };
    const verdict = rows[next++];
    if (!verdict?.recorded) return { recorded: false };
    return verdict.done_message === null ? { recorded: true } : { recorded: true, doneMessageId: verdict.done_message };
  });
}

/** recordArguments - record_attempt's arguments for one attempt, named as record_attempts reads them (JSON turns the dates into ISO strings). */
function recordArguments({ deliveryId, owner }: LeaseClaim, result: AttemptResult): Record<string, unknown> {
  const outcomes = effectiveOutcomes(result.recipients);
  const attempts = result.attempts.map(attemptColumns);
  const record: Record<string, unknown> = {
    delivery: deliveryId,
    owner,
    addresses: outcomes.map((o) => o.address),
    states: outcomes.map((o) => o.result),
    replies: outcomes.map((o) => o.reply),
    updated: outcomeTime(result.attempts),
    next_attempt: result.nextAttemptAt,
  };
  for (const [name, field] of ATTEMPT_FIELDS) record[name] = attempts.map((a) => a[field]);
  return record;
}

/** The attempts' columns as record_attempts names them, and as AttemptColumns does. */
const ATTEMPT_FIELDS = [
  ['started_at', 'startedAt'], ['ended_at', 'endedAt'], ['host', 'host'], ['ip', 'ip'], ['port', 'port'],
  ['tls_version', 'tlsVersion'], ['tls_cipher', 'tlsCipher'], ['tls_verified', 'tlsVerified'], ['tls_verify_error', 'tlsVerifyError'],
  ['policy_level', 'policyLevel'], ['policy_source', 'policySource'], ['reply', 'reply'], ['outcome', 'outcome'],
] as const satisfies readonly (readonly [string, keyof AttemptColumns])[];

const RECORD_ATTEMPTS = 'SELECT recorded, done_message FROM record_attempts($1::jsonb)';

/** releaseLease - give a claimed delivery back untouched, if `owner` still holds it. */
export async function releaseLease(pool: pg.Pool, { deliveryId, owner }: LeaseClaim): Promise<void> {
  if (!isDeliveryId(deliveryId)) return;
  await pool.query('UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2', [deliveryId, owner]);
}

/** renewLease - move a lease this owner still holds on an unfinished delivery on to `until`. */
export async function renewLease(pool: pg.Pool, { deliveryId, owner }: LeaseClaim, until: Date): Promise<boolean> {
  if (!isDeliveryId(deliveryId)) return false;
  const result = await pool.query('UPDATE deliveries SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND NOT finished', [deliveryId, owner, until]);
  return result.rowCount === 1;
}

/** leaseHolders - the owners of leases that have not lapsed at `now`. */
export async function leaseHolders(pool: pg.Pool, now: Date): Promise<string[]> {
  const result = await pool.query<{ owner: string }>('SELECT DISTINCT lease_owner AS owner FROM deliveries WHERE lease_until > $1 ORDER BY owner', [now]);
  return result.rows.map((row) => row.owner);
}

/** releaseLeasesOf - give back every lease these owners hold; returns how many. */
export async function releaseLeasesOf(pool: pg.Pool, owners: readonly string[]): Promise<number> {
  const result = await pool.query('UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ANY($1)', [owners]);
  return result.rowCount ?? 0;
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
