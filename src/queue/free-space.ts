// How many bytes the file system under the queue still has for it, for the
// SMTP server's refusal when that runs low (inbound/policy.ts,
// decideQueueSpace). A statfs is a trip to the thread pool, so one reading
// serves every MAIL FROM for FREE_SPACE_MAX_AGE_MS; readings that overlap
// share one call. The age is short because the queue grows fast: 861 4 KB
// messages (4 MB of database and 4 MB of WAL) filled an 8 MB file system in
// under a second, so with a reading a second old the disk filled before the
// refusal began.
//
//   createFreeSpaceReader - a cached reader of one directory's free bytes.
//
// How it fails: never rejects; a statfs that fails (the directory is gone,
// the file system is not there) reads as undefined, "not known", for as long
// as a reading is kept. The queue's own writes still fail safely when the
// disk is full (451 4.3.0 at the end of DATA).
import { statfs } from 'node:fs/promises';

/** How long one reading is used. */
export const FREE_SPACE_MAX_AGE_MS = 100;

/** createFreeSpaceReader - bytes available to this process on the file system holding `dir` (statfs bavail × bsize), at most FREE_SPACE_MAX_AGE_MS old. */
export function createFreeSpaceReader(dir: string, now: () => number = Date.now): () => Promise<number | undefined> {
  let readAt = -Infinity;
  let reading: Promise<number | undefined> | undefined;
  return () => {
    if (reading && now() - readAt < FREE_SPACE_MAX_AGE_MS) return reading;
    readAt = now();
    reading = statfs(dir).then(
      (fs) => fs.bavail * fs.bsize,
      () => undefined,
    );
    return reading;
  };
}
