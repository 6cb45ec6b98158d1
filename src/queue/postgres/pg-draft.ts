// A message being received by the PostgreSQL store: one transaction on one
// pooled connection, from the first body byte to the COMMIT.
//
// Decides the draft's life: open → writing → written → committing →
// committed, or discarded / failed from any step before committed.
// writeBody takes a connection, BEGINs, and streams the body into
// message_chunks with back-pressure (pg-body.ts); commit inserts the
// envelope rows and COMMITs on the same connection. The session runs with
// synchronous_commit=on (pg-connection.ts, and SET LOCAL here in case a
// pooler dropped the startup options), so commit() resolves only once the
// WAL is flushed: only then may the client hear 250. Nothing is visible to
// anyone before the COMMIT, and a draft that is discarded, fails, or whose
// process or connection dies is rolled back by PostgreSQL itself: nothing
// is left to sweep.
//
// How it fails: writeBody rejects if the body stream errors or the database
// does (the transaction is rolled back at once); commit rejects if called out
// of order, for an envelope without recipients, or on a database error (rolled
// back; if the connection broke during COMMIT the outcome is unknown, and the
// client, told 4xx, may send again: at least once). A draft that failed or
// was discarded stays dead. discard never rejects.
//
//   PgDraft - the MessageDraft of the PostgreSQL store (built by the store only).
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import type { Logger } from '../../observability/logger.ts';
import type { MessageDraft, StoredEnvelope } from '../queue-store.ts';
import { createChunkWriter, type WrittenBody } from './pg-body.ts';
import { insertEnvelope } from './pg-commit.ts';

/** What a draft needs from its store. */
export interface DraftContext {
  /** The pool drafts take their connection from (one per draft, held until commit or discard). */
  pool: pg.Pool;
  logger: Logger;
  /** release - the draft reached an end (committed, discarded, failed): the store stops tracking it. */
  release(draft: PgDraft): void;
}

type DraftState = 'open' | 'writing' | 'written' | 'committing' | 'committed' | 'discarded' | 'failed';

export class PgDraft implements MessageDraft {
  #state: DraftState = 'open';
  /** The connection holding this draft's transaction, from BEGIN to COMMIT or ROLLBACK. */
  #client: pg.PoolClient | undefined;
  /** A connection error seen while the client sat idle in our transaction. */
  #broken: Error | undefined;
  #body: WrittenBody = { size: 0, chunks: 0 };
  /** The writeBody or commit in flight, settled (never rejects): discard waits for it. */
  #inFlight: Promise<unknown> = Promise.resolve();
  readonly #abort = new AbortController();
  readonly #onClientError = (error: Error): void => {
    this.#broken = error;
  };

  constructor(
    readonly id: string,
    private readonly ctx: DraftContext,
  ) {}

  /** writeBody - BEGIN on a connection of our own and stream the body into chunk rows; resolves with the byte count. */
  writeBody(body: Readable): Promise<number> {
    if (this.#state !== 'open') return Promise.reject(this.#outOfOrder('writeBody'));
    this.#state = 'writing';
    const writing = this.#write(body);
    this.#inFlight = writing.catch(() => undefined);
    return writing;
  }

  /** commit - insert the envelope rows and COMMIT; resolves once PostgreSQL says the COMMIT is durable. */
  commit(envelope: StoredEnvelope): Promise<void> {
    if (this.#state !== 'written') return Promise.reject(this.#outOfOrder('commit'));
    if (envelope.recipients.length === 0) return Promise.reject(new Error(`draft ${this.id}: an envelope needs at least one recipient`));
    this.#state = 'committing';
    const committing = this.#commit(envelope);
    this.#inFlight = committing.catch(() => undefined);
    return committing;
  }

  /** discard - abort a write in progress and roll the transaction back; no-op once committed. */
  async discard(): Promise<void> {
    const state = this.#state;
    if (state === 'committing' || state === 'committed' || state === 'discarded' || state === 'failed') {
      // A commit in flight decides: committed stays committed, a failed one cleaned up after itself.
      await this.#inFlight;
      return;
    }
    this.#state = 'discarded';
    if (state === 'writing') {
      this.#abort.abort(); // #write's catch rolls back
      await this.#inFlight;
    } else {
      await this.#rollback();
    }
    this.ctx.release(this);
  }

  async #write(body: Readable): Promise<number> {
    try {
      const client = await this.ctx.pool.connect();
      this.#client = client;
      client.on('error', this.#onClientError);
      // One round trip; SET LOCAL lasts until this transaction ends.
      await client.query('BEGIN; SET LOCAL synchronous_commit TO on');
      const writer = createChunkWriter(client, this.id);
      // Discarded while waiting for the connection: the signal is aborted and pipeline rejects at once.
      await pipeline(body, writer.sink, { signal: this.#abort.signal });
      this.#body = writer.written();
      this.#state = 'written';
      return this.#body.size;
    } catch (error) {
      if (this.#state === 'writing') this.#state = 'failed';
      await this.#rollback();
      this.ctx.release(this);
      throw error;
    }
  }

  async #commit(envelope: StoredEnvelope): Promise<void> {
    const client = this.#client;
    try {
      if (!client) throw new Error(`draft ${this.id}: no transaction to commit`);
      if (this.#broken) throw this.#broken;
      await insertEnvelope(client, { id: this.id, envelope, size: this.#body.size, chunks: this.#body.chunks });
      // An aborted transaction answers COMMIT with ROLLBACK, not an error.
      const committed = await client.query('COMMIT');
      if (committed.command !== 'COMMIT') throw new Error(`draft ${this.id}: the transaction was rolled back (${committed.command})`);
    } catch (error) {
      this.#state = 'failed';
      this.ctx.logger.warn({ queueId: this.id, err: error }, 'commit failed; the transaction is rolled back');
      await this.#rollback();
      this.ctx.release(this);
      throw error;
    }
    this.#state = 'committed';
    this.#releaseClient();
    this.ctx.release(this);
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

  #outOfOrder(call: string): Error {
    return new Error(`draft ${this.id}: ${call} called when the draft is ${this.#state}`);
  }
}
