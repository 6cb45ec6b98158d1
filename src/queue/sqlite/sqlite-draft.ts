// Where a message being received by the SQLite store goes, and the order in
// which it becomes durable: the DraftStorage under the shared draft
// lifecycle (draft-lifecycle.ts decides the states and what discard does).
//
// Decides where a body lives: up to INLINE_BODY_LIMIT bytes it is stored in
// the message row by the commit transaction (one WAL fsync for a whole batch
// of messages, no file to open, sync, read and remove). A larger body goes
// to its own file (messages/<queue id>, mode 0600), durable before write
// resolves: a body of at most WRITE_BATCH bytes is held whole and written
// with one writev to a file opened O_DSYNC (every file operation is a trip
// to the thread pool: open, write, close); a larger one is written in
// batches of up to WRITE_BATCH bytes with back-pressure, never held whole
// in memory, and fsynced once at the end. Commit then fsyncs the
// directory (so the name survives a crash too) before the row is inserted:
// a row never names a body file that a crash could lose. A body of at most
// WRITE_BATCH bytes was held whole: commit hands it to the store with the
// row, for its recent-bodies cache.
//
// How it fails: write rejects if the body stream errors or ends early, the
// draft is discarded (the signal aborts), or the disk fails or fills (a
// short write is an error); the lifecycle then abandons: a partial file is
// removed at once. Commit rejects on an
// fsync error (the file is removed) or a database error (no row is left,
// and a file is left for the next open's sweep). abandon never rejects for
// a missing file, and never removes a file this draft did not create.
//
//   SqliteBodyFile    - the DraftStorage of the SQLite store (built by the store only).
//   INLINE_BODY_LIMIT - the largest body kept in the database row.
//   WRITE_BATCH       - the most bytes held before a write to a body file; a body this small is held whole.
//   syncDirectory     - fsync a directory, making the names created in it durable.
//   removeFile        - unlink a body file; one that is already gone is fine.
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open, unlink } from 'node:fs/promises';
import { finished, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { DraftStorage } from '../draft-lifecycle.ts';
import type { StoredEnvelope } from '../queue-store.ts';

/**
 * The largest body stored in its message row; a larger one gets a file. A file costs open, an O_DSYNC
 * write, close, a directory fsync and an unlink, each a thread-pool trip whose wake-up competes with the
 * event loop for two cores; a body in the row costs SQLite writing it twice (WAL, then checkpoint) on the
 * event loop.
 * Alternating bench runs (eleventh round, bench/ROUNDS.md): 100 KB bodies in the row took 1.38-1.42 ms of CPU
 * per message against 1.49-1.56 as files (STARTTLS 1.79-1.84 against 2.11-2.21), 120 KB 1.76-1.78 against
 * 1.85-1.98, but 200 KB 2.29-2.31 against 2.25-2.28 at a lower rate.
 */
export const INLINE_BODY_LIMIT = 128 * 1024;

/** The most bytes kept in memory before they are written to a body file (one writev). */
export const WRITE_BATCH = 256 * 1024;

/** Where a committed body is: in the row, or in its file (commit checks the file is still there). */
export type StoredBody = { inline: Buffer } | { file: true };

/** What a draft's body file needs from its store. */
export interface BodyFileContext {
  /** Where this draft's body lives if it is too large for the row. */
  bodyPath: string;
  logger: Logger;
  /**
   * commitMessage - (for a body file: fsync the directory, check the file) insert the envelope row; rejects
   * with `phase: 'sync'` when the fsync failed. `wholeBody`: the body's chunks, when it was never larger than WRITE_BATCH.
   */
  commitMessage(row: { id: string; envelope: StoredEnvelope; size: number; body: StoredBody; wholeBody: Buffer[] | undefined }): Promise<void>;
}

export class SqliteBodyFile implements DraftStorage {
  /** The body file while write has it open. */
  #file: FileHandle | undefined;
  /** Whether this draft created bodyPath: only then may it remove it. */
  #created = false;
  #body: StoredBody | undefined;
  /** The whole body, when it was never more than WRITE_BATCH bytes. */
  #wholeBody: Buffer[] | undefined;
  #size = 0;

  constructor(
    readonly id: string,
    private readonly ctx: BodyFileContext,
  ) {}

  /** write - hold the body, or stream it to messages/<id> in WRITE_BATCH writes and fsync it once it is too large; resolves with the byte count. */
  async write(body: Readable, signal: AbortSignal): Promise<number> {
    const stop = () => body.destroy(new Error(`draft ${this.id}: discarded while its body was being written`));
    if (signal.aborted) stop();
    signal.addEventListener('abort', stop, { once: true });
    try {
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let size = 0;
      await eachChunk(body, (chunk) => {
        size += chunk.length;
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes <= WRITE_BATCH) return undefined;
        const batch = pending;
        const batchBytes = pendingBytes;
        pending = [];
        pendingBytes = 0;
        return this.#writeBatch(batch, batchBytes);
      });
      if (this.#file || size > INLINE_BODY_LIMIT) {
        if (this.#file) {
          // Streamed in batches: one fsync at the end.
          await writeAll(this.#file, pending, pendingBytes);
          await this.#file.sync();
        } else {
          // Held whole: one write that returns once the bytes are on disk (O_DSYNC), a trip to the thread pool fewer.
          await writeAll(await this.#createFile(WRITTEN_AT_ONCE), pending, pendingBytes);
          this.#wholeBody = pending;
        }
        await this.#closeFile();
        this.#body = { file: true };
      } else {
        const inline = Buffer.concat(pending, size);
        this.#body = { inline };
        this.#wholeBody = [inline];
      }
      this.#size = size;
      return size;
    } finally {
      signal.removeEventListener('abort', stop);
    }
  }

  /** commit - insert the row (shared with concurrent drafts: group commit), after the directory fsync for a body file; only then resolve. */
  async commit(envelope: StoredEnvelope): Promise<void> {
    if (!this.#body) throw new Error(`draft ${this.id}: commit before the body was written`);
    try {
      await this.ctx.commitMessage({ id: this.id, envelope, size: this.#size, body: this.#body, wholeBody: this.#wholeBody });
    } catch (error) {
      // A failed directory fsync: no row can name the body, remove it. A failed
      // insert rolled back, but a file is left for the sweep on the next
      // open, which decides under the database write lock: cheaper than being
      // wrong about a half-failed COMMIT.
      if ((error as { phase?: string }).phase === 'sync') await this.#removeFile();
      else if (this.#created) this.ctx.logger.warn({ queueId: this.id, err: error }, 'commit failed; body file left for the next sweep');
      throw error;
    }
  }

  /** abandon - drop the body (a failed write, or a written draft discarded): remove the file, if there is one. */
  abandon(): Promise<void> {
    this.#body = undefined;
    this.#wholeBody = undefined;
    return this.#removeFile();
  }

  /** writeBatch - one batch of a body too large to hold whole, to the file (created by the first). */
  async #writeBatch(chunks: Buffer[], bytes: number): Promise<void> {
    await writeAll(this.#file ?? (await this.#createFile(STREAMED)), chunks, bytes);
  }

  /** createFile - open messages/<id> for this draft alone. */
  async #createFile(flags: number): Promise<FileHandle> {
    this.#file = await open(this.ctx.bodyPath, flags, 0o600);
    this.#created = true;
    return this.#file;
  }

  async #closeFile(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    await file?.close();
  }

  /** removeFile - close the handle if still open and delete the body file this draft created; a missing file is fine. */
  async #removeFile(): Promise<void> {
    await this.#closeFile().catch(() => undefined);
    // Never a file this draft did not create: after EEXIST the name is another message's.
    if (this.#created) await removeFile(this.ctx.bodyPath);
  }
}

// O_EXCL: a queue id names one message only; never write into an existing file.
const STREAMED = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;
/** O_DSYNC: each write returns once its bytes (and the size that reads them back) are on disk, as after fdatasync. */
const WRITTEN_AT_ONCE = STREAMED | constants.O_DSYNC;

/**
 * eachChunk - hand each chunk of `body` to `onChunk` as it arrives, the stream paused while a write that
 * onChunk started is in progress. Resolves once the body ended; rejects on the stream's error, its close
 * before the end, or a failed write (which destroys the stream); either only after the write in progress
 * settled, so the caller may then remove the file. Not `for await`: its reads join the chunks that arrived
 * during a write into one copy (3% of the event loop's time with 10 MB messages), where flowing mode hands
 * them over one by one.
 */
function eachChunk(body: Readable, onChunk: (chunk: Buffer) => Promise<void> | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    let writing: Promise<void> = Promise.resolve();
    let failedWrite: Error | undefined;
    body.on('data', (chunk: Buffer) => {
      const write = onChunk(chunk);
      if (!write) return;
      body.pause();
      writing = write.then(
        () => void body.resume(),
        (error: Error) => {
          failedWrite = error;
          body.destroy(error);
        },
      );
    });
    // finished: also for a stream that ended, failed or closed before it was handed over.
    finished(body, { writable: false }, (error) => {
      void writing.then(() => {
        const failure = failedWrite ?? error;
        if (failure) reject(failure);
        else resolve();
      });
    });
    body.resume();
  });
}

/** writeAll - one writev of `chunks`; a short write (a full disk) is an error, never a silently shorter body. */
async function writeAll(file: FileHandle, chunks: Buffer[], bytes: number): Promise<void> {
  if (chunks.length === 0) return;
  const { bytesWritten } = await file.writev(chunks);
  if (bytesWritten !== bytes) throw new Error(`body file: wrote ${bytesWritten} of ${bytes} bytes`);
}

/** syncDirectory - fsync a directory, making the names created in it durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** removeFile - unlink a body file (one syscall: rm would lstat first); one that is already gone is fine. */
export async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
