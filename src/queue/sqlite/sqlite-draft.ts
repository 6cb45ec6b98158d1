// A message being received by the SQLite store: its body file and the order
// in which the message becomes durable.
//
// Decides the draft's life: open → writing → written → committing →
// committed, or discarded / failed from any step before committed. The body
// goes straight to its final name (messages/<queue id>, mode 0600), streamed
// with back-pressure, never held whole in memory, and fsynced before
// writeBody resolves. commit() fsyncs the directory (so the name survives a
// crash too) and only then asks the store to insert the row: a row never
// names a body that a crash could lose.
//
// How it fails: writeBody rejects if the body stream errors or ends early, or
// the disk does (the partial file is removed at once); commit rejects if
// called out of order, or on an fsync or database error (no row is left); a
// draft that failed or was discarded stays dead. discard never rejects for a
// missing file and does nothing to a committed message.
//
//   SqliteDraft - the MessageDraft of the SQLite store (built by the store only).
import type { FileHandle } from 'node:fs/promises';
import { open, rm } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { MessageDraft, StoredEnvelope } from '../queue-store.ts';

/** What a draft needs from its store. */
export interface DraftContext {
  /** Where this draft's body lives. */
  bodyPath: string;
  /** The directory holding body files (fsynced so the new name survives a crash). */
  messagesDir: string;
  logger: Logger;
  /** insertMessage - insert the envelope row, after checking the body file is still the one with inode `ino`. */
  insertMessage(row: { id: string; envelope: StoredEnvelope; size: number; ino: number }): void;
  /** release - the draft reached an end (committed, discarded, failed): the store stops tracking it. */
  release(draft: SqliteDraft): void;
}

type DraftState = 'open' | 'writing' | 'written' | 'committing' | 'committed' | 'discarded' | 'failed';

export class SqliteDraft implements MessageDraft {
  #state: DraftState = 'open';
  /** The body file while writeBody has it open. */
  #file: FileHandle | undefined;
  /** The body file's inode: commit checks the file at bodyPath is still this one. */
  #ino = 0;
  /** Whether this draft created bodyPath: only then may it remove it. */
  #created = false;
  #size = 0;
  /** The writeBody or commit in flight, settled (never rejects): discard waits for it. */
  #inFlight: Promise<unknown> = Promise.resolve();
  readonly #abort = new AbortController();

  constructor(
    readonly id: string,
    private readonly ctx: DraftContext,
  ) {}

  /** writeBody - stream the body to messages/<id> and fsync it; resolves with the byte count. */
  writeBody(body: Readable): Promise<number> {
    if (this.#state !== 'open') return Promise.reject(this.#outOfOrder('writeBody'));
    this.#state = 'writing';
    const writing = this.#write(body);
    this.#inFlight = writing.catch(() => undefined);
    return writing;
  }

  /** commit - fsync the directory, then insert the row; only then resolve. */
  commit(envelope: StoredEnvelope): Promise<void> {
    if (this.#state !== 'written') return Promise.reject(this.#outOfOrder('commit'));
    if (envelope.recipients.length === 0) return Promise.reject(new Error(`draft ${this.id}: an envelope needs at least one recipient`));
    this.#state = 'committing';
    const committing = this.#commit(envelope);
    this.#inFlight = committing.catch(() => undefined);
    return committing;
  }

  /** discard - abort a write in progress and remove the body file; no-op once committed. */
  async discard(): Promise<void> {
    const state = this.#state;
    if (state === 'committing') {
      // The commit decides: committed stays committed, a failed one cleaned up after itself.
      await this.#inFlight;
      return;
    }
    if (state === 'committed' || state === 'discarded' || state === 'failed') {
      await this.#inFlight;
      return;
    }
    this.#state = 'discarded';
    if (state === 'writing') {
      this.#abort.abort(); // #write's catch removes the file
      await this.#inFlight;
    } else {
      await this.#removeFile();
    }
    this.ctx.release(this);
  }

  async #write(body: Readable): Promise<number> {
    try {
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
      await pipeline(body, count, this.#file.createWriteStream({ flush: true }), { signal: this.#abort.signal });
      this.#file = undefined;
      this.#size = size;
      this.#state = 'written';
      return size;
    } catch (error) {
      if (this.#state === 'writing') this.#state = 'failed';
      await this.#removeFile();
      this.ctx.release(this);
      throw error;
    }
  }

  async #commit(envelope: StoredEnvelope): Promise<void> {
    try {
      // The bytes were fsynced by writeBody; now the name, so the file is found after a crash.
      await syncDirectory(this.ctx.messagesDir);
    } catch (error) {
      this.#state = 'failed';
      await this.#removeFile();
      this.ctx.release(this);
      throw error;
    }
    try {
      this.ctx.insertMessage({ id: this.id, envelope, size: this.#size, ino: this.#ino });
    } catch (error) {
      // The transaction rolled back, so no row names the body; but the file is
      // left for the sweep on the next open, which decides under the database
      // write lock. Cheaper than being wrong about a half-failed COMMIT.
      this.#state = 'failed';
      this.ctx.logger.warn({ queueId: this.id, err: error }, 'commit failed; body file left for the next sweep');
      this.ctx.release(this);
      throw error;
    }
    this.#state = 'committed';
    this.ctx.release(this);
  }

  /** removeFile - close the handle if still open and delete the body file this draft created; a missing file is fine. */
  async #removeFile(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    if (file) await file.close().catch(() => undefined);
    // Never a file this draft did not create: after EEXIST the name is another message's.
    if (this.#created) await rm(this.ctx.bodyPath, { force: true });
  }

  #outOfOrder(call: string): Error {
    return new Error(`draft ${this.id}: ${call} called when the draft is ${this.#state}`);
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
