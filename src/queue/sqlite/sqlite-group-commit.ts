// Group commit for the SQLite store: writes that arrive close together
// (accepted messages, recorded attempts) share one transaction and one fsync
// of the WAL (sqlite-wal-sync.ts): the first write of an idle moment starts
// a batch on the next turn of the event loop; writes arriving while a batch
// is being made durable form the next one. Each item's own failure is its
// own (a SAVEPOINT per item inside the transaction); a failure of the batch
// as a whole (the fsync) fails every item in it.

/** createGroupCommit - run(item) resolves once the batch holding it is durable. */
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

/** eachInSavepoint - apply `one` to every item inside the caller's transaction; an item that throws is rolled back alone. */
export function eachInSavepoint<T, R>(items: T[], one: (item: T) => R): (R | Error)[] {
  return items.map((item) => {
    try {
      return one(item);
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  });
}
