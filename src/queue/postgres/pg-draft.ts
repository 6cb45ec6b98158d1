// Where a message being received by the PostgreSQL store goes: one
// transaction on one pooled connection, from the first body byte to the
// COMMIT. The DraftStorage under the shared draft lifecycle
// (draft-lifecycle.ts decides the states and what discard does).
//
// Decides the transaction: write takes a connection, BEGINs, and streams
// the body into message_chunks with back-pressure (pg-body.ts); commit
// inserts the envelope rows and COMMITs on the same connection. The session
// runs with synchronous_commit=on (pg-connection.ts, and SET LOCAL here in
// case a pooler dropped the startup options), so commit resolves only once
// the WAL is flushed: only then may the client hear 250. Nothing is visible
// to anyone before the COMMIT, and a draft that is discarded, fails, or
// whose process or connection dies is rolled back by PostgreSQL itself:
// nothing is left to sweep.
//
// How it fails: write rejects if the body stream errors or the database
// does (the lifecycle then abandons: the transaction is rolled back at
// once); commit rejects on a database error (rolled back; if the connection
// broke during COMMIT the outcome is unknown, and the client, told 4xx, may
// send again: at least once). abandon never rejects: a connection that
// cannot roll back is dropped, not reused.
//
//   PgDraftTransaction - the DraftStorage of the PostgreSQL store (built by the store only).
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import type { Logger } from '../../observability/logger.ts';
import type { DraftStorage } from '../draft-lifecycle.ts';
import type { StoredEnvelope } from '../queue-store.ts';
import { createChunkWriter, type WrittenBody } from './pg-body.ts';
import { insertEnvelope } from './pg-commit.ts';

/** What a draft's transaction needs from its store. */
export interface DraftTransactionContext {
  /** The pool drafts take their connection from (one per draft, held until commit or discard). */
  pool: pg.Pool;
  logger: Logger;
}

export class PgDraftTransaction implements DraftStorage {
  /** The connection holding this draft's transaction, from BEGIN to COMMIT or ROLLBACK. */
  #client: pg.PoolClient | undefined;
  /** A connection error seen while the client sat idle in our transaction. */
  #broken: Error | undefined;
  #body: WrittenBody = { size: 0, chunks: 0 };
  readonly #onClientError = (error: Error): void => {
    this.#broken = error;
  };

  constructor(
    readonly id: string,
    private readonly ctx: DraftTransactionContext,
  ) {}

  /** write - BEGIN on a connection of our own and stream the body into chunk rows; resolves with the byte count. */
  async write(body: Readable, signal: AbortSignal): Promise<number> {
    const client = await this.ctx.pool.connect();
    this.#client = client;
    client.on('error', this.#onClientError);
    // One round trip; SET LOCAL lasts until this transaction ends.
    await client.query('BEGIN; SET LOCAL synchronous_commit TO on');
    const writer = createChunkWriter(client, this.id);
    // Discarded while waiting for the connection: the signal is aborted and pipeline rejects at once.
    await pipeline(body, writer.sink, { signal });
    this.#body = writer.written();
    return this.#body.size;
  }

  /** commit - insert the envelope rows and COMMIT; resolves once PostgreSQL says the COMMIT is durable. */
  async commit(envelope: StoredEnvelope): Promise<void> {
    const client = this.#client;
    try {
      if (!client) throw new Error(`draft ${this.id}: no transaction to commit`);
      if (this.#broken) throw this.#broken;
      await insertEnvelope(client, { id: this.id, envelope, size: this.#body.size, chunks: this.#body.chunks });
      // An aborted transaction answers COMMIT with ROLLBACK, not an error.
      const committed = await client.query('COMMIT');
      if (committed.command !== 'COMMIT') throw new Error(`draft ${this.id}: the transaction was rolled back (${committed.command})`);
    } catch (error) {
      this.ctx.logger.warn({ queueId: this.id, err: error }, 'commit failed; the transaction is rolled back');
      await this.#rollback();
      throw error;
    }
    this.#releaseClient();
  }

  /** abandon - roll the transaction back (a failed write, or a written draft discarded). */
  abandon(): Promise<void> {
    return this.#rollback();
  }

  /** rollback - end the transaction and give the connection back (or drop it, if it is in doubt); never rejects. */
  async #rollback(): Promise<void> {
    const client = this.#client;
    if (!client) return;
    let broken = this.#broken;
    if (!broken) {
      try {
        await client.query('ROLLBACK');
      } catch (error) {
        broken = error instanceof Error ? error : new Error(String(error));
      }
    }
    this.#releaseClient(broken);
  }

  /** releaseClient - back to the pool, or destroyed when `broken` (a connection in an unknown state is never reused). */
  #releaseClient(broken?: Error): void {
    const client = this.#client;
    if (!client) return;
    this.#client = undefined;
    client.off('error', this.#onClientError);
    client.release(broken ?? this.#broken);
  }
}
