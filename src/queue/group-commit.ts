// Group commit, for both stores: items that arrive close together go to
// the database as one batch. The first item of an idle moment starts a
// batch on the next turn of the event loop; items arriving while a batch is
// in flight form the next one. SQLite batches accepted messages and
// recorded attempts into one transaction and one WAL fsync
// (sqlite-group-commit.ts); PostgreSQL batches recorded attempts into one
// statement (pg-deliveries.ts).
//
// How it fails: runBatch answers each item with its result or its own
// Error, or with a promise of one (an item it has to finish on its own,
// which then no longer holds up the next batch); if runBatch itself
// rejects, every item of the batch fails with that error.
//
//   createGroupCommit - add(item) resolves once the batch holding it is done; idle() once no batch is queued or in flight.

export interface GroupCommit<T, R> {
  /** add - resolves (or rejects) with the item's own result once the batch holding it is done (for a store: durable). */
  add(item: T): Promise<R>;
  /** idle - resolves once no item is queued and no batch is in flight (a store drains before it closes); items answered with a promise may still be settling. */
  idle(): Promise<void>;
}

/** createGroupCommit - batch items that arrive close together through `runBatch`. */
export function createGroupCommit<T, R>(runBatch: (items: T[]) => Promise<(R | Error | Promise<R | Error>)[]>): GroupCommit<T, R> {
  let queue: { item: T; resolve: (result: R) => void; reject: (error: Error) => void }[] = [];
  let flushing: Promise<void> | undefined;

  async function flush(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      let results: (R | Error | Promise<R | Error>)[];
      try {
        results = await runBatch(batch.map((entry) => entry.item));
      } catch (error) {
        results = batch.map(() => (error instanceof Error ? error : new Error(String(error))));
      }
      batch.forEach((entry, i) => {
        const settle = (result: R | Error) => (result instanceof Error ? entry.reject(result) : entry.resolve(result));
        const result = results[i]!;
        if (result instanceof Promise) void result.then(settle, (error: unknown) => entry.reject(error instanceof Error ? error : new Error(String(error))));
        else settle(result);
      });
    }
    flushing = undefined;
  }

  return {
    add: (item) =>
      new Promise<R>((resolve, reject) => {
        queue.push({ item, resolve, reject });
        flushing ??= new Promise((started) => setImmediate(started)).then(flush);
      }),
    idle: async () => {
      while (flushing) await flushing;
    },
  };
}
