// The scheduler's side of the SQLite store: claim due deliveries under a
// lease, record what an attempt did, give a lease back, say when the next
// delivery is due.
//
// Decides who may act on a delivery: a claim takes due, unfinished,
// unleased (or lapsed) deliveries of queued messages, oldest due first,
// passing over a domain at its per-destination limit, in one IMMEDIATE
// transaction, so two workers (threads, processes) never get the same
// delivery while its lease runs. The operator's claim of named messages
// (claimMessages) takes their unleased deliveries, due or not, held or not,
// under the same lock. Only the lease's owner may record;
// once the lease lapsed and another worker claimed, the first one's record
// is refused (at-least-once: the second worker delivers again, never zero).
// All times come from the arguments, never the clock, so a test controls them.
//
// How it fails: every function throws on a database error, with what it
// wrote rolled back (recordAttempt runs inside the store's batch
// transaction, in a savepoint of its own when an item of the batch
// failed); claimDue throws on a limit, lease or owner that
// make no sense. recordAttempt returns false, changing nothing, for a
// delivery that is unknown (deleted), finished, or leased by someone else.
//
//   prepareDeliveries - the claim / record / release / next-due / suspend functions over one database.
import type Database from 'better-sqlite3';
import { CLAIM_LOOK_AHEAD, checkClaimOptions, checkLeaseOptions, checkSuspendOptions, destinationSlots, fullDestinations, outcomeTime, type AttemptResult, type ClaimOptions, type LeaseClaim, type MessageClaimOptions, type RecordVerdict, type SuspendOptions } from '../delivery-rules.ts';
import type { ClaimedDelivery } from '../queue-store.ts';
import { attemptColumns } from '../stored-columns.ts';
import { claimedDeliveryOf, type ClaimRow, type RecipientDsnRow } from '../stored-rows.ts';
import { sqliteValues } from './sqlite-values.ts';

export interface DeliveryFunctions {
  claimDue(options: ClaimOptions): ClaimedDelivery[];
  claimMessages(ids: readonly string[], options: MessageClaimOptions): ClaimedDelivery[];
  /** recordAttempt - one attempt's results, run by the store's group commit inside its batch transaction. */
  recordAttempt(item: { claim: LeaseClaim; result: AttemptResult }): SqliteRecordVerdict;
  releaseLease(claim: LeaseClaim): void;
  renewLease(claim: LeaseClaim, until: Date): boolean;
  leaseHolders(now: Date): string[];
  releaseLeasesOf(owners: readonly string[]): number;
  nextDueAt(): Date | undefined;
  /** suspendDestination - at most `limit` of the deliveries QueueStore.suspendDestination moves, in one transaction; returns how many moved. */
  suspendDestination(domain: string, options: SuspendOptions, limit: number): number;
}

/** What a record did, and for a message it made done whether its body is a file (for the store to remove). */
export type SqliteRecordVerdict = RecordVerdict & { bodyInFile?: boolean };

/** A due delivery with its message's columns (ClaimRow but for the recipients, read for each). */
type DueRow = Omit<ClaimRow, 'recipients'> & { id: number };

// A delivery a claim may take at @now (d, joined to its message m): pending, due, no lease running, its message
// queued. A suspension moves on the same ones, so that what it leaves is what a claim would find.
const CLAIMABLE = `d.finished = 0 AND d.next_attempt_at <= @now AND (d.lease_until IS NULL OR d.lease_until <= @now) AND m.state = 'queued'`;

/** prepareDeliveries - the claim / record / release / next-due / suspend functions over one database. */
export function prepareDeliveries(db: Database.Database): DeliveryFunctions {
  const { claimDue, claimMessages } = prepareClaim(db);
  const record = prepareRecord(db);
  const release = db.prepare<[number, string]>('UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?');
  const renew = db.prepare<[number, number, string]>('UPDATE deliveries SET lease_until = ? WHERE id = ? AND lease_owner = ? AND finished = 0');
  const holders = db.prepare<[number], { owner: string }>('SELECT DISTINCT lease_owner AS owner FROM deliveries WHERE lease_until > ? ORDER BY owner');
  const releaseOwner = db.prepare<[string]>('UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?');
  const releaseOwners = db.transaction((owners: readonly string[]) => owners.reduce((n, owner) => n + releaseOwner.run(owner).changes, 0));
  // A leased delivery is next due when its lease lapses, if that is later.
  const nextDue = db.prepare<[], { due: number | null }>(`
    SELECT MIN(MAX(d.next_attempt_at, COALESCE(d.lease_until, 0))) AS due
      FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE d.finished = 0 AND m.state = 'queued'`);
  return {
    claimDue,
    claimMessages,
    recordAttempt: record,
    releaseLease: ({ deliveryId, owner }) => {
      const id = parseDeliveryId(deliveryId);
      if (id !== undefined) release.run(id, owner);
    },
    renewLease: ({ deliveryId, owner }, until) => {
      const id = parseDeliveryId(deliveryId);
      return id !== undefined && renew.run(until.getTime(), id, owner).changes === 1;
    },
    leaseHolders: (now) => holders.all(now.getTime()).map((row) => row.owner),
    releaseLeasesOf: (owners) => releaseOwners.immediate(owners),
    nextDueAt: () => {
      const due = nextDue.get()?.due ?? null;
      return due === null ? undefined : new Date(due);
    },
    suspendDestination: prepareSuspend(db),
  };
}

/** prepareSuspend - suspendDestination: up to `limit` due deliveries of one domain moved on, their pending recipients deferred. */
function prepareSuspend(db: Database.Database): DeliveryFunctions['suspendDestination'] {
  // Walks deliveries_due over what is due, as a claim does, once per suspension rather than at every claim. No
  // LIMIT, as in the claim: the loop stops reading.
  const selectSuspended = db.prepare<{ domain: string; now: number; minWait: number; maxWait: number; lifetime: number }, [number, number]>(`
    SELECT d.id, MIN(m.received_at + @lifetime, @now + MAX(@minWait, MIN(@maxWait, @now - m.received_at)))
      FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE ${CLAIMABLE} AND d.domain = @domain AND m.received_at + @lifetime > @now`).raw();
  const move = db.prepare<[number, number]>('UPDATE deliveries SET next_attempt_at = ? WHERE id = ?');
  // updated_at stays: it is when the last attempt's outcome was known (a report's Last-Attempt-Date).
  const defer = db.prepare<[string, number]>("UPDATE recipients SET state = 'deferred', reply = ? WHERE delivery_id = ? AND state IN ('queued', 'deferred')");
  const suspend = db.transaction((domain: string, { now, minWaitMs, maxWaitMs, lifetimeMs, reply }: SuspendOptions, limit: number): number => {
    const chosen: [number, number][] = [];
    for (const row of selectSuspended.iterate({ domain, now: now.getTime(), minWait: minWaitMs, maxWait: maxWaitMs, lifetime: lifetimeMs })) {
      chosen.push(row);
      if (chosen.length === limit) break;
    }
    for (const [id, dueAt] of chosen) {
      move.run(dueAt, id);
      defer.run(reply, id);
    }
    return chosen.length;
  });
  return (domain, options, limit) => {
    checkSuspendOptions(options);
    return suspend.immediate(domain, options, limit);
  };
}

/**
 * prepareClaim - claimDue: lease up to `limit` due deliveries (within the per-destination limit); claimMessages:
 * lease every unfinished, unleased delivery of some messages, due or not, held or not. Each described with its
 * pending recipients.
 */
function prepareClaim(db: Database.Database): Pick<DeliveryFunctions, 'claimDue' | 'claimMessages'> {
  // No LIMIT: SQLite re-prepares a statement whose LIMIT is a bound parameter on every run (half the
  // query's CPU under perf). The index gives the order, so rows come one at a time and the loop below
  // stops at the window.
  const selectDue = db.prepare<{ now: number; full: string }, [number, string]>(`
    SELECT d.id, d.domain
      FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE ${CLAIMABLE}
       AND d.domain NOT IN (SELECT value FROM json_each(@full))
     ORDER BY d.next_attempt_at, d.id`).raw();
  const selectClaimed = db.prepare<[number], DueRow>(`
    SELECT d.id, d.message_id, d.domain, d.attempts, m.mail_from, m.received_at, m.body_type, m.smtp_utf8,
           m.require_tls, m.dsn_ret, m.dsn_envid, m.size
      FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE d.id = ?`);
  const lease = db.prepare<[string, number, number]>('UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE id = ?');
  const selectPending = db.prepare<[number], RecipientDsnRow>(`
    SELECT address, dsn_notify, dsn_orcpt FROM recipients
     WHERE delivery_id = ? AND state IN ('queued', 'deferred') ORDER BY position`);
  // +d.finished: the message's index, not the queue's (sqlite-schema.ts), as everywhere a message's deliveries are read.
  const selectUnleased = db.prepare<{ message: string; now: number }, [number]>(`
    SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE d.message_id = @message AND m.state <> 'done' AND +d.finished = 0
       AND (d.lease_until IS NULL OR d.lease_until <= @now)
     ORDER BY d.id`).raw();
  const leaseAndDescribe = (id: number, owner: string, until: number): ClaimedDelivery => {
    lease.run(owner, until, id);
    const row = selectClaimed.get(id) as DueRow;
    return claimedDeliveryOf({ ...row, recipients: selectPending.all(id) }, owner);
  };

  const claimAll = db.transaction((options: ClaimOptions): ClaimedDelivery[] => {
    const { now, limit, leaseMs, owner } = options;
    const full = fullDestinations(options);
    // In due order, passing over domains at their limit, until `limit` are chosen or the window is read.
    const chosen: number[] = [];
    const taken = new Map<string, number>();
    let read = 0;
    for (const [id, domain] of selectDue.iterate({ now: now.getTime(), full: JSON.stringify(full) })) {
      if (read++ === limit + CLAIM_LOOK_AHEAD) break;
      const already = taken.get(domain) ?? 0;
      if (already >= destinationSlots(options, domain)) continue;
      taken.set(domain, already + 1);
      chosen.push(id);
      if (chosen.length === limit) break;
    }
    return chosen.map((id) => leaseAndDescribe(id, owner, now.getTime() + leaseMs));
  });
  const claimOf = db.transaction((ids: readonly string[], { now, leaseMs, owner }: MessageClaimOptions): ClaimedDelivery[] =>
    ids.flatMap((message) => selectUnleased.all({ message, now: now.getTime() }).map(([id]) => leaseAndDescribe(id, owner, now.getTime() + leaseMs))),
  );
  return {
    claimDue: (options) => {
      checkClaimOptions(options);
      if (options.limit === 0) return [];
      // IMMEDIATE: take the write lock before the SELECT, so no other
      // connection can lease the same rows between our read and our update.
      return claimAll.immediate(options);
    },
    claimMessages: (ids, options) => {
      checkLeaseOptions(options, 'claimMessages');
      return claimOf.immediate(ids, options);
    },
  };
}

/** prepareRecord - one recordAttempt (the caller's transaction holds the write lock); see the module header for when it refuses. */
function prepareRecord(db: Database.Database): (item: { claim: LeaseClaim; result: AttemptResult }) => SqliteRecordVerdict {
  // With whether the message's body is a file: the store removes a done message's file after the COMMIT.
  // typeof, not IS NULL: SQLite answers typeof from the row's header, where IS NULL reads a body's
  // whole overflow chain (a 100 KB body: 19.5 µs against 2.6 per call, cached, in a micro-benchmark).
  const selectDelivery = db.prepare<[number], { message_id: string; finished: number; lease_owner: string | null; in_file: number }>(`
    SELECT d.message_id, d.finished, d.lease_owner, typeof(m.body) = 'null' AS in_file
      FROM deliveries d JOIN messages m ON m.id = d.message_id
     WHERE d.id = ?`);
  const insertAttempt = db.prepare(`
    INSERT INTO attempts (delivery_id, message_id, started_at, ended_at, host, ip, port, tls_version, tls_cipher,
                          tls_verified, tls_verify_error, policy_level, policy_source, reply, outcome)
    VALUES (@deliveryId, @messageId, @startedAt, @endedAt, @host, @ip, @port, @tlsVersion, @tlsCipher,
            @tlsVerified, @tlsVerifyError, @policyLevel, @policySource, @reply, @outcome)`);
  // Only a pending recipient changes: one already delivered or bounced stays so.
  const updateRecipient = db.prepare<{ deliveryId: number; address: string; state: string; reply: string; updatedAt: number }>(`
    UPDATE recipients SET state = @state, reply = @reply, updated_at = @updatedAt
     WHERE delivery_id = @deliveryId AND address = @address AND state IN ('queued', 'deferred')`);
  // A delivery is finished when none of its recipients is pending any more.
  const finishAttempt = db.prepare<{ id: number; nextAttemptAt: number }, { finished: number }>(`
    UPDATE deliveries SET attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, next_attempt_at = @nextAttemptAt,
                          finished = NOT EXISTS (SELECT 1 FROM recipients WHERE delivery_id = @id AND state IN ('queued', 'deferred'))
     WHERE id = @id
    RETURNING finished`);
  // A message is done when none of its deliveries is unfinished; its body goes from the row here.
  // +finished: found by the message's index, not by walking the queue's pending deliveries (sqlite-schema.ts).
  const markDoneIfFinished = db.prepare<{ id: string; doneAt: number }>(`
    UPDATE messages SET state = 'done', done_at = @doneAt, body = NULL
     WHERE id = @id AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = @id AND +finished = 0)`);

  const record = ({ claim, result }: { claim: LeaseClaim; result: AttemptResult }): SqliteRecordVerdict => {
    const id = parseDeliveryId(claim.deliveryId);
    const delivery = id === undefined ? undefined : selectDelivery.get(id);
    if (id === undefined || !delivery || delivery.finished === 1 || delivery.lease_owner !== claim.owner) return { recorded: false };
    const messageId = delivery.message_id;
    for (const attempt of result.attempts) insertAttempt.run({ deliveryId: id, messageId, ...sqliteValues(attemptColumns(attempt)) });
    const updatedAt = outcomeTime(result.attempts).getTime();
    for (const outcome of result.recipients) {
      updateRecipient.run({ deliveryId: id, address: outcome.address, state: outcome.result, reply: outcome.reply, updatedAt });
    }
    const finished = finishAttempt.get({ id, nextAttemptAt: result.nextAttemptAt.getTime() })?.finished === 1;
    if (!finished || markDoneIfFinished.run({ id: messageId, doneAt: updatedAt }).changes === 0) return { recorded: true };
    return { recorded: true, doneMessageId: messageId, bodyInFile: delivery.in_file === 1 };
  };
  return record;
}

/** parseDeliveryId - a delivery id string back to its row id; undefined if it cannot name a delivery. */
function parseDeliveryId(deliveryId: string): number | undefined {
  if (!/^[1-9][0-9]{0,15}$/.test(deliveryId)) return undefined;
  const id = Number(deliveryId);
  return Number.isSafeInteger(id) ? id : undefined;
}
