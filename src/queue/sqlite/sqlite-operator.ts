// The operator's verbs on the SQLite store: hold, release, retry, delete,
// each on a list of queue ids or on every message in the queue.
//
// Decides which messages a verb changes, and returns exactly those (in the
// order given, or oldest first for "all"), so the CLI can name the ids it
// did not act on:
//   hold    - queued → held. Done and already held messages are left.
//   release - held → queued.
//   retry   - every unfinished delivery of a queued message becomes due at
//             `now` (one due earlier stays as it is). Held messages are left:
//             a held message is not to be delivered, and retry does not
//             release it; a leased delivery keeps its lease (the attempt in
//             flight records its own next attempt).
//   delete  - the message's rows (deliveries, recipients, attempts go with
//             it); the caller removes the body files. By id it removes any
//             message, done ones (their history) included; "all" means the
//             messages `queue list` shows, not the history of done ones.
// A verb on a leased delivery does not stop the attempt in flight: its
// worker's recordAttempt is refused after a delete, recorded after a hold.
// Beside the verbs, purgeDone: the retention sweep's delete of messages done
// before a given time (done-purge.ts), through the messages_done index.
//
// How it fails: each verb throws on a database error, with nothing changed
// (one IMMEDIATE transaction per call). Unknown ids are not errors.
//
//   prepareOperator - the hold / release / retry / delete / purgeDone functions over one database.
import type Database from 'better-sqlite3';
import { checkPurgeArguments } from '../done-purge.ts';
import type { MessageSelector } from '../queue-store.ts';

export interface OperatorFunctions {
  holdMessages(selector: MessageSelector): string[];
  releaseMessages(selector: MessageSelector): string[];
  retryMessages(selector: MessageSelector, now: Date): string[];
  deleteMessages(selector: MessageSelector): string[];
  purgeDone(doneBefore: Date, limit: number): number;
}

/** One verb: which messages it applies to (an SQL condition on m), and what it does to one. */
interface Verb {
  where: string;
  apply: (id: string, now: number) => void;
}

/** prepareOperator - the hold / release / retry / delete / purgeDone functions over one database. */
export function prepareOperator(db: Database.Database): OperatorFunctions {
  const setState = db.prepare<[string, string]>('UPDATE messages SET state = ? WHERE id = ?');
  // +finished: a message's deliveries by its own index, not the queue's (sqlite-schema.ts).
  const makeDue = db.prepare<[number, string]>('UPDATE deliveries SET next_attempt_at = MIN(next_attempt_at, ?) WHERE message_id = ? AND +finished = 0');
  const remove = db.prepare<[string]>('DELETE FROM messages WHERE id = ?');

  const hold = prepareVerb(db, { where: "m.state = 'queued'", apply: (id) => setState.run('held', id) });
  const release = prepareVerb(db, { where: "m.state = 'held'", apply: (id) => setState.run('queued', id) });
  const retry = prepareVerb(db, {
    where: "m.state = 'queued' AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND +d.finished = 0)",
    apply: (id, now) => makeDue.run(now, id),
  });
  const removeById = prepareVerb(db, { where: '1', apply: (id) => remove.run(id) });
  const removeAll = prepareVerb(db, { where: "m.state != 'done'", apply: (id) => remove.run(id) });
  // Deliveries, recipients and attempts go with their message (ON DELETE CASCADE); a done message has no body left.
  const purge = db.prepare<[number, number]>(`
    DELETE FROM messages WHERE id IN (
      SELECT id FROM messages WHERE state = 'done' AND done_at < ? ORDER BY done_at LIMIT ?)`);

  return {
    holdMessages: (selector) => hold(selector, 0),
    releaseMessages: (selector) => release(selector, 0),
    retryMessages: (selector, now) => {
      if (Number.isNaN(now.getTime())) throw new Error('retryMessages: now is not a valid date');
      return retry(selector, now.getTime());
    },
    deleteMessages: (selector) => ('all' in selector ? removeAll(selector, 0) : removeById(selector, 0)),
    purgeDone: (doneBefore, limit) => {
      checkPurgeArguments(doneBefore, limit);
      return purge.run(doneBefore.getTime(), limit).changes;
    },
  };
}

/** prepareVerb - select the messages a verb applies to and apply it to each, in one IMMEDIATE transaction. */
function prepareVerb(db: Database.Database, verb: Verb): (selector: MessageSelector, now: number) => string[] {
  const selectAll = db.prepare<[], { id: string }>(`SELECT m.id FROM messages m WHERE ${verb.where} ORDER BY m.received_at, m.rowid`);
  const selectOne = db.prepare<[string], { id: string }>(`SELECT m.id FROM messages m WHERE m.id = ? AND ${verb.where}`);
  const run = db.transaction((selector: MessageSelector, now: number): string[] => {
    const ids = 'all' in selector ? selectAll.all().map((r) => r.id) : [...new Set(selector.ids)].filter((id) => selectOne.get(id));
    for (const id of ids) verb.apply(id, now);
    return ids;
  });
  return (selector, now) => run.immediate(selector, now);
}
