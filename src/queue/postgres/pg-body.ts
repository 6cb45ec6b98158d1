// Message bodies in PostgreSQL: written as rows of message_chunks (~256 KB
// each) while the message is received, read back one row per query, so no
// whole message is ever in memory on either side.
//
// Decides the chunking: bytes are gathered and each row of exactly
// CHUNK_SIZE bytes is inserted as soon as it is full, in a statement of its
// own on a pooled connection held only for it; what is left at the end (most
// messages: all of it) goes in with the envelope, in the draft's commit
// (pg-commit.ts). So a client slow to send DATA holds no connection. A row
// is committed without waiting for its WAL flush: the draft's commit waits
// for the flush of its own commit record, which comes after every row's.
// A reader asks for row n only when the consumer wants more (back-pressure),
// and the first query also checks that the message is committed and not done.
// Rows that no message row ever claimed (a draft discarded while its delete
// failed, a failed commit, a node that died mid-DATA) are removed by
// removeOrphanChunks once older than ORPHAN_AGE; a draft with a row older
// than DRAFT_MAX_AGE is refused at its commit. Both ages are read on the
// database's clock (written_at, now()), so the sweep never takes a row of a
// draft that can still commit unless that clock jumps by 12 hours.
//
// How it fails: the chunk writer fails its stream when an INSERT fails; the
// body stream errors for an id that is malformed, unknown, not yet committed
// or done, and mid-way if the message is deleted or becomes done while it is
// read (its chunks are gone).
//
//   CHUNK_SIZE        - the size of one message_chunks row.
//   DRAFT_MAX_AGE     - how old a draft's first row may be at its commit (an SQL interval).
//   createChunkWriter - a Writable inserting each full chunk row as it fills; the rest is for the commit.
//   deleteChunks      - remove a draft's rows (it was discarded).
//   removeOrphanChunks - remove rows older than ORPHAN_AGE that no message claims.
//   readBodyChunks    - a Readable of a committed message's body, one chunk row per query.
import { Readable, Writable } from 'node:stream';
import type pg from 'pg';
import { isQueueId } from '../queue-id.ts';

export const CHUNK_SIZE = 256 * 1024;

/** A draft's rows may be this old at its commit (Postfix has no such bound, but no client sends DATA for 12 hours). */
export const DRAFT_MAX_AGE = '12 hours';

/** Rows no message claims are removed once this old: twice DRAFT_MAX_AGE. */
const ORPHAN_AGE = '24 hours';

/** Rows removed per sweep at most; more wait for the next one (an hour later). */
const ORPHAN_SWEEP_LIMIT = 1000;

/** What a finished chunk writer wrote: `rows` whole rows already inserted (seq 0 to rows - 1), and `rest` for the commit. */
export interface WrittenBody {
  size: number;
  rows: number;
  rest: Buffer;
}

// Committed without waiting for the WAL flush (see the header); set_config lasts until this statement's
// implicit transaction ends.
const INSERT_CHUNK = `
  INSERT INTO message_chunks (message_id, seq, data)
  SELECT $1::text, $2::integer, $3::bytea FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit`;

/** createChunkWriter - a Writable that inserts each full CHUNK_SIZE row of its bytes through `pool`; `idle` settles when no insert is in flight. */
export function createChunkWriter(pool: pg.Pool, messageId: string): { sink: Writable; written: () => WrittenBody; idle: () => Promise<void> } {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let size = 0;
  let rows = 0;
  let inFlight: Promise<void> = Promise.resolve();
  /** joined - what is pending, in one buffer. */
  const joined = (): Buffer => (pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes));
  /** insertFull - insert every whole CHUNK_SIZE row of what is pending; the rest stays pending. */
  const insertFull = async (): Promise<void> => {
    let data = joined();
    while (data.length >= CHUNK_SIZE) {
      await pool.query(INSERT_CHUNK, [messageId, rows, data.subarray(0, CHUNK_SIZE)]);
      rows++;
      data = data.subarray(CHUNK_SIZE);
    }
    pending = data.length > 0 ? [data] : [];
    pendingBytes = data.length;
  };
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      size += chunk.length;
      if (pendingBytes < CHUNK_SIZE) {
        done();
        return;
      }
      // The callback waits for the INSERT: that is the back-pressure on the client.
      const inserting = insertFull();
      inFlight = inserting.catch(() => undefined);
      inserting.then(() => done(), done);
    },
  });
  return {
    sink,
    written: () => ({ size, rows, rest: joined() }),
    idle: () => inFlight,
  };
}

/** deleteChunks - remove every chunk row of `messageId` (a draft that was discarded). */
export async function deleteChunks(pool: pg.Pool, messageId: string): Promise<void> {
  await pool.query('DELETE FROM message_chunks WHERE message_id = $1', [messageId]);
}

/** removeOrphanChunks - remove up to ORPHAN_SWEEP_LIMIT chunk rows older than ORPHAN_AGE whose message row does not exist; returns how many. */
export async function removeOrphanChunks(pool: pg.Pool): Promise<number> {
  const result = await pool.query(
    `DELETE FROM message_chunks WHERE (message_id, seq) IN (
       SELECT c.message_id, c.seq FROM message_chunks c
        WHERE c.written_at < now() - $1::interval
          AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = c.message_id)
        LIMIT $2)`,
    [ORPHAN_AGE, ORPHAN_SWEEP_LIMIT],
  );
  return result.rowCount ?? 0;
}

interface FirstRow {
  state: string;
  chunks: number;
  data: Buffer | null;
}

/** readBodyChunks - a committed message's body, one chunk row per query, fetched only as the consumer reads. */
export function readBodyChunks(pool: pg.Pool, id: string): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    if (!isQueueId(id)) throw new Error(`not a queue id: ${JSON.stringify(id)}`);
    // One round trip for the check and the first chunk: most messages are one chunk.
    const first = await pool.query<FirstRow>(
      `SELECT m.state, m.chunks, c.data FROM messages m
         LEFT JOIN message_chunks c ON c.message_id = m.id AND c.seq = 0
        WHERE m.id = $1`,
      [id],
    );
    const row = first.rows[0];
    if (!row || row.state === 'done') throw new Error(`no such message in the queue (unknown, or done): ${id}`);
    for (let seq = 0; seq < row.chunks; seq++) {
      const data = seq === 0 ? row.data : await readChunk(pool, id, seq);
      if (data === null) throw new Error(`message ${id}: body chunk ${seq} is gone (the message was deleted or finished while being read)`);
      yield data;
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** readChunk - one chunk row's bytes, or null if it is not there. */
async function readChunk(pool: pg.Pool, id: string, seq: number): Promise<Buffer | null> {
  const result = await pool.query<{ data: Buffer }>('SELECT data FROM message_chunks WHERE message_id = $1 AND seq = $2', [id, seq]);
  return result.rows[0]?.data ?? null;
}
