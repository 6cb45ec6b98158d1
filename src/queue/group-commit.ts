// Group commit, for both stores: items that arrive close together go to
// the database as one batch. The first item of an idle moment starts a
// batch on the next turn of the event loop; items arriving while a batch is
// in flight form the next one. SQLite batches accepted messages and
// recorded attempts into one transaction and one WAL fsync
// (sqlite-group-commit.ts); PostgreSQL batches recorded attempts into one
// statement (pg-deliveries.ts).
//
// How it fails: runBatch answers each item with its result or its own
// Error; if runBatch itself rejects, every item of the batch fails with
// that error.
//
//   createGroupCommit - run(item) resolves once the batch holding it is done.

/** createGroupCommit - run(item) resolves once the batch holding it is done (for a store: durable). */
export function createGroupCommit<T, R>(runBatch: (items: T[]) => Promise<(R | Error)[]>): (item: T) => Promise<R> {
  let queue: { item: T; resolve: (result: R) => void; reject: (error: Error) => void }[] = [];
  let flushing = false;

  async function flush(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      let results: (R | Error)[];
      try {
        results = await runBatch(batch.map((entry) => entry.item));
      } catch (error) {
        results = batch.map(() => (error instanceof Error ? error : new Error(String(error))));
      }
      batch.forEach((entry, i) => {
        const result = results[i] as R | Error;
        if (result instanceof Error) entry.reject(result);
        else entry.resolve(result);
      });
    }
    flushing = false;
  }

  return (item) =>
    new Promise<R>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (flushing) return;
      flushing = true;
      setImmediate(() => void flush());
    });
}
