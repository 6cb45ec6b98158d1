// How many bytes the file system under the queue still has for it, for the
// SMTP server's refusal when that runs low (inbound/policy.ts,
// decideQueueSpace). A statfs is a trip to the thread pool, so one reading
// serves every MAIL FROM for FREE_SPACE_MAX_AGE_MS after it came back, and
// a reading still running serves everyone who asks meanwhile (a hung disk
// gets one statfs, not one per MAIL FROM). The age is short because the
// queue grows fast: 861 4 KB messages (4 MB of database and 4 MB of WAL)
// filled an 8 MB file system in under a second, so with a reading a second
// old the disk filled before the refusal began. The age is taken on a
// monotonic clock: a wall clock set back would keep an old reading. A
// store that will take more of the disk by itself (SQLite's WAL growing to
// its checkpoint size) names that as `reserved`, read with each statfs and
// taken off what it reads; a `reserved` that fails makes the reading
// undefined, as a failed statfs does.
//
//   createFreeSpaceReader - a cached reader of one directory's free bytes.
//
// How it fails: never rejects; a statfs that fails (the directory is gone,
// the file system is not there) reads as undefined, "not known", for as long
// as a reading is kept. The queue's own writes still fail safely when the
// disk is full (451 4.3.0 at the end of DATA).
import { statfs } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';

/** How long one reading is used after it came back. */
export const FREE_SPACE_MAX_AGE_MS = 100;

export interface FreeSpaceOptions {
  /** The clock a reading's age is taken on (monotonic; a test's own). */
  now?: () => number;
  /** Bytes the store will take by itself and does not hold yet, taken off each reading. */
  reserved?: () => Promise<number>;
}

/** createFreeSpaceReader - bytes available to this process on the file system holding `dir` (statfs bavail × bsize, less `reserved`), at most FREE_SPACE_MAX_AGE_MS old. */
export function createFreeSpaceReader(dir: string, options: FreeSpaceOptions = {}): () => Promise<number | undefined> {
  const now = options.now ?? (() => performance.now());
  const reserved = options.reserved ?? (() => Promise.resolve(0));
  let reading: Promise<number | undefined> | undefined;
  /** When the last reading came back; undefined while one is running. */
  let readAt: number | undefined;
  return () => {
    if (reading && (readAt === undefined || now() - readAt < FREE_SPACE_MAX_AGE_MS)) return reading;
    readAt = undefined;
    reading = Promise.all([statfs(dir), Promise.resolve().then(reserved)]).then(
      ([fs, taken]) => fs.bavail * fs.bsize - taken,
      () => undefined,
    );
    void reading.then(() => (readAt = now()));
    return reading;
  };
}
