// The SQLite queue's own WAL checkpoints (sqlite-checkpoint.ts), on real
// database files in a temporary directory: what is copied into the database
// file (read back from a copy of that file alone, without its WAL, or from
// its bytes), what a checkpoint may not copy, that the WAL is rewound afterwards, that a failed
// fsync copies nothing, and that the store keeps its WAL short while it
// takes 100 KB messages.
import Database from 'better-sqlite3';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.ts';
import { openWalCheckpointer, type WalCheckpointer } from '../../src/queue/sqlite/sqlite-checkpoint.ts';
import { openSqliteStore } from '../../src/queue/sqlite/sqlite-store.ts';
import { openWalSync, type WalSync } from '../../src/queue/sqlite/sqlite-wal-sync.ts';
import { commitMessage, envelopeWith } from '../helpers/queue-fixtures.ts';

describe('sqlite WAL checkpoints', () => {
  let dir: string;
  let file: string;
  let db: Database.Database;
  let wal: WalSync;
  let checkpointer: WalCheckpointer | undefined;
  const logLines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: 'info',
    destination: new Writable({
      write(chunk: Buffer, _encoding, done) {
        logLines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    }),
  });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-checkpoint-'));
    file = join(dir, 'queue.db');
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec('CREATE TABLE t (body BLOB)');
    wal = await openWalSync(file);
    logLines.length = 0;
  });
  afterEach(async () => {
    await checkpointer?.close();
    checkpointer = undefined;
    db.close();
    await wal.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /** insert - rows of 10,000 bytes each, the first filled with byte 1, the next with 2, … (or all with `fill`). */
  const insert = (rows: number, connection = db, fill?: number) => {
    const statement = connection.prepare('INSERT INTO t (body) VALUES (?)');
    for (let i = 0; i < rows; i++) statement.run(Buffer.alloc(10_000, fill ?? i + 1));
  };

  /** rowsInDatabaseFile - rows of t in a copy of the database file alone: what checkpoints put there, not what the WAL holds. */
  async function rowsInDatabaseFile(): Promise<number> {
    const copy = join(dir, `copy-${Date.now()}.db`);
    await copyFile(file, copy);
    const reader = new Database(copy, { readonly: true });
    try {
      const hasTable = reader.prepare("SELECT 1 FROM sqlite_master WHERE name = 't'").get();
      return hasTable ? (reader.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n : 0;
    } finally {
      reader.close();
    }
  }

  /** walFrames - frames in the WAL now (a rewound WAL starts again from frame 1). */
  function walFrames(): number {
    const other = new Database(file);
    try {
      return (other.pragma('wal_checkpoint(PASSIVE)') as { log: number }[])[0]!.log;
    } finally {
      other.close();
    }
  }

  it('copies the WAL into the database file, holding writes meanwhile, and the next write rewinds the WAL', async () => {
    checkpointer = await openWalCheckpointer({ db, file, wal, logger, intervalMs: 0 });
    insert(50);
    expect(await rowsInDatabaseFile()).toBe(0);
    expect(checkpointer.writesPaused).toBeUndefined();

    checkpointer.afterDurable();
    const paused = checkpointer.writesPaused;
    expect(paused).toBeInstanceOf(Promise);
    await paused;
    expect(checkpointer.writesPaused).toBeUndefined();
    expect(await rowsInDatabaseFile()).toBe(50);

    insert(1);
    expect(walFrames()).toBeLessThan(10); // one row's frames; 50 rows were more than 150
    expect(logLines.filter((line) => line.level === 50)).toEqual([]);
  });

  it('copies nothing written after it began (its snapshot bounds the copy)', async () => {
    checkpointer = await openWalCheckpointer({ db, file, wal, logger, intervalMs: 0 });
    insert(20);
    const foreign = new Database(file); // e.g. `postern queue …` in another process
    try {
      checkpointer.afterDurable();
      insert(5, foreign, 0xee);
      await checkpointer.writesPaused;
    } finally {
      foreign.close();
    }
    // A partial copy is not a database on its own (pages written again later stay in the WAL), so look at the bytes.
    const databaseFile = await readFile(file);
    expect(databaseFile.includes(Buffer.alloc(4000, 7)), 'a row from before the checkpoint').toBe(true);
    expect(databaseFile.includes(Buffer.alloc(4000, 0xee)), 'a row written after it began').toBe(false);
    expect((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(25);
  });

  it('starts at most one checkpoint per interval', async () => {
    checkpointer = await openWalCheckpointer({ db, file, wal, logger, intervalMs: 60_000 });
    insert(10);
    checkpointer.afterDurable();
    await checkpointer.writesPaused;
    insert(10);
    checkpointer.afterDurable();
    expect(checkpointer.writesPaused).toBeUndefined();
    expect(await rowsInDatabaseFile()).toBe(10);
  });

  it('copies nothing when the WAL cannot be fsynced, logs it, and lets writes go on', async () => {
    checkpointer = await openWalCheckpointer({ db, file, wal, logger, intervalMs: 0 });
    insert(10);
    await wal.close(); // its descriptor is gone: the fsync fails with EBADF
    checkpointer.afterDurable();
    await checkpointer.writesPaused;
    expect(await rowsInDatabaseFile()).toBe(0);
    expect(logLines.find((line) => line.msg === 'queue checkpoint failed; the WAL keeps its frames')).toMatchObject({ err: { code: 'EBADF' } });
    insert(1);
    expect((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(11);
  });

  it('keeps the store’s WAL short while it takes 100 KB messages', async () => {
    const store = await openSqliteStore({ path: join(dir, 'store', 'queue.db') });
    try {
      const body = Buffer.alloc(100 * 1024, 0x61);
      for (let i = 0; i < 60; i++) await commitMessage(store, [body], envelopeWith({}));
      await sleep(150); // more than the interval: the next durable batch starts a checkpoint
      await commitMessage(store, [body], envelopeWith({}));
      await commitMessage(store, [body], envelopeWith({})); // waits for it, then rewinds the WAL
      const other = new Database(join(dir, 'store', 'queue.db'));
      try {
        // 60 bodies of 25 pages each would be 1,500 frames and more; SQLite's own checkpoint waits for 10,000.
        expect((other.pragma('wal_checkpoint(PASSIVE)') as { log: number }[])[0]!.log).toBeLessThan(100);
      } finally {
        other.close();
      }
    } finally {
      await store.close();
    }
  });
});
