// Group commit, for both stores: items that arrive close together go to
// the database as one batch. The first item of an idle moment starts a
// batch on the next turn of the event loop; items arriving while a batch is
// in flight form the next one. SQLite batches accepted messages and
// recorded attempts into one transaction and one WAL fsync
// (sqlite-group-commit.ts); PostgreSQL batches recorded attempts into one
// statement (pg-deliveries.ts).
//
// Decides, when a store asks for spacing, when the next batch starts. Every
// batch has a cost of its own (in SQLite: the b-tree pages each transaction
// writes to the WAL again, an fsync, a wake-up of the event loop). With many
// senders and a disk that fsyncs in a fraction of a millisecond, batches
// follow each other hundreds of times a second with two or three items
// each, and the event loop spends itself on them. So when a batch and the
// items that came in during it show several writers at once (the store
// says what shows it), the next batch waits for more, as PostgreSQL's
// commit_delay does when commit_siblings are active: until `ms` after the
// last batch started, and only while the event loop is busy, through the
// batch and then through each step of the wait (serving the senders whose
// items will join). Once it idles, waiting would only add latency, and the
// batch starts. Nothing queued, no wait.
//
// How it fails: runBatch answers each item with its result or its own
// Error, or with a promise of one (an item it has to finish on its own,
// which then no longer holds up the next batch); if runBatch itself
// rejects, every item of the batch fails with that error.
//
//   createGroupCommit - add(item) resolves once the batch holding it is done; idle() once no batch is queued or in flight.
//   BatchSpacing      - what a store passes for spacing: the most time, and how it tells several writers.
//   keepWaiting       - whether the next batch waits another step (pure), by SPACING_STEP_MS and BUSY_UTILIZATION.
import { performance } from 'node:perf_hooks';

export interface GroupCommit<T, R> {
  /** add - resolves (or rejects) with the item's own result once the batch holding it is done (for a store: durable). */
  add(item: T): Promise<R>;
  /** idle - resolves once no item is queued and no batch is in flight (a store drains before it closes); items answered with a promise may still be settling. */
  idle(): Promise<void>;
}

/** When the next batch waits for more items. */
export interface BatchSpacing<T> {
  /** The most time from one batch's start to the next one's that waiting may make. */
  ms: number;
  /** concurrent - whether `batch` and the items that arrived while it was in flight show several writers at once. */
  concurrent(batch: T[], arrived: T[]): boolean;
}

/** The event loop is checked this often while the next batch waits. */
export const SPACING_STEP_MS = 1;

/** The share of a step (and of the batch before it) the event loop must have spent working, not waiting for I/O, for the next batch to wait on. */
export const BUSY_UTILIZATION = 0.8;

/** keepWaiting - whether the next batch waits another step: a whole step is left, and the loop was busy through the last one. */
export function keepWaiting(spacingMs: number, sinceLastStartMs: number, stepUtilization: number): boolean {
  return sinceLastStartMs + SPACING_STEP_MS <= spacingMs && stepUtilization >= BUSY_UTILIZATION;
}

/** createGroupCommit - batch items that arrive close together through `runBatch`, spaced by `spacing` if given. */
export function createGroupCommit<T, R>(
  runBatch: (items: T[]) => Promise<(R | Error | Promise<R | Error>)[]>,
  spacing?: BatchSpacing<T>,
): GroupCommit<T, R> {
  let queue: { item: T; resolve: (result: R) => void; reject: (error: Error) => void }[] = [];
  let flushing: Promise<void> | undefined;

  async function flush(): Promise<void> {
    while (queue.length > 0) {
      const started = performance.now();
      const startedLoop = performance.eventLoopUtilization();
      const batch = queue;
      queue = [];
      const items = batch.map((entry) => entry.item);
      let results: (R | Error | Promise<R | Error>)[];
      try {
        results = await runBatch(items);
      } catch (error) {
        results = batch.map(() => (error instanceof Error ? error : new Error(String(error))));
      }
      batch.forEach((entry, i) => {
        const settle = (result: R | Error) => (result instanceof Error ? entry.reject(result) : entry.resolve(result));
        const result = results[i]!;
        if (result instanceof Promise) void result.then(settle, (error: unknown) => entry.reject(error instanceof Error ? error : new Error(String(error))));
        else settle(result);
      });
      if (queue.length > 0 && spacing?.concurrent(items, queue.map((entry) => entry.item))) {
        await waitWhileBusy(spacing.ms, started, performance.eventLoopUtilization(startedLoop).utilization);
      }
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

/** waitWhileBusy - wait in steps while keepWaiting says so, the last batch having started at `started` and kept the loop busy `batchUtilization` of its time. */
async function waitWhileBusy(spacingMs: number, started: number, batchUtilization: number): Promise<void> {
  let utilization = batchUtilization;
  while (keepWaiting(spacingMs, performance.now() - started, utilization)) {
    const mark = performance.eventLoopUtilization();
    await new Promise((stepped) => setTimeout(stepped, SPACING_STEP_MS));
    utilization = performance.eventLoopUtilization(mark).utilization;
  }
}
