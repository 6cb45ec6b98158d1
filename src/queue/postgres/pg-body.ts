// Message bodies in PostgreSQL: written as rows of message_chunks (~256 KB
// each) inside the draft's transaction, read back one row per query, so no
// whole message is ever in memory on either side.
//
// Decides the chunking: bytes are gathered and written as rows of exactly
// CHUNK_SIZE bytes, numbered from 0; the last row holds what is left. A reader asks
// for row n only when the consumer wants more (back-pressure), and the first
// query also checks that the message is committed and not done.
//
// How it fails: the chunk writer fails its stream when an INSERT fails; the
// body stream errors for an id that is malformed, unknown, not yet committed
// or done, and mid-way if the message is deleted or becomes done while it is
// read (its chunks are gone).
//
//   CHUNK_SIZE        - the size of one message_chunks row.
//   createChunkWriter - a Writable storing what it is given as chunk rows on one client.
//   readBodyChunks    - a Readable of a committed message's body, one chunk row per query.
import { Readable, Writable } from 'node:stream';
import type pg from 'pg';
import { isQueueId } from '../queue-id.ts';

export const CHUNK_SIZE = 256 * 1024;

/** What a finished chunk writer wrote. */
export interface WrittenBody {
  size: number;
  chunks: number;
}

/** createChunkWriter - a Writable storing its bytes as message_chunks rows through `client` (inside its transaction). */
export function createChunkWriter(client: pg.PoolClient, messageId: string): { sink: Writable; written: () => WrittenBody } {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let size = 0;
  let chunks = 0;
  const insert = async (data: Buffer): Promise<void> => {
    await client.query('INSERT INTO message_chunks (message_id, seq, data) VALUES ($1, $2, $3)', [messageId, chunks, data]);
    chunks++;
  };
  /** flush - write whole CHUNK_SIZE rows from what is pending (all of it, the last row shorter, when `all`). */
  const flush = async (all: boolean): Promise<void> => {
    let data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    while (data.length >= CHUNK_SIZE || (all && data.length > 0)) {
      await insert(data.subarray(0, CHUNK_SIZE));
      data = data.subarray(Math.min(CHUNK_SIZE, data.length));
    }
    if (data.length > 0) {
      pending = [data];
      pendingBytes = data.length;
    }
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
      flush(false).then(() => done(), done);
    },
    final(done) {
      flush(true).then(() => done(), done);
    },
  });
  return { sink, written: () => ({ size, chunks }) };
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
