// Where a message being received by the SQLite store goes, and the order in
// which it becomes durable: the DraftStorage under the shared draft
// lifecycle (draft-lifecycle.ts decides the states and what discard does).
//
// Decides the durable order: the body goes straight to its final name
// (messages/<queue id>, mode 0600), streamed with back-pressure, never held
// whole in memory, and fsynced before write resolves. commit fsyncs the
// directory (so the name survives a crash too) and only then asks the store
// to insert the row: a row never names a body that a crash could lose.
//
// How it fails: write rejects if the body stream errors or ends early, or
// the disk does (the lifecycle then abandons: the partial file is removed at
// once); commit rejects on an fsync error (the file is removed) or a
// database error (no row is left, and the file is left for the next open's
// sweep). abandon never rejects for a missing file, and never removes a file
// this draft did not create.
//
//   SqliteBodyFile - the DraftStorage of the SQLite store (built by the store only).
//   syncDirectory  - fsync a directory, making the names created in it durable.
import type { FileHandle } from 'node:fs/promises';
import { open, rm } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { DraftStorage } from '../draft-lifecycle.ts';
import type { StoredEnvelope } from '../queue-store.ts';

/** What a draft's body file needs from its store. */
export interface BodyFileContext {
  /** Where this draft's body lives. */
  bodyPath: string;
  /** The directory holding body files (fsynced so the new name survives a crash). */
  messagesDir: string;
  logger: Logger;
  /** commitMessage - fsync messagesDir, then insert the envelope row after checking the body file is still the one with inode `ino`; rejects with `phase: 'sync'` when the fsync failed. */
  commitMessage(row: { id: string; envelope: StoredEnvelope; size: number; ino: number }): Promise<void>;
}

export class SqliteBodyFile implements DraftStorage {
  /** The body file while write has it open. */
  #file: FileHandle | undefined;
  /** The body file's inode: commit checks the file at bodyPath is still this one. */
  #ino = 0;
  /** Whether this draft created bodyPath: only then may it remove it. */
  #created = false;
  #size = 0;

  constructor(
    readonly id: string,
    private readonly ctx: BodyFileContext,
  ) {}

  /** write - stream the body to messages/<id> and fsync it; resolves with the byte count. */
  async write(body: Readable, signal: AbortSignal): Promise<number> {
    // 'wx': a queue id names one message only; never write into an existing file.
    this.#file = await open(this.ctx.bodyPath, 'wx', 0o600);
    this.#created = true;
    this.#ino = (await this.#file.stat()).ino;
    let size = 0;
    const count = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        done(null, chunk);
      },
    });
    // flush: fsync before the stream closes the handle, and pipeline
    // resolves only after that close. (autoClose: false would keep the
    // handle for commit to sync, but the stream's reference on the handle
    // then makes FileHandle.close() wait forever.)
    await pipeline(body, count, this.#file.createWriteStream({ flush: true }), { signal });
    this.#file = undefined;
    this.#size = size;
    return size;
  }

  /** commit - fsync the directory, then insert the row (both shared with concurrent drafts: group commit); only then resolve. */
  async commit(envelope: StoredEnvelope): Promise<void> {
    try {
      await this.ctx.commitMessage({ id: this.id, envelope, size: this.#size, ino: this.#ino });
    } catch (error) {
      // A failed directory fsync: no row can name the body, remove it. A failed
      // insert rolled back, but the file is left for the sweep on the next
      // open, which decides under the database write lock: cheaper than being
      // wrong about a half-failed COMMIT.
      if ((error as { phase?: string }).phase === 'sync') await this.#removeFile();
      else this.ctx.logger.warn({ queueId: this.id, err: error }, 'commit failed; body file left for the next sweep');
      throw error;
    }
  }

  /** abandon - remove the body file (a failed write, or a written draft discarded). */
  abandon(): Promise<void> {
    return this.#removeFile();
  }

  /** removeFile - close the handle if still open and delete the body file this draft created; a missing file is fine. */
  async #removeFile(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    if (file) await file.close().catch(() => undefined);
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
