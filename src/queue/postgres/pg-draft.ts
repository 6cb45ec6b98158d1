// Where a message being received by the PostgreSQL store goes: full chunk
// rows as the body arrives, then one statement that inserts the envelope and
// the last chunk. The DraftStorage under the shared draft lifecycle
// (draft-lifecycle.ts decides the states and what discard does).
//
// Decides how long a draft holds a database connection: only for each
// statement. A draft that held one transaction from the first body byte to
// the COMMIT held a pooled connection for as long as its client took to send
// DATA, so as many clients as the pool has connections, sending slowly (20:
// what one address may open), stopped every other message at the end of
// DATA. Now write streams the body through the chunk writer (pg-body.ts),
// which inserts each full row on its own; commit inserts the rest and the
// envelope in one statement that waits for the WAL flush (pg-commit.ts), so
// commit resolves only once the message is durable: only then may the
// client hear 250. Nothing is visible as a message before that statement. A
// draft discarded before its commit deletes its rows; rows left by a failed
// commit, a failed delete or a node that died mid-DATA are swept once a day
// old (pg-body.ts).
//
// How it fails: write rejects if the body stream errors or the database
// does; commit rejects on a database error, or when a row written before is
// gone or older than DRAFT_MAX_AGE: nothing is inserted, and its rows are
// left to the sweep (if the connection broke during the statement the
// outcome is unknown, and the client, told 4xx, may send again: at least
// once). abandon never rejects: a delete that fails leaves the rows to the
// sweep.
//
//   PgDraft - the DraftStorage of the PostgreSQL store (built by the store only).
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import type { Logger } from '../../observability/logger.ts';
import type { DraftStorage } from '../draft-lifecycle.ts';
import type { StoredEnvelope } from '../queue-store.ts';
import { createChunkWriter, deleteChunks, type WrittenBody } from './pg-body.ts';
import { insertEnvelope } from './pg-commit.ts';

/** What a draft needs from its store. */
export interface DraftContext {
  /** The pool a draft's statements take a connection from, one statement at a time. */
  pool: pg.Pool;
  logger: Logger;
  /** Called once a body that fit in the commit's own row is durable, with that body. */
  keepBody(id: string, body: Buffer): void;
}

export class PgDraft implements DraftStorage {
  #writer: ReturnType<typeof createChunkWriter> | undefined;

  constructor(
    readonly id: string,
    private readonly ctx: DraftContext,
  ) {}

  /** write - stream the body into chunk rows, the last one kept for commit; resolves with the byte count. */
  async write(body: Readable, signal: AbortSignal): Promise<number> {
    this.#writer = createChunkWriter(this.ctx.pool, this.id);
    await pipeline(body, this.#writer.sink, { signal });
    return this.#writer.written().size;
  }

  /** commit - insert the envelope and the last chunk; resolves once PostgreSQL says the message is durable. */
  async commit(envelope: StoredEnvelope): Promise<void> {
    const body: WrittenBody = this.#writer?.written() ?? { size: 0, rows: 0, rest: Buffer.alloc(0) };
    try {
      await insertEnvelope(this.ctx.pool, { id: this.id, envelope, body });
      if (body.rows === 0) this.ctx.keepBody(this.id, body.rest);
    } catch (error) {
      // The rows stay for the orphan sweep: a statement whose connection broke may still have committed,
      // and then they are the message's body.
      this.ctx.logger.warn({ queueId: this.id, err: error }, 'commit failed');
      throw error;
    }
  }

  /** abandon - delete the rows written so far, once no insert is in flight; never rejects. */
  async abandon(): Promise<void> {
    const writer = this.#writer;
    if (!writer) return;
    await writer.idle();
    if (writer.written().rows === 0) return;
    try {
      await deleteChunks(this.ctx.pool, this.id);
    } catch (error) {
      this.ctx.logger.warn({ queueId: this.id, err: error }, 'could not delete a discarded draft’s chunk rows; the orphan sweep will');
    }
  }
}
