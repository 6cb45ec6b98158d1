// Where a message being received by the SQLite store goes, and the order in
// which it becomes durable: the DraftStorage under the shared draft
// lifecycle (draft-lifecycle.ts decides the states and what discard does).
//
// Decides where a body lives: up to INLINE_BODY_LIMIT bytes it is held in
// memory and stored in the message row by the commit transaction (one WAL
// fsync for a whole batch of messages, no file to open, sync, read and
// remove). A larger body goes to its own file (messages/<queue id>, mode
// 0600) as soon as it passes the limit, streamed with back-pressure, never
// held whole in memory, and fsynced before write resolves; commit then
// fsyncs the directory (so the name survives a crash too) before the row
// is inserted: a row never names a body file that a crash could lose.
//
// How it fails: write rejects if the body stream errors or ends early, the
// draft is discarded (the signal aborts), or the disk fails (the lifecycle
// then abandons: a partial file is removed at once); commit rejects on an
// fsync error (the file is removed) or a database error (no row is left,
// and a file is left for the next open's sweep). abandon never rejects for
// a missing file, and never removes a file this draft did not create.
//
//   SqliteBodyFile    - the DraftStorage of the SQLite store (built by the store only).
//   INLINE_BODY_LIMIT - the largest body kept in the database row.
//   syncDirectory     - fsync a directory, making the names created in it durable.
import type { FileHandle } from 'node:fs/promises';
import { open, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { DraftStorage } from '../draft-lifecycle.ts';
import type { StoredEnvelope } from '../queue-store.ts';

/**
 * The largest body stored in its message row; a larger one gets a file. For a small body the fixed cost of
 * a file (open, fsync, close, directory fsync, unlink) dominates; a large one SQLite writes twice (WAL, then
 * checkpoint) on the event loop, where a file is written from the thread pool (bench: 100 KB bodies in the
 * row cost 6.5-7.3 ms CPU per message, 5.1 as files). Most mail is smaller than this.
 */
export const INLINE_BODY_LIMIT = 32 * 1024;

/** Where a committed body is: in the row, or in the file with this inode (commit checks it is still that file). */
export type StoredBody = { inline: Buffer } | { fileIno: number };

/** What a draft's body file needs from its store. */
export interface BodyFileContext {
  /** Where this draft's body lives if it is too large for the row. */
  bodyPath: string;
  logger: Logger;
  /** commitMessage - (for a body file: fsync the directory, check the file) insert the envelope row; rejects with `phase: 'sync'` when the fsync failed. */
  commitMessage(row: { id: string; envelope: StoredEnvelope; size: number; body: StoredBody }): Promise<void>;
}

export class SqliteBodyFile implements DraftStorage {
  /** The body file while write has it open. */
  #file: FileHandle | undefined;
  /** Whether this draft created bodyPath: only then may it remove it. */
  #created = false;
  #body: StoredBody | undefined;
  #size = 0;

  constructor(
    readonly id: string,
    private readonly ctx: BodyFileContext,
  ) {}

  /** write - hold the body, or stream it to messages/<id> and fsync it once it is too large; resolves with the byte count. */
  async write(body: Readable, signal: AbortSignal): Promise<number> {
    const stop = () => body.destroy(new Error(`draft ${this.id}: discarded while its body was being written`));
    if (signal.aborted) stop();
    signal.addEventListener('abort', stop, { once: true });
    try {
      let held: Buffer[] = [];
      let size = 0;
      let ino = 0;
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (this.#file) {
          await this.#file.write(chunk);
          continue;
        }
        held.push(chunk);
        if (size <= INLINE_BODY_LIMIT) continue;
        // 'wx': a queue id names one message only; never write into an existing file.
        this.#file = await open(this.ctx.bodyPath, 'wx', 0o600);
        this.#created = true;
        ino = (await this.#file.stat()).ino;
        await this.#file.writev(held);
        held = [];
      }
      if (this.#file) {
        await this.#file.sync();
        await this.#closeFile();
        this.#body = { fileIno: ino };
      } else {
        this.#body = { inline: Buffer.concat(held, size) };
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
      await this.ctx.commitMessage({ id: this.id, envelope, size: this.#size, body: this.#body });
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
    return this.#removeFile();
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
    if (this.#created) await rm(this.ctx.bodyPath, { force: true });
  }
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
