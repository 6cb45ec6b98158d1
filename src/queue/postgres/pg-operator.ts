// The operator's verbs on the PostgreSQL store: hold, release, retry,
// delete, each on a list of queue ids or on every message in the queue,
// from any node (the CLI and the HTTP API see the whole cluster).
//
// Decides exactly what the SQLite store decides (sqlite-operator.ts), and
// returns exactly the ids it changed, in the order given (or oldest first
// for "all"):
//   hold    - queued → held. Done and already held messages are left.
//   release - held → queued.
//   retry   - every unfinished delivery of a queued message becomes due at
//             `now` (one due earlier stays so). Held messages are left; a
//             leased delivery keeps its lease.
//   delete  - the message's rows (its body chunks explicitly; deliveries,
//             recipients, attempts by ON DELETE CASCADE). By id any message,
//             done ones included; "all" means the messages `queue list` shows.
// Beside the verbs, purgeDone: the retention sweep's delete of messages done
// before a given time (done-purge.ts), through the messages_done index.
// Each verb locks the messages it acts on (FOR UPDATE, oldest first, so two
// verbs at once cannot deadlock) and rechecks their state under the lock.
//
// How it fails: each verb rejects on a database error, with nothing changed
// (one transaction per call). Unknown ids are not errors.
//
//   holdMessages, releaseMessages, retryMessages, deleteMessages - the verbs.
//   purgeDone - remove messages done before a time, a batch at a time.
import type pg from 'pg';
import { checkPurgeArguments } from '../done-purge.ts';
import type { MessageSelector } from '../queue-store.ts';
import { inTransaction } from './pg-connection.ts';

/** One verb: which messages it applies to (an SQL condition on m), and what it does to them ($1: their ids, $2: now). */
interface Verb {
  where: string;
  apply: string;
}

const HOLD: Verb = { where: "m.state = 'queued'", apply: "UPDATE messages SET state = 'held' WHERE id = ANY($1)" };
const RELEASE: Verb = { where: "m.state = 'held'", apply: "UPDATE messages SET state = 'queued' WHERE id = ANY($1)" };
const RETRY: Verb = {
  where: "m.state = 'queued' AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND NOT d.finished)",
  apply: 'UPDATE deliveries SET next_attempt_at = least(next_attempt_at, $2) WHERE message_id = ANY($1) AND NOT finished',
};
// Body chunks have no foreign key (a draft writes them before its message row): they go explicitly.
const DELETE_BY_ID: Verb = { where: 'true', apply: 'WITH chunks AS (DELETE FROM message_chunks WHERE message_id = ANY($1)) DELETE FROM messages WHERE id = ANY($1)' };
const DELETE_ALL: Verb = { where: "m.state <> 'done'", apply: DELETE_BY_ID.apply };

/** holdMessages - queued → held; returns the ids that changed. */
export function holdMessages(pool: pg.Pool, selector: MessageSelector): Promise<string[]> {
  return applyVerb(pool, HOLD, selector, new Date(0));
}

/** releaseMessages - held → queued; returns the ids that changed. */
export function releaseMessages(pool: pg.Pool, selector: MessageSelector): Promise<string[]> {
  return applyVerb(pool, RELEASE, selector, new Date(0));
}

/** retryMessages - make the pending deliveries of queued messages due at `now`; returns the ids that changed. */
export function retryMessages(pool: pg.Pool, selector: MessageSelector, now: Date): Promise<string[]> {
  if (Number.isNaN(now.getTime())) return Promise.reject(new Error('retryMessages: now is not a valid date'));
  return applyVerb(pool, RETRY, selector, now);
}

/** deleteMessages - remove messages with their bodies and history; returns the ids removed. */
export function deleteMessages(pool: pg.Pool, selector: MessageSelector): Promise<string[]> {
  return applyVerb(pool, 'all' in selector ? DELETE_ALL : DELETE_BY_ID, selector, new Date(0));
}

/** purgeDone - remove up to `limit` messages done before `doneBefore`, longest done first; returns how many. */
export async function purgeDone(pool: pg.Pool, doneBefore: Date, limit: number): Promise<number> {
  checkPurgeArguments(doneBefore, limit);
  // SKIP LOCKED: two nodes sweeping at once take different messages instead of waiting on each other.
  // Deliveries, recipients and attempts go with their message (ON DELETE CASCADE).
  const result = await pool.query(
    `DELETE FROM messages WHERE id IN (
       SELECT id FROM messages WHERE state = 'done' AND done_at < $1 ORDER BY done_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
    [doneBefore, limit],
  );
  return result.rowCount ?? 0;
}

/** applyVerb - lock the messages the verb applies to and apply it to them, in one transaction. */
async function applyVerb(pool: pg.Pool, verb: Verb, selector: MessageSelector, now: Date): Promise<string[]> {
  const given = 'all' in selector ? undefined : [...new Set(selector.ids)];
  if (given?.length === 0) return [];
  return inTransaction(pool, async (client) => {
    const locked = given
      ? await client.query<{ id: string }>(`SELECT m.id FROM messages m WHERE m.id = ANY($1) AND ${verb.where} ORDER BY m.received_at, m.seq FOR UPDATE`, [given])
      : await client.query<{ id: string }>(`SELECT m.id FROM messages m WHERE ${verb.where} ORDER BY m.received_at, m.seq FOR UPDATE`);
    const ids = locked.rows.map((r) => r.id);
    if (ids.length === 0) return [];
    await client.query(verb.apply, verb.apply.includes('$2') ? [ids, now] : [ids]);
    if (!given) return ids;
    const changed = new Set(ids);
    return given.filter((id) => changed.has(id));
  });
}
