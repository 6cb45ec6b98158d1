// Group commit for the SQLite store: writes that arrive close together
// (accepted messages, recorded attempts) share one transaction and one fsync
// of the WAL (sqlite-wal-sync.ts), batched by group-commit.ts. Each item's
// own failure is its own (batchTransaction); a failure of the batch as a
// whole (the fsync) fails every item in it.
import type Database from 'better-sqlite3';

/**
 * batchTransaction - one IMMEDIATE transaction applying `one` to every item of a batch, each item's failure
 * its own. Optimistic: the items run straight; only if one of them throws does the transaction roll back
 * and run again with a SAVEPOINT per item, so the failure rolls back that item alone. (A SAVEPOINT and its
 * RELEASE were two of the ten or so statements per item, and items almost never fail.) A failure of the
 * transaction itself (the write lock not had in busy_timeout, COMMIT) is thrown at once, not retried. `one`
 * may run twice: it must change nothing but the database.
 */
export function batchTransaction<T, R>(db: Database.Database, one: (item: T) => R): (items: T[]) => (R | Error)[] {
  const straight = db.transaction((items: T[]): (R | Error)[] =>
    items.map((item) => {
      try {
        return one(item);
      } catch (error) {
        throw new ItemFailed(error);
      }
    }),
  );
  const inSavepoint = db.transaction(one); // called inside a transaction: a SAVEPOINT
  const isolated = db.transaction((items: T[]): (R | Error)[] =>
    items.map((item) => {
      try {
        return inSavepoint(item);
      } catch (error) {
        // SQLite rolls the whole transaction back by itself on some errors (a full disk, an I/O error): the
        // rest would then run outside it, each committed on its own while the batch reports failure.
        if (!db.inTransaction) throw error;
        return error instanceof Error ? error : new Error(String(error));
      }
    }),
  );
  return (items) => {
    try {
      return straight.immediate(items);
    } catch (error) {
      if (!(error instanceof ItemFailed)) throw error;
      return isolated.immediate(items);
    }
  };
}

/** One item of a straight batch threw: the batch runs again, item by item. */
class ItemFailed extends Error {
  constructor(cause: unknown) {
    super('an item of the batch failed', { cause });
  }
}
