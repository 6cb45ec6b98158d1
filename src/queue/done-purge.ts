// How long the queue remembers a message after it is done. A done message
// keeps its rows (envelope, recipients, attempts: what `queue show` prints)
// for queue.keepDone, then they are removed, so the queue database holds
// that window of history instead of growing for as long as the relay runs.
// Postfix keeps nothing once a message is delivered (its log is the
// history); we keep a window of it, and never touch a message not done.
//
// Decides when and how much: a sweep every interval removes the messages
// done before (now - keepDone), oldest done first, in batches of a bounded
// size, each its own transaction, and at most maxBatches of them. So the
// work is spread evenly: arrivals wait behind one small batch at most, and
// a backlog (the first start after an upgrade, keepDone shortened) drains
// at a bounded rate instead of in one long burst. Sweeps never overlap;
// stop waits for the one in flight, so the store can close after.
//
// How it fails: a sweep that fails is logged and tried again at the next
// interval; only history can be lost, never a message not done.
//
//   RELAY_SWEEP         - the interval, batch size and batches per sweep the relay uses.
//   createDonePurge     - the periodic sweep: start, stop, and sweep now.
//   checkPurgeArguments - purgeDone's arguments, the same rule in both backends.
import type { Logger } from '../observability/logger.ts';
import type { QueueStore } from './queue-store.ts';

/**
 * How the relay sweeps: every second, up to 20 batches of 100, so up to 2,000 messages a second, more than
 * Postern delivers here; one sweep every 30 s of 200 a batch raised the soak's accept p99 by about half
 * (bench/ROUNDS.md, "Sixth round").
 */
export const RELAY_SWEEP = { intervalMs: 1000, batch: 100, maxBatches: 20 } as const;

export interface DonePurgeOptions {
  store: Pick<QueueStore, 'purgeDone'>;
  /** How long a done message is kept (queue.keepDone), in milliseconds; 0: until the next sweep. */
  keepMs: number;
  /** Time between the end of one sweep and the start of the next. */
  intervalMs: number;
  /** Messages removed per transaction. */
  batch: number;
  /** Transactions per sweep at most; what is left waits for the next sweep. */
  maxBatches: number;
  now: () => Date;
  logger: Logger;
}

export interface DonePurge {
  /** start - sweep every intervalMs from now on (the first after one interval). */
  start(): void;
  /** sweep - remove messages done longer than keepMs ago (up to maxBatches × batch), now; resolves with how many. */
  sweep(): Promise<number>;
  /** stop - no further sweeps; resolves once a sweep in flight has finished its batch. */
  stop(): Promise<void>;
}

/** checkPurgeArguments - refuse a purge that could not mean anything sensible (the backends call it first). */
export function checkPurgeArguments(doneBefore: Date, limit: number): void {
  if (Number.isNaN(doneBefore.getTime())) throw new Error('purgeDone: doneBefore is not a valid date');
  if (!Number.isSafeInteger(limit) || limit < 1) throw new Error(`purgeDone: limit must be a whole number >= 1, not ${limit}`);
}

/** createDonePurge - the periodic sweep of done messages older than keepMs. */
export function createDonePurge(options: DonePurgeOptions): DonePurge {
  const { store, keepMs, intervalMs, batch, maxBatches, now, logger } = options;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;
  let stopped = false;

  async function removeAll(): Promise<number> {
    const doneBefore = new Date(now().getTime() - keepMs);
    let removed = 0;
    for (let batches = 1; ; batches++) {
      const count = await store.purgeDone(doneBefore, batch);
      removed += count;
      if (count < batch || batches === maxBatches || stopped) break;
    }
    // Debug: under load this is a line a second; each message's delivery was logged at info already.
    if (removed > 0) logger.debug({ removed, doneBefore }, 'done messages removed from the queue history');
    return removed;
  }

  function sweep(): Promise<number> {
    running ??= removeAll().finally(() => {
      running = undefined;
    });
    return running;
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      sweep()
        .catch((err: unknown) => logger.warn({ err }, 'done messages not removed; next sweep retries'))
        .finally(schedule);
    }, intervalMs);
    // The sweep never keeps a stopping process alive.
    timer.unref();
  }

  return {
    start: schedule,
    sweep,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
